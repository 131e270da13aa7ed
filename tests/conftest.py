"""Tiny agents built in seconds: real SB3 models with Breakout's spaces, untrained weights.

Untrained weights are enough for what the tests check (the formula, the invariants,
the files); trained agents live in agents/ and are exercised by the CLI tests.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rlcam.envs import make_env

ALGOS = ("ppo", "a2c", "dqn", "qrdqn")


def build_model(algo: str, env, policy: str = "CnnPolicy", seed: int = 0, **kwargs):
    import stable_baselines3 as sb3

    if algo == "qrdqn":
        from sb3_contrib import QRDQN as cls
    else:
        cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}[algo]
    if algo in ("dqn", "qrdqn"):
        kwargs.setdefault("buffer_size", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(policy, env, seed=seed, device="cpu", **kwargs)


@pytest.fixture(scope="session")
def breakout_env():
    venv, _ = make_env("Breakout", n_envs=1, seed=0)
    yield venv
    venv.close()


@pytest.fixture(scope="session")
def agent_zips(tmp_path_factory, breakout_env):
    """algo -> path of a saved, untrained CnnPolicy agent for Breakout."""
    root = tmp_path_factory.mktemp("agents")
    paths = {}
    for algo in ALGOS:
        model = build_model(algo, breakout_env, seed=1)
        paths[algo] = root / f"breakout_{algo}.zip"
        model.save(paths[algo])
    return paths


@pytest.fixture(scope="session")
def breakout_obs(breakout_env):
    """(8, 4, 84, 84) uint8: real Breakout observations from a short random rollout."""
    rng = np.random.default_rng(0)
    obs = breakout_env.reset()
    batch = []
    for _ in range(40):
        obs, *_ = breakout_env.step(rng.integers(0, 4, size=1))
        batch.append(obs[0])
    return np.stack(batch[::5])


@pytest.fixture(autouse=True)
def _one_thread():
    # Deterministic float sums, and no oversubscription on CI's 2 cores.
    torch.set_num_threads(1)
