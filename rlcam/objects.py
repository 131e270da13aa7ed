"""Where game objects are, read from the Atari RAM, and how much of a map lies near them.

Each entry of ``OBJECTS`` maps a game to a function ``ram (128,) uint8 -> {name: (y, x) or None}``
giving object centres in raw-frame pixels (210x160 for Atari), None when the object is not
on screen. Add a game by writing such a function and checking it against rendered frames
(``tests/test_objects.py`` does that for Breakout).

Breakout (RAM addresses from public Atari RAM annotations, verified here against the
rendered frames: the ball's red pixels are centred exactly at these positions in every
frame where it is visible):
- ball: x = ram[99] - 48.5, y = ram[101] + 10.5; on screen when 0 < ram[101] < 180
  (at 180 and beyond it has passed the paddle);
- paddle: spans x = ram[72] - 47 .. ram[72] - 32, cut by the walls at 8 and 151; y = 191.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Position = tuple[float, float] | None


def breakout(ram: np.ndarray) -> dict[str, Position]:
    ball_y = int(ram[101])
    ball = (ball_y + 10.5, int(ram[99]) - 48.5) if 0 < ball_y < 180 else None
    left = int(ram[72]) - 47  # the paddle spans 16 px, cut off by the walls at x = 8 and x = 151
    paddle = (191.0, (max(left, 8) + min(left + 15, 151)) / 2)
    return {"ball": ball, "paddle": paddle}


OBJECTS: dict[str, Callable[[np.ndarray], dict[str, Position]]] = {"Breakout": breakout}


def game_name(env_id: str) -> str:
    """``BreakoutNoFrameskip-v4`` / ``ALE/Breakout-v5`` -> ``Breakout``."""
    name = env_id.split(":")[-1].split("/")[-1]
    return name.split("NoFrameskip")[0].split("Deterministic")[0].split("-")[0]


def locator_for(env_id: str) -> Callable[[np.ndarray], dict[str, Position]] | None:
    return OBJECTS.get(game_name(env_id))


def object_names(env_id: str) -> list[str]:
    locate = locator_for(env_id)
    return sorted(locate(np.zeros(128, dtype=np.uint8))) if locate else []


def env_rams(venv) -> list[np.ndarray]:
    """The RAM of each Atari env in an SB3 VecEnv built in this process."""
    return [env.unwrapped.ale.getRAM() for env in venv.unwrapped.envs]


def positions(venv, env_id: str) -> dict[str, np.ndarray]:
    """``{name: (N, 2) float32}`` object centres (y, x) in frame pixels, NaN where not on screen."""
    locate = locator_for(env_id)
    if locate is None:
        return {}
    found = [locate(ram) for ram in env_rams(venv)]
    return {
        name: np.array([f[name] if f[name] is not None else (np.nan, np.nan) for f in found], dtype=np.float32)
        for name in found[0]
    }


def share_near(heat: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Share of a non-negative map's mass within ``radius`` px of ``centre (y, x)``; NaN if undefined.

    Args:
        heat: ``(H, W)`` map on the frame's pixel grid.
        centre: ``(2,)`` object centre in the same pixels, NaN when the object is not on screen.
    """
    total = float(heat.sum())
    if total <= 0 or not np.isfinite(centre).all():
        return float("nan")
    ys, xs = np.ogrid[: heat.shape[0], : heat.shape[1]]
    near = (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2
    return float(heat[near].sum() / total)
