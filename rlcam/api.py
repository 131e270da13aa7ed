"""An SB3 model whose ``predict`` also returns the map of each action it takes.

    with ExplainedPolicy(model) as explained:  # hooks live only inside the block
        actions, states, explanation = explained.predict(obs, deterministic=True)

``predict`` accepts what SB3's ``predict`` accepts for an image policy: one observation or a
VecEnv batch, channel-first or channel-last (SB3's ``maybe_transpose``), and returns the actions
with the same shapes SB3 returns. The explanation follows the actions: batched ``(N, ...)`` for
a batch, without the env axis for a single observation.

    obs (N, C, H, W) or (N, H, W, C) or one of them -> actions (N,) -> cam (N, h, w), cam_input (N, H, W)
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import numpy as np
from gymnasium import spaces

from rlcam.agents import Agent, load_agent
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, Explanation, conv_layers

_SUPPORTED = "PPO, A2C, DQN, SAC, TD3, DDPG and sb3-contrib's QR-DQN, TQC and RecurrentPPO"


def _algo_of(model: Any) -> str:
    """The rlcam algorithm name of an in-memory SB3 model, from its class."""
    import stable_baselines3 as sb3

    # DDPG subclasses TD3: the more specific class first.
    classes = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN, "ddpg": sb3.DDPG, "td3": sb3.TD3, "sac": sb3.SAC}
    contrib = sys.modules.get("sb3_contrib")  # a contrib model exists only if sb3-contrib was imported
    if contrib is not None:
        classes.update(qrdqn=contrib.QRDQN, tqc=contrib.TQC, recurrent_ppo=contrib.RecurrentPPO)
    for algo, cls in classes.items():
        if isinstance(model, cls):
            return algo
    raise RlcamError(
        f"cannot explain a {type(model).__name__}: rlcam explains {_SUPPORTED} models "
        "(pass an SB3 model, an rlcam Agent, or the path of a saved .zip)."
    )


def as_agent(model: Any) -> Agent:
    """An :class:`rlcam.Agent` for an SB3 model, an Agent, or the path of a saved zip.

    A path is loaded with :func:`rlcam.load_agent` (its ``sha256`` is the file's); an in-memory
    model is used as it is, not copied, with ``path`` and ``sha256`` None.

    Raises:
        RlcamError: an unsupported model, or a path that is not a loadable agent.
    """
    if isinstance(model, Agent):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_agent(model)
    return Agent(model=model, algo=_algo_of(model), path=None, sha256=None)


class ExplainedPolicy:
    """Wraps an SB3 model so that every prediction comes with its Grad-CAM map.

    A context manager: inside ``with`` the hook stays registered between calls; outside, each
    call registers it and removes it before returning. Either way no hook outlives a call or the
    block, even after an exception, and the policy's train/eval modes are restored.

    Args:
        model: an SB3 or sb3-contrib model with a CNN policy and image observations (every family
            of docs/families.md: discrete, continuous, off-policy, structured, recurrent; for Dict
            observations use ``rlcam.Explainer``), an ``rlcam.Agent``, or the path of a saved
            ``.zip``. An in-memory model is explained as it is, e.g. while it trains.
        target: explained score; defaults per family (``logit`` for PPO/A2C, ``q`` for DQN,
            ``mean:0`` for continuous actions; ``rlcam info`` lists them).
        layer: module path inside ``model.policy``; default: the last rectified conv output.
        method: ``gradcam``, ``hirescam`` or ``layercam``.
        placement: ``bilinear`` or ``rf``: how the layer map is laid on the input.
        seed: seeds the policy's own generator for sampled actions (``deterministic=False``); SB3's
            global RNG is never used, so sampled actions follow the same distribution as SB3's but
            not the same draws.

    Raises:
        RlcamError: the model is not supported, or its observations are not images.
    """

    def __init__(
        self,
        model: Any,
        target: str | None = None,
        layer: str | None = None,
        method: str = "gradcam",
        placement: str = "bilinear",
        seed: int = 0,
    ):
        self.agent = as_agent(model)
        policy = self.agent.policy
        name = type(self.agent.model).__name__
        if not isinstance(policy.observation_space, spaces.Box):
            raise RlcamError(
                f"this {name} observes {policy.observation_space}; ExplainedPolicy takes image observations "
                "(for Dict ones use rlcam.Explainer, which takes a dict of arrays)."
            )
        if layer is None and not conv_layers(self.agent):
            raise RlcamError(f"this {name} has no convolutional layer (an MLP policy?); Grad-CAM needs a CNN policy.")
        self.explainer = Explainer(
            self.agent, target=target, layer=layer, method=method, placement=placement, seed=seed
        )
        self._held = False  # inside ``with``
        self._returned = None  # a recurrent policy: the state the last predict returned

    @property
    def model(self):
        """The SB3 model explained."""
        return self.agent.model

    @property
    def n_actions(self) -> int | None:
        """How many discrete actions the policy has; None for vector actions (Box, MultiDiscrete, ...)."""
        space = self.agent.policy.action_space
        return int(space.n) if isinstance(space, spaces.Discrete) else None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> ExplainedPolicy:
        self.explainer.open()
        self._held = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hook and restore train/eval modes (what leaving ``with`` does)."""
        self._held = False
        self.explainer.close()

    @contextlib.contextmanager
    def _opened(self):
        """Open for one call unless a ``with`` block holds it open already."""
        if self._held:
            yield
            return
        self.explainer.open()
        self._held = True
        try:
            yield
        finally:
            self.close()

    # -- the work ---------------------------------------------------------------------------------

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, Explanation]:
        """SB3's ``predict``, plus the explanation of the actions returned.

        Args:
            observation: one observation or a VecEnv batch, in any layout SB3's ``predict`` takes.
            state, episode_start: as SB3's: for a recurrent policy (RecurrentPPO) the LSTM state
                returned by the previous call (None: zeros) and which envs begin an episode at
                ``observation`` (their memory is reset there); the returned state is the next one.
                Other policies return ``state`` as given.
            deterministic: argmax actions; else sampled with this policy's seeded generator.

        Returns:
            ``(actions, state, explanation)``: actions ``(N,)`` int64 for a batch, a 0-d array for
            one observation (as SB3); the explanation has the same leading axis, or none.
        """
        obs, vectorized = self._batch(observation)
        recurrent = self.explainer.family.recurrent
        if recurrent:
            self._carry(state)
        explanation = self._explain(obs, None, deterministic, episode_start)
        if recurrent:
            state = self._returned = self.explainer.actor_memory()
        if vectorized:
            return explanation.actions, state, explanation
        single = explanation.sample(0)
        return single.actions, state, single

    def _carry(self, state) -> None:
        """Start a recurrent step from ``state`` as ``RecurrentPPO.predict`` would (None: zeros)."""
        if state is None:
            self.explainer.reset()
        elif state is not self._returned:  # not what the last call gave: the caller's own
            self.explainer.set_actor_memory(state)

    def explain(self, observation: np.ndarray, actions=None, deterministic: bool = True) -> Explanation:
        """Explain the policy's own choice, or the given ``actions``, for one observation or a batch.

        Args:
            observation: as for :meth:`predict`.
            actions: ``(N,)`` actions to explain instead of choosing (e.g. what an env was given);
                the map then explains exactly these actions.
            deterministic: when choosing, argmax (default) or sampled.

        Returns:
            The explanation, always batched ``(N, ...)``.
        """
        obs, _ = self._batch(observation)
        return self._explain(obs, actions, deterministic)

    def _batch(self, observation) -> tuple[np.ndarray, bool]:
        """``(N, C, H, W)`` in the policy's layout, and whether the input was a batch (SB3's rules)."""
        from stable_baselines3.common.preprocessing import maybe_transpose
        from stable_baselines3.common.utils import is_vectorized_observation

        space = self.agent.policy.observation_space
        obs = maybe_transpose(np.asarray(observation), space)
        try:
            vectorized = is_vectorized_observation(obs, space)
        except ValueError:
            raise RlcamError(
                f"observation shape {np.shape(observation)} fits neither one observation {tuple(space.shape)} "
                f"nor a batch of them (channel-last layouts are accepted too)."
            ) from None
        return obs.reshape((-1, *space.shape)), vectorized

    def _explain(self, obs: np.ndarray, actions, deterministic: bool, episode_start=None) -> Explanation:
        if actions is not None:
            actions = self._check_actions(actions, len(obs))
        self.explainer.deterministic = deterministic
        with self._opened():
            return self.explainer.explain(obs, actions=actions, episode_start=episode_start)

    def _check_actions(self, actions, n: int) -> np.ndarray:
        if not self.explainer.family.discrete:  # vectors: the family checks them (rlcam.families)
            return np.asarray(actions)
        given = np.asarray(actions)
        if given.dtype.kind not in "iu" and not (given.dtype.kind == "f" and np.array_equal(given, np.round(given))):
            raise RlcamError(f"actions must be integers, got {given.dtype}.")
        given = given.astype(np.int64).reshape(-1)
        if given.shape != (n,):
            raise RlcamError(f"got {given.size} actions for {n} observations.")
        if given.min() < 0 or given.max() >= self.n_actions:
            raise RlcamError(f"actions must lie in [0, {self.n_actions}), got {given.tolist()}.")
        return given
