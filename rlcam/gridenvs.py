"""MiniGrid with pixels and a vector: Dict observations an SB3 ``MultiInputPolicy`` trains on.

``MiniGrid-*`` envs observe a symbolic grid, the agent's direction and a text mission. These
variants keep what a pixel agent with a compass needs:

    {"image": (56, 56, 3) uint8, the agent's 7x7-cell view drawn at 8 px a cell,
     "direction": (4,) float32, one-hot: right, down, left, up}

The mission text is dropped (each env here has a single mission). Ids: ``RlcamMiniGrid-<name>``
for the MiniGrid ids in ``VARIANTS``, e.g. ``--env rlcam.gridenvs:RlcamMiniGrid-Empty-Random-6x6-v0``.
Needs the ``minigrid`` package (``pip install 'rlcam[minigrid]'``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlcam.errors import RlcamError

VARIANTS = ("Empty-5x5-v0", "Empty-Random-6x6-v0", "Empty-8x8-v0", "DoorKey-5x5-v0", "GoToDoor-5x5-v0")
TILE = 8  # px per cell of the agent's view


class PixelsAndCompass(gym.ObservationWrapper):
    """MiniGrid's partial view as RGB pixels plus the direction as a one-hot vector."""

    def __init__(self, env: gym.Env):
        from minigrid.wrappers import RGBImgPartialObsWrapper

        env = RGBImgPartialObsWrapper(env, tile_size=TILE)
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {
                "image": env.observation_space["image"],
                "direction": spaces.Box(0.0, 1.0, (4,), np.float32),
            }
        )

    def get_action_meanings(self) -> list[str]:
        return [action.name for action in self.unwrapped.actions]

    def observation(self, observation):
        direction = np.zeros(4, np.float32)
        direction[int(observation["direction"])] = 1.0
        return {"image": observation["image"], "direction": direction}


def make(name: str, render_mode: str | None = None, **kwargs) -> gym.Env:
    try:
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
    except ImportError:
        raise RlcamError("MiniGrid envs need the minigrid package: pip install 'rlcam[minigrid]'.") from None
    return PixelsAndCompass(gym.make(f"MiniGrid-{name}", render_mode=render_mode, **kwargs))


for _name in VARIANTS:
    gym.register(id=f"RlcamMiniGrid-{_name}", entry_point=make, kwargs={"name": _name})
