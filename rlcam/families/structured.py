"""Structured discrete actions of actor-critic policies: ``MultiDiscrete`` and ``MultiBinary``.

Each part of the action is its own categorical; a ``MultiBinary`` bit with logit l is the
two-way categorical with logits ``(-l/2, +l/2)`` (the same probabilities, sigmoid(l), and the
taken choice's logit says how far the policy leans toward it). Targets:

- ``logit`` the taken parts' logits summed (the joint score), ``logit:P`` part P's alone;
- ``logprob`` the joint log-probability of the taken parts, ``logprob:P`` part P's;
- ``value`` the critic.

    latent_pi -> action_net -> (N, sum(nvec)) logits, split per part -> actions (N, P)
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from rlcam.errors import RlcamError
from rlcam.families.actor_critic import ActorCriticBase
from rlcam.targets import Forward


class StructuredActorCritic(ActorCriticBase):
    """PPO/A2C with a MultiDiscrete or MultiBinary action space."""

    name = "structured discrete actor-critic"
    discrete = False
    bar_kind = "parts"
    targets = ("logit", "logit:P", "logprob", "logprob:P", "value")

    def __init__(self, agent):
        super().__init__(agent)
        space = self.policy.action_space
        self.binary = isinstance(space, spaces.MultiBinary)
        n_parts = int(np.prod(space.shape))
        self.sizes = [2] * n_parts if self.binary else [int(n) for n in np.asarray(space.nvec).reshape(-1)]

    @property
    def n_parts(self) -> int:
        return len(self.sizes)

    def all_targets(self):
        per_part = [f"{kind}:{p}" for kind in ("logit", "logprob") for p in range(self.n_parts)]
        return ["logit", "logprob", "value", *per_part]

    def check_target(self, target, action_names=None):
        if target is None:
            return "logit"
        if target in ("logit", "logprob", "value"):
            return target
        kind, _, part = target.partition(":")
        if kind in ("logit", "logprob") and part.isdigit() and int(part) < self.n_parts:
            return f"{kind}:{int(part)}"
        choices = f"logit, logprob, value, logit:P or logprob:P with P in 0..{self.n_parts - 1}"
        raise RlcamError(f"target {target!r} does not apply to {self.name} agents; choose one of {choices}.")

    def tiles(self, target):
        kind = "logprob" if target.startswith("logprob") else "logit"
        return [(f"part {p}", f"{kind}:{p}", None) for p in range(self.n_parts)]

    def forward(self, obs, state=None):
        latent_pi, latent_vf, next_state = self.latents(obs, state)
        logits = self.policy.action_net(latent_pi)
        if self.binary:
            logits = torch.stack([-logits / 2, logits / 2], dim=-1).flatten(1)
        return Forward(logits, self.critic(latent_vf), {"state": next_state})

    def parts(self, scores: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(scores, self.sizes, dim=1))

    def choose(self, forward, deterministic, generator):
        parts = self.parts(forward.action_scores.detach())
        if deterministic:
            return torch.stack([p.argmax(dim=1) for p in parts], dim=1)
        picks = [torch.multinomial(torch.softmax(p.float().cpu(), dim=1), 1, generator=generator) for p in parts]
        return torch.cat(picks, dim=1).to(forward.action_scores.device)

    def score(self, target, forward, actions):
        if target == "value":
            return forward.value
        kind, _, part = target.partition(":")
        parts = self.parts(forward.action_scores)
        if kind == "logprob":
            parts = [torch.log_softmax(p, dim=1) for p in parts]
        taken = [p.gather(1, actions[:, i : i + 1]).squeeze(1) for i, p in enumerate(parts)]
        return taken[int(part)] if part else torch.stack(taken, dim=1).sum(dim=1)

    def hand_head(self, target, deterministic):
        return self.hand_supported(target)  # sampling needs only the logits

    def hand_forward(self, obs, target, state=None):
        latent_pi, latent_vf, next_state, tapes = self.hand_latents(obs, state)
        logits = tapes["pi"].run(self.policy.action_net, latent_pi)
        if self.binary:
            logits = torch.stack([-logits / 2, logits / 2], dim=-1).flatten(1)
        return Forward(logits, self.hand_critic(latent_vf, tapes), {"state": next_state, "tapes": tapes})

    def hand_gradient(self, target, forward, actions):
        if target == "value":
            return self.value_gradient(forward)
        kind, _, part = target.partition(":")
        coef = []
        for i, p in enumerate(self.parts(forward.action_scores)):  # dy/d(part i's logits)
            c = torch.zeros_like(p)
            if not part or int(part) == i:
                c.scatter_(1, actions[:, i : i + 1], 1.0)
                if kind == "logprob":
                    c = c - torch.softmax(p, dim=1)
            coef.append(c)
        coef = torch.cat(coef, dim=1)
        if self.binary:  # the bit's logit l entered as (-l/2, +l/2)
            pairs = coef.view(len(coef), -1, 2)
            coef = (pairs[..., 1] - pairs[..., 0]) / 2
        return forward.extra["tapes"]["pi"].backward(coef)

    def check_actions(self, actions, n):
        a = np.asarray(actions)
        if a.size != n * self.n_parts or not np.issubdtype(a.dtype, np.integer):
            raise RlcamError(f"actions to explain must be {n} integer vectors of {self.n_parts} parts.")
        a = a.reshape(n, self.n_parts)
        if ((a < 0) | (a >= np.asarray(self.sizes))).any():
            raise RlcamError(f"actions to explain: part values must lie in [0, {self.sizes}) per part.")
        return torch.as_tensor(a, dtype=torch.long, device=self.policy.device)

    def env_actions(self, actions):
        return actions.cpu().numpy().astype(np.int64).reshape(len(actions), *self.policy.action_space.shape)

    def display(self, forward):
        """Every part's probabilities, concatenated ``(N, sum(sizes))``."""
        return torch.cat([torch.softmax(p, dim=1) for p in self.parts(forward.action_scores)], dim=1)
