"""Env wrappers that record annotated videos and traces of chosen episodes, as users step their own envs.

``VecAttentionRecorder`` wraps any SB3 VecEnv (in the spirit of SB3's ``VecVideoRecorder``),
``RecordAttention`` any single Gymnasium env (in the spirit of Gymnasium's ``RecordVideo``).
Both hold an :class:`rlcam.ExplainedPolicy` and keep the user's env construction code.

Which map goes with which action: at each recorded step the wrapper explains the observation
the env is in **for the action passed to** ``step()``, whatever chose it (``model.predict``,
``explained.predict``, a sampled or exploring action, a human). The map, the explained score and
the marked action in the panel therefore always belong to the action the env executed; the bars
still show the policy's own probabilities (or Q-values), so an action the policy would not have
picked is visible as a marked short bar. Acting with ``explained.predict`` gives the same map
twice on recorded steps (once there, once here); unrecorded steps cost nothing.

A clip is one video (``<prefix>-episode-<k>.mp4`` or ``<prefix>-step-<t>.mp4``) and its trace
(the same name with ``.npz``) in ``video_folder``, existing files replaced. It starts at a step
where a trigger fires and no clip is being written (clips never overlap; a trigger firing during
a clip is ignored); it lasts ``video_length`` steps, or with ``video_length=0`` until its
episode ends. Each frame shows the state where an action was taken, so an episode of L steps
gives L frames. ``close()`` finishes a clip in progress (its trace meta says ``complete: false``).

Episodes: a Gymnasium env's episode ends at ``terminated or truncated``. A VecEnv's episode of the
recorded env ends where SB3's ``Monitor`` reports one (``"episode"`` in the info), so with
``make_atari_env`` an episode is a full game, not a life; without a Monitor, at ``done``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

import rlcam
from rlcam.api import ExplainedPolicy
from rlcam.envs import action_names, frames
from rlcam.errors import RlcamError
from rlcam.norm import NORMS
from rlcam.record import StepWriter
from rlcam.video import FrameWriter, TraceWriter

Trigger = Callable[[int], bool]


def cubic_schedule(episode: int) -> bool:
    """The default episode trigger: episodes 0, 1, 8, 27, ..., 729, then every 1000th (as Gymnasium)."""
    if episode < 1000:
        return round(episode ** (1 / 3)) ** 3 == episode
    return episode % 1000 == 0


@dataclass
class _Clip:
    name: str
    video: FrameWriter
    trace: TraceWriter
    writer: StepWriter
    steps: int = 0


class _Clips:
    """Trigger logic and the one clip being written; shared by both wrappers.

    Each wrapper tells it where a step begins (``start_if_triggered``), hands it each recorded step
    (``write``) and says when an episode ends or is cut (``episode_ended``).
    """

    def __init__(
        self,
        policy: ExplainedPolicy,
        folder,
        episode_trigger: Trigger | None,
        step_trigger: Trigger | None,
        video_length: int,
        name_prefix: str,
        names: list[str],
        fps: float,
        norm: str,
        scale: int,
        alpha: float,
        meta: dict,
    ):
        if video_length < 0:
            raise RlcamError(
                f"video_length must be 0 (whole episodes) or a positive number of steps, not {video_length}."
            )
        if not fps > 0:
            raise RlcamError(f"fps must be positive, not {fps}.")
        if not (isinstance(scale, int | np.integer) and scale >= 1):
            raise RlcamError(f"scale must be a positive integer, not {scale!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise RlcamError(f"alpha must lie in [0, 1], not {alpha}.")
        if norm not in NORMS:
            raise RlcamError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}.")
        if len(names) != policy.n_actions:
            raise RlcamError(f"the env has {len(names)} actions but the policy has {policy.n_actions}.")
        if episode_trigger is None and step_trigger is None:
            episode_trigger = cubic_schedule
        self.policy = policy
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.episode_trigger = episode_trigger
        self.step_trigger = step_trigger
        self.video_length = video_length
        self.name_prefix = name_prefix
        self.names = names
        self.fps, self.norm, self.scale, self.alpha = fps, norm, scale, alpha
        explainer = policy.explainer
        self.meta = dict(
            rlcam_version=rlcam.__version__,
            algo=explainer.algo,
            agent=None if policy.agent.path is None else str(policy.agent.path),
            agent_sha256=policy.agent.sha256,
            target=explainer.target,
            layer=explainer.layer_name,
            method=explainer.method,
            placement=explainer.placement_name,
            normalisation=norm,
            action_names=names,
            fps=fps,
            scale=scale,
            video_length=video_length,
            **meta,
        )
        self.clip: _Clip | None = None
        self.saved: list[tuple[Path, Path]] = []  # (video, trace) of every finished clip

    @property
    def recording(self) -> bool:
        return self.clip is not None

    def start_if_triggered(self, step: int, episode: int, episode_start: bool, episode_return: float) -> None:
        """Called before every step: open a clip if a trigger fires and none is open."""
        if self.clip is not None:
            return
        if episode_start and self.episode_trigger is not None and self.episode_trigger(episode):
            name = f"{self.name_prefix}-episode-{episode}"
        elif self.step_trigger is not None and self.step_trigger(step):
            name = f"{self.name_prefix}-step-{step}"
        else:
            return
        video_path = self.folder / f"{name}.mp4"
        meta = dict(self.meta, video=str(video_path), clip=name, first_step=step, first_episode=episode)
        video = FrameWriter(video_path, fps=self.fps)
        try:
            trace = TraceWriter(video_path.with_suffix(".npz"), meta)
        except BaseException:
            video.discard()
            raise
        writer = StepWriter(
            self.policy.explainer, self.names, video, trace, norm=self.norm, scale=self.scale, alpha=self.alpha
        )
        # The panel counts from where the clip starts in the run, not from zero.
        writer.episode[0] = episode
        writer.returns[0] = episode_return
        self.clip = _Clip(name, video, trace, writer)

    def write(self, obs, frame, explanation, reward: float, done: bool, info: dict, episode_over: bool) -> None:
        """One recorded step of one env: ``obs (1, ...)`` as the env gave it, the raw ``frame (h, w, 3)``
        shown when acting, the explanation of the action taken, and what the env answered."""
        if episode_over and "episode" not in info:
            info = {**info, "episode": {}}  # StepWriter reads a game over from the Monitor's key
        clip = self.clip
        clip.writer.write(obs, [frame], explanation, np.array([reward], dtype=np.float64), np.array([done]), [info])
        clip.steps += 1
        if (self.video_length and clip.steps >= self.video_length) or (not self.video_length and episode_over):
            self.finish(complete=True)

    def episode_cut(self) -> None:
        """The env was reset mid-episode: a whole-episode clip ends there."""
        if self.clip is not None and not self.video_length:
            self.finish(complete=False)
        elif self.clip is not None:
            self.clip.writer.returns[0] = 0.0

    def finish(self, complete: bool) -> None:
        clip, self.clip = self.clip, None
        if clip is None:
            return
        if clip.steps == 0:  # stopped before its first step was written: leave no empty files
            clip.video.discard()
            clip.trace.discard()
            return
        trace = clip.trace.close(extra_meta=dict(steps=clip.steps, complete=complete))
        video = clip.video.close()
        self.saved.append((video, trace))


def _check_policy(policy: ExplainedPolicy, space) -> None:
    if not isinstance(policy, ExplainedPolicy):
        raise RlcamError(
            f"policy must be an rlcam.ExplainedPolicy, not {type(policy).__name__}; "
            "wrap the model: ExplainedPolicy(model)."
        )
    if policy.n_actions is None:
        raise RlcamError(
            "the attention recorders record discrete-action policies, not this one's "
            f"{policy.agent.policy.action_space}; use 'rlcam record' (or rlcam.record) for it."
        )
    if not isinstance(space, spaces.Discrete) or space.n != policy.n_actions:
        raise RlcamError(f"the env's actions {space} do not match the policy's {policy.n_actions} discrete actions.")


class VecAttentionRecorder(VecEnvWrapper):
    """Record annotated videos and traces of chosen episodes of one env of a VecEnv.

    Use it like any VecEnv; act with any policy. The envs must render RGB frames
    (``render_mode="rgb_array"``): frames come from ``get_images()``.

    Args:
        venv: the VecEnv, with whatever wrappers the agent needs (observations as the policy takes
            them, channel-last included).
        policy: the explained policy whose maps are recorded.
        video_folder: where clips go (created if missing).
        episode_trigger: ``episode -> bool``, called at the first step of each episode of the
            recorded env (numbered from 0); default :func:`cubic_schedule` unless ``step_trigger``.
        step_trigger: ``step -> bool``, called before each ``step()`` (numbered from 0).
        video_length: steps per clip; 0: until the episode ends.
        name_prefix: clip file names start with it.
        env_index: which env is recorded (its panel says ``env 0``: the trace holds this env alone).
        fps, norm, scale, alpha: video settings, as in :class:`rlcam.RecordConfig`.
    """

    def __init__(
        self,
        venv: VecEnv,
        policy: ExplainedPolicy,
        video_folder,
        episode_trigger: Trigger | None = None,
        step_trigger: Trigger | None = None,
        video_length: int = 0,
        name_prefix: str = "rlcam",
        env_index: int = 0,
        fps: float = 30,
        norm: str = "running",
        scale: int = 3,
        alpha: float = 0.6,
    ):
        super().__init__(venv)
        if not 0 <= env_index < venv.num_envs:
            raise RlcamError(f"env_index must lie in [0, {venv.num_envs}), not {env_index}.")
        _check_policy(policy, venv.action_space)
        self.clips = _Clips(
            policy,
            video_folder,
            episode_trigger,
            step_trigger,
            video_length,
            name_prefix,
            action_names(venv),
            fps,
            norm,
            scale,
            alpha,
            meta=dict(wrapper="VecAttentionRecorder", env_index=env_index, n_envs=venv.num_envs),
        )
        self.policy = policy
        self.env_index = env_index
        from stable_baselines3.common.monitor import Monitor

        self._monitored = bool(venv.env_is_wrapped(Monitor, indices=[env_index])[0])
        self.step_id = 0  # steps taken through this wrapper
        self.episode_id = 0  # episodes of the recorded env begun before the current one
        self._episode_start = False
        self._episode_steps = 0
        self._episode_return = 0.0
        self._obs = None
        self._pending = None  # (obs, frame, explanation) of the step in flight

    @property
    def saved(self) -> list[tuple[Path, Path]]:
        """``(video, trace)`` of every finished clip, in order."""
        return self.clips.saved

    @property
    def recording(self) -> bool:
        return self.clips.recording

    def reset(self):
        obs = self.venv.reset()
        if self._episode_steps:  # reset mid-episode: that episode is over
            self.episode_id += 1
            self.clips.episode_cut()
        self._episode_start, self._episode_steps, self._episode_return = True, 0, 0.0
        self._obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        if self._obs is None:
            raise RuntimeError("call reset() before step() on a VecAttentionRecorder.")
        i = self.env_index
        self.clips.start_if_triggered(self.step_id, self.episode_id, self._episode_start, self._episode_return)
        self._episode_start = False
        if self.clips.recording:
            obs = self._obs[i : i + 1]
            frame = frames(self.venv)[i]  # before the step: the state the action is taken in
            explanation = self.policy.explain(obs, actions=np.asarray(actions).reshape(-1)[i : i + 1])
            self._pending = (obs, frame, explanation)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        i = self.env_index
        over = ("episode" in infos[i]) if self._monitored else bool(dones[i])
        self._episode_return += float(rewards[i])
        if self._pending is not None:
            explained_obs, frame, explanation = self._pending
            self._pending = None
            self.clips.write(explained_obs, frame, explanation, float(rewards[i]), bool(dones[i]), infos[i], over)
        self.step_id += 1
        self._episode_steps += 1
        if over:
            self.episode_id += 1
            self._episode_start, self._episode_steps, self._episode_return = True, 0, 0.0
        self._obs = obs
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Finish the clip in progress (marked incomplete), then close the envs."""
        try:
            self.clips.finish(complete=False)
        finally:
            self.venv.close()


class RecordAttention(gym.Wrapper):
    """Record annotated videos and traces of chosen episodes of a Gymnasium env.

    Args:
        env: made with ``render_mode="rgb_array"``; its observations as the policy takes them
            (one observation, channel-last included).
        policy: the explained policy whose maps are recorded.
        video_folder, episode_trigger, step_trigger, video_length, name_prefix, fps, norm, scale, alpha:
            as for :class:`VecAttentionRecorder`; episodes end at ``terminated or truncated``.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: ExplainedPolicy,
        video_folder,
        episode_trigger: Trigger | None = None,
        step_trigger: Trigger | None = None,
        video_length: int = 0,
        name_prefix: str = "rlcam",
        fps: float = 30,
        norm: str = "running",
        scale: int = 3,
        alpha: float = 0.6,
    ):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise RlcamError(f"the env must be made with render_mode='rgb_array', not {env.render_mode!r}.")
        _check_policy(policy, env.action_space)
        meanings = getattr(env.unwrapped, "get_action_meanings", None)
        names = [str(n) for n in meanings()] if meanings is not None else []
        if len(names) != env.action_space.n:
            names = [f"a{i}" for i in range(env.action_space.n)]
        self.clips = _Clips(
            policy,
            video_folder,
            episode_trigger,
            step_trigger,
            video_length,
            name_prefix,
            names,
            fps,
            norm,
            scale,
            alpha,
            meta=dict(wrapper="RecordAttention"),
        )
        self.policy = policy
        self.step_id = 0
        self.episode_id = 0
        self._episode_start = False
        self._episode_steps = 0
        self._episode_return = 0.0
        self._obs = None

    @property
    def saved(self) -> list[tuple[Path, Path]]:
        """``(video, trace)`` of every finished clip, in order."""
        return self.clips.saved

    @property
    def recording(self) -> bool:
        return self.clips.recording

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self._episode_steps:  # reset before the episode ended: it is over now
            self.episode_id += 1
            self.clips.episode_cut()
        self._episode_start, self._episode_steps, self._episode_return = True, 0, 0.0
        self._obs = obs
        return obs, info

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step() on a RecordAttention env.")
        self.clips.start_if_triggered(self.step_id, self.episode_id, self._episode_start, self._episode_return)
        self._episode_start = False
        pending = None
        if self.clips.recording:
            frame = np.asarray(self.env.render())  # before the step: the state the action is taken in
            explanation = self.policy.explain(self._obs, actions=[action])
            pending = (explanation, frame)
        obs, reward, terminated, truncated, info = self.env.step(action)
        over = bool(terminated or truncated)
        self._episode_return += float(reward)
        if pending is not None:
            explanation, frame = pending
            self.clips.write(np.asarray(self._obs)[None], frame, explanation, float(reward), over, info, over)
        self.step_id += 1
        self._episode_steps += 1
        if over:
            self.episode_id += 1
            self._episode_steps, self._episode_return = 0, 0.0
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Finish the clip in progress (marked incomplete), then close the env."""
        try:
            self.clips.finish(complete=False)
        finally:
            super().close()
