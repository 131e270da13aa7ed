"""Rebuilding a standard SB3 agent from its zip without unpickling anything.

An SB3 zip's ``data`` member is JSON in which every non-JSON value is a base64 cloudpickle
blob (``":serialized:"``) and unpickling one can run any code. This module never unpickles:
it reads plain JSON fields, and where only a blob says what is needed (the policy class, the
policy kwargs, exact observation bounds) it walks the blob's opcodes with
``pickletools.genops``, which parses and executes nothing, into inert nodes. Only a fixed
whitelist of (module, name) pairs is then turned into real objects. Weights come from
``policy.pth`` with ``torch.load(weights_only=True)``.

    data (JSON) -> spaces, policy class, kwargs -> SB3 model (untrained) -> + policy.pth -> model
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import math
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from rlcam.errors import RlcamError

# Policy classes per algorithm, as (defining module, qualified name): what a pickle names.
# SB3's "MlpPolicy"/"CnnPolicy" strings resolve to these; MultiInput policies need Dict spaces.
POLICIES = {
    "ppo": {
        ("stable_baselines3.common.policies", "ActorCriticPolicy"),
        ("stable_baselines3.common.policies", "ActorCriticCnnPolicy"),
    },
    "dqn": {("stable_baselines3.dqn.policies", "DQNPolicy"), ("stable_baselines3.dqn.policies", "CnnPolicy")},
    "qrdqn": {("sb3_contrib.qrdqn.policies", "QRDQNPolicy"), ("sb3_contrib.qrdqn.policies", "CnnPolicy")},
}
POLICIES["a2c"] = POLICIES["ppo"]

# Classes that may appear as values in policy_kwargs: activations, optimizers, SB3's extractors.
KWARG_CLASSES = {
    *(("torch.nn.modules.activation", n) for n in ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU")),
    ("torch.optim.adam", "Adam"),
    ("torch.optim.adamw", "AdamW"),
    ("torch.optim.rmsprop", "RMSprop"),
    ("torch.optim.sgd", "SGD"),
    ("stable_baselines3.common.sb2_compat.rmsprop_tf_like", "RMSpropTFLike"),
    ("stable_baselines3.common.torch_layers", "NatureCNN"),
    ("stable_baselines3.common.torch_layers", "FlattenExtractor"),
}

_BOX_TYPES = ("<class 'gymnasium.spaces.box.Box'>", "<class 'gym.spaces.box.Box'>")
_DISCRETE_TYPES = ("<class 'gymnasium.spaces.discrete.Discrete'>", "<class 'gym.spaces.discrete.Discrete'>")
_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64")
_FROMBUFFER = {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}
_MAX_DEPTH = 32
_MAX_OBS_SIZE = 1 << 24  # elements; a pixel observation is ~1e5, and a forged shape must not exhaust memory


class Refused(Exception):
    """A part of the agent that only unpickling could rebuild; the message is a clause about the file."""


# -- reading a pickle without running it ----------------------------------------------------------------


@dataclass(frozen=True)
class Global:
    """A class or function a pickle names (GLOBAL / STACK_GLOBAL); never imported here."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Call:
    """What REDUCE / NEWOBJ would have built: ``func(*args)`` then BUILD's ``state``; never called."""

    func: object
    args: tuple
    state: object = None


_MARK = object()
_PUSH_ARG = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "FLOAT", "INT", "LONG",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": dict, "EMPTY_LIST": list}


def read_pickle(blob: bytes):
    """Walk a pickle's opcodes and return its value as plain data, ``Global`` and ``Call`` nodes.

    Nothing is imported or called: a class appears as a ``Global``, an object as a ``Call``.

    Raises:
        ValueError: an opcode outside the subset SB3's cloudpickle output uses, or a malformed pickle.
    """
    stack: list = []
    memo: dict = {}

    def pop_mark() -> list:
        i = max(j for j, item in enumerate(stack) if item is _MARK)
        items = stack[i + 1 :]
        del stack[i:]
        return items

    for op, arg, _ in pickletools.genops(blob):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1:
                raise ValueError("pickle stack is not a single value at STOP")
            return stack[0]
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name in _CONSTANTS:
            value = _CONSTANTS[name]
            stack.append(value() if isinstance(value, type) else value)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("LIST", "DICT"):
            items = pop_mark()
            stack.append(items if name == "LIST" else dict(zip(items[::2], items[1::2], strict=True)))
        elif name == "APPEND":
            item = stack.pop()
            stack[-1].append(item)
        elif name == "APPENDS":
            items = pop_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = pop_mark()
            stack[-1].update(zip(items[::2], items[1::2], strict=True))
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name == "GLOBAL":
            module, qualname = arg.split(" ", 1)
            stack.append(Global(module, qualname))
        elif name == "STACK_GLOBAL":
            qualname, module = stack.pop(), stack.pop()
            stack.append(Global(str(module), str(qualname)))
        elif name in ("REDUCE", "NEWOBJ"):
            args, func = stack.pop(), stack.pop()
            stack.append(Call(func, tuple(args)))
        elif name == "BUILD":
            state = stack.pop()
            if not isinstance(stack[-1], Call):
                raise ValueError("BUILD on a value that is not an object")
            stack[-1].state = state
        else:
            raise ValueError(f"pickle opcode {name} is outside what rlcam reads")
    raise ValueError("pickle ends without STOP")


def serialized(entry, field: str):
    """The inert value of a JSON ``{":serialized:": base64}`` entry (see ``read_pickle``)."""
    if not isinstance(entry, dict) or not isinstance(entry.get(":serialized:"), str):
        raise Refused(f"stores {field} in a form rlcam does not read")
    try:
        return read_pickle(base64.b64decode(entry[":serialized:"], validate=True))
    except (binascii.Error, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise Refused(f"has an unreadable pickled {field} ({exc})") from None


def resolve(ref: Global, allowed: set, field: str) -> type:
    """Import a whitelisted class; anything else is refused, naming it."""
    if (ref.module, ref.name) not in allowed:
        raise Refused(f"contains custom pickled classes ({ref} in {field})")
    return getattr(importlib.import_module(ref.module), ref.name)


def plain(node, field: str, depth: int = 0):
    """Plain data (numbers, strings, lists, dicts) with whitelisted classes resolved; else refuse."""
    if depth > _MAX_DEPTH:
        raise Refused(f"has a {field} nested too deeply to read")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, (list, tuple)):
        return type(node)(plain(v, field, depth + 1) for v in node)
    if isinstance(node, dict) and all(isinstance(k, str) for k in node):
        return {k: plain(v, field, depth + 1) for k, v in node.items()}
    if isinstance(node, Global):
        return resolve(node, KWARG_CLASSES, field)
    what = node.func if isinstance(node, Call) and isinstance(node.func, Global) else type(node).__name__
    raise Refused(f"contains custom pickled objects ({what} in {field})")


# -- what the agent is: spaces, policy class, kwargs ---------------------------------------------------


def _space_type(entry) -> str:
    text = entry.get(":type:", "") if isinstance(entry, dict) else ""
    return text.removeprefix("<class '").removesuffix("'>").rsplit(".", 1)[-1] or "unknown"


def _dtype(entry: dict, field: str) -> np.dtype:
    if entry.get("dtype") not in _DTYPES:
        raise Refused(f"has a {field} of dtype {entry.get('dtype')!r}, which rlcam does not rebuild")
    return np.dtype(entry["dtype"])


def _pickled_array(node, shape: tuple, dtype: np.dtype) -> np.ndarray | None:
    """An array pickled as ``_frombuffer(bytes, dtype(code), shape, 'C')``, read from its bytes."""
    if not (isinstance(node, Call) and isinstance(node.func, Global) and len(node.args) == 4):
        return None
    if (node.func.module, node.func.name) not in _FROMBUFFER:
        return None
    buffer, dtype_node, array_shape, order = node.args
    if not (isinstance(buffer, (bytes, bytearray)) and isinstance(dtype_node, Call) and order == "C"):
        return None
    if dtype_node.func != Global("numpy", "dtype") or not dtype_node.args or array_shape != shape:
        return None
    byteorder = dtype_node.state[1] if isinstance(dtype_node.state, tuple) and len(dtype_node.state) > 1 else "|"
    code = dtype_node.args[0]
    if not isinstance(code, str) or byteorder not in ("<", ">", "|", "="):
        return None
    try:
        stored = np.dtype(code).newbyteorder(byteorder) if byteorder in "<>" else np.dtype(code)
    except (TypeError, ValueError):
        return None
    if stored.name != dtype.name or len(buffer) != stored.itemsize * math.prod(shape):
        return None
    return np.frombuffer(bytes(buffer), dtype=stored).reshape(shape).astype(dtype)


def _repr_bound(text, shape: tuple, dtype: np.dtype, field: str) -> np.ndarray:
    """A bound from numpy's ``str(array)`` that SB3 writes beside the blob.

    Complete when short; summarised with ``...`` when large, where only a uniform image bound
    (uint8, every shown value equal) is taken as known.
    """
    tokens = str(text).replace("[", " ").replace("]", " ").split()
    truncated = "..." in tokens
    try:
        values = [float(t) for t in tokens if t != "..."]
    except ValueError:
        values = []
    if values and not truncated and len(values) == math.prod(shape):
        return np.array(values).reshape(shape).astype(dtype)
    if values and truncated and dtype == np.uint8 and len(set(values)) == 1:
        return np.full(shape, values[0], dtype=dtype)
    raise Refused(f"has {field} bounds that rlcam cannot read without unpickling")


def observation_space(entry) -> spaces.Box:
    """The Box observation space: dtype and shape from JSON; bounds from the pickled arrays' bytes, else the JSON."""
    if not isinstance(entry, dict) or entry.get(":type:") not in _BOX_TYPES:
        raise Refused(f"has a {_space_type(entry)} observation space, which rlcam rebuilds only by unpickling")
    dtype = _dtype(entry, "observation space")
    shape = entry.get("_shape")
    if not (isinstance(shape, list) and shape and all(type(n) is int and n > 0 for n in shape)):
        raise Refused(f"has an observation space of unreadable shape {shape!r}")
    if math.prod(shape) > _MAX_OBS_SIZE:
        raise Refused(f"has an observation space of shape {tuple(shape)}, too large to rebuild")
    shape = tuple(shape)
    try:
        state = serialized(entry, "observation_space")
        state = state.state if isinstance(state, Call) else None
    except Refused:
        state = None  # the JSON reprs below may still say it
    bounds = []
    for key in ("low", "high"):
        array = _pickled_array(state.get(key), shape, dtype) if isinstance(state, dict) else None
        bounds.append(array if array is not None else _repr_bound(entry.get(key), shape, dtype, "observation"))
    return spaces.Box(low=bounds[0], high=bounds[1], shape=shape, dtype=dtype)


def action_space(entry) -> spaces.Discrete:
    """The Discrete action space from its JSON ``n``, ``start`` and ``dtype``."""
    if not isinstance(entry, dict) or entry.get(":type:") not in _DISCRETE_TYPES:
        raise Refused(f"has a {_space_type(entry)} action space, which rlcam rebuilds only by unpickling")
    try:
        n, start = int(str(entry["n"])), int(str(entry.get("start", 0)))
    except (KeyError, ValueError):
        raise Refused("has a Discrete action space without a readable n") from None
    dtype = _dtype(entry, "action space") if "dtype" in entry else np.dtype(np.int64)
    if not (np.iinfo(dtype).min <= start and 1 <= n and start + n - 1 <= np.iinfo(dtype).max):
        raise Refused(f"has a Discrete action space with n={n}, start={start}")
    return spaces.Discrete(n, start=start, dtype=dtype)


def policy_class(data: dict, algo: str) -> type:
    """The policy class named by the pickled ``policy_class``, if it is a standard one for ``algo``."""
    ref = serialized(data.get("policy_class"), "policy_class")
    if not isinstance(ref, Global):
        raise Refused(f"contains custom pickled objects ({getattr(ref, 'func', ref)} in policy_class)")
    owners = [name.upper() for name, allowed in POLICIES.items() if (ref.module, ref.name) in allowed]
    if not owners:
        raise Refused(f"contains custom pickled classes ({ref} as policy_class)")
    if algo.upper() not in owners:
        raise RlcamError(
            f"the agent's policy ({ref}) is a {' or '.join(owners)} policy, not a {algo.upper()} one; "
            "leave --algo out to detect the algorithm."
        )
    return resolve(ref, POLICIES[algo], "policy_class")


def policy_kwargs(entry) -> dict:
    """``policy_kwargs`` as SB3's load would pass them: plain JSON, or a pickled dict of whitelisted values."""
    if entry is None:
        return {}
    if isinstance(entry, dict) and ":serialized:" in entry:
        entry = serialized(entry, "policy_kwargs")
    kwargs = plain(entry, "policy_kwargs")
    if not isinstance(kwargs, dict):
        raise Refused("has policy_kwargs that are not a dict")
    kwargs.pop("device", None)
    arch = kwargs.get("net_arch")
    if isinstance(arch, list) and arch and isinstance(arch[0], dict):
        kwargs["net_arch"] = arch[0]  # SB3 < 1.8 format, converted as SB3's load does
    return kwargs


# -- building the model ---------------------------------------------------------------------------------


def _kind(value) -> str | None:
    if value is None or isinstance(value, (bool, str)):
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else None


def _same_kind(default, value) -> bool:
    """Whether a JSON value may replace a constructor default: a scalar of its kind, or anything for None."""
    return _kind(value) is not None and _kind(default) in (_kind(value), "NoneType")


def build_model(data: dict, algo: str, cls: type):
    """An SB3 ``cls`` instance with the saved spaces, policy and scalar fields; weights untrained.

    Only what inference needs is set up: no rollout/replay buffer, no schedules, no global seeding
    (what ``_setup_model`` adds for training).
    """
    policy_cls = policy_class(data, algo)
    obs_space = observation_space(data.get("observation_space"))
    act_space = action_space(data.get("action_space"))
    kwargs = policy_kwargs(data.get("policy_kwargs"))
    model = cls(policy=policy_cls, env=None, device="cpu", _init_setup_model=False)
    for key, value in data.items():
        # Plain JSON fields (num_timesteps, exploration_rate, gamma, ...) overwrite the constructor's
        # scalar defaults, as SB3's load does; pickled fields and non-scalar attributes are left alone.
        if _same_kind(model.__dict__.get(key, ()), value):
            setattr(model, key, value)
    model.observation_space, model.action_space, model.policy_kwargs = obs_space, act_space, kwargs
    model._setup_lr_schedule()
    extra = {"use_sde": bool(model.use_sde)} if algo in ("ppo", "a2c") else {}
    ortho = kwargs.get("ortho_init", True) if algo in ("ppo", "a2c") else None
    if ortho:
        extra["ortho_init"] = False  # orthogonal init is wasted: the saved weights replace it
    try:
        policy = policy_cls(obs_space, act_space, model.lr_schedule, **{**kwargs, **extra})
    except Exception as exc:  # whatever the saved kwargs make SB3 or torch raise
        raise Refused(f"has policy_kwargs SB3 does not accept ({type(exc).__name__}: {exc})") from None
    if ortho:
        policy.ortho_init = True  # as saved, so a re-save records the same kwargs
    model.policy = policy.to("cpu")
    if hasattr(model, "_create_aliases"):  # DQN, QR-DQN: q_net / quantile_net shortcuts
        model._create_aliases()
    return model


# -- weights --------------------------------------------------------------------------------------------


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """``policy.pth`` as a state dict, through ``torch.load(weights_only=True)``."""
    with zipfile.ZipFile(path) as archive:
        if "policy.pth" not in archive.namelist():
            raise RlcamError(f"agent file {path} lacks policy.pth, the policy's weights; save it with model.save.")
        raw = archive.read("policy.pth")
    try:
        state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for a foreign or damaged file
        message = " ".join(str(exc).split())[:200]
        raise RlcamError(
            f"policy.pth in {path} is not a plain tensor file ({type(exc).__name__}: {message})."
        ) from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())):
        raise RlcamError(f"policy.pth in {path} is not a state dict of named tensors; save the agent again.")
    return state


def _legacy_aliases(state: dict, expected: dict) -> dict:
    """SB3 < 1.7 saved a shared extractor once; newer policies also name it pi_/vf_features_extractor."""
    state = dict(state)
    for key in expected:
        for prefix in ("pi_features_extractor.", "vf_features_extractor."):
            old = "features_extractor." + key.removeprefix(prefix)
            if key.startswith(prefix) and key not in state and old in state:
                state[key] = state[old]
    return state


def check_weights(policy: torch.nn.Module, state: dict, path: Path) -> dict:
    """The state dict, checked to fit ``policy`` exactly (names, shapes) and to be finite."""
    expected = policy.state_dict()
    state = _legacy_aliases(state, expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        found = "; ".join(
            f"{len(keys)} {kind}, e.g. {keys[0]!r}"
            for kind, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise RlcamError(
            f"policy.pth in {path} does not fit the {type(policy).__name__} its data describes (tensors: {found}); "
            "the zip mixes files of different agents."
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise RlcamError(
                f"policy.pth in {path} does not fit the {type(policy).__name__} its data describes: {key} has "
                f"shape {tuple(state[key].shape)} where the policy has {tuple(tensor.shape)}; "
                "the zip mixes files of different agents."
            )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise RlcamError(
                f"agent {path} has non-finite weights (NaN or inf), first in {key}; "
                "the agent diverged in training or the file is damaged."
            )
    return state


def load_model(path: Path, data: dict, algo: str, cls: type):
    """The SB3 model rebuilt from ``data`` with ``policy.pth`` loaded, without unpickling anything.

    Raises:
        RlcamError: the agent needs unpickling (custom classes: the message names ``--trust``), or its
            weights are missing, do not fit the policy, or are not finite.
    """
    try:
        model = build_model(data, algo, cls)
    except Refused as exc:
        clause = " ".join(str(exc).split())[:300]  # names from the file: one line, bounded
        raise RlcamError(
            f"agent file {path} {clause}; rlcam does not unpickle agent files by default. "
            "If you trust this file, rerun with --trust."
        ) from None
    model.policy.load_state_dict(check_weights(model.policy, read_weights(path), path), strict=True)
    return model
