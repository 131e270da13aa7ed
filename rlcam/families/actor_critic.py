"""What every SB3 actor-critic policy (``ActorCriticPolicy`` and its subclasses) shares: the
features extractor(s), the MLP extractor, and a critic. The action head differs per family."""

from __future__ import annotations

import torch

from rlcam.families.base import Family
from rlcam.fasthead import Tape


class ActorCriticBase(Family):
    """PPO/A2C policies: ``latent_pi`` feeds the action head, ``latent_vf`` the critic."""

    def extractor_paths(self, target):
        policy = self.policy
        if policy.share_features_extractor:
            return ["features_extractor"]
        return ["vf_features_extractor" if target == "value" else "pi_features_extractor"]

    def head_paths(self, target):
        if target == "value":
            return ["mlp_extractor.value_net", "value_net"]
        return ["mlp_extractor.policy_net", "action_net"]

    def latents(self, obs: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor, object]:
        """``(latent_pi, latent_vf, next state)`` from the policy's own modules."""
        policy = self.policy
        features = policy.extract_features(obs)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = policy.mlp_extractor.forward_actor(pi_features)
            latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return latent_pi, latent_vf, None

    def critic(self, latent_vf: torch.Tensor) -> torch.Tensor:
        return self.policy.value_net(latent_vf).squeeze(-1)

    # -- the hand-written head ---------------------------------------------------------------------

    def hand_supported(self, target: str) -> bool:
        """The modules ``target``'s score runs through after the extractor are ones ``Tape`` knows."""
        policy = self.policy
        if target == "value":
            return Tape.supports(policy.mlp_extractor.value_net) and Tape.supports(policy.value_net)
        return Tape.supports(policy.mlp_extractor.policy_net) and Tape.supports(policy.action_net)

    def hand_latents(self, obs: torch.Tensor, state=None) -> tuple[torch.Tensor, torch.Tensor, object, dict]:
        """``latents`` run through ``Tape``s (``pi``: to latent_pi, ``vf``: to latent_vf), returned beside them."""
        policy = self.policy
        if policy.share_features_extractor:
            pi_features = vf_features = self.extract(obs, policy.features_extractor)
        else:
            pi_features = self.extract(obs, policy.pi_features_extractor)
            vf_features = self.extract(obs, policy.vf_features_extractor)
        tapes = {"pi": Tape(), "vf": Tape()}
        latent_pi = tapes["pi"].run(policy.mlp_extractor.policy_net, pi_features)
        latent_vf = tapes["vf"].run(policy.mlp_extractor.value_net, vf_features)
        return latent_pi, latent_vf, None, tapes

    def hand_critic(self, latent_vf: torch.Tensor, tapes: dict) -> torch.Tensor:
        return tapes["vf"].run(self.policy.value_net, latent_vf).squeeze(-1)

    def value_gradient(self, forward) -> torch.Tensor:
        """dy/d(features) of the critic's value."""
        value = forward.value
        return forward.extra["tapes"]["vf"].backward(torch.ones(len(value), 1, dtype=value.dtype, device=value.device))
