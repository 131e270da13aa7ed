"""Cascading randomisation: Grad-CAM maps move, an input-only 'explainer' is caught, the agent is untouched."""

from __future__ import annotations

import numpy as np
import torch

from rlcam import cam
from rlcam.agents import load_agent
from rlcam.cli import main
from rlcam.sanity import decision_layers, sanity


def test_decision_layers_top_down_order(agent_zips):
    agent = load_agent(agent_zips["ppo"])
    assert decision_layers(agent) == [
        "features_extractor.cnn.0",
        "features_extractor.cnn.2",
        "features_extractor.cnn.4",
        "features_extractor.linear.0",
        "action_net",
    ]
    assert decision_layers(load_agent(agent_zips["dqn"]))[-1] == "q_net.q_net.0"


def test_grad_cam_maps_move_and_the_agent_is_untouched(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    rng = torch.random.get_rng_state()
    result = sanity(agent, breakout_obs)
    assert [s.randomised for s in result.stages][:2] == ["none", "action_net"]
    assert len(result.stages) == 6
    # An untrained head swapped for another random one moves Grad-CAM only part way; the trained
    # agent's verdict is checked in test_shipped_agent_passes_sanity.
    assert result.head_lowest < 0.8 and result.lowest.correlation < 0.3, result.text()
    assert all(torch.equal(before[k], v) for k, v in agent.policy.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_an_explainer_blind_to_the_head_fails(agent_zips, breakout_obs, monkeypatch):
    # Activation energy never reads the gradients: randomising the layers that turn the features into the
    # decision cannot move it (randomising the convs below can). The check must fail it.
    monkeypatch.setitem(cam.METHODS, "energy", lambda acts, grads: acts.sum(dim=1))
    result = sanity(load_agent(agent_zips["ppo"]), breakout_obs, method="energy")
    assert [s.correlation for s in result.stages if s.head] == [1.0, 1.0]
    assert result.stages[-1].correlation < 1.0
    assert not result.passed and "ignores how the agent uses them" in result.text()


def test_cli_prints_the_curve(agent_zips, tmp_path, capsys):
    out = tmp_path / "sanity.json"
    code = main(["sanity", "--agent", str(agent_zips["dqn"]), "--steps", "8", "--json", str(out)])
    text = capsys.readouterr().out
    assert code in (0, 1)
    assert "q_net.q_net.0" in text and "rank correlation" in text
    assert ("PASS" in text) == (code == 0)
    import json

    assert len(json.loads(out.read_text())["stages"]) == 6
    assert np.isfinite([s["correlation"] for s in json.loads(out.read_text())["stages"]]).all()
