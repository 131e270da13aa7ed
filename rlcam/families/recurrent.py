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
from rlcam.fasthead import Tape, lstm_supported


class _Recurrent:
    """Replaces the actor-critic latents with the LSTM's; the state is ``(pi (h, c), vf (h, c))``."""

    recurrent = True
    # Whether each step runs the critic's own LSTM, for the value alone when the target is the actor's:
    # a pass beyond the explained one (predict carries only the actor's state). The explainer turns
    # it off unless its extras are asked for; the value is then None, and the critic's state stays.
    value_each_step = True

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

    def latents(self, obs, state=None, tape: Tape | None = None):
        """As the policy's forward computes them; with ``tape``, the actor's LSTM step is recorded
        on it (the LSTM itself computes the step) and its MLP runs through it."""
        policy = self.policy
        if state is None:
            state = self.with_starts(self.initial_state(len(obs)), torch.zeros(len(obs)))
        pi_state, vf_state, starts = state
        starts = starts.to(obs.device)
        if policy.share_features_extractor:
            pi_features = vf_features = self.extract(obs, policy.features_extractor)
        else:
            pi_features = self.extract(obs, policy.pi_features_extractor)
            vf_features = self.extract(obs, policy.vf_features_extractor)
        latent_pi, pi_next = policy._process_sequence(pi_features, pi_state, starts, policy.lstm_actor)
        if tape is not None:  # the state the step got: reset where an episode starts, as _process_sequence does
            keep = (1.0 - starts).view(-1, 1)
            tape.lstm_step(policy.lstm_actor, pi_features, keep * pi_state[0][0], keep * pi_state[1][0])
        if policy.lstm_critic is not None and not self.value_each_step:
            latent_vf, vf_next = None, vf_state
        elif policy.lstm_critic is not None:
            latent_vf, vf_next = policy._process_sequence(vf_features, vf_state, starts, policy.lstm_critic)
        elif policy.shared_lstm:
            latent_vf, vf_next = latent_pi.detach(), pi_next
        else:
            latent_vf, vf_next = policy.critic(vf_features), pi_next
        if tape is not None:
            latent_pi = tape.run(policy.mlp_extractor.policy_net, latent_pi)
        else:
            latent_pi = policy.mlp_extractor.forward_actor(latent_pi)
        if latent_vf is not None:
            latent_vf = policy.mlp_extractor.forward_critic(latent_vf)
        return latent_pi, latent_vf, (pi_next, vf_next)

    def critic(self, latent_vf):
        return None if latent_vf is None else super().critic(latent_vf)

    def hand_supported(self, target):
        """The actor's targets through a plain one-layer LSTM; the critic's value: autograd."""
        return target != "value" and lstm_supported(self.policy.lstm_actor) and super().hand_supported(target)

    def hand_latents(self, obs, state=None):
        tapes = {"pi": Tape(), "vf": Tape()}
        latent_pi, latent_vf, next_state = self.latents(obs, state, tape=tapes["pi"])
        return latent_pi, latent_vf, next_state, tapes

    def hand_critic(self, latent_vf, tapes):
        return self.critic(latent_vf)


class RecurrentDiscrete(_Recurrent, DiscreteActorCritic):
    name = "recurrent discrete actor-critic"
    head_kind = None  # the LSTM sits between the layer and the head: autograd


class RecurrentContinuous(_Recurrent, ContinuousActorCritic):
    name = "recurrent continuous actor-critic"
    head_kind = None

    def fast_head(self, target, deterministic):
        return False
