"""Env names -> the VecEnv the agent was trained on, with the raw RGB frame kept for the video.

- ``Breakout`` (a short Atari game name) -> ``BreakoutNoFrameskip-v4``;
- Atari ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``) get SB3's Atari preprocessing
  (``make_atari_env``: noop reset, frame skip 4, episodic life, fire reset, 84x84 grey),
  a 4-frame stack and channel-first transposition, as SB3 and rl-zoo train them;
- any other Gymnasium id (``module:EnvId-v0`` included) gets only what SB3 itself adds
  (a Monitor, and channel-last -> channel-first for images).

Rewards are not clipped here, so the annotation shows the real game score; clipping
only matters for training and does not change what the policy sees.

    obs (N, C, H, W) uint8     frames: N x (h, w, 3) uint8 RGB from env.render()
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlcam.errors import RlcamError

ATARI_FRAME_STACK = 4


@dataclass
class EnvInfo:
    """How an env name was resolved."""

    env_id: str  # the full Gymnasium id made
    atari: bool  # whether SB3's Atari preprocessing was applied


def _register_atari() -> None:
    try:
        import ale_py
    except ImportError:  # pragma: no cover - ale-py is a dependency
        return
    gym.register_envs(ale_py)


def resolve_env_id(name: str) -> EnvInfo:
    """Map a user's env name to a registered id; unknown names get close suggestions."""
    _register_atari()
    if ":" in name:
        module, _, env_id = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise RlcamError(f"cannot import module {module!r} for env {name!r} ({exc}).") from None
    else:
        env_id = name
    registry = gym.registry
    if env_id not in registry and f"{env_id}NoFrameskip-v4" in registry:
        env_id = f"{env_id}NoFrameskip-v4"
    if env_id not in registry:
        short = {k[: -len("NoFrameskip-v4")] for k in registry if k.endswith("NoFrameskip-v4")}
        close = difflib.get_close_matches(env_id, list(registry) + sorted(short), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise RlcamError(f"unknown env {name!r}: no Gymnasium env has that id.{hint}")
    entry = registry[env_id].entry_point
    atari = isinstance(entry, str) and entry.startswith("ale_py")
    return EnvInfo(env_id=env_id, atari=atari)


def make_env(name: str, n_envs: int = 1, seed: int = 0):
    """Build the VecEnv for ``name``; returns ``(venv, EnvInfo)``. Frames come from ``venv.get_images()``."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    info = resolve_env_id(name)
    env_kwargs = {"render_mode": "rgb_array"}
    try:
        if info.atari:
            if gym.spec(info.env_id).kwargs.get("frameskip", 1) != 1:
                env_kwargs["frameskip"] = 1  # AtariWrapper skips 4 frames itself (ALE/...-v5 skips by default)
            venv = make_atari_env(
                info.env_id,
                n_envs=n_envs,
                seed=seed,
                env_kwargs=env_kwargs,
                wrapper_kwargs={"clip_reward": False},
            )
            venv = VecFrameStack(venv, n_stack=ATARI_FRAME_STACK)
        else:
            venv = make_vec_env(info.env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    except RlcamError:
        raise
    except Exception as exc:  # gym.make can fail in many ways for third-party envs
        raise RlcamError(f"could not create env {info.env_id!r} ({type(exc).__name__}: {exc}).") from None
    space = venv.observation_space
    if not (isinstance(space, spaces.Box) and is_image_space(space, check_channels=False)):
        venv.close()
        raise RlcamError(f"env {info.env_id!r} does not give image observations (its space is {space}).")
    if not is_image_space_channels_first(space):
        venv = VecTransposeImage(venv)
    return venv, info


def check_compatible(venv, observation_space, action_space, env_id: str) -> None:
    """Fail before the first step when the agent cannot act in this env."""
    env_obs = venv.observation_space
    if tuple(env_obs.shape) != tuple(observation_space.shape):
        raise RlcamError(
            f"the agent expects observations of shape {tuple(observation_space.shape)} but {env_id} gives "
            f"{tuple(env_obs.shape)}; record with the env (and wrappers) the agent was trained on."
        )
    if env_obs.dtype != observation_space.dtype:
        raise RlcamError(
            f"the agent expects {observation_space.dtype} observations but {env_id} gives {env_obs.dtype}."
        )
    if not isinstance(action_space, spaces.Discrete):
        raise RlcamError(f"rlcam explains discrete actions; this agent's action space is {action_space}.")
    if not isinstance(venv.action_space, spaces.Discrete) or venv.action_space.n != action_space.n:
        raise RlcamError(
            f"the agent has {action_space.n} actions but {env_id} has {venv.action_space}; "
            "was the agent trained on another game?"
        )


def action_names(venv) -> list[str]:
    """Readable action names (ALE's action meanings), else ``a0, a1, ...``."""
    n = venv.action_space.n
    try:
        names = venv.env_method("get_action_meanings", indices=[0])[0]
    except Exception:  # not an Atari env: no meanings
        names = None
    if not names or len(names) != n:
        return [f"a{i}" for i in range(n)]
    return [str(name) for name in names]


def frames(venv) -> list[np.ndarray]:
    """The raw RGB frame of each env ``(h, w, 3)`` uint8, what the video shows."""
    images = venv.get_images()
    if any(image is None for image in images):
        raise RlcamError("the env does not render RGB frames (render_mode='rgb_array' is not supported).")
    return [np.asarray(image) for image in images]
