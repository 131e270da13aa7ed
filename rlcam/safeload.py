"""Rebuilding a standard SB3 agent from its zip without unpickling anything.

An SB3 zip's ``data`` member is JSON in which every non-JSON value is a base64 cloudpickle
blob (``":serialized:"``) and unpickling one can run any code. This module never unpickles:
it reads plain JSON fields, and where only a blob says what is needed (the policy class, the
policy kwargs, exact space bounds, a Dict space's members) it walks the blob's opcodes with
``pickletools.genops``, which parses and executes nothing, into inert nodes. Only a fixed
allow-list of (module, name) pairs is then turned into real objects; a user may add classes
from their own code by name (``custom``). Weights come from ``policy.pth`` with
``torch.load(weights_only=True)``.

    data (JSON) -> spaces, policy class, kwargs -> SB3 model (untrained) -> + policy.pth -> model

Zips written by SB3 1.x read the same way: their spaces are ``gym`` classes, which stored the
shape as ``shape`` (gymnasium and gym >= 0.20: ``_shape``), and numpy 1.x names its pickle helpers
``numpy.core`` (numpy 2: ``numpy._core``); Python 3.7 pickled arrays with protocol 4
(``_reconstruct`` + state), later versions with protocol 5 (``_frombuffer``).
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

# Every SB3 / sb3-contrib policy class rlcam rebuilds, as (defining module, name) -> the algorithms
# that use it. SB3's "MlpPolicy"/"CnnPolicy"/"MultiInputPolicy" strings resolve to these; DDPG
# uses TD3's classes, PPO and A2C share the common ones.
_CONTRIB_RECURRENT = "sb3_contrib.common.recurrent.policies"
POLICIES: dict[tuple[str, str], tuple[str, ...]] = {
    **{
        ("stable_baselines3.common.policies", name): ("ppo", "a2c")
        for name in ("ActorCriticPolicy", "ActorCriticCnnPolicy", "MultiInputActorCriticPolicy")
    },
    **{("stable_baselines3.dqn.policies", n): ("dqn",) for n in ("DQNPolicy", "CnnPolicy", "MultiInputPolicy")},
    **{("sb3_contrib.qrdqn.policies", n): ("qrdqn",) for n in ("QRDQNPolicy", "CnnPolicy", "MultiInputPolicy")},
    **{("stable_baselines3.sac.policies", n): ("sac",) for n in ("SACPolicy", "CnnPolicy", "MultiInputPolicy")},
    **{("stable_baselines3.td3.policies", n): ("td3", "ddpg") for n in ("TD3Policy", "CnnPolicy", "MultiInputPolicy")},
    **{("sb3_contrib.tqc.policies", n): ("tqc",) for n in ("TQCPolicy", "CnnPolicy", "MultiInputPolicy")},
    **{
        (_CONTRIB_RECURRENT, f"Recurrent{name}"): ("recurrent_ppo",)
        for name in ("ActorCriticPolicy", "ActorCriticCnnPolicy", "MultiInputActorCriticPolicy")
    },
}
SB3_PACKAGES = ("stable_baselines3", "sb3_contrib")

_ACTIVATIONS = (
    "ReLU", "ReLU6", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid", "Softplus", "Mish",
    "Hardswish", "Hardtanh", "SELU", "CELU", "PReLU", "Softsign", "Tanhshrink",
)  # fmt: skip
_OPTIMIZERS = {
    "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
    "rmsprop": "RMSprop", "sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta",
}  # fmt: skip
# Classes that may appear as values in policy_kwargs: activations, optimizers, SB3's extractors.
KWARG_CLASSES = {
    *(("torch.nn.modules.activation", name) for name in _ACTIVATIONS),
    *((f"torch.optim.{module}", name) for module, name in _OPTIMIZERS.items()),
    ("torch.nn.modules.linear", "Identity"),
    ("stable_baselines3.common.sb2_compat.rmsprop_tf_like", "RMSpropTFLike"),
    *(("stable_baselines3.common.torch_layers", n) for n in ("NatureCNN", "FlattenExtractor", "CombinedExtractor")),
}

_SPACES = {"box": "Box", "discrete": "Discrete", "multi_discrete": "MultiDiscrete", "multi_binary": "MultiBinary"}
SPACE_CLASSES = {  # (module, name) of gymnasium's and gym's spaces -> kind
    (f"{package}.spaces.{module}", name): name
    for package in ("gymnasium", "gym")
    for module, name in {**_SPACES, "dict": "Dict"}.items()
}
_NOT_FOR_SB3 = ("Tuple", "Text", "Graph", "Sequence", "OneOf")  # standard spaces no SB3 policy takes
_DTYPES = (
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64",
)  # fmt: skip
_NUMPY_CORE = ("numpy._core", "numpy.core")  # numpy 2 / numpy 1.x
_FROMBUFFER = {(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE}
_RECONSTRUCT = {(f"{core}.multiarray", "_reconstruct") for core in _NUMPY_CORE}
_SCALAR = {(f"{core}.multiarray", "scalar") for core in _NUMPY_CORE}
_MAX_DEPTH = 32
_MAX_OBS_SIZE = 1 << 24  # elements; a pixel observation is ~1e5, and a forged shape must not exhaust memory


class Refused(Exception):
    """A part of the agent that only unpickling could rebuild; the message is a clause about the file.

    ``key``: the data or policy_kwargs key holding the refused class, where a class from the user's
    own code (``custom``) could stand in for it.
    """

    def __init__(self, clause: str, key: str | None = None):
        super().__init__(clause)
        self.key = key


class Unsupported(Exception):
    """A part of the agent that rlcam cannot use whoever unpickles it; the message is a clause about the file."""


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
_ORDERED_DICT = Global("collections", "OrderedDict")


def read_pickle(blob: bytes):
    """Walk a pickle's opcodes and return its value as plain data, ``Global`` and ``Call`` nodes.

    Nothing is imported or called: a class appears as a ``Global``, an object as a ``Call``. The one
    exception is ``collections.OrderedDict()`` (gym's Dict space holds one), read as a plain dict.

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
        elif name == "POP":  # cloudpickle: a class's state is set by a call whose result is dropped
            stack.pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
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
            stack.append({} if func == _ORDERED_DICT and args == () else Call(func, tuple(args)))
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


def describe(node) -> str:
    """What a refused node is, for a message: a class's dotted name, or what an object is built by."""
    if isinstance(node, Global):
        return str(node)
    if isinstance(node, Call) and isinstance(node.func, Global):
        if node.func.name.startswith("_make_skeleton_class") and len(node.args) > 1:
            return f"a class {node.args[1]} pickled with its code"  # cloudpickle: a class of __main__ or a notebook
        return str(node.func)
    return type(node).__name__


def resolve(ref: Global, allowed, field: str, key: str | None = None) -> type:
    """Import an allowed class; anything else is refused, naming it."""
    if (ref.module, ref.name) not in allowed:
        raise Refused(f"contains custom pickled classes ({ref} in {field})", key)
    return getattr(importlib.import_module(ref.module), ref.name)


def plain(node, field: str, depth: int = 0, key: str | None = None):
    """Plain data (numbers, strings, lists, dicts) with allowed classes resolved; else refuse."""
    if depth > _MAX_DEPTH:
        raise Refused(f"has a {field} nested too deeply to read")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, (list, tuple)):
        return type(node)(plain(v, field, depth + 1, key) for v in node)
    if isinstance(node, dict) and all(isinstance(k, str) for k in node):
        return {k: plain(v, field, depth + 1, key) for k, v in node.items()}
    if isinstance(node, Global):
        return resolve(node, KWARG_CLASSES, field, key)
    raise Refused(f"contains custom pickled objects ({describe(node)} in {field})", key)


# -- numpy values inside a pickle ---------------------------------------------------------------------


def _node_dtype(node) -> np.dtype | None:
    """``numpy.dtype(code, False, True)`` with its BUILD state (byte order), as a dtype; None if not one."""
    if not (isinstance(node, Call) and node.func == Global("numpy", "dtype") and node.args):
        return None
    code = node.args[0]
    byteorder = node.state[1] if isinstance(node.state, tuple) and len(node.state) > 1 else "|"
    if not isinstance(code, str) or byteorder not in ("<", ">", "|", "="):
        return None
    try:
        dtype = np.dtype(code)
    except (TypeError, ValueError):
        return None
    if dtype.name not in _DTYPES:
        return None
    return dtype.newbyteorder(byteorder) if byteorder in "<>" else dtype


def _node_array(node) -> np.ndarray | None:
    """An array pickled by numpy (protocol 5 ``_frombuffer`` or protocol <= 4 ``_reconstruct``), from its bytes."""
    if not (isinstance(node, Call) and isinstance(node.func, Global)):
        return None
    ref = (node.func.module, node.func.name)
    if ref in _FROMBUFFER and len(node.args) == 4:
        buffer, dtype_node, shape, order = node.args
    elif ref in _RECONSTRUCT and isinstance(node.state, tuple) and len(node.state) == 5:
        _version, shape, dtype_node, fortran, buffer = node.state
        order = "F" if fortran is True else "C" if fortran is False else None
    else:
        return None
    dtype = _node_dtype(dtype_node)
    if not (isinstance(buffer, (bytes, bytearray)) and isinstance(shape, tuple) and dtype is not None):
        return None
    if order not in ("C", "F") or not all(type(n) is int and n >= 0 for n in shape):
        return None
    if math.prod(shape) > _MAX_OBS_SIZE or len(buffer) != dtype.itemsize * math.prod(shape):
        return None
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order=order).astype(dtype.newbyteorder("="))


def _node_int(node) -> int | None:
    """A Python int, or a numpy integer scalar pickled as ``scalar(dtype, bytes)``."""
    if type(node) is int:
        return node
    if isinstance(node, Call) and isinstance(node.func, Global) and (node.func.module, node.func.name) in _SCALAR:
        dtype = _node_dtype(node.args[0]) if len(node.args) == 2 else None
        raw = node.args[1] if dtype is not None else None
        if isinstance(raw, bytes) and dtype.kind in "iu" and len(raw) == dtype.itemsize:
            return int(np.frombuffer(raw, dtype=dtype)[0])
    return None


# -- spaces: JSON fields first (type, shape, dtype, n), the blob's arrays for exact values ---------------


def _space_kind(entry) -> str:
    text = entry.get(":type:", "") if isinstance(entry, dict) else ""
    return text.removeprefix("<class '").removesuffix("'>").rsplit(".", 1)[-1] or "unknown"


def _json_kind(entry) -> str | None:
    """The kind of a JSON space entry whose ``:type:`` names one of gymnasium's or gym's spaces."""
    text = entry.get(":type:", "") if isinstance(entry, dict) else ""
    module, _, name = text.removeprefix("<class '").removesuffix("'>").rpartition(".")
    return SPACE_CLASSES.get((module, name))


class _Fields:
    """One space's fields: its JSON entry (top-level spaces) and/or its pickled state (always, where readable)."""

    def __init__(self, entry: dict | None, state: dict | None, field: str):
        self.entry, self.state, self.field = entry, state, field

    def get(self, key: str, default=None):
        """A JSON value, else the pickled one (gym <= 0.19 spelt ``_shape`` as ``shape``)."""
        keys = ("_shape", "shape") if key == "_shape" else (key,)
        for source in (self.entry, self.state):
            for k in keys:
                if isinstance(source, dict) and k in source:
                    return source[k]
        return default

    def dtype(self, default=None) -> np.dtype:
        value = self.get("dtype")
        if value is None and default is not None:
            return np.dtype(default)
        dtype = _node_dtype(value) if isinstance(value, Call) else np.dtype(value) if value in _DTYPES else None
        if dtype is None:
            shown = value if isinstance(value, str) else "?"
            raise Refused(f"has an {self.field} of dtype {shown!r}, which rlcam does not rebuild")
        return dtype.newbyteorder("=")

    def shape(self) -> tuple:
        shape = self.get("_shape")
        if not (isinstance(shape, (list, tuple)) and all(type(n) is int and n > 0 for n in shape)):
            raise Refused(f"has an {self.field} of unreadable shape {shape!r}")
        if math.prod(shape) > _MAX_OBS_SIZE:
            raise Refused(f"has an {self.field} of shape {tuple(shape)}, too large to rebuild")
        return tuple(shape)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        number = _node_int(value)
        if number is None and isinstance(value, str) and value.lstrip("-").isdigit():
            number = int(value)  # gymnasium's n and start are numpy scalars: JSON keeps str(n)
        if number is None:
            raise Refused(f"has an {self.field} without a readable {key}")
        return number

    def array(self, key: str, shape: tuple, dtype: np.dtype, uniform_image_bound: bool = False) -> np.ndarray:
        """The pickled array if it has the JSON shape; else numpy's ``str(array)`` SB3 writes beside the blob.

        A summarised repr (``...``, large arrays) is taken only as a uniform image bound (uint8, every
        shown value equal).
        """
        array = _node_array(self.state.get(key)) if isinstance(self.state, dict) else None
        if array is not None and array.shape == shape:
            return array.astype(dtype)
        text = self.entry.get(key) if isinstance(self.entry, dict) else None
        tokens = str(text).replace("[", " ").replace("]", " ").split() if isinstance(text, str) else []
        truncated = "..." in tokens
        try:
            values = [float(t) for t in tokens if t != "..."]
        except ValueError:
            values = []
        if values and not truncated and len(values) == math.prod(shape):
            return np.array(values).reshape(shape).astype(dtype)
        if values and truncated and uniform_image_bound and dtype == np.uint8 and len(set(values)) == 1:
            return np.full(shape, values[0], dtype=dtype)
        raise Refused(f"has {self.field} values ({key}) that rlcam cannot read without unpickling")


def _box(f: _Fields) -> spaces.Box:
    dtype, shape = f.dtype(), f.shape()
    low, high = (f.array(key, shape, dtype, uniform_image_bound=True) for key in ("low", "high"))
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


def _discrete(f: _Fields) -> spaces.Discrete:
    n, start, dtype = f.integer("n"), f.integer("start", 0), f.dtype(np.int64)
    if not (dtype.kind in "iu" and np.iinfo(dtype).min <= start and 1 <= n and start + n - 1 <= np.iinfo(dtype).max):
        raise Refused(f"has a Discrete {f.field} with n={n}, start={start}")
    return spaces.Discrete(n, start=start, dtype=dtype)


def _multi_discrete(f: _Fields) -> spaces.MultiDiscrete:
    dtype, shape = f.dtype(np.int64), f.shape()
    nvec = f.array("nvec", shape, dtype)
    start = f.array("start", shape, dtype) if f.get("start") is not None else np.zeros(shape, dtype)
    if dtype.kind not in "iu" or not (nvec >= 1).all():
        raise Refused(f"has a MultiDiscrete {f.field} with nvec {nvec.tolist()}")
    return spaces.MultiDiscrete(nvec, dtype=dtype, start=start)


def _multi_binary(f: _Fields) -> spaces.MultiBinary:
    n = f.get("n")
    n = _node_int(n) if not isinstance(n, (list, tuple)) else tuple(n)
    if isinstance(n, tuple) and n and all(type(k) is int and k > 0 for k in n) and math.prod(n) <= _MAX_OBS_SIZE:
        return spaces.MultiBinary(list(n))
    if type(n) is int and 0 < n <= _MAX_OBS_SIZE:
        return spaces.MultiBinary(n)
    raise Refused(f"has a MultiBinary {f.field} without a readable n")


_LEAVES = {"Box": _box, "Discrete": _discrete, "MultiDiscrete": _multi_discrete, "MultiBinary": _multi_binary}


def _dict_space(node, field: str) -> spaces.Dict:
    """A Dict space from its pickled members; SB3 writes them to the JSON only as a repr."""
    members = node.state.get("spaces") if isinstance(node, Call) and isinstance(node.state, dict) else None
    if not (isinstance(members, dict) and members and all(isinstance(k, str) for k in members)):
        raise Refused(f"has a Dict {field} whose pickled members rlcam cannot read")
    built = {}
    for key, member in members.items():
        name = f"{field} key {key!r}"
        kind = _node_kind(member)
        if kind == "Dict":
            raise Unsupported(f"has a Dict {field} with a Dict inside ({key!r}), which SB3 policies do not take")
        if kind not in _LEAVES:
            held = describe(getattr(member, "func", member))
            if held.rsplit(".", 1)[-1] in _NOT_FOR_SB3 and held.startswith(("gymnasium.spaces.", "gym.spaces.")):
                raise Unsupported(f"has a Dict {field} whose key {key!r} is a {held}, which SB3 policies do not take")
            raise Refused(f"has a Dict {field} whose key {key!r} holds {held}")
        built[key] = _LEAVES[kind](_Fields(None, member.state if isinstance(member.state, dict) else None, name))
    if sum(math.prod(s.shape or (1,)) for s in built.values()) > _MAX_OBS_SIZE:
        raise Refused(f"has a Dict {field} too large to rebuild")
    return spaces.Dict(built)  # gymnasium sorts plain-dict keys, as SB3's own load ends up with


def _node_kind(node) -> str | None:
    if isinstance(node, Call) and isinstance(node.func, Global) and node.args == ():
        return SPACE_CLASSES.get((node.func.module, node.func.name))
    return None


def space(entry, field: str) -> spaces.Space:
    """A saved space: its kind, shape and dtype from the JSON, exact values from the blob's arrays.

    Box, Discrete, MultiDiscrete and MultiBinary fall back to the JSON reprs when the blob is
    unreadable; a Dict exists only in the blob.
    """
    if not isinstance(entry, dict):
        raise Refused(f"has no readable {field}")
    kind = _json_kind(entry)
    if kind is None:
        name = _space_kind(entry)
        if name in _NOT_FOR_SB3:
            raise Unsupported(f"has a {name} {field}, which SB3 policies do not take")
        raise Refused(f"has a {name} {field}, which rlcam rebuilds only by unpickling")
    try:
        node = serialized(entry, field)
    except Refused:
        node = None  # the JSON fields may still say it
    if kind == "Dict":
        if _node_kind(node) != "Dict":
            raise Refused(f"has a Dict {field} whose pickled members rlcam cannot read")
        return _dict_space(node, field)
    state = node.state if _node_kind(node) == kind and isinstance(node.state, dict) else None
    return _LEAVES[kind](_Fields(entry, state, field))


def observation_space(entry) -> spaces.Space:
    return space(entry, "observation space")


def action_space(entry) -> spaces.Space:
    return space(entry, "action space")


def has_image(obs_space) -> bool:
    """Whether the space holds an image: a 3-D Box (channels and two spatial axes), alone or as a Dict key."""
    members = obs_space.spaces.values() if isinstance(obs_space, spaces.Dict) else [obs_space]
    return any(isinstance(s, spaces.Box) and len(s.shape) == 3 for s in members)


# -- what the agent is: policy class and kwargs --------------------------------------------------------


def policy_ref(data: dict):
    """The inert node the pickled ``policy_class`` holds (a ``Global`` for an importable class)."""
    return serialized(data.get("policy_class"), "policy_class")


def policy_class(data: dict, algo: str, custom: dict | None = None) -> type:
    """The policy class: one the user supplied (``custom["policy_class"]``), else an allowed SB3 one for ``algo``."""
    if custom and "policy_class" in custom:
        return custom["policy_class"]
    ref = policy_ref(data)
    if not isinstance(ref, Global):
        raise Refused(f"contains custom pickled objects ({describe(ref)} as policy_class)", "policy_class")
    owners = POLICIES.get((ref.module, ref.name))
    if owners is None:
        raise Refused(f"contains custom pickled classes ({ref} as policy_class)", "policy_class")
    if algo not in owners:
        from rlcam.agents import algo_title

        raise RlcamError(
            f"the agent's policy ({ref}) is a {' or '.join(map(algo_title, owners))} policy, not a "
            f"{algo_title(algo)} one; leave --algo out to detect the algorithm."
        )
    return resolve(ref, POLICIES, "policy_class")


def policy_kwargs(entry, custom: dict | None = None) -> dict:
    """``policy_kwargs`` as SB3's load would pass them: plain JSON, or a pickled dict of allowed values.

    ``custom`` replaces named kwargs (e.g. ``features_extractor_class``) with classes from the user's code.
    """
    if entry is None:
        entry = {}
    if isinstance(entry, dict) and ":serialized:" in entry:
        entry = serialized(entry, "policy_kwargs")
    if isinstance(entry, (Call, Global)):
        raise Refused(f"contains custom pickled objects ({describe(entry)} in policy_kwargs)")
    if not (isinstance(entry, dict) and all(isinstance(k, str) for k in entry)):
        raise Refused("has policy_kwargs that are not a dict")
    custom = {k: v for k, v in (custom or {}).items() if k != "policy_class"}
    unknown = sorted(set(custom) - set(entry))
    if unknown:
        raise RlcamError(
            f"custom object {unknown[0]!r} names neither policy_class nor one of the agent's policy_kwargs "
            f"({', '.join(sorted(entry)) or 'none'})."
        )
    kwargs = {k: custom[k] if k in custom else plain(v, "policy_kwargs", 1, key=k) for k, v in entry.items()}
    kwargs.pop("device", None)
    arch = kwargs.get("net_arch")
    if isinstance(arch, list) and arch and isinstance(arch[0], dict):
        kwargs["net_arch"] = arch[0]  # SB3 < 1.8 format, converted as SB3's load does
    return kwargs


# -- building the model ---------------------------------------------------------------------------------

ON_POLICY = ("ppo", "a2c", "recurrent_ppo")  # their policies take use_sde and ortho_init from the algorithm


def _kind(value) -> str | None:
    if value is None or isinstance(value, (bool, str)):
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else None


def _same_kind(default, value) -> bool:
    """Whether a JSON value may replace a constructor default: a scalar of its kind, or anything for None."""
    return _kind(value) is not None and _kind(default) in (_kind(value), "NoneType")


def build_model(data: dict, algo: str, cls: type, custom: dict | None = None):
    """An SB3 ``cls`` instance with the saved spaces, policy and scalar fields; weights untrained.

    Only what inference needs is set up: no rollout/replay buffer, no schedules, no global seeding
    (what ``_setup_model`` adds for training).
    """
    obs_space = observation_space(data.get("observation_space"))
    act_space = action_space(data.get("action_space"))
    policy_cls = policy_class(data, algo, custom)
    kwargs = policy_kwargs(data.get("policy_kwargs"), custom)
    model = cls(policy=policy_cls, env=None, device="cpu", _init_setup_model=False)
    for key, value in data.items():
        # Plain JSON fields (num_timesteps, exploration_rate, gamma, ...) overwrite the constructor's
        # scalar defaults, as SB3's load does; pickled fields and non-scalar attributes are left alone.
        if _same_kind(model.__dict__.get(key, ()), value):
            setattr(model, key, value)
    model.observation_space, model.action_space, model.policy_kwargs = obs_space, act_space, kwargs
    model._setup_lr_schedule()
    extra = {"use_sde": bool(model.use_sde)} if algo in ON_POLICY else {}
    ortho = kwargs.get("ortho_init", True) if algo in ON_POLICY else None
    if ortho:
        extra["ortho_init"] = False  # orthogonal init is wasted: the saved weights replace it
    try:
        policy = policy_cls(obs_space, act_space, model.lr_schedule, **{**kwargs, **extra})
    except Exception as exc:  # whatever the saved kwargs make SB3 or torch raise
        message = " ".join(str(exc).split())[:200]
        raise Unsupported(f"has policy_kwargs SB3 does not accept ({type(exc).__name__}: {message})") from None
    if ortho:
        policy.ortho_init = True  # as saved, so a re-save records the same kwargs
    model.policy = policy.to("cpu")
    if hasattr(model, "_create_aliases"):  # q_net, quantile_net, actor, critic, critic_target shortcuts
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
    """The state dict, checked to fit ``policy`` exactly (names, shapes) and to be finite.

    Every tensor of the policy counts: separate critics and their targets (SAC, TD3, TQC), the actor
    target (TD3), LSTM weights (RecurrentPPO).
    """
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


def refusal(path: Path | None, exc: Exception) -> RlcamError:
    """The one sentence for a part of the file rlcam will not rebuild: what it is and what can help."""
    clause = " ".join(str(exc).split())[:300]  # names from the file: one line, bounded
    subject = f"agent file {path}" if path is not None else "the agent file"
    if isinstance(exc, Unsupported):
        return RlcamError(f"{subject} {clause}.")
    fix = "if you trust this file, rerun with --trust"
    if exc.key is not None:
        fix += f", or supply the class from your own code with --custom-objects {exc.key}=module:Class"
    return RlcamError(f"{subject} {clause}; rlcam does not unpickle agent files by default: {fix}.")


def load_model(path: Path, data: dict, algo: str, cls: type, custom: dict | None = None):
    """The SB3 model rebuilt from ``data`` with ``policy.pth`` loaded, without unpickling anything.

    Args:
        custom: classes from the user's code by data key (``policy_class``) or policy_kwargs key.

    Raises:
        RlcamError: the agent needs unpickling (custom classes: the message names ``--trust`` and
            ``--custom-objects``), holds something SB3 cannot build, or its weights are missing, do not
            fit the policy, or are not finite.
    """
    try:
        model = build_model(data, algo, cls, custom)
    except (Refused, Unsupported) as exc:
        raise refusal(path, exc) from None
    model.policy.load_state_dict(check_weights(model.policy, read_weights(path), path), strict=True)
    return model
