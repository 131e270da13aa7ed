"""scripts/train_carracing.py writes an rl-zoo run folder that rlcam reads back: the recorded agent sees
the env it was trained in (frame skip 2, 64x64 grey, 2 frames stacked), with no --trust and no --env."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_run_folder_records_in_its_training_env(tmp_path):
    pytest.importorskip("Box2D", reason="CarRacing needs gymnasium[box2d] (in the dev extra)")
    from stable_baselines3 import PPO
    from train_carracing import ENV, hyperparameters, make_venv, write_params

    from rlcam.cli import main
    from rlcam.video import load_trace

    run = tmp_path / "ppo" / f"{ENV}_1"
    write_params(run, steps=4096, seed=0)
    venv = make_venv(0, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPO("CnnPolicy", venv, seed=0, device="cpu", **hyperparameters(4096))
    assert model.observation_space.shape == (2, 64, 64)  # SB3 made the stacked grey frames channel-first
    model.save(run / f"{ENV}.zip")
    model.get_vec_normalize_env().save(str(run / ENV / "vecnormalize.pkl"))
    venv.close()

    out = tmp_path / "car.mp4"
    assert main(["record", "--agent", str(run), "--steps", "6", "--save-obs", "--out", str(out)]) == 0
    trace = load_trace(out.with_suffix(".npz"))
    assert trace.meta["action_names"] == ["steer", "gas", "brake"]
    obs = np.asarray(trace["obs"])
    assert obs.shape == (6, 2, 64, 64) and obs.dtype == np.uint8
