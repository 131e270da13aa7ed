"""Dict-observation toy envs whose deciding input is known: for checking maps and input shares.

Every frame is a small RGB image with a 4-px yellow dot and a 6-px blue square at fresh random
places each step (a frame tells nothing about the next); the vector ``cue`` is a fresh uniform
point in [-1, 1]^2. The action ``Box(-1, 1, (2,))`` is a point (y, x); the reward is
``1 - mean |a - goal|``. Which input holds ``goal`` decides which input matters:

    SteerDictImage-v0       {"cue": (2,), "image": (48, 48, 3)}   goal: the dot's centre; the cue is noise
    SteerDictVector-v0      {"cue": (2,), "image": (48, 48, 3)}   goal: the cue; the image (dot included) is noise
    SteerDictTwoImages-v0   {"cue": (2,), "left": ..., "right": ...}   goal: the dot in ``left``;
                            ``right`` shows a decoy dot just like it, and the cue is noise

    obs images (48, 48, 3) uint8, channel-last; cue (2,) float32

Episodes last 32 steps. ``gymnasium.make("rlcam.toydict:SteerDictImage-v0")`` (importing this
module registers the ids).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SIZE = 48
DOT = 4  # px, side of the yellow dot (the target, or a decoy)
SQUARE = 6  # px, side of the blue square (never matters)
EPISODE_STEPS = 32
DECIDES = ("image", "vector", "two_images")


def draw(dot: tuple[int, int], square: tuple[int, int]) -> np.ndarray:
    """A frame ``(SIZE, SIZE, 3)`` uint8 with the square, then the dot, at their top-left corners (y, x)."""
    frame = np.full((SIZE, SIZE, 3), 20, dtype=np.uint8)
    y, x = square
    frame[y : y + SQUARE, x : x + SQUARE] = (60, 90, 200)
    y, x = dot
    frame[y : y + DOT, x : x + DOT] = (255, 220, 40)
    return frame


def centre(corner: tuple[int, int], side: int = DOT) -> tuple[float, float]:
    """(y, x) of a square's centre in image pixels, from its top-left corner."""
    return corner[0] + side / 2 - 0.5, corner[1] + side / 2 - 0.5


def to_unit(yx) -> np.ndarray:
    """Image pixels (y, x) -> [-1, 1]^2, the action's scale."""
    return np.asarray(yx, dtype=np.float32) / (SIZE - 1) * 2.0 - 1.0


class SteerDict(gym.Env):
    """See the module docstring; ``decides`` is ``image``, ``vector`` or ``two_images``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, decides: str = "image", render_mode: str | None = None):
        if decides not in DECIDES:
            raise ValueError(f"decides must be one of {', '.join(DECIDES)}, not {decides!r}.")
        self.decides = decides
        self.render_mode = render_mode
        image = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.image_keys = ("left", "right") if decides == "two_images" else ("image",)
        self.observation_space = spaces.Dict(
            {"cue": spaces.Box(-1.0, 1.0, (2,), np.float32), **{key: image for key in self.image_keys}}
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.dots: dict[str, tuple[int, int]] = {}  # image key -> the dot's top-left corner (y, x)
        self.squares: dict[str, tuple[int, int]] = {}
        self.cue = np.zeros(2, np.float32)
        self.t = 0

    def get_action_meanings(self) -> list[str]:
        return ["y", "x"]

    def place(self) -> None:
        """Draw new positions for every dot and square, and a new cue."""
        rng = self.np_random
        for key in self.image_keys:
            self.dots[key] = (int(rng.integers(0, SIZE - DOT + 1)), int(rng.integers(0, SIZE - DOT + 1)))
            self.squares[key] = (int(rng.integers(0, SIZE - SQUARE + 1)), int(rng.integers(0, SIZE - SQUARE + 1)))
        self.cue = rng.uniform(-1.0, 1.0, 2).astype(np.float32)

    def observation(self) -> dict[str, np.ndarray]:
        images = {key: draw(self.dots[key], self.squares[key]) for key in self.image_keys}
        return {"cue": self.cue.copy(), **images}

    @property
    def deciding_key(self) -> str:
        return {"image": "image", "vector": "cue", "two_images": "left"}[self.decides]

    def target_centre(self) -> tuple[float, float]:
        """(y, x) of the deciding image's dot in pixels (for ``vector``: of the image's dot, which is noise)."""
        return centre(self.dots["left" if self.decides == "two_images" else "image"])

    def goal(self) -> np.ndarray:
        """The right action, (y, x) in [-1, 1]."""
        return self.cue.copy() if self.decides == "vector" else to_unit(self.target_centre())

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.place()
        return self.observation(), {}

    def step(self, action):
        error = np.abs(np.clip(np.asarray(action, np.float32), -1.0, 1.0) - self.goal()).mean()
        self.t += 1
        self.place()
        return self.observation(), 1.0 - float(error), False, self.t >= EPISODE_STEPS, {}

    def render(self):
        """The images side by side (left, right), upscaled 3x."""
        row = np.concatenate([draw(self.dots[k], self.squares[k]) for k in self.image_keys], axis=1)
        return np.repeat(np.repeat(row, 3, axis=0), 3, axis=1)


IDS = {"image": "SteerDictImage-v0", "vector": "SteerDictVector-v0", "two_images": "SteerDictTwoImages-v0"}
for _decides, _id in IDS.items():
    gym.register(id=_id, entry_point=SteerDict, kwargs={"decides": _decides}, max_episode_steps=EPISODE_STEPS)
