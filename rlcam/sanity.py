"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The layers the explained score depends on are re-initialised one at a time, from the
output down to the input (cascading: each stage keeps the earlier randomisations). After
each stage the same observations are explained again, for the same actions the intact
agent chose, and each map is compared with the intact agent's by Spearman rank
correlation. A faithful explainer's maps must move away from the originals as the
model is destroyed; maps that stay put explain the input, not the model.

Verdict, two conditions:
1. randomising the layers *after* the explained one (the head that turns its features
   into the decision) must move the maps: some head stage below ``BROKEN_ABOVE``. A map
   that ignores the head (e.g. plain activation energy) fails here, whatever happens later;
2. some stage must bring the mean correlation below ``PASS_BELOW``. The lowest point, not
   the last, is judged: once the lower conv layers are random too, the maps follow random
   edge filters of the input, whose structure (walls, bricks) correlates with any map of
   that input; that rise says nothing about whether the explainer read the trained model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlcam.agents import Agent
from rlcam.check import rank_correlation
from rlcam.explainer import Explainer
from rlcam.families import family_for

PASS_BELOW = 0.3  # mean correlation once every layer is random: the maps must be this unlike the originals
BROKEN_ABOVE = 0.5  # ... and above this the explainer is judged insensitive to the model


@dataclass
class Stage:
    randomised: str  # the module re-initialised at this stage ("none" for the intact agent)
    correlation: float  # mean Spearman correlation with the intact agent's maps
    spread: float  # its standard deviation over the observations
    head: bool = False  # the module comes after the explained layer


@dataclass
class SanityResult:
    stages: list[Stage]
    method: str
    layer: str
    target: str
    observations: int

    @property
    def final(self) -> float:
        return self.stages[-1].correlation

    @property
    def lowest(self) -> Stage:
        return min(self.stages, key=lambda s: s.correlation)

    @property
    def head_lowest(self) -> float:
        return min((s.correlation for s in self.stages if s.head), default=1.0)

    @property
    def passed(self) -> bool:
        return self.head_lowest < BROKEN_ABOVE and self.lowest.correlation < PASS_BELOW

    def text(self) -> str:
        width = max(len(s.randomised) for s in self.stages)
        lines = [
            f"rlcam sanity: {self.method} of {self.target} on {self.layer}, {self.observations} observations",
            f"  {'randomised (cascading, top down)':<{width}}  rank correlation with the intact agent's maps",
        ]
        for s in self.stages:
            bar = "#" * max(0, int(round(20 * s.correlation)))
            where = "(after the layer)" if s.head else ""
            lines.append(f"  {s.randomised:<{width}}  {s.correlation:+.3f} +- {s.spread:.3f}  {where:<17} {bar}")
        low = self.lowest
        where = f"lowest {low.correlation:+.3f} after randomising {low.randomised}; {self.final:+.3f} with all random"
        if self.passed:
            verdict = f"PASS: the maps decorrelate ({where}; needs < {PASS_BELOW})"
        elif self.head_lowest >= BROKEN_ABOVE:
            verdict = (
                f"FAIL: the maps barely change when the layers after {self.layer} are randomised "
                f"({self.head_lowest:+.3f}, needs < {BROKEN_ABOVE}); this explainer ignores how the agent uses them"
            )
        elif low.correlation >= BROKEN_ABOVE:
            verdict = (
                f"FAIL: the maps barely change when the model is destroyed ({where}); "
                "this explainer shows the input, not what the agent uses"
            )
        else:
            verdict = f"FAIL: the maps decorrelate too little ({where}; needs < {PASS_BELOW})"
        lines.append(verdict)
        return "\n".join(lines)


def decision_layers(agent: Agent, target: str | None = None) -> list[str]:
    """Parametrised modules ``target``'s score depends on, in forward order (module paths in the policy)."""
    family = family_for(agent)
    target = family.check_target(target)
    policy = agent.policy
    roots = family.extractor_paths(target) + family.head_paths(target)
    names = []
    for root in roots:
        for name, module in policy.get_submodule(root).named_modules(prefix=root):
            if name not in names and any(True for _ in module.parameters(recurse=False)):
                names.append(name)
    return names


def _copy_agent(agent: Agent) -> Agent:
    """A deep copy of ``agent``. The tensors an SB3 action distribution keeps from its last call (gSDE's
    exploration matrices, a Normal's loc and scale) are graph outputs, which ``deepcopy`` refuses:
    they are copied detached, as they carry no weights."""
    memo: dict[int, object] = {}
    dists = [
        getattr(agent.policy, "action_dist", None),
        getattr(getattr(agent.policy, "actor", None), "action_dist", None),
    ]
    holders = [d for d in dists if d is not None]
    while holders:
        for value in vars(holders.pop()).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
            elif isinstance(value, torch.distributions.Distribution):  # gSDE's weights_dist, a Normal
                holders.append(value)
    return copy.deepcopy(agent, memo)


def _reinitialise(module: nn.Module, generator_seed: int) -> None:
    torch.manual_seed(generator_seed)
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for p in module.parameters(recurse=False):
            nn.init.normal_(p, std=0.02)


def sanity(
    agent: Agent,
    obs: np.ndarray,
    target: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    seed: int = 0,
) -> SanityResult:
    """Cascading randomisation of ``agent``'s decision layers; maps of ``obs (N, C, H, W)`` per stage.

    The caller's agent is not modified: the stages run on a deep copy. Torch's global RNG
    state is saved and restored around the re-initialisations.
    """
    with Explainer(agent, target=target, layer=layer, method=method) as explainer:
        intact = explainer.explain(obs)
        target, layer = explainer.target, explainer.layer_name
    rng_state = torch.random.get_rng_state()
    stages = [Stage("none", 1.0, 0.0)]
    order = [name for name, _ in agent.policy.named_modules()]
    try:
        work = _copy_agent(agent)
        for k, name in enumerate(reversed(decision_layers(work, target))):
            _reinitialise(work.policy.get_submodule(name), seed + k)
            with Explainer(work, target=target, layer=layer, method=method) as explainer:
                maps = explainer.explain(obs, actions=intact.actions).cam_input
            corr = np.array([rank_correlation(a, b) for a, b in zip(intact.cam_input, maps, strict=True)])
            head = order.index(name) > order.index(layer)
            stages.append(Stage(name, float(corr.mean()), float(corr.std()), head))
    finally:
        torch.random.set_rng_state(rng_state)
    return SanityResult(stages=stages, method=method, layer=layer, target=target, observations=len(obs))


def rollout_observations(agent: Agent, env, steps: int, seed: int) -> np.ndarray:
    """``(steps, C, H, W)`` observations from the agent playing ``env`` (a name, or an rl-zoo run's
    ``EnvRecipe``) deterministically."""
    from rlcam.envs import check_compatible, make_env

    venv, info = make_env(env, n_envs=1, seed=seed, agent_space=agent.model.observation_space)
    try:
        check_compatible(venv, agent.model.observation_space, agent.model.action_space, info.env_id)
        obs = venv.reset()
        seen = []
        with Explainer(agent) as explainer:
            for _ in range(steps):
                seen.append(obs[0])
                obs, *_ = venv.step(explainer.explain(obs).actions)
    finally:
        venv.close()
    return np.stack(seen)
