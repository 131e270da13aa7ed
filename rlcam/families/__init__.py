"""Policy families: one adapter per kind of SB3 policy, chosen from the policy's class.

| family | policies | module |
|---|---|---|
| discrete actor-critic | PPO/A2C, ``Discrete`` actions | ``discrete`` |
| Q-network | DQN, QR-DQN | ``discrete`` |
| continuous actor-critic | PPO/A2C, ``Box`` actions (squashed or not, gSDE) | ``continuous`` |
| actor + critics | SAC, TD3, DDPG, TQC | ``offpolicy`` |
| structured discrete actor-critic | PPO/A2C, ``MultiDiscrete``/``MultiBinary`` | ``structured`` |
| recurrent | RecurrentPPO (discrete or continuous actions) | ``recurrent`` |

A new family is one module with a ``Family`` subclass and one line in ``family_for``.
"""

from __future__ import annotations

from gymnasium import spaces

from rlcam.errors import RlcamError
from rlcam.families.base import Family


def family_for(agent) -> Family:
    """The adapter for ``agent``'s policy, from its class and action space (never an algorithm string)."""
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.dqn.policies import DQNPolicy
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    from rlcam.families import continuous, discrete, offpolicy, recurrent, structured

    policy = agent.policy
    space = policy.action_space
    cls = type(policy)
    if _is_contrib(policy, "sb3_contrib.common.recurrent.policies", "RecurrentActorCriticPolicy"):
        if isinstance(space, spaces.Discrete):
            return recurrent.RecurrentDiscrete(agent)
        if isinstance(space, spaces.Box):
            return recurrent.RecurrentContinuous(agent)
        raise RlcamError(f"{cls.__name__} with {type(space).__name__} actions is not a family rlcam explains yet.")
    if isinstance(policy, ActorCriticPolicy):
        if isinstance(space, spaces.Discrete):
            return discrete.DiscreteActorCritic(agent)
        if isinstance(space, spaces.Box):
            return continuous.ContinuousActorCritic(agent)
        if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
            return structured.StructuredActorCritic(agent)
    if isinstance(policy, DQNPolicy) or _is_contrib(policy, "sb3_contrib.qrdqn.policies", "QRDQNPolicy"):
        return discrete.QNetwork(agent)
    if isinstance(policy, (SACPolicy, TD3Policy)) or _is_contrib(policy, "sb3_contrib.tqc.policies", "TQCPolicy"):
        return offpolicy.ActorCritics(agent)
    raise RlcamError(
        f"rlcam cannot explain a {cls.__module__}.{cls.__name__} policy with {type(space).__name__} actions: "
        "it is not one of SB3's actor-critic, Q-network or actor + critics policies."
    )


def _is_contrib(policy, module: str, name: str) -> bool:
    """``isinstance`` for an sb3-contrib class, without needing sb3-contrib installed."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError:
        return False
    return isinstance(policy, cls)


__all__ = ["Family", "family_for"]
