"""scripts/ship_agent.py's slim copy: smaller, loadable by plain SB3, acting as the checkpoint."""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from rlcam.agents import algo_class
from rlcam.envs import make_env
from tests.conftest import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from ship_agent import slim_copy  # noqa: E402


@pytest.fixture
def breakout_env():
    """Its own env: learning here must not move the session's shared one."""
    venv, _ = make_env("Breakout", n_envs=1, seed=0)
    yield venv
    venv.close()


@pytest.mark.parametrize("algo", ["ppo", "qrdqn", "dqn"])
def test_slim_copy_loads_in_plain_sb3_and_is_smaller(tmp_path, breakout_env, algo):
    model = build_model(algo, breakout_env, seed=3, **({"n_steps": 32, "batch_size": 32} if algo == "ppo" else {}))
    if algo == "ppo":
        model.learn(32)  # a real rollout: Adam moments and a last observation to drop
    else:
        online = model.policy.q_net if algo == "dqn" else model.policy.quantile_net
        target = model.policy.q_net_target if algo == "dqn" else model.policy.quantile_net_target
        with torch.no_grad():  # a stale target, as in training, and an Adam state with moments
            for p in target.parameters():
                p.add_(0.5)
        loss = sum(p.square().sum() for p in online.parameters())
        loss.backward()
        model.policy.optimizer.step()
    src, dst = tmp_path / "ckpt.zip", tmp_path / "shipped.zip"
    model.save(src)
    slim_copy(src, dst)  # raises SystemExit if the copy acts differently on real observations

    assert dst.stat().st_size < 0.75 * src.stat().st_size
    with zipfile.ZipFile(dst) as zf:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in zf.infolist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. SB3's "optimizer state truncated" on a mismatched optimizer
        shipped = algo_class(algo).load(dst, device="cpu", env=breakout_env)
    if algo != "ppo":
        online = shipped.policy.q_net if algo == "dqn" else shipped.policy.quantile_net
        target = shipped.policy.q_net_target if algo == "dqn" else shipped.policy.quantile_net_target
        for a, b in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # synced on load, separate tensors
    shipped.learn(64)  # and it trains on


def test_the_check_refuses_a_copy_that_acts_differently(tmp_path, breakout_env):
    from ship_agent import check_same_actions

    model = build_model("ppo", breakout_env, seed=3)
    model.save(tmp_path / "ckpt.zip")
    other = algo_class("ppo").load(tmp_path / "ckpt.zip", device="cpu")
    with torch.no_grad():  # the action head's bias swapped: another argmax from the first step
        bias = other.policy.action_net.bias
        bias.copy_(torch.arange(bias.numel(), dtype=bias.dtype) * 100.0)
    check_same_actions(
        model, algo_class("ppo").load(tmp_path / "ckpt.zip", device="cpu"), make_env("Breakout", n_envs=2, seed=0)[0]
    )
    with pytest.raises(SystemExit, match="acts differently"):
        check_same_actions(model, other, make_env("Breakout", n_envs=2, seed=0)[0])
