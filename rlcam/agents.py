"""Loading a saved SB3 agent: validate the file, tell the algorithm, load it on the CPU.

By default nothing in the zip is unpickled (``rlcam.safeload`` rebuilds SB3's and sb3-contrib's
own policies from its JSON and tensors); ``trust=True`` is SB3's own load, which runs the file's
pickles. Classes of the user's own code can stand in for pickled ones by name (``custom_objects``).

    zip -> data (JSON) -> image observations? -> algorithm (policy class + fields) -> model
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rlcam import safeload
from rlcam.device import move_agent, resolve_device
from rlcam.errors import RlcamError

ALGOS = ("ppo", "a2c", "dqn", "qrdqn", "sac", "td3", "ddpg", "tqc", "recurrent_ppo")
TITLES = {
    "ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "qrdqn": "QR-DQN", "sac": "SAC", "td3": "TD3", "ddpg": "DDPG",
    "tqc": "TQC", "recurrent_ppo": "RecurrentPPO",
}  # fmt: skip
CONTRIB = {"qrdqn": "QRDQN", "tqc": "TQC", "recurrent_ppo": "RecurrentPPO"}  # algo -> sb3_contrib class
_SB3 = {"ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "sac": "SAC", "td3": "TD3", "ddpg": "DDPG"}

# SB3 / sb3-contrib algorithms rlcam does not load, by where their policies live.
UNSUPPORTED = {
    "sb3_contrib.common.maskable": "MaskablePPO",
    "sb3_contrib.ppo_mask": "MaskablePPO",
    "sb3_contrib.ars": "ARS",
    "sb3_contrib.crossq": "CrossQ",
}
# What each algorithm writes to its data that the others do not (PPO and A2C share policy classes;
# TRPO, of sb3-contrib, uses them too; DDPG is TD3 with these three fixed).
_PPO_FIELDS = ("n_epochs", "clip_range")
_TRPO_FIELDS = ("cg_max_steps", "cg_damping", "n_critic_updates")
_DDPG_FIELDS = {"policy_delay": 1, "target_noise_clip": 0.0, "target_policy_noise": 0.1}


def algo_title(algo: str) -> str:
    return TITLES.get(algo, algo.upper())


def _supported() -> str:
    titles = [TITLES[a] for a in ALGOS]
    return ", ".join(titles[:-1]) + " and " + titles[-1]


@dataclass
class Agent:
    """A loaded SB3 model and what rlcam needs to know about it."""

    model: object  # stable_baselines3 BaseAlgorithm
    algo: str  # one of ALGOS
    path: Path
    sha256: str
    policy_class_name: str = ""  # "module.Class" of the policy, e.g. stable_baselines3.sac.policies.CnnPolicy

    @property
    def policy(self):
        return self.model.policy


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_agent_data(path: Path) -> dict:
    """The JSON ``data`` member of an SB3 zip, after checking the file is a sound SB3 zip."""
    path = Path(path)
    if not path.exists():
        raise RlcamError(f"agent file {path} does not exist; pass the path of an SB3 .zip with --agent.")
    if path.is_dir():
        raise RlcamError(f"agent path {path} is a directory; pass the SB3 .zip file inside it.")
    if not zipfile.is_zipfile(path):
        raise RlcamError(f"agent file {path} is not a zip file; SB3 agents are saved with model.save('x.zip').")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
            data = archive.read("data") if "data" in names else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RlcamError(f"agent file {path} is a damaged zip ({exc}); save or copy it again.") from None
    if bad is not None:
        raise RlcamError(f"agent file {path} is corrupt (member {bad!r} fails its checksum); save or copy it again.")
    missing = {"data", "policy.pth"} - names
    if missing:
        raise RlcamError(
            f"agent file {path} is not an SB3 agent: it lacks {', '.join(sorted(missing))}; "
            "save it with model.save('x.zip')."
        )
    try:
        data = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RlcamError(f"agent file {path} has an unreadable 'data' member; save it again.") from None
    if not isinstance(data, dict):
        raise RlcamError(f"agent file {path} has a 'data' member that is not a JSON object; save it again.")
    return data


# -- which algorithm ------------------------------------------------------------------------------------


def _subject(path: Path | None) -> str:
    return f"agent file {path}" if path is not None else "the agent file"


def _pick(algos: tuple[str, ...], data: dict, name: str, path: Path | None) -> str:
    """One algorithm among those sharing a policy class, from the fields only it writes."""
    if algos == ("ppo", "a2c"):
        if any(k in data for k in _TRPO_FIELDS) and not any(k in data for k in _PPO_FIELDS):
            raise RlcamError(
                f"{_subject(path)} is a TRPO agent (sb3-contrib, policy {name}), which rlcam does not load; "
                f"it loads {_supported()} agents."
            )
        return "ppo" if any(k in data for k in _PPO_FIELDS) else "a2c"
    if algos == ("td3", "ddpg"):
        return "ddpg" if all(data.get(k) == v for k, v in _DDPG_FIELDS.items()) else "td3"
    return algos[0]


def _unsupported_sb3(name: str, path: Path | None) -> RlcamError:
    algo = next((title for prefix, title in UNSUPPORTED.items() if name.startswith(prefix + ".")), None)
    what = f"is a {algo} agent (policy {name})" if algo else f"has the SB3 policy class {name}, unknown to rlcam"
    return RlcamError(f"{_subject(path)} {what}; rlcam loads {_supported()} agents.")


def _algos_of_class(policy_cls: type, path: Path | None) -> tuple[str, tuple[str, ...]]:
    """The algorithms whose SB3 policy ``policy_cls`` is or derives from (a class from the user's code)."""
    name = f"{policy_cls.__module__}.{policy_cls.__qualname__}"
    for base in getattr(policy_cls, "__mro__", ()):
        algos = safeload.POLICIES.get((base.__module__, base.__qualname__))
        if algos:
            return name, algos
        if base.__module__.startswith(tuple(p + "." for p in UNSUPPORTED)):
            raise _unsupported_sb3(f"{base.__module__}.{base.__qualname__}", path)
    raise RlcamError(
        f"{_subject(path)} has the policy class {name}, which derives from none of SB3's policies; "
        f"rlcam loads {_supported()} agents."
    )


def detect_algo(data: dict, policy_cls: type | None = None, path: Path | None = None) -> str:
    """Tell the algorithm from the policy class the data names and the fields SB3 writes, unpickling nothing.

    Args:
        data: the zip's JSON ``data``.
        policy_cls: the policy class, where it is not SB3's own (from ``custom_objects`` or a trusted
            unpickling): its SB3 base class decides.
        path: the file, for messages.

    Raises:
        RlcamError: an SB3 algorithm rlcam does not load, or a custom policy class (the message says
            how to supply it).
    """
    if policy_cls is not None:
        name, algos = _algos_of_class(policy_cls, path)
        return _pick(algos, data, name, path)
    try:
        ref = safeload.policy_ref(data)
    except safeload.Refused as exc:
        raise safeload.refusal(path, exc) from None
    if not isinstance(ref, safeload.Global):
        what = safeload.describe(ref)
        raise safeload.refusal(
            path, safeload.Refused(f"contains custom pickled objects ({what} as policy_class)", "policy_class")
        )
    algos = safeload.POLICIES.get((ref.module, ref.name))
    if algos is not None:
        return _pick(algos, data, str(ref), path)
    if ref.module.split(".")[0] in safeload.SB3_PACKAGES:
        raise _unsupported_sb3(str(ref), path)
    exc = safeload.Refused(f"contains custom pickled classes ({ref} as policy_class)", "policy_class")
    raise safeload.refusal(path, exc)


def algo_class(algo: str):
    """The SB3 / sb3-contrib algorithm class for ``algo`` (sb3-contrib ones with an install hint)."""
    if algo in CONTRIB:
        try:
            contrib = importlib.import_module("sb3_contrib")
        except ImportError:
            raise RlcamError(
                f"this is a {algo_title(algo)} agent, which needs sb3-contrib: pip install 'rlcam[contrib]'."
            ) from None
        return getattr(contrib, CONTRIB[algo])
    import stable_baselines3 as sb3

    return getattr(sb3, _SB3[algo])


# -- classes from the user's code -----------------------------------------------------------------------


def resolve_custom_objects(custom_objects: dict[str, str | type] | None) -> dict[str, type]:
    """``{"features_extractor_class": "mycode.nets:TinyCNN"}`` -> the classes, imported from the user's code.

    A key is ``policy_class`` or a key of the agent's ``policy_kwargs``; a value is ``module:Class``
    (``Class`` may be dotted) or the class itself. Importing the module runs the user's code, as
    importing it anywhere would; nothing from the zip is run.
    """
    resolved = {}
    for key, spec in (custom_objects or {}).items():
        if isinstance(spec, type):
            resolved[key] = spec
            continue
        module, sep, qualname = str(spec).partition(":")
        if not (sep and module and qualname):
            raise RlcamError(f"custom object {key}={spec!r} is not of the form module:Class (e.g. mycode.nets:CNN).")
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # the user's module may raise anything on import
            message = " ".join(str(exc).split())[:200]
            raise RlcamError(f"custom object {key}={spec} does not import ({type(exc).__name__}: {message}).") from None
        if not isinstance(obj, type):
            raise RlcamError(f"custom object {key}={spec} is a {type(obj).__name__}, not a class.")
        resolved[key] = obj
    policy_cls = resolved.get("policy_class")
    if policy_cls is not None:
        from stable_baselines3.common.policies import BasePolicy

        if not issubclass(policy_cls, BasePolicy):
            raise RlcamError(f"custom object policy_class={custom_objects['policy_class']} is not an SB3 policy class.")
    return resolved


# -- loading --------------------------------------------------------------------------------------------

# Training-only fields that may not unpickle across SB3/Python versions; inference never needs them.
_TRAINING_ONLY = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "exploration_schedule": lambda _: 0.0,
}


def _policy_name(data: dict) -> str:
    try:
        ref = safeload.policy_ref(data)
    except safeload.Refused:
        return "a policy class rlcam cannot read"
    return str(ref) if isinstance(ref, safeload.Global) else safeload.describe(ref)


def _refuse_without_image(obs_space, policy: str, path: Path) -> None:
    """No 3-D Box anywhere in the observations: nothing for a map to lie on, whatever loads the file."""
    if safeload.has_image(obs_space):
        return
    shown = " ".join(str(obs_space).split())
    shown = shown if len(shown) <= 160 else shown[:157] + "..."
    raise RlcamError(
        f"agent file {path} holds a policy ({policy}) that observes {shown}, which has no image in it; "
        "rlcam explains agents that act from images (a 3-D Box: channels, height and width)."
    )


def _saved_observation_space(data: dict):
    """The observation space as the safe loader reads it; None where only unpickling could say."""
    try:
        return safeload.observation_space(data.get("observation_space"))
    except (safeload.Refused, safeload.Unsupported):
        return None


def load_agent(
    path: str | Path,
    algo: str | None = None,
    trust: bool = False,
    custom_objects: dict[str, str] | None = None,
    device: str | None = None,
) -> Agent:
    """Load an SB3 agent zip on the CPU (then move its policy to ``device``, if given).

    Args:
        path: the ``.zip`` written by ``model.save``.
        algo: force the algorithm (one of ``ALGOS``) instead of detecting it.
        trust: load with SB3's ``load``, which unpickles the file and so runs any code it carries.
            By default the model is rebuilt from the zip's JSON and tensors (``rlcam.safeload``),
            which covers every policy class of SB3 and sb3-contrib that rlcam explains and refuses
            custom pickled classes.
        custom_objects: classes from your own code for pickled ones, ``{key: "module:Class"}``, where
            key is ``policy_class`` or a key of the agent's ``policy_kwargs`` (e.g.
            ``features_extractor_class``): a custom agent then loads without ``trust``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``rlcam.device.resolve_device``): the
            policy is moved there once loaded; None leaves it on the CPU.

    Raises:
        RlcamError: the file is missing, not an SB3 zip or damaged; its observations hold no image;
            its algorithm is not one rlcam loads; it needs unpickling (custom classes) without
            ``trust`` or ``custom_objects``; its weights do not fit the policy or are not finite; or
            ``device`` is not one this machine has.
    """
    path = Path(path)
    target = None if device is None else resolve_device(device)  # before the work of loading
    data = read_agent_data(path)
    if algo is not None and algo not in ALGOS:
        raise RlcamError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}.")
    custom = resolve_custom_objects(custom_objects)
    obs_space = _saved_observation_space(data)
    if obs_space is not None:
        _refuse_without_image(obs_space, _policy_name(data), path)
    policy_cls = custom.get("policy_class")
    if policy_cls is None and trust and not _is_sb3_class(data):
        policy_cls = _unpickle_policy_class(data, path)
    if algo is not None and policy_cls is not None:
        name, algos = _algos_of_class(policy_cls, path)
        if algo not in algos:
            raise RlcamError(
                f"the agent's policy ({name}) is a {' or '.join(map(algo_title, algos))} policy, not a "
                f"{algo_title(algo)} one; leave --algo out to detect the algorithm."
            )
    algo = algo or detect_algo(data, policy_cls, path)
    cls = algo_class(algo)
    if trust:
        model = _trusted_load(path, data, algo, cls, custom)
        _refuse_without_image(model.observation_space, _class_name(type(model.policy)), path)
    else:
        model = safeload.load_model(path, data, algo, cls, custom)
    name = _class_name(type(model.policy))
    agent = Agent(model=model, algo=algo, path=path, sha256=file_sha256(path), policy_class_name=name)
    if target is not None:
        move_agent(agent, target)
    return agent


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_sb3_class(data: dict) -> bool:
    try:
        ref = safeload.policy_ref(data)
    except safeload.Refused:
        return False
    return isinstance(ref, safeload.Global) and ref.module.split(".")[0] in safeload.SB3_PACKAGES


def _unpickle_policy_class(data: dict, path: Path) -> type:
    """The pickled policy class, unpickled (``trust`` only): its SB3 base class tells the algorithm."""
    import cloudpickle

    try:
        policy_cls = cloudpickle.loads(base64.b64decode(data["policy_class"][":serialized:"]))
    except Exception as exc:  # unpickling a foreign class raises anything
        message = " ".join(str(exc).split())[:200]
        raise RlcamError(
            f"agent file {path} has a policy class that does not unpickle ({type(exc).__name__}: {message})."
        ) from None
    if not isinstance(policy_cls, type):
        raise RlcamError(f"agent file {path} has a policy_class that unpickles to a {type(policy_cls).__name__}.")
    return policy_cls


def _trusted_load(path: Path, data: dict, algo: str, cls, custom: dict):
    """SB3's own load, then the same weight checks as the safe path.

    The checks matter: for PPO/A2C, SB3 falls back to a non-strict load when keys are missing
    (a compatibility path for SB3 < 1.7), which would silently leave untrained weights.
    """
    replace = dict(_TRAINING_ONLY)
    if "policy_class" in custom:
        replace["policy_class"] = custom["policy_class"]
    if set(custom) - {"policy_class"}:
        replace["policy_kwargs"] = _trusted_kwargs(data, custom, path)
    try:
        model = cls.load(path, device="cpu", custom_objects=replace)
    except Exception as exc:  # SB3 raises many types for a broken or foreign zip
        message = " ".join(str(exc).split())[:300]
        raise RlcamError(
            f"SB3 could not load {path} as a {algo_title(algo)} agent ({type(exc).__name__}: {message})."
        ) from None
    safeload.check_weights(model.policy, safeload.read_weights(path), path)
    return model


def _trusted_kwargs(data: dict, custom: dict, path: Path) -> dict:
    """policy_kwargs with the user's classes in, for SB3's load (which replaces only top-level fields)."""
    try:
        return safeload.policy_kwargs(data.get("policy_kwargs"), custom)
    except safeload.Refused:  # other pickled objects: trust allows unpickling them
        import cloudpickle

        entry = data.get("policy_kwargs") or {}
        kwargs = cloudpickle.loads(base64.b64decode(entry[":serialized:"])) if ":serialized:" in entry else entry
        return {**kwargs, **{k: v for k, v in custom.items() if k != "policy_class"}}
