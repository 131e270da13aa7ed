"""What every policy family shares about targets: the forward's result and contrastive targets.

A family (``rlcam.families``) runs the policy and says which targets exist. Contrastive
targets, ``contrast:B`` for discrete actions, explain "why a rather than B": the score is
``s_a - s_B`` with s the logits (PPO/A2C) or Q-values (DQN family; QR-DQN: mean over quantiles)
and a the chosen action. B is an action index or name (``contrast:LEFT``, names need the env's
action meanings); the family's ``check_target`` turns it into the index form ``contrast:3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlcam.errors import RlcamError

CONTRAST = "contrast:"


@dataclass
class Forward:
    """One forward pass of a policy, batched."""

    action_scores: torch.Tensor  # (N, A) logits (actor-critic) or Q-values (DQN family); (N, D) means (continuous)
    value: torch.Tensor  # (N,) critic value, or max_a Q(s, a) for the DQN family
    # What a policy family needs beside them (a distribution's spread, an LSTM's next state, ...).
    extra: dict = field(default_factory=dict)


def _contrast_index(target: str, n_actions: int | None, action_names: list[str] | None) -> int:
    other = target[len(CONTRAST) :]
    if other.isdigit():
        index = int(other)
    elif action_names is not None and other.upper() in [name.upper() for name in action_names]:
        index = [name.upper() for name in action_names].index(other.upper())
    elif action_names is not None:
        raise RlcamError(f"target {target!r}: no action named {other!r}; the actions are {', '.join(action_names)}.")
    else:
        raise RlcamError(
            f"target {target!r} names the other action, but the action names are not known here; "
            "give its index instead (e.g. contrast:3)."
        )
    if n_actions is not None and not 0 <= index < n_actions:
        raise RlcamError(f"target {target!r}: the action index must lie in [0, {n_actions}).")
    return index


def contrast_action(target: str) -> int | None:
    """The other action of a checked ``contrast:B`` target, or None for any other target."""
    return int(target[len(CONTRAST) :]) if target.startswith(CONTRAST) else None
