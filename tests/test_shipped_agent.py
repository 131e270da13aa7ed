"""The shipped Breakout agents: each is the file its card describes and loads in plain SB3; the PPO
one passes against its own baseline, and a damaged copy and an early checkpoint (tests/data, 100k
steps) fail with a report that says where."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlcam.agents import load_agent
from rlcam.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from regression_example import damaged_copy  # noqa: E402  (the damage docs/regression.md shows)

SHIPPED = ROOT / "agents" / "breakout_ppo.zip"
EARLY = ROOT / "tests" / "data" / "breakout_ppo_100k.zip"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("shipped") / "base.mp4"
    assert main(["record", "--agent", str(SHIPPED), "--steps", "120", "--save-obs", "--out", str(out)]) == 0
    return out.with_suffix(".npz")


def test_shipped_agent_loads_safely_as_ppo():
    agent = load_agent(SHIPPED)
    assert agent.algo == "ppo" and agent.model.num_timesteps >= 100_000
    assert SHIPPED.stat().st_size < 8e6


def test_shipped_agent_passes_against_its_own_baseline(baseline, capsys):
    code = main(["check", "--agent", str(SHIPPED), "--baseline", str(baseline)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "action agreement                 1.000" in out


def test_early_checkpoint_fails(baseline, capsys):
    code = main(["check", "--agent", str(EARLY), "--baseline", str(baseline)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL  action agreement" in out and "regressed steps" in out


def test_damaged_copy_fails(baseline, tmp_path, capsys):
    damaged = damaged_copy(SHIPPED, tmp_path / "damaged.zip")
    code = main(["check", "--agent", str(damaged), "--baseline", str(baseline)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL  map correlation" in out and "result: REGRESSION" in out


CARDS = sorted((ROOT / "agents").glob("breakout_*.md")) + [ROOT / "agents" / "pong_a2c.md"]


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.stem)
def test_each_shipped_atari_agent_matches_its_card_and_loads_in_plain_sb3(card):
    """The card describes this very file (sha256, size limit), and plain SB3 loads it without warnings."""
    import hashlib
    import re
    import warnings

    from rlcam.agents import algo_class

    zip_path = card.with_suffix(".zip")
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert re.search(r"\| sha256 \| `([0-9a-f]{64})` \|", card.read_text()).group(1) == digest
    assert zip_path.stat().st_size < 8e6
    agent = load_agent(zip_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = algo_class(agent.algo).load(zip_path, device="cpu")
    assert model.num_timesteps == agent.model.num_timesteps >= 100_000


QRDQN_SHIPPED = ROOT / "agents" / "breakout_qrdqn.zip"


def test_shipped_q_agent_passes_itself_and_a_damaged_copy_fails(tmp_path, capsys):
    """The Q-value agent through the same check: Q-value maps, a replayed baseline, a shuffled conv."""
    out = tmp_path / "qr.mp4"
    assert main(["record", "--agent", str(QRDQN_SHIPPED), "--steps", "80", "--save-obs", "--out", str(out)]) == 0
    baseline = out.with_suffix(".npz")
    capsys.readouterr()
    assert main(["check", "--agent", str(QRDQN_SHIPPED), "--baseline", str(baseline)]) == 0
    assert "action agreement                 1.000" in capsys.readouterr().out
    assert load_agent(QRDQN_SHIPPED).algo == "qrdqn"
    damaged = damaged_copy(QRDQN_SHIPPED, tmp_path / "damaged.zip")
    code = main(["check", "--agent", str(damaged), "--baseline", str(baseline)])
    report = capsys.readouterr().out
    assert code == 1 and "result: REGRESSION" in report, report


def test_pong_agent_replays_its_cards_first_game():
    """The Pong card's first argmax game (env seed 100) played again: the same score, 21 to 0 or near it."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from evaluate_agent import evaluate

    card = json.loads((ROOT / "agents" / "pong_a2c.eval.json").read_text())
    result = evaluate(ROOT / "agents" / "pong_a2c.zip", "PongNoFrameskip-v4", 1, 100, True, 27_000)
    assert result["scores"] == card["argmax"]["scores"][:1] and result["scores"][0] >= 18
