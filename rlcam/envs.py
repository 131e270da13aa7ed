"""Env names -> the VecEnv the agent was trained on, with the raw RGB frame kept for the video.

- ``Breakout`` (a short Atari game name) -> ``BreakoutNoFrameskip-v4``;
- Atari ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``) get SB3's Atari preprocessing
  (``make_atari_env``: noop reset, frame skip 4, episodic life, fire reset, 84x84 grey),
  a frame stack (4, as SB3 and rl-zoo train them, or ``frame_stack``; given the agent's
  observation space, the agent's own depth) and channel-first transposition;
- any other Gymnasium id (``module:EnvId-v0`` included) gets only what SB3 itself adds
  (a Monitor, and channel-last -> channel-first for uint8 images), plus ``frame_stack`` frames
  if asked;
- an ``EnvRecipe`` (what ``rlcam.zoo`` reads from an rl-zoo run folder) is built the way that
  run's training built it: its env kwargs, its wrappers, its frozen VecNormalize statistics,
  its frame stack.

Given the agent's observation space, the layout follows the agent: a channel-last env is made
channel-first (or left alone) so that the shapes match, for uint8 and float observations alike
(SB3 transposes only uint8 images, so a ``normalize_images=False`` agent saw its env's own layout).

Rewards are not clipped here, so the annotation shows the real game score; clipping
only matters for training and does not change what the policy sees.

    obs (N, C, H, W) uint8 or float     frames: N x (h, w, 3) uint8 RGB from env.render()
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnvWrapper

from rlcam.errors import RlcamError

DEFAULT_ENV = "Breakout"  # the env of a plain zip when none is named
ATARI_FRAME_STACK = 4  # SB3's and rl-zoo's Atari default, used when nothing says otherwise


@dataclass
class EnvInfo:
    """How an env name was resolved, and how its observations were shaped."""

    env_id: str  # the full Gymnasium id made
    atari: bool  # whether SB3's Atari preprocessing was applied
    frame_stack: int = 1  # frames stacked into one observation (1: none)
    transposed: bool = False  # channel-last frames made channel-first
    normalized: bool = False  # frozen VecNormalize statistics applied (a run folder's)
    source: str | None = None  # the rl-zoo run folder the env was read from, if any


@dataclass(frozen=True)
class EnvRecipe:
    """How a training run built its env; ``make_env`` builds it the same way.

    ``wrap`` is applied to each env after SB3's Monitor (``make_vec_env``'s ``wrapper_class``),
    ``wrap_vec`` to the VecEnv before the frame stack, as rl-zoo does.
    """

    env_id: str
    env_kwargs: dict = field(default_factory=dict)
    wrap: Callable[[gym.Env], gym.Env] | None = None
    wrap_vec: Callable | None = None  # VecEnv -> VecEnv (frozen VecNormalize)
    frame_stack: int | None = None
    atari: bool = False  # whether ``wrap`` holds SB3's AtariWrapper
    source: str = ""  # where the recipe came from, for messages

    def __str__(self) -> str:
        return self.env_id


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


def make_env(
    name: str | EnvRecipe,
    n_envs: int = 1,
    seed: int = 0,
    frame_stack: int | None = None,
    agent_space: spaces.Space | None = None,
):
    """Build the VecEnv for ``name``; returns ``(venv, EnvInfo)``. Frames come from ``venv.get_images()``.

    Args:
        name: an env name (see the module docstring) or an ``EnvRecipe``.
        n_envs, seed: envs stepped together; env i is seeded ``seed + i``.
        frame_stack: frames stacked into one observation. Default: the recipe's; for Atari, the
            agent's own depth when ``agent_space`` tells it, else 4; otherwise none.
        agent_space: the agent's observation space. The layout is then chosen to match it, and a
            frame stack that cannot match it is refused in one sentence.
    """
    if frame_stack is not None and (isinstance(frame_stack, bool) or not isinstance(frame_stack, int)):
        raise RlcamError(f"--frame-stack must be a whole number of frames, not {frame_stack!r}.")
    if frame_stack is not None and frame_stack < 1:
        raise RlcamError(f"--frame-stack must be at least 1, not {frame_stack}.")
    recipe = name if isinstance(name, EnvRecipe) else None
    info = resolve_env_id(recipe.env_id if recipe else name)
    if recipe is not None:
        info = dataclasses.replace(info, atari=recipe.atari, source=recipe.source)
        if frame_stack is not None and frame_stack != (recipe.frame_stack or 1):
            raise RlcamError(
                f"the run in {recipe.source} stacked {recipe.frame_stack or 1} frame(s) in training "
                f"(frame_stack in its config.yml), not --frame-stack {frame_stack}; leave --frame-stack out."
            )
    venv = _base_venv(info, recipe, n_envs, seed)
    if isinstance(venv.observation_space, spaces.Dict):
        return _dict_venv(venv, info, frame_stack)
    try:
        frame_space = venv.observation_space
        _check_image(frame_space, info.env_id)
        if recipe is not None:
            stack = recipe.frame_stack or 1
        elif frame_stack is not None:
            stack = frame_stack
        elif info.atari:
            stack = _stack_depth(frame_space, agent_space) or ATARI_FRAME_STACK
        else:
            stack = 1
        if stack > 1:
            from stable_baselines3.common.vec_env import VecFrameStack

            venv = VecFrameStack(venv, n_stack=stack)
        venv, transposed = _match_layout(venv, agent_space)
        info = dataclasses.replace(
            info,
            frame_stack=stack,
            transposed=transposed,
            normalized=recipe is not None and recipe.wrap_vec is not None,
        )
        if agent_space is not None:
            _check_stack(venv.observation_space, frame_space, agent_space, info, recipe, explicit=frame_stack)
    except BaseException:
        venv.close()
        raise
    return venv, info


def _dict_venv(venv, info: EnvInfo, frame_stack: int | None):
    """A Dict-observation env (image keys + vector keys) laid out as SB3 trains on it: image keys
    channel-first; no frame stack (a stacked Dict agent is trained with its own wrappers)."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    try:
        space = venv.observation_space
        images = [k for k, sub in space.spaces.items() if is_image_space(sub, check_channels=False)]
        if not images:
            raise RlcamError(
                f"env {info.env_id!r} gives Dict observations without an image key ({space}); "
                "rlcam explains agents that act from pixels."
            )
        if frame_stack not in (None, 1):
            raise RlcamError(f"--frame-stack applies to image observations, not to {info.env_id}'s Dict ones.")
        transposed = any(not is_image_space_channels_first(space[k]) for k in images)
        if transposed:
            venv = VecTransposeImage(venv)
    except BaseException:
        venv.close()
        raise
    return venv, dataclasses.replace(info, frame_stack=1, transposed=transposed)


def _base_venv(info: EnvInfo, recipe: EnvRecipe | None, n_envs: int, seed: int):
    """The VecEnv before the frame stack: the env, its per-env wrappers and, for a recipe, its VecNormalize."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env

    env_kwargs = {"render_mode": "rgb_array"}  # the video's frames; no env changes its observations for it
    venv = None
    try:
        if recipe is not None:
            venv = make_vec_env(
                info.env_id,
                n_envs=n_envs,
                seed=seed,
                env_kwargs={**recipe.env_kwargs, **env_kwargs},
                wrapper_class=recipe.wrap,
            )
            if recipe.wrap_vec is not None:
                venv = recipe.wrap_vec(venv)
        elif info.atari:
            if gym.spec(info.env_id).kwargs.get("frameskip", 1) != 1:
                env_kwargs["frameskip"] = 1  # AtariWrapper skips 4 frames itself (ALE/...-v5 skips by default)
            venv = make_atari_env(
                info.env_id,
                n_envs=n_envs,
                seed=seed,
                env_kwargs=env_kwargs,
                wrapper_kwargs={"clip_reward": False},
            )
        else:
            venv = make_vec_env(info.env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    except Exception as exc:  # gym.make and third-party wrappers can fail in many ways
        if venv is not None:
            venv.close()
        if isinstance(exc, RlcamError):
            raise
        raise RlcamError(f"could not create env {info.env_id!r} ({type(exc).__name__}: {exc}).") from None
    _draw_faster(venv)
    return venv


def _draw_faster(venv) -> None:
    """CarRacing envs get ``rlcam.fastroad``'s road drawing: the same pixels, about twice the steps/s."""
    for env in getattr(venv.unwrapped, "envs", ()):  # DummyVecEnv's envs, under any VecEnv wrapper
        if type(env.unwrapped).__module__ == "gymnasium.envs.box2d.car_racing":
            from rlcam.fastroad import speed_up

            speed_up(env)


def _check_image(space, env_id: str) -> None:
    """Pixels: a 3-D Box (H, W, C) or (C, H, W), uint8 or float (``normalize_images=False`` agents)."""
    numeric = isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.number)
    if not (numeric and len(space.shape) == 3):
        raise RlcamError(
            f"env {env_id!r} does not give image observations (its space is {space}); "
            "rlcam explains agents that act from pixels, (H, W, C) or (C, H, W) arrays."
        )


def _frame_layout(shape: tuple) -> tuple[int, tuple]:
    """(channels, (H, W)) of one observation, by SB3's rule: the smallest axis first means channel-first."""
    if int(np.argmin(shape)) == 0:
        return shape[0], tuple(shape[1:])
    return shape[-1], tuple(shape[:2])


def _agent_channels(agent_space, hw: tuple) -> int | None:
    """The agent's channel count when its frames are ``hw`` (either layout), else None."""
    shape = getattr(agent_space, "shape", None)
    if not isinstance(agent_space, spaces.Box) or shape is None or len(shape) != 3:
        return None
    if tuple(shape[1:]) == hw:
        return shape[0]
    if tuple(shape[:2]) == hw:
        return shape[2]
    return None


def _stack_depth(frame_space, agent_space) -> int | None:
    """How many env frames the agent's observations stack, when its space says so unambiguously."""
    if agent_space is None:
        return None
    channels, hw = _frame_layout(tuple(frame_space.shape))
    agent = _agent_channels(agent_space, hw)
    return agent // channels if agent and agent % channels == 0 else None


class ChannelsFirst(VecEnvWrapper):
    """(N, H, W, C) -> (N, C, H, W) for any Box, float included (SB3's VecTransposeImage takes uint8 images only)."""

    def __init__(self, venv):
        space = venv.observation_space
        low, high = (np.transpose(bound, (2, 0, 1)) for bound in (space.low, space.high))
        super().__init__(venv, observation_space=spaces.Box(low, high, dtype=space.dtype))

    def reset(self):
        return np.transpose(self.venv.reset(), (0, 3, 1, 2))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for item in infos:
            if "terminal_observation" in item:
                item["terminal_observation"] = np.transpose(item["terminal_observation"], (2, 0, 1))
        return np.transpose(obs, (0, 3, 1, 2)), rewards, dones, infos


def _match_layout(venv, agent_space):
    """Channel-first as SB3 makes it, or whichever layout the agent's space shows; ``(venv, transposed)``."""
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.vec_env import VecTransposeImage

    shape = tuple(venv.observation_space.shape)
    channels_last = int(np.argmin(shape)) != 0
    sb3_image = is_image_space(venv.observation_space, check_channels=False)  # SB3 transposes only these
    want = tuple(agent_space.shape) if isinstance(agent_space, spaces.Box) else None
    if want == shape:
        return venv, False
    if want == (shape[2], shape[0], shape[1]) or (want is None and sb3_image and channels_last):
        return (VecTransposeImage(venv) if sb3_image and channels_last else ChannelsFirst(venv)), True
    if sb3_image and channels_last:
        return VecTransposeImage(venv), True  # SB3's convention; check_compatible names the mismatch
    return venv, False


def _check_stack(space, frame_space, agent_space, info: EnvInfo, recipe: EnvRecipe | None, explicit) -> None:
    """One sentence when the agent's observations are a different number of these frames than the env stacks."""
    if not isinstance(agent_space, spaces.Box) or tuple(space.shape) == tuple(agent_space.shape):
        return
    channels, hw = _frame_layout(tuple(frame_space.shape))
    agent = _agent_channels(agent_space, hw)
    if not agent or agent % channels or agent // channels == info.frame_stack:
        return  # not a question of stack depth; check_compatible names the mismatch
    depth, shape = agent // channels, tuple(agent_space.shape)
    frame = f"{channels}-channel {hw[0]}x{hw[1]} frame"
    if recipe is not None:
        raise RlcamError(
            f"the agent's observations {shape} are {depth} stacked {frame}s but its run folder {recipe.source} says "
            f"frame_stack {info.frame_stack}; the zip and the run's config.yml do not belong together."
        )
    if explicit is not None:
        raise RlcamError(
            f"the agent's observations {shape} are {depth} stacked {frame}s but --frame-stack {explicit} gives "
            f"{tuple(space.shape)}; pass --frame-stack {depth} or leave it out."
        )
    raise RlcamError(
        f"the agent's observations {shape} hold {depth}x the channels of {info.env_id}'s {frame}s "
        f"({tuple(space.shape)}); if it was trained on a stack of {depth} frames, pass --frame-stack {depth}."
    )


def _check_dict(env_obs, agent_obs, env_id: str) -> None:
    if not (isinstance(env_obs, spaces.Dict) and isinstance(agent_obs, spaces.Dict)):
        raise RlcamError(f"the agent observes {agent_obs} but {env_id} gives {env_obs}.")
    if set(env_obs.spaces) != set(agent_obs.spaces):
        raise RlcamError(
            f"the agent observes the keys {', '.join(sorted(agent_obs.spaces))} but {env_id} gives "
            f"{', '.join(sorted(env_obs.spaces))}; record with the env (and wrappers) the agent was trained on."
        )
    for key, want in agent_obs.spaces.items():
        got = env_obs[key]
        if type(got) is not type(want) or got.shape != want.shape or got.dtype != want.dtype:
            raise RlcamError(f"the agent expects {key!r} as {want} but {env_id} gives {got}.")


def check_compatible(venv, observation_space, action_space, env_id: str) -> None:
    """Fail before the first step when the agent cannot act in this env."""
    env_obs = venv.observation_space
    if isinstance(env_obs, spaces.Dict) or isinstance(observation_space, spaces.Dict):
        _check_dict(env_obs, observation_space, env_id)
    elif tuple(env_obs.shape) != tuple(observation_space.shape):
        raise RlcamError(
            f"the agent expects observations of shape {tuple(observation_space.shape)} but {env_id} gives "
            f"{tuple(env_obs.shape)}; record with the env (and wrappers) the agent was trained on."
        )
    if not isinstance(env_obs, spaces.Dict) and env_obs.dtype != observation_space.dtype:
        raise RlcamError(
            f"the agent expects {observation_space.dtype} observations but {env_id} gives {env_obs.dtype}."
        )
    if isinstance(action_space, spaces.Discrete):
        if not isinstance(venv.action_space, spaces.Discrete) or venv.action_space.n != action_space.n:
            raise RlcamError(
                f"the agent has {action_space.n} actions but {env_id} has {venv.action_space}; "
                "was the agent trained on another game?"
            )
        return
    env_actions = venv.action_space
    same = type(env_actions) is type(action_space) and tuple(env_actions.shape) == tuple(action_space.shape)
    if same and isinstance(action_space, spaces.Box):
        same = np.allclose(env_actions.low, action_space.low) and np.allclose(env_actions.high, action_space.high)
    if same and isinstance(action_space, spaces.MultiDiscrete):
        same = np.array_equal(env_actions.nvec, action_space.nvec)
    if not same:
        raise RlcamError(
            f"the agent acts in {action_space} but {env_id} takes {env_actions}; was it trained on another env?"
        )


def describe_observations(space, normalize_images: bool = True) -> str:
    """One line on an agent's observations: layout, channels, dtype and what the policy divides them by."""
    if not (isinstance(space, spaces.Box) and len(space.shape) == 3):
        return f"{space}: not an image"
    from stable_baselines3.common.preprocessing import is_image_space

    channels, hw = _frame_layout(tuple(space.shape))
    layout = "channel-first" if int(np.argmin(space.shape)) == 0 else "channel-last"
    if normalize_images and is_image_space(space, check_channels=False):
        units = "divided by 255 by the policy"
    else:
        units = "fed to the policy as they are" + ("" if normalize_images else " (normalize_images=False)")
    return f"{layout} {hw[0]}x{hw[1]}, {channels} channel(s), {space.dtype}, {units}"


# Names of continuous action components for envs whose docs name them.
COMPONENT_NAMES = {"CarRacing": ("steer", "gas", "brake")}


def action_names(venv) -> list[str]:
    """Readable action names (ALE's action meanings), else ``a0, a1, ...``.

    For other action spaces, one name per component of a ``Box`` (``COMPONENT_NAMES`` where known),
    per part of a ``MultiDiscrete``/``MultiBinary``.
    """
    space = venv.action_space
    if not isinstance(space, spaces.Discrete):
        n = int(np.prod(space.shape))
        try:
            env_id = str(venv.get_attr("spec", indices=[0])[0].id)
        except Exception:  # no spec: an env built by hand
            env_id = ""
        known = next((v for k, v in COMPONENT_NAMES.items() if k in env_id), None)
        return list(known) if known and len(known) == n else [f"a{i}" for i in range(n)]
    n = space.n
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
