"""Watch what a model looks at while it trains: an attention clip every N steps, in TensorBoard.

``AttentionCallback`` is an SB3 callback. Every ``every`` env steps it lets the model being
trained act ``clip_steps`` steps in an env of its own (never the training env), from the same
seeded start each time, so clips compare across training. It logs:

- ``rlcam/attention``: the annotated clip as an animated GIF in TensorBoard's image tab, written
  into the event file of the model's own TensorBoard logger (``tensorboard_log=...``);
- ``rlcam/map_entropy``, ``rlcam/peak_share``, ``rlcam/map_peak``, ``rlcam/zero_maps``,
  ``rlcam/clip_reward`` through ``self.logger`` (see :func:`attention_metrics`).

Why not SB3's ``logger.Video``: SB3 hands it to ``SummaryWriter.add_video``, which needs
``moviepy<2`` (it imports ``moviepy.editor``, removed in moviepy 2) and otherwise prints a
warning and logs an empty image. The summary written here is the one ``add_video`` would write
(an encoded GIF in a ``Summary.Image``), encoded by rlcam's own writer, with no extra dependency.

Training is not disturbed: the explainer takes gradients of activations only (parameters' ``.grad``
untouched), restores every module's train/eval mode, removes its hook before training resumes,
and the clip runs with Python's, NumPy's and torch's global RNG states saved and restored, so
an env factory that draws from them cannot shift the training run either.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from rlcam.api import ExplainedPolicy, as_agent
from rlcam.envs import make_env
from rlcam.errors import RlcamError
from rlcam.notebook import Clip, record_clip

TAG = "rlcam/attention"


def attention_metrics(cam: np.ndarray) -> dict[str, float]:
    """Summaries of raw maps ``(..., h, w)``, averaged over all maps.

    Returns:
        ``map_entropy``: entropy of each map read as a distribution over its cells, divided by
        ``log(h*w)``: 1 is attention spread evenly, 0 all in one cell; ``peak_share``: the hottest
        cell's share of the map's total; ``map_peak``: the raw maximum (units of the explained
        score); ``zero_maps``: the fraction of all-zero maps ("nothing here moves the score").
        The first two average over non-zero maps and are left out when every map is zero.
    """
    cam = np.asarray(cam, dtype=np.float64)
    cells = cam.shape[-2] * cam.shape[-1]
    flat = cam.reshape(-1, cells)
    total = flat.sum(axis=1)
    live = total > 0
    metrics = {"map_peak": float(flat.max(axis=1).mean()), "zero_maps": float(1.0 - live.mean())}
    if live.any():
        p = flat[live] / total[live, None]
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        entropy = -plogp.sum(axis=1) / (np.log(cells) if cells > 1 else 1.0)
        metrics["map_entropy"] = float(entropy.mean())
        metrics["peak_share"] = float(p.max(axis=1).mean())
    return metrics


@contextlib.contextmanager
def _global_rngs_kept():
    """Restore Python's, NumPy's and torch's (CPU and initialised CUDA) global RNG states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _gif_summary(tag: str, clip: Clip):
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = clip.frames[0].shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=clip.encode("gif"))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class AttentionCallback(BaseCallback):
    """Log an attention clip of the model being trained every ``every`` env steps.

    Args:
        env: the clip's own env: a name for :func:`rlcam.envs.make_env` (e.g. ``"Breakout"``), or a
            factory returning a VecEnv or a Gymnasium env made with ``render_mode="rgb_array"`` whose
            observations the policy takes. Made at the first clip, closed when training ends.
        every: env steps (``model.num_timesteps``) between clips.
        clip_steps: steps per clip (one GIF frame each).
        seed: seeds the clip env at every clip's reset and the sampling of stochastic actions.
        deterministic: argmax actions (default), else sampled with the explainer's own generator.
        target, layer, method: what and how to explain, as for :class:`rlcam.ExplainedPolicy`.
        fps, scale: GIF frame rate and integer upscaling of the game frame.
        verbose: 1 prints a line per clip.
    """

    def __init__(
        self,
        env: str | Callable[[], VecEnv | gym.Env],
        every: int = 10_000,
        clip_steps: int = 100,
        seed: int = 0,
        deterministic: bool = True,
        target: str | None = None,
        layer: str | None = None,
        method: str = "gradcam",
        fps: float = 15,
        scale: int = 1,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if not (isinstance(env, str) or callable(env)):
            raise RlcamError(f"env must be an env name or a function making the env, not {type(env).__name__}.")
        if every < 1 or clip_steps < 1:
            raise RlcamError(f"every and clip_steps must be positive, not {every} and {clip_steps}.")
        self.env = env
        self.every = every
        self.clip_steps = clip_steps
        self.seed = seed
        self.deterministic = deterministic
        self.explain_kwargs = dict(target=target, layer=layer, method=method)
        self.fps = fps
        self.scale = scale
        self.clips_logged = 0
        self._venv: VecEnv | None = None
        self._next = every

    def _init_callback(self) -> None:
        as_agent(self.model)  # an unsupported model fails before training starts, not at the first clip

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every
        if not self._tensorboard_writers():
            warnings.warn(
                "AttentionCallback: the model logs to no TensorBoard directory, so only the scalar "
                "attention metrics are logged; pass tensorboard_log=... to the model for the clips.",
                stacklevel=2,
            )

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.every + 1) * self.every
            self.log_clip()
        return True

    def _on_training_end(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None

    def log_clip(self) -> Clip:
        """Record one clip now with the model as it is, log it and its metrics; returns the clip."""
        with _global_rngs_kept():
            if self._venv is None:
                self._venv = self._make_env()
            policy = ExplainedPolicy(self.model, seed=self.seed, **self.explain_kwargs)
            clip = record_clip(
                policy,
                self._venv,
                self.clip_steps,
                seed=self.seed,
                deterministic=self.deterministic,
                fps=self.fps,
                scale=self.scale,
            )
        for key, value in attention_metrics(clip.cam).items():
            self.logger.record(f"rlcam/{key}", value)
        self.logger.record("rlcam/clip_reward", float(clip.rewards[:, 0].sum()))
        writers = self._tensorboard_writers()
        if writers:
            summary = _gif_summary(TAG, clip)
            for writer in writers:
                writer.file_writer.add_summary(summary, global_step=self.num_timesteps)
                writer.flush()
        self.clips_logged += 1
        if self.verbose:
            print(f"rlcam: attention clip of {len(clip)} steps at {self.num_timesteps} timesteps")
        return clip

    def _make_env(self) -> VecEnv:
        if isinstance(self.env, str):
            venv, _ = make_env(self.env, n_envs=1, seed=self.seed)
            return venv
        made = self.env()
        if isinstance(made, gym.Env):
            made = DummyVecEnv([lambda env=made: env])
        if not isinstance(made, VecEnv):
            raise RlcamError(f"the env factory returned a {type(made).__name__}, not a VecEnv or a Gymnasium env.")
        return made

    def _tensorboard_writers(self) -> list:
        from stable_baselines3.common.logger import TensorBoardOutputFormat

        return [f.writer for f in self.logger.output_formats if isinstance(f, TensorBoardOutputFormat)]
