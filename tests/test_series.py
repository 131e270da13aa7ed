"""agents/series: checkpoints of one training run, weak to strong, as the card lists them. Each file is
the one its row describes (sha256), loads in plain SB3 without warnings at the step it claims, and
the weakest one's first two argmax games replay to the card's scores."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "agents" / "series"
INDEX = json.loads((SERIES / "series.json").read_text())
sys.path.insert(0, str(ROOT / "scripts"))


def test_the_series_spans_weak_to_strong():
    rows = INDEX["rows"]
    steps = [r["step"] for r in rows]
    assert len(rows) >= 5 and steps == sorted(steps)
    scores = [r["argmax"]["mean"] for r in rows]
    assert scores[-1] >= 100 and scores[0] < 20  # the card's own figures: a weak and a strong end
    card = (SERIES / "README.md").read_text()
    for r in rows:
        assert f"| `{r['file']}` | {r['step']:,} | {r['argmax']['mean']:.1f} +- {r['argmax']['std']:.1f} |" in card
    assert sum((SERIES / r["file"]).stat().st_size for r in rows) < 25e6


@pytest.mark.parametrize("row", INDEX["rows"], ids=lambda r: str(r["step"]))
def test_each_file_is_its_row_and_loads_in_plain_sb3(row):
    from stable_baselines3 import A2C

    path = SERIES / row["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = A2C.load(path, device="cpu")
    assert abs(model.num_timesteps - row["step"]) < 80  # one update of 16 envs x 5 steps


def test_weakest_checkpoint_replays_its_card_scores():
    from evaluate_agent import evaluate

    row = INDEX["rows"][0]
    result = evaluate(SERIES / row["file"], "Breakout", 2, INDEX["seed"], True, 27_000)
    assert result["scores"] == row["argmax"]["scores"][:2]
