"""Where the maps are computed: ``--device auto|cpu|cuda|cuda:N``.

The agent is always loaded on the CPU (``rlcam.agents.load_agent``: nothing unpickled), then its
policy is moved (``model.policy.to(device)``). The explainer follows the policy's device: the
observations go there, every map is computed there, and only the small results (actions, maps,
scores, the panel's bars) are copied back to the host (``rlcam.explainer``).

    "auto" -> cuda if torch.cuda.is_available() else cpu
    "cuda" / "cuda:N" -> that GPU, or one sentence (``RlcamError``) where there is none
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from rlcam.errors import RlcamError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # what --device takes, as its help lists it
DEFAULT = "cpu"  # the CUDA path has not yet been run on a GPU (docs/benchmarks.md); "auto" picks it where one is


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``name`` as a ``torch.device`` this machine has; None means ``DEFAULT``.

    Raises:
        RlcamError: an unknown name, CUDA asked for where torch sees no GPU, or a GPU index beyond
            the ones it sees.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (DEFAULT if name is None else str(name)).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise RlcamError(f"--device takes auto, cpu, cuda or cuda:N, not {name!r}.")
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + (
            " has no CUDA support" if torch.version.cuda is None else " sees no GPU"
        )
        raise RlcamError(f"--device {text} needs a CUDA GPU, but {build} here; use --device cpu or auto.")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= count:
        raise RlcamError(f"--device {text}: torch sees {count} GPU(s) here, numbered 0 to {count - 1}.")
    return torch.device("cuda", index)


def policy_device(policy: torch.nn.Module) -> torch.device:
    """The device of the policy's parameters (the CPU for a policy without any)."""
    param = next(policy.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def move_agent(agent, device: torch.device) -> None:
    """Put the agent's policy (every network it holds: actor, critics, targets) on ``device``.

    SB3's ``model.device`` follows, so that SB3's own ``predict`` sends observations there too.
    """
    agent.model.policy.to(device)
    if hasattr(agent.model, "device"):
        agent.model.device = device


@contextlib.contextmanager
def on_device(agent, device: torch.device | None) -> Iterator[torch.device]:
    """The agent's policy on ``device`` inside the block (None: where it is), and back where it was
    after it, so that a caller's model is left as it came."""
    before = policy_device(agent.policy)
    target = before if device is None else device
    if target != before:
        move_agent(agent, target)
    try:
        yield target
    finally:
        if target != before:
            move_agent(agent, before)


def device_meta(device: torch.device) -> dict:
    """What a trace's meta records: ``{"device": "cpu"}``, or ``"cuda:N"`` and the GPU's name."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"device": f"cuda:{index}", "gpu": torch.cuda.get_device_name(index)}
    return {"device": str(device)}
