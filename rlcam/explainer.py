"""One forward gives the action and its map.

The explainer owns a forward hook on the target layer. The policy runs under
``no_grad`` up to that layer; the hook turns autograd on and hands the rest of the
network a detached copy of the activations that requires grad. So the graph spans
only the layers after the target (the small fully connected head), the action is
taken from that same forward, and ``torch.autograd.grad`` writes gradients to the
activations alone: parameters' ``.grad`` are never touched.

    obs (N, C, H, W) uint8 -> acts (N, K, h, w) -> cam (N, h, w) -> cam_input (N, H, W)

Methods that need more than that forward (``rlcam.cam.Method.needs``) get extra passes here,
each with the capture hook made passive: Score-CAM's masked inputs and the perturbation
probes are plain ``no_grad`` forwards in large batches; Guided Grad-CAM runs one forward and
backward from the input with guided-ReLU hooks that are removed before ``explain`` returns;
the ``fine`` mode hooks every conv block up to the layer and takes one backward from the input;
RISE scores randomly masked inputs in ``no_grad`` batches, and Integrated Gradients runs forwards
and backwards from the points of a path from a black input, in batches too.
Their maps live on the input grid (the perturbation map on its probe grid), and
``Explainer.placement`` always takes ``Explanation.cam`` to the input.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlcam import ig, rise
from rlcam.agents import Agent
from rlcam.cam import METHODS, as_method, grad_cam, layer_cam, score_cam_masks
from rlcam.device import policy_device
from rlcam.errors import RlcamError
from rlcam.families import family_for
from rlcam.fasthead import (
    PooledWeight,
    build_head,
    feature_slice,
    head_channel_weights,
    head_forward,
    head_gradient,
    linear_after,
)
from rlcam.geometry import Placement, make_placement, receptive_field_grid
from rlcam.guided import guided_relus
from rlcam.perturb import CHUNK, gaussian_blur, perturbation_shift, probe_placement
from rlcam.targets import Forward, contrast_action

# Element-wise activations that end a conv block: the default layer is the last of these after the last conv.
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.ReLU6, nn.PReLU, nn.CELU, nn.SELU)


def extractor_paths(agent: Agent, target: str | None = None) -> list[str]:
    """Module paths (inside ``model.policy``) of the feature extractors ``target`` (default: the
    family's default target) depends on."""
    family = family_for(agent)
    return family.extractor_paths(family.check_target(target))


def conv_layers(agent: Agent, target: str | None = None) -> list[str]:
    """Candidate layers: every Conv2d and the activation applied right after it, in forward order.

    The order is the forward's (traced once on a blank observation), not the modules' registration
    order, so an extractor that defines its layers out of order, or applies one activation module
    after every conv, still gets the rectified output of its last conv block as the default. A
    module applied more than once is named with the call: ``path@k`` is its k-th call (from 1).
    """
    found = []
    for root in extractor_paths(agent, target):
        calls = traced_calls(agent, root)
        if calls is None:  # the blank forward failed: fall back on registration order
            calls = [(name, m) for name, m in agent.policy.get_submodule(root).named_modules(prefix=root)]
        uses: dict[str, int] = {}
        for name, _ in calls:
            uses[name] = uses.get(name, 0) + 1
        seen: dict[str, int] = {}
        labels = []
        for name, _ in calls:
            seen[name] = seen.get(name, 0) + 1
            labels.append(name if uses[name] == 1 else f"{name}@{seen[name]}")
        for i, (_, module) in enumerate(calls):
            if isinstance(module, nn.Conv2d):
                found.append(labels[i])
                if i + 1 < len(calls) and isinstance(calls[i + 1][1], _ACTIVATIONS):
                    found.append(labels[i + 1])
    return found


def traced_calls(agent: Agent, root: str) -> list[tuple[str, nn.Module]] | None:
    """The leaf modules under ``root`` in the order one forward of a blank observation calls them
    (a module called twice appears twice); None when that forward fails."""
    from stable_baselines3.common.preprocessing import preprocess_obs

    policy = agent.policy
    extractor = policy.get_submodule(root)
    calls: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: calls.append((name, m)))
        for name, module in extractor.named_modules(prefix=root)
        if not any(True for _ in module.children())
    ]
    space = policy.observation_space
    try:
        blank = (
            {k: np.zeros((1, *sub.shape), sub.dtype) for k, sub in space.spaces.items()}
            if isinstance(space, spaces.Dict)
            else np.zeros((1, *space.shape), space.dtype)
        )
        device = policy_device(extractor)
        obs = (
            {k: torch.as_tensor(v, device=device) for k, v in blank.items()}
            if isinstance(blank, dict)
            else torch.as_tensor(blank, device=device)
        )
        with torch.no_grad():
            extractor(preprocess_obs(obs, space, normalize_images=policy.normalize_images))
    except Exception:  # an extractor that needs more than a blank observation
        return None
    finally:
        for handle in handles:
            handle.remove()
    return calls


def split_call(name: str) -> tuple[str, int | None]:
    """``path@k`` -> (path, k); a plain path -> (path, None)."""
    path, _, call = name.partition("@")
    return path, (int(call) if call.isdigit() else None)


def default_layer(agent: Agent, target: str | None = None) -> str:
    """The rectified output of the last conv block (for NatureCNN: ``...cnn.5``, the last ReLU)."""
    candidates = conv_layers(agent, target)
    if not candidates:
        raise RlcamError(
            f"agent {agent.path} has no convolutional layer (an MLP policy?); "
            "Grad-CAM needs a CNN policy that acts from pixels."
        )
    return candidates[-1]


def rectified_layers(agent: Agent, up_to: str, target: str | None = None) -> list[str]:
    """The ``fine`` mode's layers: every rectified conv output before ``up_to``, then ``up_to``, in forward order."""
    candidates = conv_layers(agent, target)
    if up_to not in candidates:
        raise RlcamError(
            f"the fine mode fuses conv blocks; layer {up_to!r} is not one of {', '.join(candidates) or 'none'}."
        )
    # Dict observations: only the layer's own image key's extractor feeds it
    before = [name for name in candidates[: candidates.index(up_to)] if _key_root(name) == _key_root(up_to)]
    rectified = [name for name in before if isinstance(agent.policy.get_submodule(split_call(name)[0]), _ACTIVATIONS)]
    return rectified + [up_to]


def _key_root(name: str) -> str:
    """``...extractors.<key>`` for a layer of SB3's CombinedExtractor (a Dict observation's key); else ''."""
    parts = name.split(".")
    return ".".join(parts[: parts.index("extractors") + 2]) if "extractors" in parts else ""


def key_layers(agent: Agent, target: str | None = None) -> dict[str, str]:
    """Each image key of a Dict observation -> the default layer of its extractor (its last rectified
    conv output), in the observation space's key order; empty for image-only agents."""
    space = agent.policy.observation_space
    if not isinstance(space, spaces.Dict):
        return {}
    layers = {}
    for key in space.spaces:
        mine = [name for name in conv_layers(agent, target) if _key_root(name).endswith(f"extractors.{key}")]
        if mine:
            layers[key] = mine[-1]
    return layers


def resolve_layer(agent: Agent, name: str, target: str | None = None) -> nn.Module:
    try:
        return agent.policy.get_submodule(split_call(name)[0])
    except AttributeError:
        candidates = ", ".join(conv_layers(agent, target)) or "none"
        raise RlcamError(f"layer {name!r} is not a module of this policy; candidates: {candidates}.") from None


def layer_grid(agent: Agent, name: str):
    """Receptive-field grid of layer ``name``, from the spatial modules before it in its extractor."""
    roots = {root for target in family_for(agent).all_targets() for root in extractor_paths(agent, target)}
    root = next((r for r in sorted(roots) if name.startswith(r + ".")), None)
    if root is None:
        return None
    path, call = split_call(name)
    calls = traced_calls(agent, root) or list(agent.policy.get_submodule(root).named_modules(prefix=root))
    before, seen = [], 0
    for called, module in calls:
        before.append(module)
        if called == path:
            seen += 1
            if call is None or seen == call:
                return receptive_field_grid(before)
    return None


def _size(obs) -> int:
    """Envs in a batch of observations (an array, or a dict of arrays)."""
    return len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)


def _image_key(space, layer_name: str) -> str:
    """The Dict key whose extractor holds ``layer_name`` (SB3's CombinedExtractor: ``...extractors.<key>...``)."""
    from stable_baselines3.common.preprocessing import is_image_space

    parts = layer_name.split(".")
    for key in space.spaces:
        if f"extractors.{key}" in ".".join(parts):
            return key
    return next(k for k, sub in space.spaces.items() if is_image_space(sub, check_channels=False))


def _is_index_key(policy, key: str) -> bool:
    """Discrete-type keys are one-hot encoded by SB3 from integers: no gradient reaches them."""
    return isinstance(policy.observation_space[key], (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))


def _no_shares() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


class _NotByHand(Exception):
    """The hand-written pass could not find z after the layer (the autograd pass runs instead)."""


@dataclass
class Explanation:
    """Actions and maps for one batch of observations (N envs)."""

    # (N,) int64 for discrete actions; (N, D) float32 for continuous ones, (N, P) int64 for
    # MultiDiscrete/MultiBinary: the actions taken, as the env gets them (``predict``'s output)
    actions: np.ndarray
    cam: np.ndarray  # (N, h, w) float32, raw map: rectified, not normalised, at the method's resolution
    cam_input: np.ndarray  # (N, H, W) float32, the map on the policy-input grid
    score: np.ndarray  # (N,) float32, the explained quantity
    # (N, B) float32, the panel's bars: probabilities (actor-critic), Q-values (Q-networks), each
    # component's deterministic action (continuous), every part's probabilities (structured)
    action_values: np.ndarray
    value: np.ndarray  # (N,) float32, critic value, max Q, or Q(s, a) of the taken action (actor + critics)
    # (N, C) float32: each input channel's (stacked frame's) share of the map, for methods that
    # attribute to the input (``guided``); (N, 0) for the others.
    frame_shares: np.ndarray = field(default_factory=_no_shares)
    # (N, T, h, w) float32: every tile's raw map (each action's, or each action component's), when
    # ``explain(..., all_actions=True)``; else None.
    action_cams: np.ndarray | None = None
    # (N, h, w) float32 for signed targets (``mean:i``): the counterfactual map, what pushes the
    # score down (Grad-CAM of the negated gradient); None for the others.
    cam_down: np.ndarray | None = None
    # (N, T) float32: each tile's explained score, beside ``action_cams`` from a shared autograd pass.
    tile_scores: np.ndarray | None = None
    # Dict observations: (N, K) each key's share of the explained score (|sum of gradient x input|
    # over the key, normalised over keys; keys in the observation space's order), and for each
    # vector key its gradient x input per element, (N, dim). None for image-only agents.
    input_shares: np.ndarray | None = None
    input_attributions: dict[str, np.ndarray] | None = None
    # Recurrent policies, "memory vs pixels": how far the explained score moves, (N,) each, when the
    # LSTM's incoming state is zeroed, and when instead the whole frame is blurred (Greydanus et
    # al.'s blur, sigma 3 px) with the state kept. None for feed-forward policies.
    memory_effect: np.ndarray | None = None
    pixel_effect: np.ndarray | None = None
    # Dict observations with several image keys (extras): every other image key's map of the same
    # score and action, at its own extractor's default layer, on its own input grid, (N, H_k, W_k)
    # float32 each, like ``cam_input``. None otherwise.
    key_cams: dict[str, np.ndarray] | None = None

    def sample(self, i: int) -> Explanation:
        """Observation ``i``'s explanation, without the batch axis (fields that are None stay None)."""

        def one(v):
            if v is None:
                return None
            return {k: np.asarray(a[i]) for k, a in v.items()} if isinstance(v, dict) else np.asarray(v[i])

        return Explanation(**{f.name: one(getattr(self, f.name)) for f in fields(self)})


@dataclass
class _Found:
    """One explained batch as computed, on the policy's device: ``Explainer._to_host`` copies the
    small results back (shapes as in ``Explanation``; ``value`` None: not computed, NaN)."""

    actions: torch.Tensor
    forward: Forward
    cam: torch.Tensor
    cam_input: torch.Tensor
    score: torch.Tensor
    value: torch.Tensor | None
    shares: torch.Tensor | None = None
    action_cams: torch.Tensor | None = None
    cam_down: torch.Tensor | None = None
    tile_scores: torch.Tensor | None = None


def _host(t: torch.Tensor) -> np.ndarray:
    """A result tensor as float32 numpy on the host (the one copy back from the device)."""
    return t.detach().to("cpu", torch.float32).numpy()


_GRADIENT_NEEDS = ("weights", "grads")
_INPUT_GRID_NEEDS = ("guided", "layers", "random_masks", "path_grads")  # maps made on the input grid


class Explainer:
    """Explains a loaded SB3 agent's actions; use as a context manager.

    What is run and explained comes from the agent's policy family (``rlcam.families``); this class
    owns the hooks, the passes and the methods.

    Args:
        agent: from ``rlcam.agents.load_agent``.
        target: explained score; defaults per family (``rlcam info`` lists them);
            ``contrast:B`` explains the chosen action against action B (discrete families).
        layer: module path inside ``model.policy``; defaults to the last rectified conv output of
            the extractor the target depends on. The ``fine`` method fuses the input and every
            rectified conv output up to this one.
        method: a key of ``rlcam.cam.METHODS``.
        placement: ``bilinear`` or ``rf`` (see ``rlcam.geometry``).
        deterministic: take the deterministic action; else sample as the policy's own distribution
            does (softmax for PPO/A2C, epsilon-greedy with the agent's exploration rate for the DQN
            family, the Gaussian for continuous actions), with the explainer's seeded generator.
        seed: seeds the explainer's own generator used for sampling.
        fast: for the standard NatureCNN heads, write the head's gradient out by hand instead
            of running autograd (``rlcam.fasthead``; same maps, about the cost of the forward).
        action_names: the env's action meanings, so ``contrast:NAME`` targets can be resolved.
        extras: also compute what costs passes beyond the explained one: Dict observations' gradient
            x input per key (one more forward and backward), a recurrent policy's memory vs pixels
            (two more forwards) and, when its critic has an LSTM of its own and the target is the
            actor's, the critic's value (one more LSTM step per step; else ``value`` is NaN), an actor
            + critics agent's Q(s, a) when the target is the actor's (one critic forward; else
            ``value`` is NaN). ``rlcam record`` turns it on.
    """

    def __init__(
        self,
        agent: Agent,
        target: str | None = None,
        layer: str | None = None,
        method: str = "gradcam",
        placement: str = "bilinear",
        deterministic: bool = True,
        seed: int = 0,
        fast: bool = True,
        action_names: list[str] | None = None,
        extras: bool = False,
    ):
        if method not in METHODS:
            raise RlcamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        self.agent = agent
        self.policy = agent.policy
        self.algo = agent.algo
        self.family = family_for(agent)
        self.extras = extras
        self.target = self.family.check_target(target, action_names)
        if self.family.recurrent:  # the critic's own LSTM runs for the value alone: an extra
            self.family.value_each_step = extras or self.target == "value"
        self.layer_name = layer or default_layer(agent, self.target)
        self.layer = resolve_layer(agent, self.layer_name, self.target)
        self.method = method
        self._method = as_method(METHODS[method])
        self._dict = isinstance(self.policy.observation_space, spaces.Dict)
        # Dict observations: the key whose image the layer sees (None for image-only agents)
        self.image_key = _image_key(self.policy.observation_space, self.layer_name) if self._dict else None
        if self._dict and self._method.needs not in (*_GRADIENT_NEEDS, "acts", "layers"):
            raise RlcamError(
                f"method {method!r} perturbs or differentiates one image input; for Dict observations use "
                "gradcam, gradcam++, hirescam, xgradcam, layercam, counterfactual, eigencam or fine."
            )
        if self.family.recurrent and self._method.needs not in (*_GRADIENT_NEEDS, "acts"):
            raise RlcamError(
                f"method {method!r} runs extra forwards that would each need the LSTM's state; "
                "for recurrent agents use gradcam, gradcam++, hirescam, xgradcam, layercam, counterfactual or eigencam."
            )
        fused = self._method.needs == "layers"
        self.layers = rectified_layers(agent, self.layer_name, self.target) if fused else [self.layer_name]
        self._modules = [resolve_layer(agent, name, self.target) for name in self.layers]
        self.placement_name = placement
        self.deterministic = deterministic
        self.epsilon = float(getattr(self.family, "epsilon", 0.0))
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed  # also draws RISE's masks (``rlcam.rise``), once per input size
        self._rise_masks: torch.Tensor | None = None
        asked_fast = fast
        fast = fast and self._method.needs != "layers" and self.family.fast_head(self.target, deterministic)
        self._head = build_head(self.policy, self.family.head_kind, self.layer_name) if fast else None
        # Autograd's graph rooted after the layer, at the pre-activation z = W1 flatten(A) + b1 of the
        # Linear the layer feeds (NatureCNN): dy/dA = dy/dz W1 and Grad-CAM's alpha = dy/dz mean_cells(W1),
        # so autograd differentiates only the small head after z. ``fast=False`` keeps the graph from A.
        rooted = self._head is None and asked_fast and self._method.needs in ("weights", "grads", "guided")
        rooted = rooted and len(self.layers) == 1
        self._z_linear = linear_after(self.policy, self.layer_name) if rooted else None
        self._z_pooled = None if self._z_linear is None else PooledWeight(self._z_linear.weight)
        self._z: list[torch.Tensor] = []  # the captured z, once per explained pass
        self._z_of: torch.Tensor | None = None  # the activations whose z the Linear's hook waits for
        # With z found, the family's own hand-written head where it has one (``Family.hand_head``): a
        # forward without autograd, and dy/d(features) written out (``rlcam.fasthead.Tape``), so that
        # dy/dz = dy/d(features) * 1[z > 0] (NatureCNN's ReLU after z), no graph at all.
        self._by_hand_ok = self._z_linear is not None  # and ``Family.hand_head`` for the current settings
        self._features = feature_slice(self.policy, self.layer_name) if self._by_hand_ok else slice(None)
        self._by_hand = False  # the hooks capture without starting a graph (the hand-written pass)
        self.placement: Placement | None = None  # Explanation.cam -> input grid
        self._image_scale: float | None = None  # what observations are divided by (SB3's preprocess_obs)
        self._placement_t: tuple[torch.Tensor, torch.Tensor] | None = None  # the same, in torch; None: identity
        self._to_input: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (Ry, Rx) for torch maps
        self._handles: list = []
        self._open = False
        self._param: torch.Tensor | None = None  # one of the policy's parameters, for its device
        self._cached_on = policy_device(self.policy)  # where the head, masks and placement tensors live
        self._last_path: str | None = None  # ``gradient_path`` of the last explained pass
        self._passive = False  # extra passes run with the capture hooks doing nothing
        self._from_input = self._method.needs == "layers"  # the graph starts at the input, not at a layer
        self._modes: dict[nn.Module, bool] = {}
        self._acts: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self._call_of = [split_call(name)[1] for name in self.layers]  # which call of each module (None: its only)
        self._calls = [0 for _ in self.layers]
        self._state = None  # what a recurrent family carries between steps
        for name in self.layers:  # validate early
            make_placement(placement, (1, 1), (1, 1), grid=layer_grid(agent, name))
        # Dict observations with several image keys: one explainer per other key, at its own default
        # layer, built on first use (extras only); each runs one more explained pass.
        self._others: dict[str, Explainer] | None = None

    @property
    def gradient_path(self) -> str:
        """How the last explained pass got the map's gradient (before the first: how it will):
        ``"head"`` (``rlcam.fasthead.Head``, NatureCNN with linear heads: no autograd), ``"by hand"``
        (the family's hand-written head after the layer: no autograd), ``"autograd from z"`` (the graph
        rooted at the Linear after the layer), ``"autograd"`` (from the layer; ``fast=False``)."""
        if self._last_path is not None:
            return self._last_path
        if self._head is not None and self.family.fast_head(self.target, self.deterministic):
            return "head"
        if self._by_hand_ok and self.family.hand_head(self.target, self.deterministic):
            return "by hand"
        return "autograd from z" if self._z_linear is not None else "autograd"

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Explainer:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Register the hooks and put the policy in eval mode (restored by ``close``)."""
        if self._open:
            return
        self._modes = {m: m.training for m in self.policy.modules()}
        self.policy.train(False)
        self._param = next(self.policy.parameters(), None)
        device = self._device()
        if device != self._cached_on:  # the policy moved since the caches were made: make them again there
            self._forget_device(device)
        if self._head is not None:
            self._head.forget()  # weights may have changed through ``.data`` since the last use
        if self._z_pooled is not None:
            self._z_pooled.forget()
        self._open = True
        for i, module in enumerate(self._modules):
            self._handles.append(module.register_forward_hook(functools.partial(self._capture, i)))
        if self._z_linear is not None:
            self._handles.append(self._z_linear.register_forward_hook(self._capture_z))

    def _forget_device(self, device: torch.device) -> None:
        """Drop what was cached on another device: the hand-written head's derived weights (a QR-DQN's
        averaged quantile rows, the critic's row), RISE's masks, the placement matrices."""
        if self._head is not None:
            self._head = build_head(self.policy, self.family.head_kind, self.layer_name)
        self._rise_masks = None
        self._to_input = {}
        self.placement, self._placement_t = None, None
        self._cached_on = device

    def close(self) -> None:
        """Remove the hooks and restore every module's train/eval mode."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open = False
        for module, training in self._modes.items():
            module.training = training
        self._modes = {}

    def reset(self) -> None:
        """Forget the state carried between steps (a recurrent policy's memory): the next step starts fresh."""
        self._state = None

    def actor_memory(self) -> tuple[np.ndarray, ...] | None:
        """A recurrent policy's actor LSTM state after the last step, ``(h, c)`` each ``(layers, N,
        size)``, as ``RecurrentPPO.predict`` returns it; None before a step or for other policies."""
        if not self.family.recurrent or self._state is None:
            return None
        return tuple(h.cpu().numpy() for h in self._state[0])

    def set_actor_memory(self, state) -> None:
        """Carry on from ``state`` (``(h, c)``, as ``RecurrentPPO.predict`` takes it) for the actor;
        the critic's LSTM, which ``predict`` never runs, keeps its state where it is the same
        size, else starts from zeros."""
        device = self._device()
        actor = tuple(torch.as_tensor(np.asarray(h), dtype=torch.float32, device=device) for h in state)
        n = int(actor[0].shape[1])
        critic = self._state[1] if self._state is not None and self.family.state_size(self._state) == n else None
        self._state = (actor, critic if critic is not None else self.family.initial_state(n)[1])

    def _capture(self, index, module, inputs, output):
        if self._passive:
            return None
        self._calls[index] += 1
        wanted = self._call_of[index]
        if wanted is not None and self._calls[index] != wanted:  # another call of a module used several times
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise RlcamError(
                f"layer {self.layers[index]!r} outputs {shape}, not a feature map (N, K, h, w); "
                f"choose a conv layer: {', '.join(conv_layers(self.agent, self.target))}."
            )
        if index > 0 or self._from_input:  # already inside a graph rooted earlier
            self._acts[index].append(output)
            return None
        if self._by_hand:  # no graph: keep the activations, and wait for their z
            self._acts[0].append(output)
            self._z_of = output
            return None
        # From here on the forward builds a graph, rooted at these activations only.
        torch.set_grad_enabled(True)
        acts = output.detach().requires_grad_(True)
        self._acts[0].append(acts)
        self._z_of = acts if self._z_linear is not None else None
        return acts

    def _capture_z(self, module, inputs, output):
        """Roots the graph at the Linear's output when its input is the captured activations, flattened."""
        acts, self._z_of = self._z_of, None
        if self._passive or acts is None:
            return None
        # NatureCNN's forward is linear(cnn(x)), cnn ending with the layer and a Flatten, so this call
        # is the one right after the layer's (a Flatten of non-contiguous activations is a copy of them)
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or x.shape[0] != acts.shape[0] or x.numel() != acts.numel():
            return None  # not fed by the layer: the graph stays rooted at the activations
        if self._by_hand:
            self._z.append(output)
            return None
        z = output.detach().requires_grad_(True)
        self._z.append(z)
        return z

    def _from_z(self, want: str, gz: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """dy/dA (``want="grads"``) or its means over cells (``"weights"``) from dy/dz, ``(N, F)``."""
        if want == "weights":
            return gz @ self._z_pooled(acts.shape[1])
        return (gz @ self._z_linear.weight.detach()).view_as(acts)

    @contextlib.contextmanager
    def _extra_pass(self):
        """A forward that is not the explained one: hooks passive, no graph unless asked for."""
        was, self._passive = self._passive, True
        try:
            yield
        finally:
            self._passive = was

    def paused(self):
        """A context in which the open explainer's hooks do nothing, for other code that runs the
        policy meanwhile: SB3's own ``model.predict`` would otherwise have its forward's layer
        captured and a graph started in it. ``with explainer.paused(): model.predict(obs)``."""
        return self._extra_pass()

    # -- the work ---------------------------------------------------------------------------------

    def explain(
        self,
        obs: np.ndarray,
        actions: np.ndarray | None = None,
        all_actions: bool = False,
        episode_start: np.ndarray | None = None,
    ) -> Explanation:
        """Choose actions for ``obs (N, C, H, W)`` (or one ``(C, H, W)``) and explain them.

        Args:
            obs: policy inputs, as the env gives them.
            actions: ``(N,)`` (or ``(N, D)``) explain these actions, as the env takes them, instead
                of choosing (e.g. another agent's choices, or a fixed action across randomised
                models); they are returned as given.
            all_actions: also map every tile (each action, or each action component:
                ``Explanation.action_cams``, see ``action_maps``); gradient methods take them from
                this call's forward.
            episode_start: ``(N,)`` bool, which envs begin a new episode at ``obs`` (the VecEnv's
                previous ``dones``); a recurrent policy's memory is reset there, as ``predict`` does.
                Every call is one step for a recurrent policy: its memory moves on.
        """
        obs = self._batch(obs)
        obs_t = self._tensor(obs)
        n = _size(obs)
        state = self._step_state(n, episode_start)
        given = None if actions is None else self.family.check_actions(actions, n)
        if all_actions:
            self.check_tiles()
        tiles = self.family.tiles(self.target) if all_actions else []
        explanation, forward = self._explain(obs, obs_t, given, state, tiles)
        if self.family.recurrent:
            self._state = self.family.next_state(forward)
        if actions is not None:
            explanation.actions = np.asarray(actions).reshape(explanation.actions.shape)
        return explanation

    def _step_state(self, n: int, episode_start):
        if not self.family.recurrent:
            return None
        if self._state is None or self.family.state_size(self._state) != n:
            self._state = self.family.initial_state(n)
        starts = np.zeros(n, dtype=bool) if episode_start is None else np.asarray(episode_start, dtype=bool)
        return self.family.with_starts(self._state, torch.as_tensor(starts, dtype=torch.float32, device=self._device()))

    def _explain(self, obs, obs_t, given, state, tiles) -> tuple[Explanation, Forward]:
        found = self._maps(obs, obs_t, given, state, tiles)
        explanation = self._to_host(found)
        if self._dict and self.extras:  # passes that differentiate scores of the actions
            taken = self._outside(found.actions)
            shares, attributions = self._key_attributions(obs_t, taken, state)
            explanation.input_shares = _host(shares)
            explanation.input_attributions = {key: _host(a) for key, a in attributions.items()}
            explanation.key_cams = self._other_key_maps(obs, obs_t, taken, state) or None
        if self.family.recurrent and state is not None and self.extras:
            effects = self._memory_vs_pixels(obs_t, found.actions, state, found.score)
            explanation.memory_effect, explanation.pixel_effect = (_host(e) for e in effects)
        return explanation, found.forward

    def _maps(self, obs, obs_t, given, state, tiles) -> _Found:
        """The explained pass and the maps, all on the policy's device (nothing copied to the host)."""
        needs = self._method.needs
        want = "weights" if needs == "weights" else "grads" if needs in ("grads", "guided", "layers") else None
        # The hand-written head, unless a setting changed since it was chosen (api sets ``deterministic``).
        head = self._head is not None and self.family.fast_head(self.target, self.deterministic)
        tile_specs = tiles if (needs in _GRADIENT_NEEDS and not head) else []
        if head:
            acts, grads, forward, actions, score, z = self._hand_written_pass(obs_t, given, want)
            tile_grads = []
            self._last_path = "head"
        else:
            by_hand = self._by_hand_ok and self.family.hand_head(self.target, self.deterministic)
            explained_pass = self._hand_chain_pass if by_hand else self._autograd_pass
            acts, grads, forward, actions, score, tile_grads = explained_pass(
                obs_t, given, want, state=state, tiles=tile_specs
            )
            z = None
        shares = None
        cam_down = None
        if needs in _GRADIENT_NEEDS:
            cam = self._method.fn(acts[0], grads[0])
            if self.family.signed(self.target):  # the paper's counterfactual map: what pushes it down
                cam_down = self._method.fn(acts[0], -grads[0]).detach().float()
        elif needs == "acts":
            cam = self._method.fn(acts[0])
        elif needs == "masked_scores":
            cam = self._method.fn(acts[0], self._masked_scores(obs_t, acts[0], actions))
        elif needs == "guided":
            cam_input = self._on_input(0, grad_cam(acts[0], grads[0]), self._input_hw(obs))
            cam, shares = self._method.fn(self._guided_input_grads(obs_t, actions), cam_input)
        elif needs == "perturbation":
            cam = self._method.fn(perturbation_shift(obs_t.float(), functools.partial(self._outputs, actions=actions)))
        elif needs == "random_masks":
            masks = self._masks(tuple(obs.shape[2:]), obs_t.device)
            cam = self._method.fn(self._random_mask_scores(obs_t, masks, actions), masks)
        elif needs == "path_grads":
            x = obs_t.float()
            cam = self._method.fn(self._path_gradient(x, actions), x - ig.BASELINE)
        else:  # "layers": LayerCAM of the input itself, then of each hooked layer placed on the input
            maps = [layer_cam(a, g) for a, g in zip(acts, grads, strict=True)]
            input_hw = self._input_hw(obs)
            cam = self._method.fn([maps[0]] + [self._on_input(i, m, input_hw) for i, m in enumerate(maps[1:])])
        cam = cam.detach().float()
        input_hw = self._input_hw(obs)
        action_cams = tile_scores = None
        if tiles:
            if z is not None and needs in _GRADIENT_NEEDS:  # the hand-written head's forward serves all
                action_cams = self._every_action(acts[0], z, forward, actions)
            elif tile_grads:
                maps = [self._method.fn(acts[0], g) for g, _ in tile_grads]
                action_cams = torch.stack(maps, dim=1).float()
                tile_scores = torch.stack([y for _, y in tile_grads], dim=1).float()
            else:
                action_cams = self._each_tile(obs, obs_t, actions, tiles, state)
        if self.placement is None:
            self.placement = self._placement(tuple(cam.shape[1:]), input_hw)
            self._placement_t = None
            if self._method.needs not in _INPUT_GRID_NEEDS:  # else the map is on the input grid already
                self._placement_t = tuple(
                    torch.as_tensor(m, dtype=torch.float32, device=cam.device)
                    for m in (self.placement.to_input_y, self.placement.to_input_x)
                )
        # In torch rather than numpy: it keeps to torch's thread setting (numpy's BLAS threads
        # spin against a busy machine's other work and made this matmul take ~40 ms).
        cam_input = cam.clone() if self._placement_t is None else self._placement_t[0] @ cam @ self._placement_t[1].T
        return _Found(
            actions=actions,
            forward=forward,
            cam=cam,
            cam_input=cam_input,
            score=score.detach(),
            value=self._value(forward, actions),
            shares=shares,
            action_cams=action_cams,
            cam_down=cam_down,
            tile_scores=tile_scores,
        )

    def _to_host(self, found: _Found) -> Explanation:
        """The small results copied back from the policy's device: what ``explain`` returns."""
        n = len(found.cam)
        return Explanation(
            actions=self.family.env_actions(found.actions),
            cam=_host(found.cam),
            cam_input=_host(found.cam_input),
            score=_host(found.score),
            action_values=_host(self.family.display(found.forward).detach()),
            value=np.full(n, np.nan, np.float32) if found.value is None else _host(found.value),
            frame_shares=np.zeros((n, 0), np.float32) if found.shares is None else _host(found.shares),
            action_cams=None if found.action_cams is None else _host(found.action_cams),
            cam_down=None if found.cam_down is None else _host(found.cam_down),
            tile_scores=None if found.tile_scores is None else _host(found.tile_scores),
        )

    def _value(self, forward: Forward, actions: torch.Tensor) -> torch.Tensor | None:
        """The value the panel shows: the critic's V, max Q, or Q(s, a) of the taken action; None
        where it would cost a pass beyond the explained one and extras are off (shown as NaN)."""
        if not self.family.value_costs_a_pass(forward, actions):  # already in the forward: no pass runs
            return self.family.value(forward, actions).detach()
        if not self.extras:
            return None
        with torch.no_grad(), self._extra_pass():
            return self.family.value(forward, actions).detach()

    def _memory_vs_pixels(self, obs_t, actions, state, score) -> tuple[torch.Tensor, torch.Tensor]:
        """|score - score with the incoming LSTM state zeroed| and |score - score of the blurred frame|."""
        zeroed = self.family.with_starts(self.family.initial_state(len(actions)), state[-1])
        blurred = gaussian_blur(obs_t.float()) if not isinstance(obs_t, dict) else None
        with torch.no_grad(), self._extra_pass():
            memoryless = self.family.score(self.target, self.family.forward(obs_t, zeroed), actions)
            moved = torch.abs(score.detach() - memoryless)
            pixels = torch.full_like(moved, float("nan"))
            if blurred is not None:
                pixels = torch.abs(
                    score.detach() - self.family.score(self.target, self.family.forward(blurred, state), actions)
                )
        return moved, pixels

    def _device(self) -> torch.device:
        """The policy's device, from a parameter kept at ``open`` (it follows ``policy.to``): SB3's
        ``policy.device`` walks the modules to find one, on every call."""
        return self._param.device if self._param is not None else policy_device(self.policy)

    def _tensor(self, obs):
        """Observations on the policy's device (the one copy to it per step)."""
        device = self._device()
        if isinstance(obs, dict):
            return {k: torch.as_tensor(v, device=device) for k, v in obs.items()}
        return torch.as_tensor(obs, device=device)

    def _input_hw(self, obs) -> tuple[int, int]:
        """The explained image's (H, W): the observation's, or the layer's image key's."""
        image = obs[self.image_key] if isinstance(obs, dict) else obs
        return tuple(image.shape[2:])

    def _other_key_maps(self, obs, obs_t, actions: torch.Tensor, state) -> dict[str, np.ndarray]:
        """Every other image key's ``cam_input`` for the same target and actions (see ``Explanation.key_cams``)."""
        if self._others is None:
            others = {k: layer for k, layer in key_layers(self.agent, self.target).items() if k != self.image_key}
            self._others = {
                key: Explainer(
                    self.agent, self.target, layer, self.method, self.placement_name, self.deterministic, self.seed
                )
                for key, layer in others.items()
            }
        maps = {}
        with self._extra_pass():  # this explainer's hooks stay out of the other keys' passes
            for key, other in self._others.items():
                with other:
                    maps[key] = other._explain(obs, obs_t, actions, state, [])[0].cam_input
        return maps

    def _key_attributions(self, obs_t: dict, actions: torch.Tensor, state):
        """Gradient x input of the explained score for every key of a Dict observation, from one
        extra pass with the inputs as leaves: each key's share ``(N, K)``, and the vector keys'
        elements ``(N, dim)``, on the policy's device."""
        leaves = {k: v.float().requires_grad_(True) for k, v in obs_t.items() if not _is_index_key(self.policy, k)}
        inputs = {k: leaves.get(k, v) for k, v in obs_t.items()}
        with self._extra_pass(), torch.enable_grad():
            score = self.family.score(self.target, self.family.forward(inputs, state), actions)
            grads = torch.autograd.grad(score.sum(), list(leaves.values()), allow_unused=True)
        keys = list(self.policy.observation_space.spaces)
        n = len(actions)
        totals = torch.full((n, len(keys)), float("nan"), device=actions.device)
        attributions = {}
        for (key, x), g in zip(leaves.items(), grads, strict=True):
            gx = torch.zeros_like(x) if g is None else (g * x).detach()
            totals[:, keys.index(key)] = gx.flatten(1).sum(dim=1).abs()
            if key != self.image_key and x.dim() <= 2:
                attributions[key] = gx.reshape(n, -1)
        shares = totals / totals.nan_to_num(0.0).sum(dim=1, keepdim=True).clamp_min(1e-12)
        return shares, attributions

    def _batch(self, obs):
        """Observations as a batch ``(N, C, H, W)`` (or a dict of such batches), checked against the agent's space."""
        if not self._open:
            raise RuntimeError("Explainer.explain needs the explainer open: use `with Explainer(...) as ex:`.")
        if self._dict:
            return self._dict_batch(obs)
        obs = np.asarray(obs)
        expected = tuple(self.policy.observation_space.shape)
        if obs.shape == expected:
            obs = obs[None]
        if obs.shape[1:] != expected:
            raise RlcamError(f"observation shape {obs.shape[1:]} does not match the agent's {expected}.")
        return obs

    def _dict_batch(self, obs) -> dict[str, np.ndarray]:
        space = self.policy.observation_space
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            raise RlcamError(f"observations must be a dict with the keys {', '.join(space.spaces)}.")
        batched = {}
        for key, sub in space.spaces.items():
            value = np.asarray(obs[key])
            single = tuple(sub.shape)
            if value.shape == single:
                value = value[None]
            if value.shape[1:] != single:
                raise RlcamError(f"observation {key!r} has shape {value.shape[1:]}, not the agent's {single}.")
            batched[key] = value
        if len({len(v) for v in batched.values()}) != 1:
            raise RlcamError("every key of a Dict observation needs the same number of envs.")
        return batched

    def tile_problem(self) -> str | None:
        """Why the grid's tiles (``Family.tiles``) cannot be mapped at the explained layer, in one
        sentence, or None when they can. A tile's score must pass through the layer: with separate
        actor and critic extractors (``share_features_extractor=False``), the actor's components or
        parts never see the critic's layer that ``value`` is explained at, and a map of them there
        would be zero (autograd) or meaningless (a gradient through another extractor's head)."""
        path = split_call(self.layer_name)[0]
        foreign = [
            tile
            for _, tile, _ in self.family.tiles(self.target)
            if not any(path.startswith(root + ".") for root in self.family.extractor_paths(tile))
        ]
        if not foreign:
            return None
        roots = ", ".join(self.family.extractor_paths(self.target))
        return (
            f"the tiles of every action component or part ({', '.join(foreign)}) do not pass through layer "
            f"{self.layer_name!r}, which lies in {roots}, an extractor only {self.target!r} uses (this agent's "
            f"actor and critic have separate features extractors); map {self.target!r} without --all-actions, "
            f"or the tiles with one of the actor's targets, such as {foreign[0]!r}."
        )

    def check_tiles(self) -> None:
        """``tile_problem`` as an ``RlcamError``."""
        problem = self.tile_problem()
        if problem is not None:
            raise RlcamError(problem)

    def action_maps(self, obs: np.ndarray) -> np.ndarray:
        """The map of every tile, ``(N, T, h, w)`` float32, raw like ``Explanation.cam``.

        For discrete actions, tile ``a`` explains the target for action ``a`` as if it had been
        chosen (for ``contrast:B``, a against B; the critic's map is the same for every action);
        for continuous ones, tile ``i`` explains component i's deterministic action (``mean:i``).
        With the hand-written head, the gradient methods share one forward: each further action
        costs two small matmuls. ``explain(obs, all_actions=True)`` gives the same maps beside the
        chosen action's explanation, from the same forward. For a recurrent policy this is a step.
        """
        obs = self._batch(obs)
        needs = self._method.needs
        if self._head is None or needs not in _GRADIENT_NEEDS:
            return self.explain(obs, all_actions=True).action_cams
        obs_t = self._tensor(obs)
        with torch.no_grad():
            acts, z, forward = head_forward(self._head, self._preprocess(obs_t), self.family.head_kind)
            return _host(self._every_action(acts, z, forward))

    def _every_action(
        self, acts: torch.Tensor, z: torch.Tensor, forward: Forward, taken: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every tile's map ``(N, T, h, w)`` from one hand-written forward (gradient methods)."""
        n = len(acts)
        needs = self._method.needs
        maps = []
        with torch.no_grad():
            for _, target, a in self.family.tiles(self.target):
                actions = taken if a is None else torch.full((n,), a, device=acts.device)
                grads = self._hand_written_grads(needs, acts, z, forward, actions, target)
                maps.append(self._method.fn(acts, grads))
        return torch.stack(maps, dim=1).float()

    def _each_tile(self, obs, obs_t, taken: torch.Tensor, tiles, state=None) -> torch.Tensor:
        """Every tile's map ``(N, T, h, w)``, one explained pass per tile (methods without a shared pass)."""
        n = _size(obs)
        target, maps = self.target, []
        try:
            for _, tile_target, action in tiles:
                self.target = tile_target
                given = taken if action is None else torch.full((n,), action, device=taken.device)
                maps.append(self._maps(obs, obs_t, given, state, []).cam)
        finally:
            self.target = target
        return torch.stack(maps, dim=1)

    # -- where maps land ---------------------------------------------------------------------------

    def _layer_placement(self, name: str, layer_hw, input_hw) -> Placement:
        return make_placement(self.placement_name, layer_hw, input_hw, grid=layer_grid(self.agent, name))

    def _placement(self, cam_hw, input_hw) -> Placement:
        """The placement taking ``Explanation.cam`` to the input grid, by where the method's map lives."""
        needs = self._method.needs
        if needs == "perturbation":
            return probe_placement(*input_hw, name=self.placement_name)
        if needs in _INPUT_GRID_NEEDS:  # already on the input grid
            return Placement(self.placement_name, np.eye(input_hw[0]), np.eye(input_hw[1]))
        return self._layer_placement(self.layer_name, cam_hw, input_hw)

    def _on_input(self, index: int, maps: torch.Tensor, input_hw) -> torch.Tensor:
        """Layer maps ``(..., h, w)`` of layer ``index`` on the input grid ``(..., H, W)``, in torch."""
        name = self.layers[index]
        if name not in self._to_input:
            placement = self._layer_placement(name, maps.shape[-2:], input_hw)
            self._to_input[name] = (
                torch.as_tensor(placement.to_input_y, dtype=maps.dtype, device=maps.device),
                torch.as_tensor(placement.to_input_x, dtype=maps.dtype, device=maps.device),
            )
        ry, rx = self._to_input[name]
        return ry @ maps @ rx.T

    # -- passes -----------------------------------------------------------------------------------

    def _hand_written_pass(self, obs_t: torch.Tensor, actions: torch.Tensor | None, want: str | None = "grads"):
        """Forward and dy/dA with the head's gradient written out (``rlcam.fasthead``): no autograd.

        ``want``: ``"grads"`` dy/dA, ``"weights"`` only its means over cells ``(N, K)``, or None.
        Returns activations, gradients, forward, actions, score and the head's hidden input ``z``.
        """
        with self._graphless():
            x = self._preprocess(obs_t)
            acts, z, forward = head_forward(self._head, x, self.family.head_kind)
            if actions is None:
                actions = self.family.choose(forward, self.deterministic, self.generator)
            score = self.family.score(self.target, forward, actions)
            grads = None if want is None else [self._hand_written_grads(want, acts, z, forward, actions)]
        return [acts], grads, forward, actions, score, z

    def _graphless(self):
        """``no_grad``, or ``inference_mode`` (fewer checks per op: ~10% of a batch-1 step) where what
        the pass makes only goes into maps: gradient methods, no state carried to the next step."""
        if self._method.needs in _GRADIENT_NEEDS and not self.family.recurrent:
            return torch.inference_mode()
        return torch.no_grad()

    @staticmethod
    def _outside(actions: torch.Tensor | None) -> torch.Tensor | None:
        """The actions as a tensor autograd may use (a pass in inference mode made them)."""
        return actions.clone() if actions is not None and actions.is_inference() else actions

    def _hand_written_grads(
        self, want: str, acts, z, forward: Forward, actions: torch.Tensor, target: str | None = None
    ) -> torch.Tensor:
        """dy/dA shaped like ``acts`` (``want="grads"``), or only its means over cells ``(N, K)`` ("weights")."""
        if want == "weights":
            weights = functools.partial(head_channel_weights, channels=acts.shape[1])
            return self._head_gradient(weights, z, forward, actions, target)
        return self._head_gradient(head_gradient, z, forward, actions, target).view_as(acts)

    def _preprocess(self, obs_t: torch.Tensor) -> torch.Tensor:
        """SB3's ``preprocess_obs`` for the policy's Box space, with its space checks done once."""
        if self._image_scale is None:
            from stable_baselines3.common.preprocessing import is_image_space

            space = self.policy.observation_space
            self._image_scale = 255.0 if self.policy.normalize_images and is_image_space(space) else 1.0
        # One kernel: true division of the uint8 tensor gives float32, as ``.float() / 255`` does in two.
        return torch.true_divide(obs_t, self._image_scale) if self._image_scale != 1.0 else obs_t.float()

    def _head_gradient(
        self, gradient, z: torch.Tensor, forward: Forward, actions: torch.Tensor, target: str | None = None
    ) -> torch.Tensor:
        """``gradient`` (a ``rlcam.fasthead`` function) for ``target`` (default: the explained one)."""
        target = target or self.target
        other = contrast_action(target)
        if other is None:
            return gradient(self._head, z, forward, target, actions)
        # The head's gradient is linear in the output coefficients: d(s_a - s_b) = ds_a - ds_b.
        base = self.family.base_score
        return gradient(self._head, z, forward, base, actions) - gradient(
            self._head, z, forward, base, torch.full_like(actions, other)
        )

    def _hand_chain_pass(
        self,
        obs_t: torch.Tensor,
        actions: torch.Tensor | None,
        want: str | None = "grads",
        state=None,
        tiles=(),
    ):
        """``_autograd_pass`` without autograd: the family's ``hand_forward`` under ``no_grad``, the
        hooks keeping A and z, and dy/dz from the family's ``hand_gradient``. Same returns."""
        self._z, self._z_of = [], None
        self._acts = [[] for _ in self.layers]
        self._calls = [0 for _ in self.layers]
        self._by_hand = True
        try:
            with self._graphless():
                forward = self.family.hand_forward(obs_t, self.target, state)
                if actions is None:
                    actions = self.family.choose(forward, self.deterministic, self.generator)
                score = self.family.score(self.target, forward, actions)
                seen = self._acts[0]
                if len(seen) != 1:
                    raise RlcamError(
                        f"layer {self.layer_name!r} ran {len(seen)} times in one forward; choose a layer the "
                        f"score depends on once: {', '.join(conv_layers(self.agent, self.target))}."
                    )
                acts, z = seen[0], self._z
                if len(z) != 1:  # the Linear after the layer did not see it: the graph from A instead
                    raise _NotByHand
                on = z[0] > 0  # NatureCNN's ReLU after z: dy/dz = dy/d(features) * 1[z > 0]

                def grads(target: str, chosen: torch.Tensor) -> torch.Tensor:
                    gz = self.family.hand_gradient(target, forward, chosen)[:, self._features] * on
                    return self._from_z(want, gz, acts)

                explained = None if want is None else [grads(self.target, actions)]
                tile_grads = []
                for _, tile_target, action in tiles if want is not None else ():
                    chosen = actions if action is None else torch.full_like(actions, action)
                    tile_grads.append((grads(tile_target, chosen), self.family.score(tile_target, forward, chosen)))
        except _NotByHand:
            explained = None
        finally:
            self._by_hand = False
            self._acts = [[] for _ in self.layers]
            self._z, self._z_of = [], None
        if explained is None and want is not None:
            return self._autograd_pass(obs_t, self._outside(actions), want, state=state, tiles=tiles)
        self._last_path = "by hand"
        return [acts], explained, forward, actions, score, tile_grads

    def _autograd_pass(
        self,
        obs_t: torch.Tensor,
        actions: torch.Tensor | None,
        want: str | None = "grads",
        state=None,
        tiles=(),
    ):
        """Forward through the policy's modules; autograd from the hooked layer on.

        In the ``fine`` mode the graph starts at the input instead (float, in observation units),
        which comes first in the returned activations and gradients. Returns activations,
        gradients, forward, actions, score and each tile's gradient at the first hooked layer.
        """
        self._z, self._z_of = [], None
        self._acts = [[] for _ in self.layers]
        self._calls = [0 for _ in self.layers]
        x = obs_t
        if self._from_input:  # Dict observations: the leaf is the layer's image key, the other keys as given
            leaf = (obs_t[self.image_key] if self._dict else obs_t).float().requires_grad_(True)
            x = {**obs_t, self.image_key: leaf} if self._dict else leaf
        tile_grads = []
        try:
            # Without a graph up to the layer, whose hook enables grad; leaving restores the mode.
            with torch.set_grad_enabled(self._from_input):
                forward = self.family.forward(x, state)
                if actions is None:
                    actions = self.family.choose(forward, self.deterministic, self.generator)
                score = self.family.score(self.target, forward, actions)  # a critic of the action runs here
                for name, seen in zip(self.layers, self._acts, strict=True):
                    if len(seen) != 1:
                        raise RlcamError(
                            f"layer {name!r} ran {len(seen)} times in one forward; choose a layer the "
                            f"score depends on once: {', '.join(conv_layers(self.agent, self.target))}."
                        )
                acts = ([leaf] if self._from_input else []) + [seen[0] for seen in self._acts]
                # The graph's root: z after the layer where the Linear's hook cut it there (once), else A.
                roots = self._z if len(self._z) == 1 else acts
                self._last_path = "autograd from z" if roots is self._z else "autograd"
                grads = None
                if want is not None:
                    if not score.requires_grad:
                        raise RlcamError(f"target {self.target!r} does not depend on layer {self.layer_name!r}.")
                    # Samples are independent (eval mode), so one backward of the sum gives each its own gradient.
                    grads = list(torch.autograd.grad(score.sum(), roots, retain_graph=bool(tiles)))
                    for i, (_, tile_target, action) in enumerate(tiles):  # the same graph serves every tile
                        chosen = actions if action is None else torch.full_like(actions, action)
                        tile_score = self.family.score(tile_target, forward, chosen)
                        if not tile_score.requires_grad:
                            raise RlcamError(f"tile {tile_target!r} does not depend on layer {self.layer_name!r}.")
                        (g,) = torch.autograd.grad(tile_score.sum(), roots[:1], retain_graph=i + 1 < len(tiles))
                        tile_grads.append((g, tile_score.detach()))
                    if roots is self._z:  # from dy/dz to dy/dA, or straight to its means over cells
                        grads = [self._from_z(want, g, acts[0]) for g in grads]
                        tile_grads = [(self._from_z(want, g, acts[0]), y) for g, y in tile_grads]
                    elif want == "weights":
                        grads = [g.mean(dim=(2, 3)) for g in grads]
                        tile_grads = [(g.mean(dim=(2, 3)), y) for g, y in tile_grads]
        finally:
            self._acts = [[] for _ in self.layers]
            self._z, self._z_of = [], None
        forward = self.family.detached(forward)
        return [a.detach() for a in acts], grads, forward, actions, score.detach(), tile_grads

    def _plain_forward(self, inputs: torch.Tensor) -> Forward:
        """The policy on float inputs in observation units, without a graph or the capture hooks."""
        with torch.no_grad(), self._extra_pass():
            return self.family.forward(inputs)

    def _masked_scores(self, obs_t: torch.Tensor, acts: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Score-CAM: the explained score of the input times each channel's mask, ``(N, K)``."""
        masks = score_cam_masks(self._on_input(0, acts, obs_t.shape[2:]))  # (N, K, H, W)
        x = obs_t.float()
        n, k = masks.shape[:2]
        scores = torch.empty(n * k, device=x.device)
        for start in range(0, n * k, CHUNK):
            flat = torch.arange(start, min(start + CHUNK, n * k), device=x.device)
            rows, channels = flat // k, flat % k
            inputs = x[rows] * masks[rows, channels][:, None]
            scores[flat] = self.family.score(self.target, self._plain_forward(inputs), actions[rows]).float()
        return scores.view(n, k)

    def _outputs(self, inputs: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """What perturbation saliency watches move: all action scores (as Greydanus et al. watch the
        logits), the value for the critic target, the explained score itself for contrasts and for
        families whose targets are not one of the action scores; ``(B, D)``."""
        forward = self._plain_forward(inputs)
        if self.target == "value":
            return forward.value[:, None]
        if contrast_action(self.target) is not None or not self.family.discrete:
            return self.family.score(self.target, forward, actions[rows])[:, None]
        return forward.action_scores

    def _masks(self, input_hw: tuple[int, int], device) -> torch.Tensor:
        """RISE's masks ``(M, H, W)`` for this input size, drawn from the explainer's seed and kept."""
        if self._rise_masks is None or tuple(self._rise_masks.shape[1:]) != input_hw:
            masks = rise.rise_masks(*input_hw, count=rise.MASKS, cells=rise.CELLS, keep=rise.KEEP, seed=self.seed)
            self._rise_masks = masks.to(device)
        return self._rise_masks

    def _random_mask_scores(self, obs_t: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """RISE: the explained score of each input times each mask (masked out: black), ``(N, M)``."""
        x = obs_t.float()
        n, m = len(x), len(masks)
        scores = torch.empty(n * m, device=x.device)
        for start in range(0, n * m, CHUNK):
            flat = torch.arange(start, min(start + CHUNK, n * m), device=x.device)
            rows, which = flat // m, flat % m
            inputs = x[rows] * masks[which][:, None]
            scores[flat] = self.family.score(self.target, self._plain_forward(inputs), actions[rows]).float()
        return scores.view(n, m)

    def _path_gradient(self, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Integrated Gradients' mean dy/dx along the path from the black baseline to ``x``, ``(N, C, H, W)``.

        Per observation unit, like ``x`` (not per unit of SB3's /255 input): their product, the
        attribution, is in the score's units either way.
        """

        def score(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return self.family.score(self.target, self.family.forward(points), actions[rows])

        with self._extra_pass():
            return ig.path_gradient(x, score, baseline=ig.BASELINE, steps=ig.STEPS, chunk=CHUNK)

    def _guided_input_grads(self, obs_t: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """dy/dx ``(N, C, H, W)`` through guided ReLUs; only x gets a gradient.

        x is the network's input: for image agents SB3 divides observations by 255 first, so the
        gradient is taken per unit of that [0, 1] input (not per observation level), which keeps
        maps of well-scaled magnitude.
        """
        x = obs_t.float().requires_grad_(True)
        with self._extra_pass(), guided_relus(self.policy), torch.enable_grad():
            score = self.family.score(self.target, self.family.forward(x), actions)
            (grads,) = torch.autograd.grad(score.sum(), x)
        return grads * 255.0 if self.policy.normalize_images else grads
