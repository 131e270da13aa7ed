"""Continuous actions (``Box``) of actor-critic policies: PPO/A2C, squashed or not, gSDE too.

Targets: ``mean:i``, component i of the deterministic action (the Gaussian's mean, squashed by
tanh where the policy squashes), whose gradient's sign matters: the explainer draws what pushes
it up and, counterfactually (the Grad-CAM paper's negative-gradient map), what pushes it down;
``logprob`` of the action taken; ``value``, the critic.

    latent_pi -> action_net -> mean (N, D) -> distribution (SB3's own, copied) -> action (N, D)
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from rlcam.errors import RlcamError
from rlcam.families.actor_critic import ActorCriticBase
from rlcam.families.base import Family, sample_with
from rlcam.targets import Forward

MEAN = "mean:"


class _Components(Family):
    """What continuous-action families share: ``mean:i`` targets, tiles per component, env actions."""

    discrete = False
    bar_kind = "component"
    extra_targets: tuple[str, ...] = ()

    @property
    def n_components(self) -> int:
        return int(np.prod(self.policy.action_space.shape))

    @property
    def targets(self):
        return (f"{MEAN}i", *self.extra_targets)

    def all_targets(self):
        return [f"{MEAN}{i}" for i in range(self.n_components)] + list(self.extra_targets)

    def default_target(self):
        return f"{MEAN}0"

    def check_target(self, target, action_names=None):
        if target is None:
            return self.default_target()
        if target in ("mean", MEAN):
            target = f"{MEAN}0"
        if target.startswith(MEAN):
            index = target[len(MEAN) :]
            if not index.isdigit() or not 0 <= int(index) < self.n_components:
                raise RlcamError(
                    f"target {target!r}: the action has {self.n_components} components; "
                    f"choose mean:0 to mean:{self.n_components - 1}."
                )
            return f"{MEAN}{int(index)}"
        if target not in self.extra_targets:
            choices = ", ".join([f"mean:0..{self.n_components - 1}", *self.extra_targets])
            raise RlcamError(f"target {target!r} does not apply to {self.name} agents; choose one of {choices}.")
        return target

    def signed(self, target):
        return target.startswith(MEAN)

    def tiles(self, target):
        return [(f"a{i}", f"{MEAN}{i}", None) for i in range(self.n_components)]

    def squashes(self) -> bool:
        return bool(getattr(self.policy, "squash_output", False))

    def env_actions(self, actions):
        """As ``predict``: unscaled from [-1, 1] where the policy squashes, else clipped to the bounds."""
        a = actions.detach().cpu().numpy().reshape(len(actions), *self.policy.action_space.shape)
        if self.squashes():
            return self.policy.unscale_action(a).astype(np.float32)
        space = self.policy.action_space
        return np.clip(a, space.low, space.high).astype(np.float32)

    def check_actions(self, actions, n):
        a = np.asarray(actions, dtype=np.float64).reshape(n, -1) if np.size(actions) == n * self.n_components else None
        if a is None or not np.isfinite(a).all():
            raise RlcamError(f"actions to explain must be {n} finite vectors of {self.n_components} components.")
        if self.squashes():
            a = self.policy.scale_action(a)
        return torch.as_tensor(a, dtype=torch.float32, device=self.policy.device)

    def display(self, forward):
        """Each component's deterministic action in the env's units, ``(N, D)``."""
        return torch.as_tensor(self.env_actions(forward.action_scores))

    def component_gradient(self, target: str, forward: Forward, tape, squashed: bool) -> torch.Tensor:
        """dy/d(tape's input) of ``mean:i``: component i of the mode, ``tanh(mean)`` where ``squashed``."""
        mode = forward.action_scores
        i = int(target[len(MEAN) :])
        g = torch.zeros_like(mode)
        g[:, i] = 1.0 - mode[:, i] * mode[:, i] if squashed else 1.0
        return tape.backward(g)


class ContinuousActorCritic(ActorCriticBase, _Components):
    """PPO/A2C with a ``Box`` action space (diagonal Gaussian, or gSDE, optionally squashed)."""

    name = "continuous actor-critic"
    extra_targets = ("logprob", "value")
    head_kind = "actor_critic"  # NatureCNN -> linear means: the mean's gradient is one row of the head

    def fast_head(self, target, deterministic):
        """The means are the head's output only for an unsquashed Gaussian (no gSDE); the
        distribution (log-probs, samples) is not written out by hand."""
        from stable_baselines3.common.distributions import DiagGaussianDistribution

        plain = isinstance(self.policy.action_dist, DiagGaussianDistribution)
        return plain and deterministic and target != "logprob"

    def _squashed(self) -> bool:
        """gSDE with ``squash_output``: the mode is tanh of the mean (SB3's TanhBijector)."""
        return getattr(self.policy.action_dist, "bijector", None) is not None

    def hand_head(self, target, deterministic):
        """The deterministic action's components and the value, through MLP heads (gSDE too: its mode is
        the mean, or tanh of it); log-probs and samples need the distribution: autograd."""
        from stable_baselines3.common.distributions import DiagGaussianDistribution, StateDependentNoiseDistribution

        known = isinstance(self.policy.action_dist, (DiagGaussianDistribution, StateDependentNoiseDistribution))
        return known and deterministic and target != "logprob" and self.hand_supported(target)

    def hand_forward(self, obs, target, state=None):
        latent_pi, latent_vf, next_state, tapes = self.hand_latents(obs, state)
        mean = tapes["pi"].run(self.policy.action_net, latent_pi)
        mode = torch.tanh(mean) if self._squashed() else mean
        return Forward(mode, self.hand_critic(latent_vf, tapes), {"dist": None, "state": next_state, "tapes": tapes})

    def hand_gradient(self, target, forward, actions):
        if target == "value":
            return self.value_gradient(forward)
        return self.component_gradient(target, forward, forward.extra["tapes"]["pi"], self._squashed())

    def forward(self, obs, state=None):
        latent_pi, latent_vf, next_state = self.latents(obs, state)
        dist = self.distribution(latent_pi)
        return Forward(dist.mode(), self.critic(latent_vf), {"dist": dist, "state": next_state})

    def distribution(self, latent_pi: torch.Tensor):
        """SB3's own distribution for ``latent_pi``, on a copy (the policy's ``action_dist`` is left as it was)."""
        from stable_baselines3.common.distributions import DiagGaussianDistribution, StateDependentNoiseDistribution

        policy = self.policy
        mean = policy.action_net(latent_pi)
        dist = copy.copy(policy.action_dist)
        if isinstance(dist, DiagGaussianDistribution):
            return dist.proba_distribution(mean, policy.log_std)
        if isinstance(dist, StateDependentNoiseDistribution):
            return dist.proba_distribution(mean, policy.log_std, latent_pi)
        raise RlcamError(f"the {type(dist).__name__} action distribution is not one rlcam knows for Box actions.")

    def choose(self, forward, deterministic, generator):
        if deterministic:
            return forward.action_scores.detach()
        return sample_with(generator, forward.extra["dist"].sample).detach()

    def score(self, target, forward, actions):
        if target.startswith(MEAN):
            return forward.action_scores[:, int(target[len(MEAN) :])]
        if target == "logprob":
            return forward.extra["dist"].log_prob(actions)
        if target == "value":
            return forward.value
        raise RlcamError(f"unknown target {target!r}.")
