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
``build_head`` recognises this structure and returns None for anything else.

Any other head after a NatureCNN extractor starts the same way, ``z = W1 a + b1`` then a ReLU
(``nature_linear`` finds that Linear), so dy/da = dy/dz W1 and alpha = dy/dz mean_cells(W1)
(``PooledWeight``) whatever comes after z. What comes after is written out by hand where SB3
built it from known parts: ``Tape`` runs Linear/ReLU/Tanh chains (SB3's MLPs, action, value and Q
heads) and one LSTM step, keeping what their backward needs, and each family turns its score into
dy/d(output) (``Family.hand_gradient``). Elsewhere the explainer roots autograd's graph at z, and
with ``fast=False`` at the layer itself (same maps; tests check every route against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlcam.targets import Forward


class PooledWeight:
    """A first linear layer's weight ``(F, K*h*w)`` averaged over each channel's cells, ``(F, K)``.

    Cached, and recomputed when the weight changes, seen through the tensor's storage and its
    version counter, which every in-place update through autograd's view of it bumps (optimizer
    steps, ``copy_`` in ``load_state_dict``, ``nn.init``); writes through ``.data`` bypass the
    counter, so ``forget()`` must follow them (``Explainer.open`` calls it).
    """

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self._pooled: torch.Tensor | None = None
        self._key: tuple = ()

    def __call__(self, channels: int) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, channels)
        if self._pooled is None or key != self._key:
            self._pooled = self.weight.detach().view(self.weight.shape[0], channels, -1).mean(dim=2)
            self._key = key
        return self._pooled

    def forget(self) -> None:
        """Drop the cached average."""
        self._pooled, self._key = None, ()


@dataclass
class Head:
    convs: nn.Module  # the extractor's modules before the explained ReLU: obs -> pre-activation
    w1: torch.Tensor  # (F, K*h*w)
    b1: torch.Tensor
    w_out: torch.Tensor  # (O, F) logits or Q-values (quantile weights averaged for QR-DQN)
    b_out: torch.Tensor
    w_value: torch.Tensor | None  # (F,) critic weights for PPO/A2C
    b_value: torch.Tensor | None
    pooled: PooledWeight | None = None  # w1 averaged over each channel's cells

    def __post_init__(self):
        self.pooled = PooledWeight(self.w1)

    def pooled_w1(self, channels: int) -> torch.Tensor:
        """``w1`` averaged over each channel's cells, ``(F, K)`` (``PooledWeight``)."""
        return self.pooled(channels)

    def forget(self) -> None:
        """Drop cached derived weights."""
        self.pooled.forget()


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
    fc = nature_linear(extractor, root, layer_name)
    if fc is None:
        return None
    cnn = extractor.cnn
    return Head(
        convs=cnn[: len(cnn) - 2],
        w1=fc.weight,
        b1=fc.bias,
        w_out=w_out,
        b_out=b_out,
        w_value=w_value,
        b_value=b_value,
    )


def nature_linear(extractor, root: str, layer_name: str) -> nn.Linear | None:
    """The Linear that layer ``layer_name``'s output flows into through a Flatten alone, when
    ``extractor`` (at path ``root``) is SB3's own NatureCNN explained at its last ReLU; else None.

    NatureCNN computes ``linear(cnn(x))`` with ``cnn`` ending in ReLU, Flatten and ``linear`` =
    Linear + ReLU, so ``z = W1 flatten(A) + b1`` is the only use of the explained A.
    """
    from stable_baselines3.common.torch_layers import NatureCNN

    if type(extractor) is not NatureCNN:
        return None
    cnn, linear = extractor.cnn, extractor.linear
    last_relu = len(cnn) - 2
    if layer_name != f"{root}.cnn.{last_relu}" or not isinstance(cnn[last_relu], nn.ReLU):
        return None
    if not isinstance(cnn[last_relu + 1], nn.Flatten) or len(linear) != 2 or not isinstance(linear[1], nn.ReLU):
        return None
    return _linear(linear[0])


def linear_after(policy, layer_name: str) -> nn.Linear | None:
    """``nature_linear`` for any NatureCNN in ``policy`` (PPO's, an actor's or a critic's, a Dict key's)."""
    root, sep, index = layer_name.rpartition(".cnn.")
    if not sep or not index.isdigit():
        return None
    try:
        extractor = policy.get_submodule(root)
    except AttributeError:
        return None
    return nature_linear(extractor, root, layer_name)


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


# -- hand-written gradients through the head modules SB3 builds after the extractor -------------------


class Tape:
    """A forward without autograd through SB3's head modules, keeping what their gradient needs.

    SB3 builds the layers after the features extractor from a few modules: ``create_mlp``'s Linear
    and ReLU/Tanh Sequentials, Linear action, value and Q heads, the LSTM of recurrent policies.
    ``run(module, x)`` computes what ``module(x)`` computes, child by child as a Sequential does, and
    records each step; ``backward(g)`` takes dy/d(output) ``(N, out)`` back to dy/d(input) through
    the recorded steps in reverse (a Linear: ``g W``; ReLU: ``g * 1[y > 0]``; Tanh: ``g * (1 - y^2)``;
    a one-step LSTM: the cell's gates, see ``_lstm_backward``), as autograd would.
    """

    _KNOWN = (nn.Linear, nn.ReLU, nn.Tanh, nn.Identity)

    def __init__(self):
        self._steps: list[tuple[str, object]] = []

    @staticmethod
    def supports(module: nn.Module) -> bool:
        """Whether every part of ``module`` is one ``run`` knows (exact classes: a subclass may compute more)."""
        if type(module) is nn.Sequential:
            return all(Tape.supports(child) for child in module)
        return type(module) in Tape._KNOWN

    def run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if type(module) is nn.Sequential:
            for child in module:
                x = self.run(child, x)
            return x
        y = module(x)
        if type(module) is nn.Linear:
            self._steps.append(("linear", module.weight))
        elif type(module) is nn.ReLU:
            self._steps.append(("relu", y))
        elif type(module) is nn.Tanh:
            self._steps.append(("tanh", y))
        elif type(module) is not nn.Identity:
            raise TypeError(f"Tape cannot differentiate {type(module).__name__}")
        return y

    def lstm_step(self, lstm: nn.LSTM, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        """Record a one-layer LSTM's step from input ``x (N, I)`` and the state ``(h, c)`` it got ``(N, H)``
        (the policy's own LSTM computes the step's output; this keeps the gates for the gradient)."""
        gates = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(h, lstm.weight_hh_l0, lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        self._steps.append(("lstm", (lstm.weight_ih_l0, i, f, g, o, c, torch.tanh(f * c + i * g))))

    def backward(self, g: torch.Tensor) -> torch.Tensor:
        for kind, saved in reversed(self._steps):
            if kind == "linear":
                g = g @ saved
            elif kind == "relu":
                g = g * (saved > 0)
            elif kind == "tanh":
                g = g * (1 - saved * saved)
            else:
                g = _lstm_backward(g, *saved)
        return g


def _lstm_backward(gh, w_ih, i, f, g, o, c, tanh_c):
    """dy/dx of one LSTM step from dy/dh' (the incoming state a constant): h' = o tanh(c'),
    c' = f c + i g, gates (i, f, g, o) = (sigmoid, sigmoid, tanh, sigmoid)(W_ih x + W_hh h + b)."""
    gc = gh * o * (1 - tanh_c * tanh_c)
    d_gates = torch.cat(
        [gc * g * i * (1 - i), gc * c * f * (1 - f), gc * i * (1 - g * g), gh * tanh_c * o * (1 - o)], dim=1
    )
    return d_gates @ w_ih


def lstm_supported(lstm) -> bool:
    """A plain one-layer, one-direction LSTM with biases, input first in time (SB3's recurrent policies)."""
    return (
        type(lstm) is nn.LSTM
        and lstm.num_layers == 1
        and not lstm.bidirectional
        and lstm.bias
        and lstm.proj_size == 0
        and not lstm.batch_first
    )


def feature_slice(policy, layer_name: str) -> slice:
    """Where the explained NatureCNN's output sits in the features the head gets: all of them, or, for
    SB3's CombinedExtractor (Dict observations), its key's columns (keys concatenated in order)."""
    from stable_baselines3.common.preprocessing import get_flattened_obs_dim
    from stable_baselines3.common.torch_layers import CombinedExtractor

    root = layer_name.rpartition(".cnn.")[0]
    parent, sep, key = root.rpartition(".extractors.")
    if not sep or type(policy.get_submodule(parent)) is not CombinedExtractor:
        return slice(None)
    space = policy.observation_space
    start = 0
    for name, extractor in policy.get_submodule(parent).extractors.items():
        width = extractor.features_dim if hasattr(extractor, "features_dim") else get_flattened_obs_dim(space[name])
        if name == key:
            return slice(start, start + width)
        start += width
    raise ValueError(f"{key!r} is not a key of the CombinedExtractor at {parent!r}")
