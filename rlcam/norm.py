"""Display normalisation of raw maps: a named choice, recorded in the trace.

Raw maps keep their units (the explained score's gradient times activation), so a
frame whose map is near zero means "nothing here moves the score". Each normaliser
returns, per env, the value that maps to full colour:

- ``running`` (default): a running maximum that decays by ``RUNNING_DECAY`` per step
  (half-life ~350 steps); brightness is comparable across steps and adapts slowly.
- ``episode``: the maximum so far in the current game, reset at game over.
- ``frame``: each map's own maximum (what most CAM libraries do); flickers and
  always shows something, even when nothing matters.

All are causal, so the video streams with flat memory.
"""

from __future__ import annotations

import numpy as np

from rlcam.errors import RlcamError

NORMS = ("running", "episode", "frame")
RUNNING_DECAY = 0.998


class Normalizer:
    """Per-env display scale for maps ``(N, h, w)``."""

    def __init__(self, name: str, n_envs: int):
        if name not in NORMS:
            raise RlcamError(f"unknown normalisation {name!r}; choose one of {', '.join(NORMS)}.")
        self.name = name
        self.scale = np.zeros(n_envs, dtype=np.float64)

    def update(self, cam: np.ndarray) -> np.ndarray:
        """Take this step's raw maps; return the scales ``(N,)`` to divide them by (0 means all-zero)."""
        peak = cam.reshape(len(cam), -1).max(axis=1).astype(np.float64)
        if self.name == "frame":
            self.scale = peak
        elif self.name == "episode":
            self.scale = np.maximum(self.scale, peak)
        else:
            self.scale = np.maximum(self.scale * RUNNING_DECAY, peak)
        return self.scale.copy()

    def end_episodes(self, ended: np.ndarray) -> None:
        """Forget the scale of envs whose game just ended (``episode`` normalisation only)."""
        if self.name == "episode":
            self.scale[np.asarray(ended, dtype=bool)] = 0.0
