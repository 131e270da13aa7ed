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
from rlcam.fasthead import Tape
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

    def coefficients(self, target: str, scores: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """dy/d(scores) ``(N, A)`` of ``score(target, ...)``, for every target but ``value``."""
        taken = torch.zeros_like(scores).scatter_(1, actions[:, None], 1.0)
        if target in ("logit", "q"):
            return taken
        if target == "logprob":  # d log softmax_a / d logits = onehot(a) - softmax
            return taken - torch.softmax(scores, dim=1)
        if target == "advantage":  # Q(s, a) - mean_b Q(s, b)
            return taken - 1.0 / scores.shape[1]
        if target.startswith(CONTRAST):
            other = torch.zeros_like(scores)
            other[:, contrast_action(target)] = 1.0
            return taken - other
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

    def hand_head(self, target, deterministic):
        return self.hand_supported(target)  # sampling needs only the logits

    def hand_forward(self, obs, target, state=None):
        latent_pi, latent_vf, next_state, tapes = self.hand_latents(obs, state)
        logits = tapes["pi"].run(self.policy.action_net, latent_pi)
        return Forward(logits, self.hand_critic(latent_vf, tapes), {"state": next_state, "tapes": tapes})

    def hand_gradient(self, target, forward, actions):
        if target == "value":
            return self.value_gradient(forward)
        return forward.extra["tapes"]["pi"].backward(self.coefficients(target, forward.action_scores, actions))


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

    def _net(self):
        return self.policy.quantile_net if self.quantiles else self.policy.q_net

    def hand_head(self, target, deterministic):
        net = self._net()
        return Tape.supports(net.quantile_net if self.quantiles else net.q_net)

    def hand_forward(self, obs, target, state=None):
        net, tape = self._net(), Tape()
        features = self.extract(obs, net.features_extractor)
        if self.quantiles:  # (N, n_quantiles * A) -> the mean over quantiles, (N, A)
            q = tape.run(net.quantile_net, features).view(-1, net.n_quantiles, self.n_actions).mean(dim=1)
        else:
            q = tape.run(net.q_net, features)
        return Forward(q, q.max(dim=1).values, {"tapes": {"q": tape}})

    def hand_gradient(self, target, forward, actions):
        c = self.coefficients(target, forward.action_scores, actions)
        if self.quantiles:  # each quantile of action a carries 1/n_quantiles of Q(s, a)
            n_quantiles = self._net().n_quantiles
            c = (c / n_quantiles)[:, None, :].expand(-1, n_quantiles, -1).reshape(len(c), -1)
        return forward.extra["tapes"]["q"].backward(c)

    def choose(self, forward, deterministic, generator):
        scores = forward.action_scores.detach()
        greedy = scores.argmax(dim=1)
        if deterministic:
            return greedy
        n, n_actions = scores.shape
        explore = torch.rand(n, generator=generator) < self.epsilon
        random = torch.randint(n_actions, (n,), generator=generator)
        return torch.where(explore.to(scores.device), random.to(scores.device), greedy)
