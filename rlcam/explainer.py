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
the ``fine`` mode hooks every conv block up to the layer and takes one backward from the input.
Their maps live on the input grid (the perturbation map on its probe grid), and
``Explainer.placement`` always takes ``Explanation.cam`` to the input.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from rlcam.agents import Agent
from rlcam.cam import METHODS, as_method, grad_cam, layer_cam, score_cam_masks
from rlcam.errors import RlcamError
from rlcam.fasthead import build_head, head_channel_weights, head_forward, head_gradient
from rlcam.geometry import Placement, make_placement, receptive_field_grid
from rlcam.guided import guided_relus
from rlcam.perturb import CHUNK, perturbation_shift, probe_placement
from rlcam.targets import (
    Forward,
    check_target,
    contrast_action,
    display_values,
    explained_score,
    policy_forward,
)

# Element-wise activations that end a conv block: the default layer is the last of these after the last conv.
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.ReLU6, nn.PReLU, nn.CELU, nn.SELU)


def extractor_paths(agent: Agent) -> list[str]:
    """Module paths (inside ``model.policy``) of the feature extractors the action depends on."""
    policy = agent.policy
    if agent.algo in ("ppo", "a2c"):
        return ["features_extractor" if policy.share_features_extractor else "pi_features_extractor"]
    if agent.algo == "dqn":
        return ["q_net.features_extractor"]
    return ["quantile_net.features_extractor"]


def conv_layers(agent: Agent) -> list[str]:
    """Candidate layers: every Conv2d and the activation right after it, in forward order."""
    found = []
    for root in extractor_paths(agent):
        modules = list(agent.policy.get_submodule(root).named_modules(prefix=root))
        for i, (name, module) in enumerate(modules):
            if isinstance(module, nn.Conv2d):
                found.append(name)
                if i + 1 < len(modules) and isinstance(modules[i + 1][1], _ACTIVATIONS):
                    found.append(modules[i + 1][0])
    return found


def default_layer(agent: Agent) -> str:
    """The rectified output of the last conv block (for NatureCNN: ``...cnn.5``, the last ReLU)."""
    candidates = conv_layers(agent)
    if not candidates:
        raise RlcamError(
            f"agent {agent.path} has no convolutional layer (an MLP policy?); "
            "Grad-CAM needs a CNN policy that acts from pixels."
        )
    return candidates[-1]


def rectified_layers(agent: Agent, up_to: str) -> list[str]:
    """The ``fine`` mode's layers: every rectified conv output before ``up_to``, then ``up_to``, in forward order."""
    candidates = conv_layers(agent)
    if up_to not in candidates:
        raise RlcamError(
            f"the fine mode fuses conv blocks; layer {up_to!r} is not one of {', '.join(candidates) or 'none'}."
        )
    before = candidates[: candidates.index(up_to)]
    rectified = [name for name in before if isinstance(agent.policy.get_submodule(name), _ACTIVATIONS)]
    return rectified + [up_to]


def resolve_layer(agent: Agent, name: str) -> nn.Module:
    try:
        return agent.policy.get_submodule(name)
    except AttributeError:
        raise RlcamError(
            f"layer {name!r} is not a module of this policy; candidates: {', '.join(conv_layers(agent)) or 'none'}."
        ) from None


def layer_grid(agent: Agent, name: str):
    """Receptive-field grid of layer ``name``, from the spatial modules before it in its extractor."""
    root = next((r for r in extractor_paths(agent) if name.startswith(r + ".")), None)
    if root is None:
        return None
    before = []
    for path, module in agent.policy.get_submodule(root).named_modules(prefix=root):
        before.append(module)
        if path == name:
            return receptive_field_grid(before)
    return None


def _no_shares() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass
class Explanation:
    """Actions and maps for one batch of observations (N envs)."""

    actions: np.ndarray  # (N,) int64, the actions taken
    cam: np.ndarray  # (N, h, w) float32, raw map: rectified, not normalised, at the method's resolution
    cam_input: np.ndarray  # (N, H, W) float32, the map on the policy-input grid
    score: np.ndarray  # (N,) float32, the explained quantity
    action_values: np.ndarray  # (N, A) float32, probabilities (PPO/A2C) or Q-values (DQN family)
    value: np.ndarray  # (N,) float32, critic value (PPO/A2C) or max Q (DQN family)
    # (N, C) float32: each input channel's (stacked frame's) share of the map, for methods that
    # attribute to the input (``guided``); (N, 0) for the others.
    frame_shares: np.ndarray = field(default_factory=_no_shares)
    # (N, A, h, w) float32: every action's raw map, when ``explain(..., all_actions=True)``; else None.
    action_cams: np.ndarray | None = None

    def sample(self, i: int) -> Explanation:
        """Observation ``i``'s explanation, without the batch axis (fields that are None stay None)."""
        return Explanation(
            **{f.name: None if (v := getattr(self, f.name)) is None else np.asarray(v[i]) for f in fields(self)}
        )


class Explainer:
    """Explains a loaded SB3 agent's actions; use as a context manager.

    Args:
        agent: from ``rlcam.agents.load_agent``.
        target: explained score; defaults per algorithm (``rlcam.targets.DEFAULT_TARGET``);
            ``contrast:B`` explains the chosen action against action B.
        layer: module path inside ``model.policy``; defaults to the last rectified conv output.
            The ``fine`` method fuses the input and every rectified conv output up to this one.
        method: a key of ``rlcam.cam.METHODS``.
        placement: ``bilinear`` or ``rf`` (see ``rlcam.geometry``).
        deterministic: take the argmax action; else sample (softmax for PPO/A2C,
            epsilon-greedy with the agent's exploration rate for the DQN family).
        seed: seeds the explainer's own generator used for sampling.
        fast: for the standard NatureCNN heads, write the head's gradient out by hand instead
            of running autograd (``rlcam.fasthead``; same maps, about the cost of the forward).
        action_names: the env's action meanings, so ``contrast:NAME`` targets can be resolved.
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
    ):
        if method not in METHODS:
            raise RlcamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        self.agent = agent
        self.policy = agent.policy
        self.algo = agent.algo
        self.target = check_target(agent.algo, target, self.policy.action_space.n, action_names)
        self.layer_name = layer or default_layer(agent)
        self.layer = resolve_layer(agent, self.layer_name)
        self.method = method
        self._method = as_method(METHODS[method])
        self.layers = rectified_layers(agent, self.layer_name) if self._method.needs == "layers" else [self.layer_name]
        self._modules = [resolve_layer(agent, name) for name in self.layers]
        self.placement_name = placement
        self.deterministic = deterministic
        self.epsilon = float(getattr(agent.model, "exploration_rate", 0.0)) if agent.algo in ("dqn", "qrdqn") else 0.0
        self.generator = torch.Generator().manual_seed(seed)
        fast = fast and self._method.needs != "layers"
        self._head = build_head(self.policy, self.algo, self.layer_name) if fast else None
        self.placement: Placement | None = None  # Explanation.cam -> input grid
        self._image_scale: float | None = None  # what observations are divided by (SB3's preprocess_obs)
        self._placement_t: tuple[torch.Tensor, torch.Tensor] | None = None  # the same, in torch; None: identity
        self._to_input: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (Ry, Rx) for torch maps
        self._handles: list = []
        self._open = False
        self._passive = False  # extra passes run with the capture hooks doing nothing
        self._from_input = self._method.needs == "layers"  # the graph starts at the input, not at a layer
        self._modes: dict[nn.Module, bool] = {}
        self._acts: list[list[torch.Tensor]] = [[] for _ in self.layers]
        for name in self.layers:  # validate early
            make_placement(placement, (1, 1), (1, 1), grid=layer_grid(agent, name))

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
        if self._head is not None:
            self._head.forget()  # weights may have changed through ``.data`` since the last use
        self._open = True
        for i, module in enumerate(self._modules):
            self._handles.append(module.register_forward_hook(functools.partial(self._capture, i)))

    def close(self) -> None:
        """Remove the hooks and restore every module's train/eval mode."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open = False
        for module, training in self._modes.items():
            module.training = training
        self._modes = {}

    def _capture(self, index, module, inputs, output):
        if self._passive:
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise RlcamError(
                f"layer {self.layers[index]!r} outputs {shape}, not a feature map (N, K, h, w); "
                f"choose a conv layer: {', '.join(conv_layers(self.agent))}."
            )
        if index > 0 or self._from_input:  # already inside a graph rooted earlier
            self._acts[index].append(output)
            return None
        # From here on the forward builds a graph, rooted at these activations only.
        torch.set_grad_enabled(True)
        acts = output.detach().requires_grad_(True)
        self._acts[0].append(acts)
        return acts

    @contextlib.contextmanager
    def _extra_pass(self):
        """A forward that is not the explained one: hooks passive, no graph unless asked for."""
        self._passive = True
        try:
            yield
        finally:
            self._passive = False

    # -- the work ---------------------------------------------------------------------------------

    def explain(self, obs: np.ndarray, actions: np.ndarray | None = None, all_actions: bool = False) -> Explanation:
        """Choose actions for ``obs (N, C, H, W)`` (or one ``(C, H, W)``) and explain them.

        Args:
            obs: policy inputs, as the env gives them.
            actions: ``(N,)`` explain these actions instead of choosing (e.g. another agent's
                choices, or a fixed action across randomised models); they are returned as given.
            all_actions: also map every action (``Explanation.action_cams``, see ``action_maps``);
                with the hand-written head the gradient methods take them from this call's forward.
        """
        obs = self._batch(obs)
        obs_t = torch.as_tensor(obs, device=self.policy.device)
        if actions is not None:
            actions = torch.as_tensor(np.asarray(actions).reshape(-1), device=obs_t.device)
            n_actions = self.policy.action_space.n
            if (
                actions.dtype.is_floating_point
                or len(actions) != len(obs)
                or not ((actions >= 0) & (actions < n_actions)).all()
            ):
                raise RlcamError(f"actions to explain must be {len(obs)} integers in [0, {n_actions}).")
            actions = actions.long()
        needs = self._method.needs
        want = "weights" if needs == "weights" else "grads" if needs in ("grads", "guided", "layers") else None
        pass_ = self._hand_written_pass if self._head is not None else self._autograd_pass
        acts, grads, forward, actions, score, z = pass_(obs_t, actions, want)
        shares = None
        if needs in ("weights", "grads"):
            cam = self._method.fn(acts[0], grads[0])
        elif needs == "acts":
            cam = self._method.fn(acts[0])
        elif needs == "masked_scores":
            cam = self._method.fn(acts[0], self._masked_scores(obs_t, acts[0], actions))
        elif needs == "guided":
            cam_input = self._on_input(0, grad_cam(acts[0], grads[0]), obs.shape[2:])
            cam, shares = self._method.fn(self._guided_input_grads(obs_t, actions), cam_input)
        elif needs == "perturbation":
            cam = self._method.fn(perturbation_shift(obs_t.float(), functools.partial(self._outputs, actions=actions)))
        else:  # "layers": LayerCAM of the input itself, then of each hooked layer placed on the input
            maps = [layer_cam(a, g) for a, g in zip(acts, grads, strict=True)]
            cam = self._method.fn([maps[0]] + [self._on_input(i, m, obs.shape[2:]) for i, m in enumerate(maps[1:])])
        cam = cam.detach().float()
        action_cams = None
        if all_actions:
            if z is not None and needs in ("weights", "grads"):  # the hand-written head's forward serves all
                action_cams = self._every_action(acts[0], z, forward).cpu().numpy()
            else:
                action_cams = self._each_action(obs)
        if self.placement is None:
            self.placement = self._placement(tuple(cam.shape[1:]), obs.shape[2:])
            self._placement_t = None
            if self._method.needs not in ("guided", "layers"):  # else the map is on the input grid already
                self._placement_t = tuple(
                    torch.as_tensor(m, dtype=torch.float32, device=cam.device)
                    for m in (self.placement.to_input_y, self.placement.to_input_x)
                )
        # In torch rather than numpy: it keeps to torch's thread setting (numpy's BLAS threads
        # spin against a busy machine's other work and made this matmul take ~40 ms).
        cam_input = cam.clone() if self._placement_t is None else self._placement_t[0] @ cam @ self._placement_t[1].T
        return Explanation(
            actions=actions.cpu().numpy().astype(np.int64),
            cam=cam.cpu().numpy(),
            cam_input=cam_input.cpu().numpy(),
            score=score.detach().cpu().numpy().astype(np.float32),
            action_values=display_values(self.algo, forward).detach().cpu().numpy().astype(np.float32),
            value=forward.value.detach().cpu().numpy().astype(np.float32),
            frame_shares=np.zeros((len(obs), 0), np.float32)
            if shares is None
            else shares.cpu().numpy().astype(np.float32),
            action_cams=action_cams,
        )

    def _batch(self, obs: np.ndarray) -> np.ndarray:
        """Observations as a batch ``(N, C, H, W)``, checked against the agent's space."""
        if not self._open:
            raise RuntimeError("Explainer.explain needs the explainer open: use `with Explainer(...) as ex:`.")
        obs = np.asarray(obs)
        expected = tuple(self.policy.observation_space.shape)
        if obs.shape == expected:
            obs = obs[None]
        if obs.shape[1:] != expected:
            raise RlcamError(f"observation shape {obs.shape[1:]} does not match the agent's {expected}.")
        return obs

    def action_maps(self, obs: np.ndarray) -> np.ndarray:
        """The map of every action, ``(N, A, h, w)`` float32, raw like ``Explanation.cam``.

        Map ``a`` explains the target for action ``a`` as if it had been chosen (for ``contrast:B``,
        a against B; the critic's map is the same for every action). With the hand-written head,
        the gradient methods share one forward: each further action costs two small matmuls.
        Other methods run ``explain`` once per action. ``explain(obs, all_actions=True)`` gives
        the same maps beside the chosen action's explanation, from the same forward.
        """
        obs = self._batch(obs)
        needs = self._method.needs
        if self._head is None or needs not in ("weights", "grads"):
            return self._each_action(obs)
        obs_t = torch.as_tensor(obs, device=self.policy.device)
        with torch.no_grad():
            acts, z, forward = head_forward(self._head, self._preprocess(obs_t), self.algo)
            return self._every_action(acts, z, forward).cpu().numpy()

    def _every_action(self, acts: torch.Tensor, z: torch.Tensor, forward: Forward) -> torch.Tensor:
        """Every action's map ``(N, A, h, w)`` from one hand-written forward (gradient methods)."""
        n, n_actions = len(acts), int(self.policy.action_space.n)
        needs = self._method.needs
        maps = []
        with torch.no_grad():
            for a in range(n_actions):
                actions = torch.full((n,), a, device=acts.device)
                maps.append(self._method.fn(acts, self._hand_written_grads(needs, acts, z, forward, actions)))
        return torch.stack(maps, dim=1).float()

    def _each_action(self, obs: np.ndarray) -> np.ndarray:
        """Every action's map ``(N, A, h, w)``, one ``explain`` per action (methods without a shared pass)."""
        n, n_actions = len(obs), int(self.policy.action_space.n)
        return np.stack([self.explain(obs, actions=np.full(n, a)).cam for a in range(n_actions)], axis=1)

    # -- where maps land ---------------------------------------------------------------------------

    def _layer_placement(self, name: str, layer_hw, input_hw) -> Placement:
        return make_placement(self.placement_name, layer_hw, input_hw, grid=layer_grid(self.agent, name))

    def _placement(self, cam_hw, input_hw) -> Placement:
        """The placement taking ``Explanation.cam`` to the input grid, by where the method's map lives."""
        needs = self._method.needs
        if needs == "perturbation":
            return probe_placement(*input_hw, name=self.placement_name)
        if needs in ("guided", "layers"):  # already on the input grid
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
        with torch.no_grad():
            x = self._preprocess(obs_t)
            acts, z, forward = head_forward(self._head, x, self.algo)
            if actions is None:
                actions = self._choose(forward.action_scores)
            score = explained_score(self.target, forward, actions)
            grads = None if want is None else [self._hand_written_grads(want, acts, z, forward, actions)]
        return [acts], grads, forward, actions, score, z

    def _hand_written_grads(self, want: str, acts, z, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
        """dy/dA shaped like ``acts`` (``want="grads"``), or only its means over cells ``(N, K)`` ("weights")."""
        if want == "weights":
            weights = functools.partial(head_channel_weights, channels=acts.shape[1])
            return self._head_gradient(weights, z, forward, actions)
        return self._head_gradient(head_gradient, z, forward, actions).view_as(acts)

    def _preprocess(self, obs_t: torch.Tensor) -> torch.Tensor:
        """SB3's ``preprocess_obs`` for the policy's Box space, with its space checks done once."""
        if self._image_scale is None:
            from stable_baselines3.common.preprocessing import is_image_space

            space = self.policy.observation_space
            self._image_scale = 255.0 if self.policy.normalize_images and is_image_space(space) else 1.0
        # One kernel: true division of the uint8 tensor gives float32, as ``.float() / 255`` does in two.
        return torch.true_divide(obs_t, self._image_scale) if self._image_scale != 1.0 else obs_t.float()

    def _head_gradient(self, gradient, z: torch.Tensor, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
        """``gradient`` (a ``rlcam.fasthead`` function) for the explained target."""
        other = contrast_action(self.target)
        if other is None:
            return gradient(self._head, z, forward, self.target, actions)
        # The head's gradient is linear in the output coefficients: d(s_a - s_b) = ds_a - ds_b.
        base = "logit" if self.algo in ("ppo", "a2c") else "q"
        return gradient(self._head, z, forward, base, actions) - gradient(
            self._head, z, forward, base, torch.full_like(actions, other)
        )

    def _autograd_pass(self, obs_t: torch.Tensor, actions: torch.Tensor | None, want: str | None = "grads"):
        """Forward through the policy's modules; autograd from the hooked layer on.

        In the ``fine`` mode the graph starts at the input instead (float, in observation units),
        which comes first in the returned activations and gradients. Returns what
        ``_hand_written_pass`` does, with None for ``z``.
        """
        self._acts = [[] for _ in self.layers]
        x = obs_t.float().requires_grad_(True) if self._from_input else obs_t
        try:
            # Without a graph up to the layer, whose hook enables grad; leaving restores the mode.
            with torch.set_grad_enabled(self._from_input):
                forward = policy_forward(self.policy, self.algo, x)
                for name, seen in zip(self.layers, self._acts, strict=True):
                    if len(seen) != 1:
                        raise RlcamError(
                            f"layer {name!r} ran {len(seen)} times in one forward; "
                            f"choose a layer the action depends on once: {', '.join(conv_layers(self.agent))}."
                        )
                acts = ([x] if self._from_input else []) + [seen[0] for seen in self._acts]
                if actions is None:
                    actions = self._choose(forward.action_scores.detach())
                score = explained_score(self.target, forward, actions)
                grads = None
                if want is not None:
                    if not score.requires_grad:
                        raise RlcamError(f"target {self.target!r} does not depend on layer {self.layer_name!r}.")
                    # Samples are independent (eval mode), so one backward of the sum gives each its own gradient.
                    grads = list(torch.autograd.grad(score.sum(), acts))
                    if want == "weights":
                        grads = [g.mean(dim=(2, 3)) for g in grads]
        finally:
            self._acts = [[] for _ in self.layers]
        forward = Forward(forward.action_scores.detach(), forward.value.detach())
        return [a.detach() for a in acts], grads, forward, actions, score.detach(), None

    def _plain_forward(self, inputs: torch.Tensor) -> Forward:
        """The policy on float inputs in observation units, without a graph or the capture hooks."""
        with torch.no_grad(), self._extra_pass():
            return policy_forward(self.policy, self.algo, inputs)

    def _masked_scores(self, obs_t: torch.Tensor, acts: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Score-CAM: the explained score of the input times each channel's mask, ``(N, K)``."""
        masks = score_cam_masks(self._on_input(0, acts, obs_t.shape[2:]))  # (N, K, H, W)
        x = obs_t.float()
        n, k = masks.shape[:2]
        scores = torch.empty(n * k)
        for start in range(0, n * k, CHUNK):
            flat = torch.arange(start, min(start + CHUNK, n * k))
            rows, channels = flat // k, flat % k
            inputs = x[rows] * masks[rows, channels][:, None]
            scores[flat] = explained_score(self.target, self._plain_forward(inputs), actions[rows]).float()
        return scores.view(n, k)

    def _outputs(self, inputs: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """What perturbation saliency watches move: all action scores (as Greydanus et al. watch the
        logits), the value for the critic target, the contrast itself for ``contrast:B``; ``(B, D)``."""
        forward = self._plain_forward(inputs)
        if self.target == "value":
            return forward.value[:, None]
        if contrast_action(self.target) is not None:
            return explained_score(self.target, forward, actions[rows])[:, None]
        return forward.action_scores

    def _guided_input_grads(self, obs_t: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """dy/dx ``(N, C, H, W)`` through guided ReLUs; only x gets a gradient.

        x is the network's input: for image agents SB3 divides observations by 255 first, so the
        gradient is taken per unit of that [0, 1] input (not per observation level), which keeps
        maps of well-scaled magnitude.
        """
        x = obs_t.float().requires_grad_(True)
        with self._extra_pass(), guided_relus(self.policy), torch.enable_grad():
            score = explained_score(self.target, policy_forward(self.policy, self.algo, x), actions)
            (grads,) = torch.autograd.grad(score.sum(), x)
        return grads * 255.0 if self.policy.normalize_images else grads

    def _choose(self, scores: torch.Tensor) -> torch.Tensor:
        """Actions ``(N,)`` from logits or Q-values ``(N, A)``."""
        greedy = scores.argmax(dim=1)
        if self.deterministic:
            return greedy
        if self.algo in ("ppo", "a2c"):
            probs = torch.softmax(scores.float().cpu(), dim=1)
            return torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(scores.device)
        n, n_actions = scores.shape
        explore = torch.rand(n, generator=self.generator) < self.epsilon
        random = torch.randint(n_actions, (n,), generator=self.generator)
        return torch.where(explore.to(scores.device), random.to(scores.device), greedy)
