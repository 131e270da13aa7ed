"""The head's gradient written out by hand, for the heads SB3 builds on NatureCNN.

Explaining the last conv block of a NatureCNN agent needs dy/dA through a head that SB3
always builds the same way:

    A (N, K, h, w) -> flatten a -> z = W1 a + b1 -> h = ReLU(z) -> out = W h + b

(PPO/A2C with the default CnnPolicy: ``out`` = logits, the value from the same ``h``;
DQN: Q-values; QR-DQN: quantiles, whose mean over quantiles is Q, so W is averaged.)
Every explained score is linear in ``out`` given the chosen action, dy/d out = c, so

    dy/dh = c W,    dy/da = (1[z > 0] * dy/dh) W1

two small matmuls, no autograd graph at all: the per-step cost is the forward alone.
Grad-CAM needs only the spatial means of dy/da, alpha_k = mean_ij dy/da_kij, which are
(1[z > 0] * dy/dh) times W1 averaged over each channel's cells: a (F, K) matrix instead of
(F, K*h*w), 49 times smaller on Breakout (``head_channel_weights``).
``build_head`` recognises this structure and returns None for anything else, in which
case the explainer uses autograd from the layer on (same maps; tests check both agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlcam.targets import Forward


@dataclass
class Head:
    convs: nn.Module  # the extractor's modules before the explained ReLU: obs -> pre-activation
    w1: torch.Tensor  # (F, K*h*w)
    b1: torch.Tensor
    w_out: torch.Tensor  # (O, F) logits or Q-values (quantile weights averaged for QR-DQN)
    b_out: torch.Tensor
    w_value: torch.Tensor | None  # (F,) critic weights for PPO/A2C
    b_value: torch.Tensor | None
    _pooled: torch.Tensor | None = None  # (F, K): w1 averaged over each channel's cells
    _pooled_key: tuple = ()

    def pooled_w1(self, channels: int) -> torch.Tensor:
        """``w1`` averaged over each channel's cells, ``(F, K)``; recomputed when ``w1`` changes.

        A change is seen through the tensor's storage and its version counter, which every
        in-place update through autograd's view of it bumps (optimizer steps, ``copy_`` in
        ``load_state_dict``, ``nn.init``); writes through ``.data`` bypass the counter, so
        ``forget()`` must follow them (``Explainer.open`` calls it).
        """
        key = (self.w1.data_ptr(), self.w1._version, channels)
        if self._pooled is None or key != self._pooled_key:
            self._pooled = self.w1.detach().view(self.w1.shape[0], channels, -1).mean(dim=2)
            self._pooled_key = key
        return self._pooled

    def forget(self) -> None:
        """Drop cached derived weights."""
        self._pooled, self._pooled_key = None, ()


def _linear(module) -> nn.Linear | None:
    if isinstance(module, nn.Linear):
        return module
    if isinstance(module, nn.Sequential) and len(module) == 1 and isinstance(module[0], nn.Linear):
        return module[0]
    return None


def _empty(module) -> bool:
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)


def build_head(policy, kind: str, layer_name: str) -> Head | None:
    """The hand-written head for ``layer_name``, or None when the policy is not the standard shape.

    ``kind``: ``actor_critic`` (PPO/A2C, Discrete actions), ``q`` (DQN) or ``quantile`` (QR-DQN).
    """
    from stable_baselines3.common.torch_layers import NatureCNN

    if kind == "actor_critic":
        if not policy.share_features_extractor:
            return None
        root, extractor = "features_extractor", policy.features_extractor
        mlp = policy.mlp_extractor
        if not (_empty(mlp.policy_net) and _empty(mlp.value_net)):
            return None
        out, value = _linear(policy.action_net), _linear(policy.value_net)
        if out is None or value is None:
            return None
        w_out, b_out = out.weight, out.bias
        w_value, b_value = value.weight[0], value.bias[0]
    else:
        net = policy.q_net if kind == "q" else policy.quantile_net
        root = "q_net.features_extractor" if kind == "q" else "quantile_net.features_extractor"
        extractor = net.features_extractor
        out = _linear(net.q_net if kind == "q" else net.quantile_net)
        if out is None:
            return None
        w_out, b_out = out.weight, out.bias
        if kind == "quantile":  # Q = mean over quantiles of a linear map: average the rows per action
            n_quantiles, n_actions = net.n_quantiles, net.action_space.n
            w_out = w_out.view(n_quantiles, n_actions, -1).mean(0)
            b_out = b_out.view(n_quantiles, n_actions).mean(0)
        w_value = b_value = None
    if type(extractor) is not NatureCNN:
        return None
    cnn, linear = extractor.cnn, extractor.linear
    last_relu = len(cnn) - 2
    if layer_name != f"{root}.cnn.{last_relu}" or not isinstance(cnn[last_relu], nn.ReLU):
        return None
    if not isinstance(cnn[last_relu + 1], nn.Flatten) or len(linear) != 2 or not isinstance(linear[1], nn.ReLU):
        return None
    fc = _linear(linear[0])
    return Head(
        convs=cnn[:last_relu],
        w1=fc.weight,
        b1=fc.bias,
        w_out=w_out,
        b_out=b_out,
        w_value=w_value,
        b_value=b_value,
    )


def head_forward(head: Head, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, Forward]:
    """Forward from preprocessed input ``x``: returns (acts (N, K, h, w), pre-activation z, Forward)."""
    acts = torch.relu(head.convs(x))
    z = F.linear(acts.flatten(1), head.w1, head.b1)
    h = torch.relu(z)
    scores = F.linear(h, head.w_out, head.b_out)
    if head.w_value is not None:
        value = h @ head.w_value + head.b_value
    else:
        value = scores.max(dim=1).values
    return acts, z, Forward(scores, value)


def head_gradient(head: Head, z: torch.Tensor, forward: Forward, target: str, actions: torch.Tensor) -> torch.Tensor:
    """dy/da for the explained score ``y``, flat ``(N, K*h*w)``."""
    return _dy_dz(head, z, forward, target, actions) @ head.w1


def head_channel_weights(
    head: Head, z: torch.Tensor, forward: Forward, target: str, actions: torch.Tensor, channels: int
) -> torch.Tensor:
    """Grad-CAM's channel weights ``alpha (N, K)`` = mean over cells of dy/da, without dy/da."""
    return _dy_dz(head, z, forward, target, actions) @ head.pooled_w1(channels)


def _dy_dz(head: Head, z: torch.Tensor, forward: Forward, target: str, actions: torch.Tensor) -> torch.Tensor:
    """dy/dz, ``(N, F)``: the gradient at the first linear layer's output."""
    if target == "value":
        dy_dh = head.w_value.expand(len(actions), -1)
    elif target.startswith("mean:"):  # a continuous action's mean component: one row of the head
        dy_dh = head.w_out[int(target[5:])].expand(len(actions), -1)
    else:
        dy_dh = head.w_out[actions]  # (N, F): rows of the chosen actions
        if target == "logprob":  # d log softmax_a / d logits = onehot(a) - softmax
            dy_dh = dy_dh - torch.softmax(forward.action_scores, dim=1) @ head.w_out
        elif target == "advantage":  # Q(s, a) - mean_b Q(s, b)
            dy_dh = dy_dh - head.w_out.mean(0)
    return dy_dh * (z > 0)
