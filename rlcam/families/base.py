"""The questions every policy family answers, so the explainer never branches on an algorithm.

A family adapter says how to run a policy's own modules from the observation to the scores, which
targets exist and which is the default, how the action is chosen from that same forward (as SB3's
``predict`` would), what state it carries between steps, and what the panel shows. The explainer
owns the hooks and the methods; it asks the adapter everything else.

    obs (N, ...) -> Family.forward -> Forward(action_scores, value, extra)
                 -> Family.choose  -> actions (policy space)
                 -> Family.score   -> y (N,), the explained scalar per sample
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from rlcam.errors import RlcamError
from rlcam.targets import Forward


class Family:
    """One policy family (subclasses fill in the behaviour).

    Attributes:
        name: what the family is, in words (``rlcam info`` prints it).
        targets: the target names this family explains (parametrised ones as ``name:ARG``).
        head_kind: the hand-written head's kind (``rlcam.fasthead``), or None: always autograd.
        discrete: actions are indices into one set of named actions.
        bar_kind: what the panel's bars show: ``prob``, ``q``, ``component`` or ``parts``.
    """

    name = "policy"
    targets: tuple[str, ...] = ()
    head_kind: str | None = None
    base_score = "logit"  # what a contrast's two sides are (discrete families)
    discrete = True
    bar_kind = "prob"
    recurrent = False

    def __init__(self, agent):
        self.agent = agent
        self.model = agent.model
        self.policy = agent.policy
        self._scale: float | None = None  # what ``preprocess`` divides a Box observation by; 0: SB3's own

    # -- what is explained ------------------------------------------------------------------------

    def default_target(self) -> str:
        return self.targets[0]

    def check_target(self, target: str | None, action_names: list[str] | None = None) -> str:
        """``target`` in its canonical form, or the default; one clear sentence when it does not apply."""
        if target is None:
            return self.default_target()
        if target not in self.targets:
            raise RlcamError(
                f"target {target!r} does not apply to {self.name} agents; choose one of {', '.join(self.targets)}."
            )
        return target

    def all_targets(self) -> list[str]:
        """Every concrete target (parametrised ones spelled out), e.g. to find every extractor."""
        return list(self.targets)

    def extractor_paths(self, target: str) -> list[str]:
        """Module paths (inside ``model.policy``) of the feature extractors ``target`` depends on."""
        raise NotImplementedError

    def head_paths(self, target: str) -> list[str]:
        """Module paths after the extractor that ``target``'s score runs through (the model-randomisation
        check of ``rlcam sanity`` re-initialises them, with the extractor's, from the top down)."""
        raise NotImplementedError

    def describe(self, target: str) -> str:
        """The target as the panel's footer names it (what a plain name resolves to, where it matters)."""
        return target

    def signed(self, target: str) -> bool:
        """Whether the sign of the target's gradient means something to show (what pushes it up or down)."""
        return False

    def tiles(self, target: str) -> list[tuple[str, str, int | None]]:
        """The grid's tiles: ``(label, target, action)`` each; ``action`` None means the taken action."""
        return []

    # -- the forward and the action ---------------------------------------------------------------

    def forward(self, obs: torch.Tensor, state=None) -> Forward:
        """Run the policy's own modules (``predict`` would disable autograd) on ``obs`` as the env gives it."""
        raise NotImplementedError

    def choose(self, forward: Forward, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        """Actions in the policy's own space, from ``forward``."""
        raise NotImplementedError

    def score(self, target: str, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
        """The explained scalar per sample, ``(N,)``."""
        raise NotImplementedError

    def detached(self, forward: Forward) -> Forward:
        """``forward`` without its graph (tensors in ``extra`` detached too)."""
        extra = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in forward.extra.items()}
        value = None if forward.value is None else forward.value.detach()
        return Forward(forward.action_scores.detach(), value, extra)

    def value(self, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
        """The value shown beside the action, ``(N,)``: the critic's V, or max Q, by default."""
        return forward.value

    def fast_head(self, target: str, deterministic: bool) -> bool:
        """Whether the hand-written head (``rlcam.fasthead``, kind ``head_kind``) can serve ``target``."""
        return self.head_kind is not None

    def extract(self, obs: torch.Tensor, extractor: torch.nn.Module) -> torch.Tensor:
        """SB3's ``extract_features(obs, extractor)``: ``preprocess_obs``, then the extractor. For a Box
        image space the division by 255 is one kernel (SB3's ``obs.float() / 255.0`` allocates twice,
        which costs more than the division at batch 8); the values are the same."""
        return extractor(self.preprocess(obs))

    def preprocess(self, obs):
        """SB3's ``preprocess_obs`` for the policy's observation space, its space checks done once."""
        from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs

        policy = self.policy
        space = policy.observation_space
        scale = self._scale
        if scale is None:
            image = isinstance(space, spaces.Box) and policy.normalize_images and is_image_space(space)
            scale = self._scale = 255.0 if image else 1.0 if isinstance(space, spaces.Box) else 0.0
        if scale == 0.0:  # Dict, Discrete, ...: SB3's own
            return preprocess_obs(obs, space, normalize_images=policy.normalize_images)
        return torch.true_divide(obs, scale) if scale != 1.0 else obs.float()

    # -- the hand-written head: the forward without autograd, the gradient written out ------------

    def hand_head(self, target: str, deterministic: bool) -> bool:
        """Whether ``hand_forward`` and ``hand_gradient`` serve ``target`` (``rlcam.fasthead.Tape``)."""
        return False

    def hand_forward(self, obs: torch.Tensor, target: str, state=None) -> Forward:
        """``forward`` without autograd (the explainer runs it under ``no_grad``), the same actions and
        scores, keeping in ``extra`` what ``hand_gradient`` needs for ``target`` and its tiles."""
        raise NotImplementedError

    def hand_gradient(self, target: str, forward: Forward, actions: torch.Tensor) -> torch.Tensor:
        """dy/d(features) ``(N, F)`` for ``target``'s score: the gradient at the output of the features
        extractor the target depends on (for a Dict observation, the concatenated keys' features)."""
        raise NotImplementedError

    def value_costs_a_pass(self, forward: Forward, actions: torch.Tensor) -> bool:
        """Whether ``value`` needs a forward beyond the explained one (then it is an extra): by
        default, where the forward left it out (``Forward.value`` None)."""
        return forward.value is None

    def display(self, forward: Forward) -> torch.Tensor:
        """What the panel's bars show, ``(N, B)``."""
        return forward.action_scores

    def check_actions(self, actions: np.ndarray, n: int) -> torch.Tensor:
        """Given env actions to explain (another agent's choices, a baseline's) in the policy's space."""
        raise NotImplementedError

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """What ``VecEnv.step`` gets for policy-space ``actions``, as SB3's ``predict`` returns them."""
        return actions.detach().cpu().numpy()

    # -- state between steps ----------------------------------------------------------------------

    def initial_state(self, n: int):
        """The state a fresh batch of ``n`` envs starts with (None for feed-forward policies)."""
        return None

    def next_state(self, forward: Forward):
        return None


def sample_with(generator: torch.Generator, draw):
    """``draw()`` (which samples with torch's global generator, as SB3's distributions do) seeded from
    ``generator``, leaving the global generator's state as it was."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    # The draw runs where the distribution's tensors are: on a GPU, CUDA's global generator (seeded from
    # the same number, so the same distribution, but not the CPU's draws), whose state is kept too.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return draw()
