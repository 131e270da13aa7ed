"""Loading a saved SB3 agent: validate the file, tell the algorithm, load it on the CPU.

By default nothing in the zip is unpickled (``rlcam.safeload`` rebuilds standard agents from
its JSON and tensors); ``trust=True`` is SB3's own load, which runs the file's pickles.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rlcam import safeload
from rlcam.errors import RlcamError

ALGOS = ("ppo", "a2c", "dqn", "qrdqn")


@dataclass
class Agent:
    """A loaded SB3 model and what rlcam needs to know about it."""

    model: object  # stable_baselines3 BaseAlgorithm
    algo: str  # one of ALGOS
    path: Path
    sha256: str

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
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RlcamError(f"agent file {path} has an unreadable 'data' member; save it again.") from None


def detect_algo(data: dict) -> str:
    """Tell the algorithm from the plain JSON fields SB3 writes, without unpickling anything."""
    module = str(data.get("policy_class", {}).get("__module__", ""))
    if module.startswith("sb3_contrib.qrdqn"):
        return "qrdqn"
    if module.startswith("stable_baselines3.dqn"):
        return "dqn"
    if module.startswith("stable_baselines3.common.policies"):
        # PPO and A2C share the policy class; only PPO saves clip_range and n_epochs.
        return "ppo" if "n_epochs" in data or "clip_range" in data else "a2c"
    raise RlcamError(
        f"cannot tell the algorithm of this agent (policy module {module or 'unknown'!r}); "
        f"rlcam supports {', '.join(ALGOS)}: pass --algo to say which."
    )


def algo_class(algo: str):
    if algo == "qrdqn":
        try:
            from sb3_contrib import QRDQN
        except ImportError:
            raise RlcamError("this is a QR-DQN agent, which needs sb3-contrib: pip install 'rlcam[contrib]'.") from None
        return QRDQN
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]


# Training-only fields that may not unpickle across SB3/Python versions; inference never needs them.
_TRAINING_ONLY = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "exploration_schedule": lambda _: 0.0,
}


def load_agent(path: str | Path, algo: str | None = None, trust: bool = False) -> Agent:
    """Load an SB3 agent zip on the CPU.

    Args:
        path: the ``.zip`` written by ``model.save``.
        algo: force the algorithm (one of ``ALGOS``) instead of detecting it.
        trust: load with SB3's ``load``, which unpickles the file and so runs any code it carries.
            By default the model is rebuilt from the zip's JSON and tensors (``rlcam.safeload``),
            which covers SB3's standard policies and refuses custom pickled classes.

    Raises:
        RlcamError: the file is missing, not an SB3 zip, damaged, of an unsupported algorithm, needs
            unpickling (custom classes) without ``trust``, or its weights do not fit the policy or are
            not finite.
    """
    path = Path(path)
    data = read_agent_data(path)
    if algo is not None and algo not in ALGOS:
        raise RlcamError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}.")
    algo = algo or detect_algo(data)
    cls = algo_class(algo)
    if trust:
        model = _trusted_load(path, algo, cls)
    else:
        model = safeload.load_model(path, data, algo, cls)
    return Agent(model=model, algo=algo, path=path, sha256=file_sha256(path))


def _trusted_load(path: Path, algo: str, cls):
    """SB3's own load, then the same weight checks as the safe path.

    The checks matter: for PPO/A2C, SB3 falls back to a non-strict load when keys are missing
    (a compatibility path for SB3 < 1.7), which would silently leave untrained weights.
    """
    try:
        model = cls.load(path, device="cpu", custom_objects=dict(_TRAINING_ONLY))
    except Exception as exc:  # SB3 raises many types for a broken or foreign zip
        message = " ".join(str(exc).split())[:300]
        raise RlcamError(
            f"SB3 could not load {path} as a {algo.upper()} agent ({type(exc).__name__}: {message})."
        ) from None
    safeload.check_weights(model.policy, safeload.read_weights(path), path)
    return model
