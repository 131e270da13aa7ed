"""scripts/evaluate_agent.py, the protocol the model cards quote, on an agent that is not Atari's:
the MiniGrid card's argmax figures (100 episodes, seeds 10000-10099) come back, and a missing file
is one sentence and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_agent import evaluate  # noqa: E402

MINIGRID = "rlcam.gridenvs:RlcamMiniGrid-Empty-Random-6x6-v0"


def test_minigrid_card_figures_are_reproduced():
    card = (ROOT / "agents" / "minigrid_empty6_ppo.md").read_text()
    assert "**100%** of 100 fresh episodes (seeds 10000-10099), mean return 0.973" in card
    result = evaluate(ROOT / "agents" / "minigrid_empty6_ppo.zip", MINIGRID, 100, 10000, True, 1000)
    assert result["success_share"] == 1.0
    assert round(result["mean"], 3) == 0.973
    assert result["games_hitting_cap"] == 0 and not result["atari"]


def test_missing_agent_is_one_sentence(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate_agent.py"), str(tmp_path / "nope.zip")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "nope.zip" in run.stderr
