"""What is explained: the policy's forward pass and the score per algorithm and target.

Actor-critic agents (PPO, A2C) explain the chosen action's logit by default, DQN-family
agents its Q-value. Every function here works on a batch: ``obs (N, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcam.errors import RlcamError

TARGETS = {
    "ppo": ("logit", "logprob", "value"),
    "a2c": ("logit", "logprob", "value"),
    "dqn": ("q", "advantage"),
    "qrdqn": ("q", "advantage"),
}
DEFAULT_TARGET = {"ppo": "logit", "a2c": "logit", "dqn": "q", "qrdqn": "q"}


@dataclass
class Forward:
    """One forward pass of a policy, batched."""

    action_scores: torch.Tensor  # (N, A) logits (actor-critic) or Q-values (DQN family)
    value: torch.Tensor  # (N,) critic value, or max_a Q(s, a) for the DQN family


def check_target(algo: str, target: str | None) -> str:
    """The target to use for ``algo``: ``target`` if valid, else the default."""
    if target is None:
        return DEFAULT_TARGET[algo]
    if target not in TARGETS[algo]:
        raise RlcamError(
            f"target {target!r} does not apply to {algo.upper()} agents; choose one of {', '.join(TARGETS[algo])}."
        )
    return target


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
    raise RlcamError(f"unknown target {target!r}.")


def display_values(algo: str, forward: Forward) -> torch.Tensor:
    """What the annotation panel shows per action: probabilities or Q-values, ``(N, A)``."""
    if algo in ("ppo", "a2c"):
        return torch.softmax(forward.action_scores, dim=1)
    return forward.action_scores
