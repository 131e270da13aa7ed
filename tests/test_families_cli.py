"""Every family records through the CLI with no --trust: continuous (PPO, SAC), structured
(MultiDiscrete), recurrent, on rlcam's toy envs and on CarRacing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rlcam.cli import main
from rlcam.video import load_trace

TOY = "rlcam.toyenv:SteerToDot-v0"
PARTS = "rlcam.toyenv:SteerToDotParts-v0"


def _save(kind: str, env_id: str, path, **kwargs):
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    import rlcam.toyenv  # noqa: F401  (registers the toy ids)

    venv = make_vec_env(env_id.split(":")[-1], n_envs=1, seed=0)
    small = dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "ppo":
            model = sb3.PPO("CnnPolicy", venv, n_steps=16, policy_kwargs=small, seed=0, device="cpu", **kwargs)
        elif kind == "sac":
            model = sb3.SAC("CnnPolicy", venv, buffer_size=8, policy_kwargs=small, seed=0, device="cpu")
        else:
            from sb3_contrib import RecurrentPPO

            kw = dict(small, lstm_hidden_size=16)
            model = RecurrentPPO("CnnLstmPolicy", venv, n_steps=16, batch_size=16, policy_kwargs=kw, seed=0)
    model.save(path)
    venv.close()
    return path


def _record(agent, env, out, *extra) -> int:
    return main(["record", "--env", env, "--agent", str(agent), "--steps", "10", "--out", str(out), *extra])


def test_continuous_ppo_records_components_and_both_signs(tmp_path, capsys):
    agent = _save("ppo", TOY, tmp_path / "ppo.zip")
    assert _record(agent, TOY, tmp_path / "ppo.mp4") == 0, capsys.readouterr().err
    trace = load_trace(tmp_path / "ppo.npz")
    assert trace["action"].shape == (10, 2) and trace["action"].dtype == np.float32
    assert trace["cam_down"].shape == trace["cam"].shape
    assert trace["action_cams"].shape[:2] == (10, 2)  # a tile per component by default
    assert trace.meta["family"] == "continuous actor-critic" and trace.meta["target"] == "mean:0"
    assert (np.abs(trace["action"]) <= 1).all()


def test_sac_records_the_critic_q_of_the_taken_action(tmp_path, capsys):
    agent = _save("sac", TOY, tmp_path / "sac.zip")
    assert _record(agent, TOY, tmp_path / "sac.mp4", "--target", "q") == 0, capsys.readouterr().err
    trace = load_trace(tmp_path / "sac.npz")
    assert trace.meta["layer"].startswith("critic.features_extractor")
    np.testing.assert_allclose(trace["score"], trace["value"], rtol=1e-5)  # q is the value shown
    assert trace["action_cams"].shape[:2] == (10, 2)  # a tile per critic


def test_multidiscrete_records_parts(tmp_path, capsys):
    agent = _save("ppo", PARTS, tmp_path / "parts.zip")
    assert _record(agent, PARTS, tmp_path / "parts.mp4", "--target", "logit:1") == 0, capsys.readouterr().err
    trace = load_trace(tmp_path / "parts.npz")
    assert trace["action"].shape == (10, 2) and trace["action_values"].shape == (10, 6)
    assert ((trace["action"] >= 0) & (trace["action"] < 3)).all()


def test_recurrent_records_with_its_memory(tmp_path, capsys):
    agent = _save("recurrent", "rlcam.toyenv:FindTarget-v0", tmp_path / "lstm.zip")
    code = _record(agent, "rlcam.toyenv:FindTarget-v0", tmp_path / "lstm.mp4", "--steps", "40")
    assert code == 0, capsys.readouterr().err
    assert load_trace(tmp_path / "lstm.npz").meta["family"] == "recurrent discrete actor-critic"


def test_carracing_records_from_its_96px_view(tmp_path, capsys):
    pytest.importorskip("Box2D", reason="CarRacing needs gymnasium[box2d] (in the dev extra)")
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("CnnPolicy", make_vec_env("CarRacing-v3", n_envs=1, seed=0), n_steps=16, device="cpu")
    model.save(tmp_path / "car.zip")
    assert _record(tmp_path / "car.zip", "CarRacing-v3", tmp_path / "car.mp4", "--steps", "5") == 0
    trace = load_trace(tmp_path / "car.npz")
    assert trace["action"].shape == (5, 3) and trace.meta["action_names"] == ["steer", "gas", "brake"]


def test_maps_all_zero_on_most_steps_are_warned_once(tmp_path, capsys):
    import torch
    from stable_baselines3 import PPO

    path = _save("ppo", TOY, tmp_path / "flat.zip")
    model = PPO.load(path, device="cpu")
    with torch.no_grad():  # component 0's mean no longer depends on the pixels: nothing to map
        model.policy.action_net.weight[0] = 0.0
    model.save(path)
    assert _record(path, TOY, tmp_path / "flat.mp4") == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "all zero on 100% of steps" in err
    meta = load_trace(tmp_path / "flat.npz").meta
    assert meta["zero_map_share"] == 1.0 and len(meta["warnings"]) == 1
    assert _record(path, TOY, tmp_path / "fine.mp4", "--target", "mean:1") == 0  # the other component is mapped
    assert "warning" not in capsys.readouterr().err


def test_the_shipped_steer_agent_fine_maps_point_at_the_target():
    """The continuous known-attention agent: the fine mode's peak within 4 px of the target in >= 95%
    of the card's 300 frames, for both components (the card: 95.7% and 95.3%)."""
    import hashlib
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "scripts"))
    from train_steer import frames, pointing

    from rlcam.agents import load_agent

    zip_path = repo / "agents" / "toy_steer_ppo.zip"
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() in (repo / "agents" / "toy_steer_ppo.md").read_text()
    model = load_agent(zip_path).model
    obs, targets, distractors = frames(300, seed=10_000)
    for component in ("mean:0", "mean:1"):
        result = pointing(model, "fine", component, obs, targets, distractors)
        assert result["target_4px"] >= 0.95 and result["distractor_8px"] <= 0.1, (component, result)
