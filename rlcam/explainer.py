"""One forward gives the action and its map.

The explainer owns a forward hook on the target layer. The policy runs under
``no_grad`` up to that layer; the hook turns autograd on and hands the rest of the
network a detached copy of the activations that requires grad. So the graph spans
only the layers after the target (the small fully connected head), the action is
taken from that same forward, and ``torch.autograd.grad`` writes gradients to the
activations alone: parameters' ``.grad`` are never touched.

    obs (N, C, H, W) uint8 -> acts (N, K, h, w) -> cam (N, h, w) -> cam_input (N, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlcam.agents import Agent
from rlcam.cam import METHODS
from rlcam.errors import RlcamError
from rlcam.fasthead import build_head, head_forward, head_gradient
from rlcam.geometry import Placement, make_placement, receptive_field_grid
from rlcam.targets import Forward, check_target, display_values, explained_score, policy_forward

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


@dataclass
class Explanation:
    """Actions and maps for one batch of observations (N envs)."""

    actions: np.ndarray  # (N,) int64, the actions taken
    cam: np.ndarray  # (N, h, w) float32, raw map: rectified, not normalised, at layer resolution
    cam_input: np.ndarray  # (N, H, W) float32, the map on the policy-input grid
    score: np.ndarray  # (N,) float32, the explained quantity
    action_values: np.ndarray  # (N, A) float32, probabilities (PPO/A2C) or Q-values (DQN family)
    value: np.ndarray  # (N,) float32, critic value (PPO/A2C) or max Q (DQN family)


class Explainer:
    """Explains a loaded SB3 agent's actions; use as a context manager.

    Args:
        agent: from ``rlcam.agents.load_agent``.
        target: explained score; defaults per algorithm (``rlcam.targets.DEFAULT_TARGET``).
        layer: module path inside ``model.policy``; defaults to the last rectified conv output.
        method: a key of ``rlcam.cam.METHODS``.
        placement: ``bilinear`` or ``rf`` (see ``rlcam.geometry``).
        deterministic: take the argmax action; else sample (softmax for PPO/A2C,
            epsilon-greedy with the agent's exploration rate for the DQN family).
        seed: seeds the explainer's own generator used for sampling.
        fast: for the standard NatureCNN heads, write the head's gradient out by hand instead
            of running autograd (``rlcam.fasthead``; same maps, about the cost of the forward).
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
    ):
        if method not in METHODS:
            raise RlcamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        self.agent = agent
        self.policy = agent.policy
        self.algo = agent.algo
        self.target = check_target(agent.algo, target)
        self.layer_name = layer or default_layer(agent)
        self.layer = resolve_layer(agent, self.layer_name)
        self.method = method
        self.placement_name = placement
        self.deterministic = deterministic
        self.epsilon = float(getattr(agent.model, "exploration_rate", 0.0)) if agent.algo in ("dqn", "qrdqn") else 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self._head = build_head(self.policy, self.algo, self.layer_name) if fast else None
        self.placement: Placement | None = None
        self._handle = None
        self._modes: dict[nn.Module, bool] = {}
        self._acts: list[torch.Tensor] = []
        make_placement(placement, (1, 1), (1, 1), grid=layer_grid(agent, self.layer_name))  # validate early

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Explainer:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Register the hook and put the policy in eval mode (restored by ``close``)."""
        if self._handle is not None:
            return
        self._modes = {m: m.training for m in self.policy.modules()}
        self.policy.train(False)
        self._handle = self.layer.register_forward_hook(self._capture)

    def close(self) -> None:
        """Remove the hook and restore every module's train/eval mode."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for module, training in self._modes.items():
            module.training = training
        self._modes = {}

    def _capture(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise RlcamError(
                f"layer {self.layer_name!r} outputs {shape}, not a feature map (N, K, h, w); "
                f"choose a conv layer: {', '.join(conv_layers(self.agent))}."
            )
        # From here on the forward builds a graph, rooted at these activations only.
        torch.set_grad_enabled(True)
        acts = output.detach().requires_grad_(True)
        self._acts.append(acts)
        return acts

    # -- the work ---------------------------------------------------------------------------------

    def explain(self, obs: np.ndarray, actions: np.ndarray | None = None) -> Explanation:
        """Choose actions for ``obs (N, C, H, W)`` (or one ``(C, H, W)``) and explain them.

        Args:
            obs: policy inputs, as the env gives them.
            actions: ``(N,)`` explain these actions instead of choosing (e.g. another agent's
                choices, or a fixed action across randomised models); they are returned as given.
        """
        if self._handle is None:
            raise RuntimeError("Explainer.explain needs the explainer open: use `with Explainer(...) as ex:`.")
        obs = np.asarray(obs)
        expected = tuple(self.policy.observation_space.shape)
        if obs.shape == expected:
            obs = obs[None]
        if obs.shape[1:] != expected:
            raise RlcamError(f"observation shape {obs.shape[1:]} does not match the agent's {expected}.")
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
        pass_ = self._hand_written_pass if self._head is not None else self._autograd_pass
        acts, grads, forward, actions, score = pass_(obs_t, actions)
        cam = METHODS[self.method](acts, grads)
        cam = cam.cpu().numpy().astype(np.float32)
        if self.placement is None:
            self.placement = make_placement(
                self.placement_name,
                cam.shape[1:],
                obs.shape[2:],
                grid=layer_grid(self.agent, self.layer_name),
            )
        return Explanation(
            actions=actions.cpu().numpy().astype(np.int64),
            cam=cam,
            cam_input=self.placement.on_input(cam).astype(np.float32),
            score=score.detach().cpu().numpy().astype(np.float32),
            action_values=display_values(self.algo, forward).detach().cpu().numpy().astype(np.float32),
            value=forward.value.detach().cpu().numpy().astype(np.float32),
        )

    def _hand_written_pass(self, obs_t: torch.Tensor, actions: torch.Tensor | None):
        """Forward and dy/dA with the head's gradient written out (``rlcam.fasthead``): no autograd."""
        from stable_baselines3.common.preprocessing import preprocess_obs

        with torch.no_grad():
            x = preprocess_obs(obs_t, self.policy.observation_space, self.policy.normalize_images)
            acts, z, forward = head_forward(self._head, x, self.algo)
            if actions is None:
                actions = self._choose(forward.action_scores)
            score = explained_score(self.target, forward, actions)
            grads = head_gradient(self._head, z, forward, self.target, actions).view_as(acts)
        return acts, grads, forward, actions, score

    def _autograd_pass(self, obs_t: torch.Tensor, actions: torch.Tensor | None):
        """Forward through the policy's modules; autograd from the hooked layer on."""
        self._acts = []
        try:
            with torch.no_grad():  # the hook enables grad from the layer on; leaving restores the mode
                forward = policy_forward(self.policy, self.algo, obs_t)
                if len(self._acts) != 1:
                    raise RlcamError(
                        f"layer {self.layer_name!r} ran {len(self._acts)} times in one forward; "
                        f"choose a layer the action depends on once: {', '.join(conv_layers(self.agent))}."
                    )
                acts = self._acts[0]
                if actions is None:
                    actions = self._choose(forward.action_scores.detach())
                score = explained_score(self.target, forward, actions)
                if not score.requires_grad:
                    raise RlcamError(f"target {self.target!r} does not depend on layer {self.layer_name!r}.")
                # Samples are independent (eval mode), so one backward of the sum gives each its own gradient.
                (grads,) = torch.autograd.grad(score.sum(), acts)
        finally:
            self._acts = []
        forward = Forward(forward.action_scores.detach(), forward.value.detach())
        return acts.detach(), grads, forward, actions, score.detach()

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
