"""scripts/resumable.py, which train_agent.py and train_carracing.py share: checkpoints on schedule,
a stop by signal that saves where it stopped, and a resume that ends where an unbroken run would."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

NAME = "rl_model_{}_steps.zip"


def cartpole_ppo(run_dir: Path):
    import gymnasium as gym
    from resumable import latest_checkpoint
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import LinearSchedule

    checkpoint = latest_checkpoint(run_dir, NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if checkpoint is not None:
            return PPO.load(checkpoint, env=gym.make("CartPole-v1"), device="cpu")
        lr = LinearSchedule(1e-3, 0.0, 1.0)
        return PPO(
            "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, learning_rate=lr, seed=0, device="cpu"
        )


def test_a_run_stopped_by_sigterm_resumes_to_its_budget(tmp_path):
    from resumable import Progress, latest_checkpoint, learn_resumably

    saved_also = []

    class TermAt200(Progress):  # a SIGTERM arriving mid-run, as from `kill`
        def _on_step(self) -> bool:
            if self.num_timesteps == 200:
                os.kill(os.getpid(), signal.SIGTERM)
            return super()._on_step()

    model = cartpole_ppo(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    progress = TermAt200(tmp_path, every=128, name=NAME, log_every=64, save_also=lambda m, d: saved_also.append(d))
    assert not learn_resumably(model, 512, progress)
    assert model.num_timesteps == 200
    assert sorted(p.name for p in tmp_path.glob("rl_model_*")) == [NAME.format(128), NAME.format(200)]
    assert latest_checkpoint(tmp_path, NAME).name == NAME.format(200) and saved_also == [tmp_path] * 2
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["steps"] == 200 and state["checkpoint"] == NAME.format(200) and state["elapsed_s"] > 0
    logged = [json.loads(line)["steps"] for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert logged == [64, 128, 192]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back

    resumed = cartpole_ppo(tmp_path)
    assert resumed.num_timesteps == 200
    again = Progress(tmp_path, every=128, name=NAME, log_every=64)
    assert again.elapsed_before == state["elapsed_s"]
    assert learn_resumably(resumed, 512, again)
    # whole rollouts of 64 steps from 200: 520 steps, and schedules that ran over the 512 budget
    assert resumed.num_timesteps == 520 and resumed._total_timesteps == 512
    assert latest_checkpoint(tmp_path, NAME).name == NAME.format(520)
    assert json.loads((tmp_path / "state.json").read_text())["elapsed_s"] >= state["elapsed_s"]


def test_already_trained_runs_nothing(tmp_path, capsys):
    from resumable import Progress, learn_resumably

    model = cartpole_ppo(tmp_path)
    model.num_timesteps = 512
    assert learn_resumably(model, 512, Progress(tmp_path, every=128, name=NAME))
    assert "nothing to do" in capsys.readouterr().out and not list(tmp_path.glob("*.zip"))
