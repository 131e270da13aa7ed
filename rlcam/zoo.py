"""rl-zoo run folders as agents: the model, and the env built exactly as its training built it.

An RL Baselines3 Zoo (rl-zoo) training run leaves a folder like this::

    logs/ppo/BreakoutNoFrameskip-v4_1/        <log folder>/<algo>/<env name>_<exp id>
        BreakoutNoFrameskip-v4.zip            the final model
        best_model.zip                        the best one by evaluation (EvalCallback)
        rl_model_100000_steps.zip             checkpoints (CheckpointCallback)
        BreakoutNoFrameskip-v4/               the run's parameters
            config.yml                        hyperparameters: env_wrapper, frame_stack, normalize, ...
            args.yml                          the command line: env, env_kwargs, algo, ...
            vecnormalize.pkl                  VecNormalize statistics, when normalize was on

(the env name is the env id with "/" replaced by "-", e.g. ``ALE-Breakout-v5``). ``open_run``
reads those files into an ``EnvRecipe`` that ``rlcam.envs.make_env`` builds: the env id and
env_kwargs from args.yml, the wrappers and frame stack from config.yml, the frozen observation
statistics from vecnormalize.pkl, applied in rl-zoo's order (wrappers, VecNormalize, frame stack,
channel-first transposition).

Nothing in these files is executed. rl-zoo writes the YAML files with ``yaml.dump`` of
``OrderedDict`` objects and reads them with PyYAML's unsafe loader; here PyYAML's SafeLoader is
extended only to build plain dicts and tuples from the two Python tags rl-zoo writes, and any
other tag is refused. The VecNormalize pickle is walked by ``rlcam.safeload.read_pickle`` (which
parses opcodes and calls nothing) and only its statistics are taken, as numbers. Wrappers named
in ``env_wrapper`` are looked up in a short allowlist (``WRAPPERS``); a run naming any other is
refused, naming it.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3.common.atari_wrappers import AtariWrapper

from rlcam.envs import DEFAULT_ENV, EnvRecipe, resolve_env_id
from rlcam.errors import RlcamError
from rlcam.safeload import Call, Global, read_pickle

_MAX_YAML_BYTES = 1 << 20  # rl-zoo's config.yml and args.yml are a few hundred bytes
_MAX_PICKLE_BYTES = 1 << 28  # statistics of a 1e7-element observation, with room to spare


# -- YAML: plain data and rl-zoo's two Python tags, nothing else ----------------------------------------


class _ZooLoader(yaml.SafeLoader):
    """SafeLoader plus the tags ``yaml.dump`` gives rl-zoo's OrderedDicts and tuples, built as dict and tuple."""


def _ordered_dict(loader: _ZooLoader, node: yaml.Node) -> dict:
    # yaml.dump writes OrderedDict(items) as "!!python/object/apply:collections.OrderedDict" over the
    # sequence of its call arguments: one argument, the list of [key, value] pairs.
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    pairs = args[0] if args and len(args) == 1 and isinstance(args[0], list) else None
    plain_key = (str, int, float, bool, type(None))
    if pairs is None or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], plain_key) for p in pairs):
        raise yaml.constructor.ConstructorError(
            None, None, "an OrderedDict in a form rl-zoo does not write", node.start_mark
        )
    return {key: value for key, value in pairs}


def _tuple(loader: _ZooLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))


class _Refused(yaml.YAMLError):
    def __init__(self, tag: str):
        super().__init__(tag)
        self.tag = tag


def _undefined(loader: _ZooLoader, node: yaml.Node):
    raise _Refused(node.tag)


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_ZooLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
_ZooLoader.add_constructor(None, _undefined)  # every other tag: SafeLoader's own plus the two above only


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def load_yaml(path: Path) -> dict:
    """A config.yml or args.yml as a plain dict; Python tags other than rl-zoo's two are refused."""
    size = path.stat().st_size
    if size > _MAX_YAML_BYTES:
        raise RlcamError(f"{path} is {size} bytes, far more than an rl-zoo {path.name}; it is not one.")
    try:
        value = yaml.load(path.read_bytes(), Loader=_ZooLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise RlcamError(
            f"{path} holds a YAML tag rlcam does not read ({_short_tag(exc.tag)}); rlcam builds plain YAML and "
            "rl-zoo's OrderedDict and tuple tags only, and runs nothing from the file."
        ) from None
    except (yaml.YAMLError, TypeError, RecursionError) as exc:  # TypeError: a mapping key that is a list
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]
        raise RlcamError(f"{path} is not YAML rlcam can read ({problem}).") from None
    if not isinstance(value, dict):
        raise RlcamError(f"{path} does not hold a mapping of settings, as rl-zoo writes it.")
    return value


# -- VecNormalize's pickle: its statistics as numbers ---------------------------------------------------

_VECNORMALIZE = Global("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize")
_RUNNING_MEAN_STD = Global("stable_baselines3.common.running_mean_std", "RunningMeanStd")
_NUMPY_CORE = ("numpy._core", "numpy.core")  # numpy 2 and numpy 1 module names


class _Unreadable(Exception):
    """Part of the pickle that is not the plain statistics VecNormalize saves; the message says which."""


@dataclass(frozen=True)
class ObsStats:
    """What ``VecNormalize`` needs to normalise observations as it did at the end of training."""

    norm_obs: bool
    mean: np.ndarray | None  # float64, the observation's shape; None when norm_obs is off
    var: np.ndarray | None
    count: float
    clip_obs: float
    epsilon: float


def _dtype(node) -> np.dtype:
    """``numpy.dtype(code, False, True)`` with BUILD's ``(version, byteorder, ...)`` state."""
    if not (isinstance(node, Call) and node.func == Global("numpy", "dtype") and node.args):
        raise _Unreadable("an array whose dtype is not a numpy dtype")
    code = node.args[0]
    order = node.state[1] if isinstance(node.state, tuple) and len(node.state) > 1 else "|"
    try:
        dtype = np.dtype(code)
    except TypeError:
        raise _Unreadable(f"an array of dtype {code!r}") from None
    if dtype.kind not in "biuf" or order not in ("<", ">", "|", "="):
        raise _Unreadable(f"an array of dtype {code!r}")
    return dtype.newbyteorder(order) if order in "<>" else dtype


def _array(node) -> np.ndarray:
    """A numeric numpy array pickled by ``ndarray.__reduce_ex__`` (protocol 2-4 or 5), read from its bytes."""
    if not (isinstance(node, Call) and isinstance(node.func, Global) and node.func.module.startswith(_NUMPY_CORE)):
        raise _Unreadable(f"{getattr(node, 'func', type(node).__name__)} where an array belongs")
    if node.func.name == "_reconstruct" and isinstance(node.state, tuple) and len(node.state) == 5:
        _, shape, dtype_node, fortran, raw = node.state
        order = "F" if fortran else "C"
    elif node.func.name == "_frombuffer" and len(node.args) == 4:
        raw, dtype_node, shape, order = node.args
    else:
        raise _Unreadable(f"{node.func} where an array belongs")
    dtype = _dtype(dtype_node)
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Unreadable(f"an array of shape {shape!r}")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != dtype.itemsize * math.prod(shape) or order not in "CF":
        raise _Unreadable("an array whose bytes do not match its shape")
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order=order).astype(np.float64)


def _number(node) -> float:
    """A Python number, or a numpy scalar pickled as ``scalar(dtype, bytes)``."""
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return float(node)
    if isinstance(node, Call) and node.func in (Global(m + ".multiarray", "scalar") for m in _NUMPY_CORE):
        if len(node.args) == 2 and isinstance(node.args[1], (bytes, bytearray)):
            dtype = _dtype(node.args[0])
            if len(node.args[1]) == dtype.itemsize:
                return float(np.frombuffer(bytes(node.args[1]), dtype=dtype)[0])
    raise _Unreadable(f"{getattr(node, 'func', type(node).__name__)} where a number belongs")


def read_vecnormalize(path: Path) -> ObsStats:
    """The observation statistics of a ``VecNormalize.save`` pickle, read without unpickling it."""
    size = path.stat().st_size
    if size > _MAX_PICKLE_BYTES:
        raise RlcamError(f"{path} is {size} bytes, far more than VecNormalize statistics; it is not one.")
    try:
        tree = read_pickle(path.read_bytes())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise RlcamError(f"{path} is not a pickle rlcam reads without running it ({exc}).") from None
    try:
        if not (isinstance(tree, Call) and tree.func == _VECNORMALIZE and isinstance(tree.state, dict)):
            raise _Unreadable(f"{getattr(tree, 'func', type(tree).__name__)} instead of SB3's VecNormalize")
        state = tree.state
        norm_obs = state.get("norm_obs")
        if not isinstance(norm_obs, bool):
            raise _Unreadable("no norm_obs flag")
        mean = var = None
        count = 0.0
        if norm_obs:  # SB3 keeps no observation statistics when norm_obs is off
            rms = state.get("obs_rms")
            if isinstance(rms, dict):
                raise _Unreadable("statistics of dict observations, which rlcam does not record")
            if not (isinstance(rms, Call) and rms.func == _RUNNING_MEAN_STD and isinstance(rms.state, dict)):
                raise _Unreadable(f"{getattr(rms, 'func', type(rms).__name__)} as obs_rms instead of a RunningMeanStd")
            mean, var = _array(rms.state.get("mean")), _array(rms.state.get("var"))
            count = _number(rms.state.get("count"))
        stats = ObsStats(
            norm_obs=norm_obs,
            mean=mean,
            var=var,
            count=count,
            clip_obs=_number(state.get("clip_obs")),
            epsilon=_number(state.get("epsilon")),
        )
    except _Unreadable as exc:
        raise RlcamError(f"{path} is not VecNormalize statistics rlcam reads: it holds {exc}.") from None
    if norm_obs and (
        mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any()
    ):
        raise RlcamError(f"{path} holds observation statistics that are not finite means and variances.")
    if not (stats.clip_obs > 0 and stats.epsilon >= 0):
        raise RlcamError(
            f"{path} holds clip_obs {stats.clip_obs} and epsilon {stats.epsilon}, which no VecNormalize uses."
        )
    return stats


def frozen_vecnormalize(venv, stats: ObsStats, source: Path):
    """SB3's own ``VecNormalize`` over ``venv`` with the saved statistics, not updated, rewards untouched.

    This is what rl-zoo's enjoy script gets from ``VecNormalize.load`` with ``training=False`` and
    ``norm_reward=False``, so the observations are normalised by SB3's code, not a copy of it.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    shape = tuple(venv.observation_space.shape)
    if stats.norm_obs and stats.mean.shape != shape:
        raise RlcamError(
            f"{source} holds statistics for observations of shape {stats.mean.shape} but the run's env gives "
            f"{shape}; the statistics belong to another run."
        )
    normalized = VecNormalize(
        venv, training=False, norm_obs=stats.norm_obs, norm_reward=False, clip_obs=stats.clip_obs, epsilon=stats.epsilon
    )
    if stats.norm_obs:
        normalized.obs_rms.mean = stats.mean.copy()
        normalized.obs_rms.var = stats.var.copy()
        normalized.obs_rms.count = stats.count
    return normalized


# -- env_wrapper: an allowlist of wrappers, by the names rl-zoo configs use -----------------------------


class FrameSkip(gym.Wrapper):
    """rl-zoo's ``rl_zoo3.wrappers.FrameSkip`` (rl_zoo3 is not a dependency): the action repeated ``skip``
    times, the rewards summed, stopping early at an episode's end; the last observation is returned."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        self.skip = skip

    def step(self, action):
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class CvGrayScaleObservation(gym.ObservationWrapper):
    """Gymnasium 0.29's ``GrayScaleObservation``: OpenCV's RGB -> grey conversion.

    Gymnasium 1.x renamed it ``GrayscaleObservation`` and changed the weights (0.2125, 0.7154,
    0.0721 instead of OpenCV's 0.299, 0.587, 0.114), so a run that names the old class saw these values.
    """

    def __init__(self, env: gym.Env, keep_dim: bool = False):
        super().__init__(env)
        self.keep_dim = keep_dim
        hw = env.observation_space.shape[:2]
        self.observation_space = spaces.Box(0, 255, (*hw, 1) if keep_dim else hw, dtype=np.uint8)

    def observation(self, observation):
        grey = cv2.cvtColor(observation, cv2.COLOR_RGB2GRAY)
        return grey[..., None] if self.keep_dim else grey


def _atari(env: gym.Env, **kwargs) -> gym.Env:
    # Reward clipping only shapes training; the panel shows the real game score, as for rlcam's own Atari envs.
    return AtariWrapper(env, **{**kwargs, "clip_reward": False})


def _resize(env: gym.Env, shape) -> gym.Env:
    from gymnasium.wrappers import ResizeObservation

    # Gymnasium 0.29 took an int for a square (rl-zoo's "shape: 64"); 1.x takes (height, width) only.
    return ResizeObservation(env, (shape, shape) if isinstance(shape, int) else tuple(shape))


def _grayscale(env: gym.Env, keep_dim: bool = False) -> gym.Env:
    from gymnasium.wrappers import GrayscaleObservation

    return GrayscaleObservation(env, keep_dim=keep_dim)


_ATARI = "stable_baselines3.common.atari_wrappers.AtariWrapper"

# name in a config.yml -> builder(env, **kwargs). Why each: AtariWrapper is in every rl-zoo Atari
# config; FrameSkip, YAMLCompatResizeObservation and GrayscaleObservation make up its CarRacing
# config (the pixel env for continuous control); ResizeObservation and the 0.29 names are the same
# image transforms as older configs name them. All only reshape pixels, skip frames or end episodes.
WRAPPERS: dict[str, Callable[..., gym.Env]] = {
    _ATARI: _atari,
    "rl_zoo3.wrappers.FrameSkip": FrameSkip,
    "rl_zoo3.wrappers.YAMLCompatResizeObservation": _resize,
    "gymnasium.wrappers.ResizeObservation": _resize,
    "gymnasium.wrappers.transform_observation.ResizeObservation": _resize,
    "gymnasium.wrappers.resize_observation.ResizeObservation": _resize,
    "gymnasium.wrappers.GrayscaleObservation": _grayscale,
    "gymnasium.wrappers.transform_observation.GrayscaleObservation": _grayscale,
    "gymnasium.wrappers.GrayScaleObservation": CvGrayScaleObservation,
    "gymnasium.wrappers.gray_scale_observation.GrayScaleObservation": CvGrayScaleObservation,
}


def _accepts(name: str, kwargs: dict) -> None:
    """Raise TypeError unless the wrapper takes these keyword arguments (after the env)."""
    target = AtariWrapper if name == _ATARI else WRAPPERS[name]
    params = list(inspect.signature(target).parameters.values())[1:]
    inspect.Signature(params).bind(**kwargs)


def parse_wrappers(value, source: Path) -> list[tuple[str, dict]]:
    """``env_wrapper`` as rl-zoo's ``get_wrapper_class`` reads it: a name, ``{name: kwargs}``, or a list of those."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    parsed = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            ((name, kwargs),) = item.items()
            kwargs = {} if kwargs is None else kwargs
        else:
            name, kwargs = item, {}
        if not isinstance(name, str) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise RlcamError(f"{source} has an env_wrapper entry rl-zoo would not read ({item!r}).")
        if name not in WRAPPERS:
            known = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in WRAPPERS}))
            raise RlcamError(
                f"{source} wraps the env in {name}, which rlcam does not build (it knows {known}), "
                "so it cannot rebuild the training env."
            )
        try:
            _accepts(name, kwargs)
        except TypeError as exc:
            raise RlcamError(f"{source} gives {name} arguments it does not take ({exc}).") from None
        parsed.append((name, kwargs))
    return parsed


def _wrap_all(wrappers: list[tuple[str, dict]]) -> Callable[[gym.Env], gym.Env] | None:
    if not wrappers:
        return None

    def wrap(env: gym.Env) -> gym.Env:
        for name, kwargs in wrappers:
            env = WRAPPERS[name](env, **kwargs)
        return env

    return wrap


# -- run folders ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooRun:
    """An rl-zoo run: which model to load and how its env was built."""

    folder: Path  # logs/ppo/BreakoutNoFrameskip-v4_1
    name: str  # the env name: the sub-folder holding config.yml, and the final model's stem
    model: Path  # the zip to load
    algo: str | None  # args.yml's algo
    recipe: EnvRecipe
    wrappers: list[tuple[str, dict]] = field(default_factory=list)
    stats: ObsStats | None = None

    def describe(self) -> list[str]:
        """Lines for ``rlcam info``: what the env is made of."""
        names = ", ".join(n.rsplit(".", 1)[-1] + (f"({k})" if k else "") for n, k in self.wrappers) or "none"
        if self.stats is None:
            norm = "none"
        elif self.stats.norm_obs:
            norm = f"observations (clip {self.stats.clip_obs:g}, from {self.name}/vecnormalize.pkl)"
        else:
            norm = "rewards only (observations as they are)"
        return [
            f"run          {self.folder} (rl-zoo, algo {self.algo or 'unknown'}), model {self.model.name}",
            f"env          {self.recipe.env_id}  env_kwargs {self.recipe.env_kwargs or {}}",
            f"wrappers     {names}",
            f"frame stack  {self.recipe.frame_stack or 'none'}",
            f"normalize    {norm}",
        ]


def _params_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.yml").is_file())


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding one ``<env name>/config.yml``."""
    return path.is_dir() and len(_params_dirs(path)) == 1


def _env_id(args: dict, name: str, source: Path) -> str:
    env = args.get("env")
    if env is not None and not isinstance(env, str):
        raise RlcamError(f"{source} names its env as {env!r}, not an env id.")
    return env or name  # without args.yml, the env name (rl-zoo's id with "/" made "-") is all there is


def open_run(folder: Path, model: Path | None = None, env: str | None = None) -> ZooRun:
    """Read a run folder (see the module docstring); ``model`` picks a zip other than the final one.

    Args:
        folder: the run folder, ``<log>/<algo>/<env name>_<id>``.
        model: the zip to load (default: ``<env name>.zip``, the final model).
        env: the user's ``--env``; must name the run's env (``module:Id`` imports ``module`` first,
            for envs registered by a package, as rl-zoo's ``--gym-packages`` does).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RlcamError(f"run folder {folder} does not exist.")
    params = _params_dirs(folder)
    if len(params) != 1:
        runs = sorted(p.name for p in folder.iterdir() if p.is_dir() and is_run_folder(p))
        if runs:
            listed = ", ".join(runs[:6]) + (", ..." if len(runs) > 6 else "")
            raise RlcamError(f"{folder} holds rl-zoo runs ({listed}), not one run; pass one of them as --agent.")
        what = "several <env>/config.yml" if params else "no <env>/config.yml"
        raise RlcamError(
            f"{folder} is a directory but not an rl-zoo run folder ({what} in it); pass an SB3 .zip or a run "
            "folder such as logs/ppo/BreakoutNoFrameskip-v4_1."
        )
    params = params[0]
    name = params.name
    config = load_yaml(params / "config.yml")
    args = load_yaml(params / "args.yml") if (params / "args.yml").is_file() else {}
    model = Path(model) if model is not None else folder / f"{name}.zip"
    if not model.is_file():
        zips = sorted(p.name for p in folder.glob("*.zip"))
        hint = f" (it has {', '.join(zips)}: pick one with --load-best or --load-checkpoint N)" if zips else ""
        raise RlcamError(f"run folder {folder} has no model {model.name}{hint}.")

    env_id = _env_id(args, name, params / "args.yml")
    if env is not None and resolve_env_id(env).env_id != env_id:  # resolving imports MODULE of MODULE:Id
        raise RlcamError(f"run folder {folder} was trained on {env_id}, not --env {env}; leave --env out.")
    if env_id not in gym.registry and args.get("gym_packages"):
        raise RlcamError(
            f"run folder {folder} was trained on {env_id}, which is not registered; its args.yml lists gym_packages "
            f"{args['gym_packages']}: pass --env MODULE:{env_id} to import the one that registers it."
        )
    resolve_env_id(env_id)  # an unknown env: one sentence with close names
    env_kwargs = args.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
        raise RlcamError(f"{params / 'args.yml'} has env_kwargs that are not a mapping of names ({env_kwargs!r}).")

    config_path = params / "config.yml"
    wrappers = parse_wrappers(config.get("env_wrapper"), config_path)
    if config.get("vec_env_wrapper") is not None:
        raise RlcamError(
            f"{config_path} wraps the VecEnv in {config['vec_env_wrapper']!r}, which rlcam does not build, "
            "so it cannot rebuild the training env."
        )
    stack = config.get("frame_stack")
    if stack is not None and (type(stack) is not int or stack < 1):
        raise RlcamError(f"{config_path} has frame_stack {stack!r}, not a positive number of frames.")
    stats = None
    if config.get("normalize"):  # rl-zoo's enjoy loads the statistics whenever normalize is set
        stats_path = params / "vecnormalize.pkl"
        if not stats_path.is_file():
            raise RlcamError(
                f"{config_path} says normalize but {stats_path} is missing, so the observations cannot be "
                "normalised as in training."
            )
        stats = read_vecnormalize(stats_path)
    recipe = EnvRecipe(
        env_id=env_id,
        env_kwargs=dict(env_kwargs),
        wrap=_wrap_all(wrappers),
        wrap_vec=None
        if stats is None
        else (lambda venv: frozen_vecnormalize(venv, stats, params / "vecnormalize.pkl")),
        frame_stack=stack,
        atari=any(n.endswith(".AtariWrapper") for n, _ in wrappers),
        source=str(folder),
    )
    algo = args.get("algo") if isinstance(args.get("algo"), str) else None
    return ZooRun(folder=folder, name=name, model=model, algo=algo, recipe=recipe, wrappers=wrappers, stats=stats)


def run_folder(log_folder: Path, algo: str, env: str, exp_id: int = 0) -> Path:
    """rl-zoo's ``-f logs --algo ppo --env ID --exp-id N``: ``logs/ppo/<env name>_<N>``; N = 0 is the latest run."""
    if exp_id < 0:
        raise RlcamError(
            f"--exp-id must be 0 (the latest run) or a run number, not {exp_id}; for a model outside a run "
            "folder pass --agent PATH.zip --env ID."
        )
    algo_dir = Path(log_folder) / algo
    if not algo_dir.is_dir():
        raise RlcamError(f"log folder {algo_dir} does not exist; -f names the folder that holds <algo>/<env>_<N>.")
    name = env.split(":")[-1].replace("/", "-")
    ids = {}
    for path in algo_dir.iterdir():
        match = re.fullmatch(re.escape(name) + r"_(\d+)", path.name)
        if match and path.is_dir():
            ids[int(match.group(1))] = path
    if exp_id == 0 and ids:
        return ids[max(ids)]
    if exp_id in ids:
        return ids[exp_id]
    runs = sorted(p.name for p in algo_dir.iterdir() if p.is_dir())
    listed = f" (it holds {', '.join(runs[:6])}{', ...' if len(runs) > 6 else ''})" if runs else ""
    which = "any run" if exp_id == 0 else f"run {exp_id}"
    raise RlcamError(f"{algo_dir} has no {which} of {name} (a folder {name}_N){listed}.")


def pick_model(agent: Path, best: bool = False, checkpoint: int | None = None) -> Path:
    """``--load-best`` / ``--load-checkpoint N`` applied to a run folder: the zip rl-zoo's enjoy would load."""
    if not best and checkpoint is None:
        return agent
    if not is_run_folder(agent):
        flag = "--load-best" if best else "--load-checkpoint"
        raise RlcamError(f"{flag} picks a model inside an rl-zoo run folder, and {agent} is not one.")
    model = agent / ("best_model.zip" if best else f"rl_model_{checkpoint}_steps.zip")
    if not model.is_file():
        steps = sorted(
            int(m.group(1)) for p in agent.glob("rl_model_*_steps.zip") if (m := re.search(r"_(\d+)_steps", p.name))
        )
        hint = f"; its checkpoints are at {', '.join(map(str, steps))} steps" if steps else ""
        raise RlcamError(f"run folder {agent} has no {model.name}{hint}.")
    return model


def find_run(agent: Path, env: str | None = None) -> ZooRun | None:
    """The run ``agent`` names: a run folder (its final model), or a zip inside one (its best model, a
    checkpoint); None for any other path, a plain zip."""
    agent = Path(agent)
    if agent.is_dir():
        return open_run(agent, env=env)
    if agent.suffix == ".zip" and agent.is_file() and is_run_folder(agent.parent):
        return open_run(agent.parent, model=agent, env=env)
    return None


def agent_and_env(agent: Path, env: str | None) -> tuple[Path, str | EnvRecipe]:
    """What to load and where to run it: a run's model and its training env's recipe, or a plain zip and
    ``env`` (default ``Breakout``)."""
    run = find_run(agent, env)
    return (Path(agent), env or DEFAULT_ENV) if run is None else (run.model, run.recipe)


def trace_fields(source: str | None) -> dict:
    """What a trace's meta keeps of the rl-zoo run folder its env came from (``EnvInfo.source``):
    the folder as named, and resolved, for ``trace_env``."""
    return {"zoo_run": source, "zoo_run_resolved": str(Path(source).resolve()) if source else None}


def trace_env(meta: dict, source) -> str | EnvRecipe:
    """The env a trace (``meta``; ``source`` names it in messages) was recorded in, to replay it: the rl-zoo run
    folder's training env when it was one (the folder must still be where the trace names it), else
    the env as named (``module:EnvId-v0`` imports the module that registers it), else its id."""
    if meta.get("zoo_run"):
        folder = Path(meta["zoo_run"])  # as the user named it; else where that was when recording
        if not folder.is_dir() and meta.get("zoo_run_resolved"):
            folder = Path(meta["zoo_run_resolved"])
        run = find_run(folder, None) if folder.is_dir() else None
        if run is None:
            raise RlcamError(
                f"{source} was recorded in the env of the rl-zoo run folder {folder}, which is not there "
                "any more; its env cannot be rebuilt without the run's config."
            )
        return run.recipe
    named = str(meta.get("env", ""))
    return named if ":" in named else meta["env_id"]
