"""A tiny image env whose right action is known from the pixels: for tests and demos.

``FindTarget-v0``: an 84x84 RGB frame shows a small bright target in the left or right
half and a distractor square that never matters. Action 0 (LEFT) or 1 (RIGHT) earns
reward 1 when it names the target's half. Episodes last 32 steps. Make it with
``gymnasium.make("rlcam.toyenv:FindTarget-v0")`` (importing this module registers it).

    obs (84, 84, 3) uint8, channel-last like most Gymnasium image envs
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SIZE = 84
TARGET = 4  # px, side of the target square
DISTRACTOR = 8  # px
EPISODE_STEPS = 32


class FindTarget(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.action_space = spaces.Discrete(2)
        self.render_mode = render_mode
        self.target = (0, 0)  # (y, x) of the target's top-left corner
        self.distractor = (0, 0)
        self.t = 0

    def get_action_meanings(self) -> list[str]:
        return ["LEFT", "RIGHT"]

    def _place(self) -> None:
        rng = self.np_random
        self.target = (int(rng.integers(0, SIZE - TARGET)), int(rng.integers(0, SIZE - TARGET)))
        self.distractor = (int(rng.integers(0, SIZE - DISTRACTOR)), int(rng.integers(0, SIZE - DISTRACTOR)))

    def _obs(self) -> np.ndarray:
        frame = np.full((SIZE, SIZE, 3), 20, dtype=np.uint8)
        y, x = self.distractor
        frame[y : y + DISTRACTOR, x : x + DISTRACTOR] = (60, 90, 200)
        y, x = self.target
        frame[y : y + TARGET, x : x + TARGET] = (255, 220, 40)
        return frame

    def target_centre(self) -> tuple[float, float]:
        """(y, x) of the target's centre in observation pixels."""
        return self.target[0] + TARGET / 2 - 0.5, self.target[1] + TARGET / 2 - 0.5

    def distractor_centre(self) -> tuple[float, float]:
        """(y, x) of the distractor's centre in observation pixels."""
        return self.distractor[0] + DISTRACTOR / 2 - 0.5, self.distractor[1] + DISTRACTOR / 2 - 0.5

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._place()
        return self._obs(), {}

    def step(self, action):
        correct = int(self.target[1] + TARGET / 2 >= SIZE / 2)
        reward = float(int(action) == correct)
        self.t += 1
        self._place()
        return self._obs(), reward, False, self.t >= EPISODE_STEPS, {}

    def render(self):
        return np.repeat(np.repeat(self._obs(), 2, axis=0), 2, axis=1)  # (168, 168, 3)


gym.register(id="FindTarget-v0", entry_point=FindTarget, max_episode_steps=EPISODE_STEPS)


class SteerToDot(FindTarget):
    """``SteerToDot-v0``: the same frames as FindTarget; the action says where the target is.

    Continuous: ``Box(-1, 1, (2,))``, the target centre's (y, x) scaled to [-1, 1], reward
    ``1 - mean |a - where|``. ``SteerToDotParts-v0``: ``MultiDiscrete([3, 3])``, which third of the
    frame the target is in along y and along x, reward 0.5 per part right. Either way the target's
    pixels decide the action and the distractor never matters: for checking where maps point.
    """

    def __init__(self, render_mode: str | None = None, parts: bool = False):
        super().__init__(render_mode)
        self.parts = parts
        self.action_space = spaces.MultiDiscrete([3, 3]) if parts else spaces.Box(-1.0, 1.0, (2,), np.float32)

    def get_action_meanings(self) -> list[str]:
        return ["y", "x"]

    def where(self) -> np.ndarray:
        """The target centre's (y, x) in [-1, 1]."""
        return np.array(self.target_centre(), dtype=np.float32) / (SIZE - 1) * 2.0 - 1.0

    def step(self, action):
        where = self.where()
        if self.parts:
            thirds = np.minimum(((where + 1.0) / 2.0 * 3.0).astype(int), 2)
            reward = 0.5 * float((np.asarray(action) == thirds).sum())
        else:
            reward = 1.0 - float(np.abs(np.clip(np.asarray(action, np.float32), -1, 1) - where).mean())
        self.t += 1
        self._place()
        return self._obs(), reward, False, self.t >= EPISODE_STEPS, {}


gym.register(id="SteerToDot-v0", entry_point=SteerToDot, max_episode_steps=EPISODE_STEPS)
gym.register(id="SteerToDotParts-v0", entry_point=SteerToDot, kwargs={"parts": True}, max_episode_steps=EPISODE_STEPS)
