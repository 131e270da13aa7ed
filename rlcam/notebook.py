"""Annotated frames and clips in memory, shown inline by Jupyter without writing files by hand.

    record_clip(model, venv, steps=60)               # in a cell: plays as an HTML5 video
    annotate_frame(model, obs, venv.get_images()[0])  # in a cell: one annotated PNG

``Clip`` and ``Frame`` have ``_repr_html_`` / ``_repr_png_``, which Jupyter (and VS Code, Colab)
call to display them; nothing here imports IPython. Videos are encoded by rlcam's own writers
(``rlcam.video.FrameWriter``) into a temporary directory that is removed at once.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rlcam.api import ExplainedPolicy
from rlcam.envs import action_names, frames
from rlcam.record import StepWriter
from rlcam.video import FrameWriter

_FORMATS = ("mp4", "gif")


class Frame:
    """One annotated video frame ``(H, W, 3)`` uint8 RGB; displays as a PNG."""

    def __init__(self, image: np.ndarray):
        self.image = np.asarray(image)

    def to_png(self) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.image).save(buffer, format="PNG")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.to_png()


class Clip:
    """Annotated frames in memory; displays as a looping HTML5 video.

    Attributes:
        frames: T frames ``(H, W, 3)`` uint8 RGB.
        fps: playback rate.
        cam: ``(T, N, h, w)`` float32 raw maps of every env explained, or None.
        rewards: ``(T, N)`` float32 rewards of the steps, or None.
    """

    def __init__(self, frames: list[np.ndarray], fps: float = 30, cam=None, rewards=None):
        self.frames = list(frames)
        self.fps = fps
        self.cam = cam
        self.rewards = rewards

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path) -> Path:
        """Write the clip to ``path`` (``.mp4`` or ``.gif``) with rlcam's video writer."""
        if not self.frames:
            raise ValueError("the clip has no frames")
        with FrameWriter(path, fps=self.fps) as video:
            for frame in self.frames:
                video.append(frame)
        return Path(path)

    def encode(self, format: str = "mp4") -> bytes:
        """The clip as the bytes of an ``mp4`` (H.264) or ``gif`` file."""
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, not {format!r}")
        with tempfile.TemporaryDirectory(prefix="rlcam-") as tmp:
            return self.save(Path(tmp) / f"clip.{format}").read_bytes()

    def to_html(self, format: str = "mp4") -> str:
        """An HTML element playing the clip from a base64 data URL: ``<video>`` (mp4) or ``<img>`` (gif)."""
        data = base64.b64encode(self.encode(format)).decode("ascii")
        width = self.frames[0].shape[1]
        if format == "gif":
            return f'<img src="data:image/gif;base64,{data}" width="{width}"/>'
        return (
            f'<video width="{width}" controls autoplay loop muted playsinline '
            f'src="data:video/mp4;base64,{data}"></video>'
        )

    def _repr_html_(self) -> str:
        return self.to_html("mp4")


def _explained(policy: Any) -> ExplainedPolicy:
    return policy if isinstance(policy, ExplainedPolicy) else ExplainedPolicy(policy)


def record_clip(
    policy: Any,
    venv,
    steps: int = 100,
    seed: int | None = None,
    deterministic: bool = True,
    video_env: int = 0,
    fps: float = 30,
    norm: str = "running",
    scale: int = 2,
    alpha: float = 0.6,
) -> Clip:
    """Reset ``venv``, let the policy act ``steps`` steps, and return the annotated clip.

    Args:
        policy: an :class:`ExplainedPolicy`, or anything it accepts (an SB3 model, an Agent, a path).
        venv: a VecEnv made with ``render_mode="rgb_array"``; every env is explained, one is shown.
        steps: steps to record (one frame each).
        seed: seeds ``venv`` for this reset (``venv.seed``); None leaves it as it is.
        deterministic: argmax actions, else sampled with the policy's own seeded generator.
        video_env: the env shown.
        fps, norm, scale, alpha: video settings, as in :class:`rlcam.RecordConfig`.

    Returns:
        The clip, with the raw maps ``cam (T, N, h, w)`` and rewards ``(T, N)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    policy = _explained(policy)
    shown: list[np.ndarray] = []
    writer = StepWriter(
        policy.explainer,
        action_names(venv),
        video=shown,  # StepWriter appends each composed frame to it
        n_envs=venv.num_envs,
        norm=norm,
        scale=scale,
        alpha=alpha,
        video_env=video_env,
    )
    cams, rewards = [], []
    if seed is not None:
        venv.seed(seed)
    with policy._opened():
        obs = venv.reset()
        for _ in range(steps):
            raw = frames(venv)
            explanation = policy.explain(obs, deterministic=deterministic)
            next_obs, reward, dones, infos = venv.step(explanation.actions)
            writer.write(obs, raw, explanation, reward, dones, infos)
            cams.append(explanation.cam)
            rewards.append(np.asarray(reward, dtype=np.float32))
            obs = next_obs
    return Clip(shown, fps=fps, cam=np.stack(cams), rewards=np.stack(rewards))


def annotate_frame(
    policy: Any,
    observation: np.ndarray,
    frame: np.ndarray,
    action: int | None = None,
    names: list[str] | None = None,
    scale: int = 3,
    alpha: float = 0.6,
) -> Frame:
    """The annotated video frame for one observation: the map over ``frame`` and the panel.

    Args:
        policy: an :class:`ExplainedPolicy`, or anything it accepts.
        observation: one observation (or a batch of one), in any layout SB3's ``predict`` takes.
        frame: the raw RGB frame ``(h, w, 3)`` of that state, e.g. ``venv.get_images()[0]``.
        action: explain this action instead of the policy's argmax.
        names: action names for the panel (a continuous policy's components, a structured one's
            parts); default ``a0, a1, ...``.
        scale, alpha: frame upscaling and map opacity. The map is normalised by its own maximum.
    """
    policy = _explained(policy)
    explanation = policy.explain(observation, actions=None if action is None else [action])
    if len(explanation.actions) != 1:
        raise ValueError(f"annotate_frame takes one observation, got a batch of {len(explanation.actions)}")
    space = policy.agent.policy.action_space  # a name per action, or per component / part of a vector action
    count = policy.n_actions if policy.n_actions is not None else int(np.prod(space.shape))
    names = names or [f"a{i}" for i in range(count)]
    shown: list[np.ndarray] = []
    writer = StepWriter(policy.explainer, names, video=shown, norm="frame", scale=scale, alpha=alpha)
    writer.write(None, [np.asarray(frame)], explanation, np.zeros(1), np.zeros(1, dtype=bool), [{}])
    return Frame(shown[0])
