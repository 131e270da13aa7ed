"""What is explained: the policy's forward pass and the score per algorithm and target.

Actor-critic agents (PPO, A2C) explain the chosen action's logit by default, DQN-family
agents its Q-value. Every function here works on a batch: ``obs (N, C, H, W)``.

Contrastive targets, ``contrast:B`` for every algorithm, explain "why a rather than B": the
score is ``s_a - s_B`` with s the logits (PPO/A2C) or Q-values (DQN family; QR-DQN: mean over
quantiles) and a the chosen action. B is an action index or name (``contrast:LEFT``, names
need the env's action meanings); ``check_target`` turns it into the index form ``contrast:3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlcam.errors import RlcamError

TARGETS = {
    "ppo": ("logit", "logprob", "value"),
    "a2c": ("logit", "logprob", "value"),
    "dqn": ("q", "advantage"),
    "qrdqn": ("q", "advantage"),
}
DEFAULT_TARGET = {"ppo": "logit", "a2c": "logit", "dqn": "q", "qrdqn": "q"}
CONTRAST = "contrast:"


@dataclass
class Forward:
    """One forward pass of a policy, batched."""

    action_scores: torch.Tensor  # (N, A) logits (actor-critic) or Q-values (DQN family); (N, D) means (continuous)
    value: torch.Tensor  # (N,) critic value, or max_a Q(s, a) for the DQN family
    # What a policy family needs beside them (a distribution's spread, an LSTM's next state, ...).
    extra: dict = field(default_factory=dict)


def check_target(
    algo: str, target: str | None, n_actions: int | None = None, action_names: list[str] | None = None
) -> str:
    """The target to use for ``algo``: ``target`` if valid (contrasts in index form), else the default.

    Args:
        algo: one of ``TARGETS``.
        target: a name from ``TARGETS[algo]``, ``contrast:B`` (B an action index or name), or None.
        n_actions: the action count, to check a contrast's index.
        action_names: the env's action meanings, to resolve ``contrast:NAME`` (case-insensitive).
    """
    if target is None:
        return DEFAULT_TARGET[algo]
    if target.startswith(CONTRAST):
        return CONTRAST + str(_contrast_index(target, n_actions, action_names))
    if target not in TARGETS[algo]:
        raise RlcamError(
            f"target {target!r} does not apply to {algo.upper()} agents; "
            f"choose one of {', '.join(TARGETS[algo])} or contrast:ACTION."
        )
    return target


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


def policy_forward(policy, algo: str, obs: torch.Tensor) -> Forward:
    """Run the policy's own modules (not ``predict``, which disables autograd).

    Args:
        policy: ``model.policy`` of an SB3 model.
        algo: one of ``TARGETS``.
        obs: ``(N, C, H, W)`` uint8 observations, as the env gives them.
    """
    if algo in ("ppo", "a2c"):
        features = policy.extract_features(obs)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = policy.mlp_extractor.forward_actor(pi_features)
            latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return Forward(policy.action_net(latent_pi), policy.value_net(latent_vf).squeeze(-1))
    if algo == "dqn":
        q = policy.q_net(obs)
    else:
        q = policy.quantile_net(obs).mean(dim=1)  # (N, n_quantiles, A) -> (N, A)
    return Forward(q, q.max(dim=1).values)


def explained_score(target: str, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
    """The scalar explained per sample, ``(N,)``, for the chosen ``actions (N,)``."""
    chosen = actions[:, None]
    scores = forward.action_scores
    if target in ("logit", "q"):
        return scores.gather(1, chosen).squeeze(1)
    if target == "logprob":
        return torch.log_softmax(scores, dim=1).gather(1, chosen).squeeze(1)
    if target == "advantage":
        return scores.gather(1, chosen).squeeze(1) - scores.mean(dim=1)
    if target == "value":
        return forward.value
    if target.startswith(CONTRAST):  # why the chosen action rather than the other one
        return scores.gather(1, chosen).squeeze(1) - scores[:, contrast_action(target)]
    raise RlcamError(f"unknown target {target!r}.")


def display_values(algo: str, forward: Forward) -> torch.Tensor:
    """What the annotation panel shows per action: probabilities or Q-values, ``(N, A)``."""
    if algo in ("ppo", "a2c"):
        return torch.softmax(forward.action_scores, dim=1)
    return forward.action_scores
