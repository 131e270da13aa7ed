"""Discrete actions: actor-critic (PPO, A2C) and Q-networks (DQN, QR-DQN).

Actor-critic agents explain the chosen action's logit by default, Q-networks its Q-value
(QR-DQN: the mean over quantiles). ``contrast:B`` explains "why a rather than B" for both.
"""

from __future__ import annotations

import numpy as np
import torch

from rlcam.errors import RlcamError
from rlcam.families.actor_critic import ActorCriticBase
from rlcam.families.base import Family
from rlcam.targets import CONTRAST, Forward, _contrast_index, contrast_action


class _Discrete(Family):
    discrete = True
    base_score = "logit"

    def check_target(self, target, action_names=None):
        if target is not None and target.startswith(CONTRAST):
            return CONTRAST + str(_contrast_index(target, self.n_actions, action_names))
        return super().check_target(target, action_names)

    @property
    def n_actions(self) -> int:
        return int(self.policy.action_space.n)

    def tiles(self, target):
        return [(str(a), target, a) for a in range(self.n_actions)]

    def check_actions(self, actions, n):
        actions = torch.as_tensor(np.asarray(actions).reshape(-1), device=self.policy.device)
        if (
            actions.dtype.is_floating_point
            or len(actions) != n
            or not ((actions >= 0) & (actions < self.n_actions)).all()
        ):
            raise RlcamError(f"actions to explain must be {n} integers in [0, {self.n_actions}).")
        return actions.long()

    def env_actions(self, actions):
        return actions.cpu().numpy().astype(np.int64)

    def score(self, target, forward, actions):
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


class DiscreteActorCritic(ActorCriticBase, _Discrete):
    """PPO/A2C with a ``Discrete`` action space: a categorical over logits and a critic."""

    name = "discrete actor-critic"
    targets = ("logit", "logprob", "value")
    head_kind = "actor_critic"
    bar_kind = "prob"

    def forward(self, obs, state=None):
        latent_pi, latent_vf, next_state = self.latents(obs, state)
        return Forward(self.policy.action_net(latent_pi), self.critic(latent_vf), {"state": next_state})

    def choose(self, forward, deterministic, generator):
        scores = forward.action_scores.detach()
        if deterministic:
            return scores.argmax(dim=1)
        probs = torch.softmax(scores.float().cpu(), dim=1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(scores.device)

    def display(self, forward):
        return torch.softmax(forward.action_scores, dim=1)


class QNetwork(_Discrete):
    """DQN and QR-DQN: Q-values (QR-DQN: the mean of each action's quantiles); epsilon-greedy."""

    name = "Q-network"
    targets = ("q", "advantage")
    bar_kind = "q"
    base_score = "q"

    def __init__(self, agent):
        super().__init__(agent)
        self.quantiles = hasattr(self.policy, "quantile_net")
        self.head_kind = "quantile" if self.quantiles else "q"
        self.epsilon = float(getattr(self.model, "exploration_rate", 0.0))

    def extractor_paths(self, target):
        return ["quantile_net.features_extractor" if self.quantiles else "q_net.features_extractor"]

    def head_paths(self, target):
        return ["quantile_net.quantile_net" if self.quantiles else "q_net.q_net"]

    def forward(self, obs, state=None):
        if self.quantiles:
            q = self.policy.quantile_net(obs).mean(dim=1)  # (N, n_quantiles, A) -> (N, A)
        else:
            q = self.policy.q_net(obs)
        return Forward(q, q.max(dim=1).values)

    def choose(self, forward, deterministic, generator):
        scores = forward.action_scores.detach()
        greedy = scores.argmax(dim=1)
        if deterministic:
            return greedy
        n, n_actions = scores.shape
        explore = torch.rand(n, generator=generator) < self.epsilon
        random = torch.randint(n_actions, (n,), generator=generator)
        return torch.where(explore.to(scores.device), random.to(scores.device), greedy)
