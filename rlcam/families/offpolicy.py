"""Off-policy actor + critics: SAC, TD3, DDPG and sb3-contrib's TQC.

The actor's action components are explained as for continuous actor-critic policies
(``mean:i``: the deterministic, tanh-squashed action's component i, with its sign). The critics
explain ``Q(s, a)`` of the action taken, through the critic's own features extractor:

- ``q``: the critic value the actor is trained on: the min over critics (SAC), the first
  critic (TD3, DDPG), the mean over every critic's quantiles (TQC);
- ``q:K`` critic K alone (TQC: the mean of its quantiles); ``q:min`` the min over critics;
  ``q:mean`` (TQC) the mean over all quantiles.

    obs -> actor.features_extractor -> (latent_pi) -> mu -> tanh -> a (N, D) in [-1, 1]
    obs -> critic.features_extractor -> cat(features, a) -> q_networks -> Q (N, critics[, quantiles])
"""

from __future__ import annotations

import copy

import torch

from rlcam.errors import RlcamError
from rlcam.families.base import sample_with
from rlcam.families.continuous import MEAN, _Components
from rlcam.fasthead import Tape
from rlcam.targets import Forward

Q = "q"


class ActorCritics(_Components):
    """An actor and one or more critics, each with its own features extractor unless shared."""

    name = "actor + critics"

    def __init__(self, agent):
        super().__init__(agent)
        critic = self.policy.critic
        self.n_critics = int(getattr(critic, "n_critics", len(critic.q_networks)))
        self.quantiles = hasattr(critic, "quantiles_total")  # TQC
        self.stochastic_actor = hasattr(self.policy.actor, "action_dist")  # SAC, TQC; TD3/DDPG are deterministic
        extra = [Q] + [f"{Q}:{k}" for k in range(self.n_critics)]
        if self.n_critics > 1:
            extra.append(f"{Q}:min")
        if self.quantiles:
            extra.append(f"{Q}:mean")
        self.extra_targets = tuple(extra)

    @property
    def targets(self):
        return (f"{MEAN}i", Q, f"{Q}:K", *(t for t in self.extra_targets if t in (f"{Q}:min", f"{Q}:mean")))

    def q_rule(self) -> str:
        """What plain ``q`` means for this agent (the panel and ``rlcam info`` say it)."""
        if self.quantiles:
            return f"{Q}:mean"
        if self.stochastic_actor and self.n_critics > 1:
            return f"{Q}:min"
        return f"{Q}:0"

    def tiles(self, target):
        """A tile per action component for the actor's targets, a tile per critic for the critics'
        (a critic layer cannot explain the actor, nor the actor's layer a critic)."""
        if target == Q or target.startswith(Q + ":"):
            return [(f"critic {k}", f"{Q}:{k}", None) for k in range(self.n_critics)]
        return super().tiles(target)

    def describe(self, target):
        rule = self.q_rule() if target == Q else target
        which = {"min": f"min of {self.n_critics} critics", "mean": f"mean of {self.n_critics} critics' quantiles"}
        part = rule[len(Q) + 1 :]
        return f"{target} ({which.get(part, f'critic {part}')})" if target.startswith(Q) else target

    def head_paths(self, target):
        root = "critic" if target == Q or target.startswith(Q + ":") else "actor"
        children = self.policy.get_submodule(root).named_children()
        return [f"{root}.{name}" for name, _ in children if name != "features_extractor"]

    def extractor_paths(self, target):
        if target == Q or target.startswith(Q + ":"):
            return ["critic.features_extractor"]
        return ["actor.features_extractor"]

    def squashes(self):
        return True  # every SB3 off-policy actor acts in [-1, 1], unscaled to the bounds by predict

    # -- forward ------------------------------------------------------------------------------------

    def forward(self, obs, state=None):
        actor = self.policy.actor
        dist = None
        if self.stochastic_actor:
            mean, log_std, kwargs = actor.get_action_dist_params(obs)
            dist = copy.copy(actor.action_dist).proba_distribution(mean, log_std, **kwargs)
            mode = dist.mode()
        else:
            mode = actor(obs)  # TD3/DDPG: mu ends with tanh
        return Forward(mode, torch.zeros(len(mode), device=mode.device), {"dist": dist, "obs": obs})

    def choose(self, forward, deterministic, generator):
        if deterministic or forward.extra["dist"] is None:  # TD3/DDPG's predict adds no noise
            return forward.action_scores.detach()
        return sample_with(generator, forward.extra["dist"].sample).detach()

    def critic_values(self, obs: torch.Tensor, actions: torch.Tensor, tapes: list | None = None) -> torch.Tensor:
        """Each critic's Q of ``actions``: ``(N, critics)``, or ``(N, critics, quantiles)`` for TQC.

        Written from the critic's own modules rather than ``critic(obs, a)``, which turns autograd
        off through a shared extractor (so that only the actor's loss trains it) and would hide
        the features from the map. With ``tapes`` (a list), each critic runs through a ``Tape``
        appended to it, for the hand-written gradient.
        """
        critic = self.policy.critic
        features = self.extract(obs, critic.features_extractor)
        inputs = torch.cat([features, actions.to(features.dtype)], dim=1)
        if tapes is None:
            out = [net(inputs) for net in critic.q_networks]
        else:
            tapes.extend(Tape() for _ in critic.q_networks)
            out = [tape.run(net, inputs) for tape, net in zip(tapes, critic.q_networks, strict=True)]
        return torch.stack(out, dim=1) if self.quantiles else torch.cat(out, dim=1)

    def score(self, target, forward, actions):
        if target.startswith(MEAN):
            return forward.action_scores[:, int(target[len(MEAN) :])]
        if target == Q or target.startswith(Q + ":"):
            # One critic pass per forward and action: every critic target and tile shares its graph.
            memo = forward.extra.get("critic_memo")
            if memo is None or memo[0] is not actions:
                tapes = [] if forward.extra.get("hand") else None
                memo = (actions, self.critic_values(forward.extra["obs"], actions, tapes), tapes)
                forward.extra["critic_memo"] = memo
            return self._q(target, memo[1])
        raise RlcamError(f"unknown target {target!r}.")

    # -- the hand-written head ------------------------------------------------------------------------

    def _is_q(self, target: str) -> bool:
        return target == Q or target.startswith(Q + ":")

    def hand_head(self, target, deterministic):
        """Critic targets for any action (the actor runs as ``predict`` does), and the deterministic
        action's components, through heads ``Tape`` knows."""
        actor = self.policy.actor
        if self._is_q(target):
            return all(Tape.supports(net) for net in self.policy.critic.q_networks)
        if self.stochastic_actor:
            return deterministic and Tape.supports(actor.latent_pi) and Tape.supports(actor.mu)
        return Tape.supports(actor.mu)

    def hand_forward(self, obs, target, state=None):
        if self._is_q(target):  # the actor as usual; the critics through tapes when a score asks (``score``)
            forward = self.forward(obs)
            forward.extra["hand"] = True
            return forward
        actor, tape = self.policy.actor, Tape()
        features = self.extract(obs, actor.features_extractor)
        if self.stochastic_actor:  # SAC, TQC: the squashed Gaussian's mode, tanh(mu(latent_pi(features)))
            mode = torch.tanh(tape.run(actor.mu, tape.run(actor.latent_pi, features)))
        else:  # TD3, DDPG: mu ends with tanh
            mode = tape.run(actor.mu, features)
        zeros = torch.zeros(len(mode), device=mode.device)
        return Forward(mode, zeros, {"dist": None, "obs": obs, "tapes": {"pi": tape}})

    def hand_gradient(self, target, forward, actions):
        if not self._is_q(target):
            return self.component_gradient(target, forward, forward.extra["tapes"]["pi"], self.stochastic_actor)
        self.score(target, forward, actions)  # the critics' tapes for these actions
        _, values, tapes = forward.extra["critic_memo"]
        per_critic = values.mean(dim=2) if self.quantiles else values  # (N, critics)
        rule = self.q_rule() if target == Q else target
        which = rule[len(Q) + 1 :]
        coef = torch.zeros_like(per_critic)
        if which == "min":  # the gradient of a min goes to the critic it picked
            coef.scatter_(1, per_critic.min(dim=1).indices[:, None], 1.0)
        elif which == "mean":
            coef += 1.0 / self.n_critics
        else:
            coef[:, int(which)] = 1.0
        grads = None
        for k, tape in enumerate(tapes):
            g = coef[:, k : k + 1]
            if self.quantiles:  # critic k's Q is the mean of its quantiles
                g = (g / values.shape[2]).expand(-1, values.shape[2])
            g = tape.backward(g)[:, : -actions.shape[1]]  # the features' columns, not the action's
            grads = g if grads is None else grads + g
        return grads

    def _q(self, target: str, values: torch.Tensor) -> torch.Tensor:
        rule = self.q_rule() if target == Q else target
        per_critic = values.mean(dim=2) if self.quantiles else values  # (N, critics)
        which = rule[len(Q) + 1 :]
        if which == "min":
            return per_critic.min(dim=1).values
        if which == "mean":
            return per_critic.mean(dim=1)
        return per_critic[:, int(which)]

    def check_target(self, target, action_names=None):
        if target is not None and target.startswith(Q + ":") and target not in self.extra_targets:
            raise RlcamError(
                f"target {target!r} does not apply to this agent; "
                f"its critic targets are {', '.join(self.extra_targets)}."
            )
        return super().check_target(target, action_names)

    def value(self, forward, actions):
        """``q`` of the taken ``actions``: what the panel and the trace show as the value."""
        memo = forward.extra.get("critic_memo")
        if memo is not None and memo[0] is actions:  # the critics already ran for a q target
            return self._q(Q, memo[1].detach())
        return self._q(Q, self.critic_values(forward.extra["obs"].detach(), actions.detach()))

    def value_costs_a_pass(self, forward, actions):
        memo = forward.extra.get("critic_memo")
        return memo is None or memo[0] is not actions
