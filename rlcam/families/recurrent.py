"""Recurrent actor-critic policies: sb3-contrib's RecurrentPPO (``CnnLstmPolicy`` and kin).

The LSTM's state is carried between steps and reset at episode starts exactly as
``RecurrentPPO.predict`` does (``_process_sequence`` with ``episode_starts``), so actions are
``predict``'s. The map explains the step given its state: the graph runs from the layer through
this step's LSTM call; the state that came in is a constant. The critic's own LSTM (when there
is one) keeps its own state, as in training.

    obs -> extractor -> features (N, F) -> LSTM(state) -> latent (N, H) -> head
"""

from __future__ import annotations

import torch

from rlcam.families.continuous import ContinuousActorCritic
from rlcam.families.discrete import DiscreteActorCritic


class _Recurrent:
    """Replaces the actor-critic latents with the LSTM's; the state is ``(pi (h, c), vf (h, c))``."""

    recurrent = True

    def initial_state(self, n):
        layers, _, size = self.policy.lstm_hidden_state_shape
        zeros = torch.zeros(layers, n, size, device=self.policy.device)
        return ((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))

    @staticmethod
    def state_size(state) -> int:
        return int(state[0][0].shape[1])

    @staticmethod
    def with_starts(state, starts: torch.Tensor):
        return (*state, starts)

    def next_state(self, forward):
        pi, vf = forward.extra["state"]
        return tuple(h.detach() for h in pi), tuple(h.detach() for h in vf)

    def head_paths(self, target):
        lstm = "lstm_critic" if target == "value" and self.policy.lstm_critic is not None else "lstm_actor"
        return [lstm, *super().head_paths(target)]

    def latents(self, obs, state=None):
        policy = self.policy
        if state is None:
            state = self.with_starts(self.initial_state(len(obs)), torch.zeros(len(obs)))
        pi_state, vf_state, starts = state
        starts = starts.to(obs.device)
        features = policy.extract_features(obs)
        pi_features, vf_features = (features, features) if policy.share_features_extractor else features
        latent_pi, pi_next = policy._process_sequence(pi_features, pi_state, starts, policy.lstm_actor)
        if policy.lstm_critic is not None:
            latent_vf, vf_next = policy._process_sequence(vf_features, vf_state, starts, policy.lstm_critic)
        elif policy.shared_lstm:
            latent_vf, vf_next = latent_pi.detach(), pi_next
        else:
            latent_vf, vf_next = policy.critic(vf_features), pi_next
        latent_pi = policy.mlp_extractor.forward_actor(latent_pi)
        latent_vf = policy.mlp_extractor.forward_critic(latent_vf)
        return latent_pi, latent_vf, (pi_next, vf_next)


class RecurrentDiscrete(_Recurrent, DiscreteActorCritic):
    name = "recurrent discrete actor-critic"
    head_kind = None  # the LSTM sits between the layer and the head: autograd


class RecurrentContinuous(_Recurrent, ContinuousActorCritic):
    name = "recurrent continuous actor-critic"
    head_kind = None

    def fast_head(self, target, deterministic):
        return False
