"""What the training scripts share: checkpoints every N steps, progress lines, and a run that resumes.

A run folder holds checkpoints named by a pattern with the step count in it (``ckpt_{}_steps.zip``
for ``train_agent.py``, rl-zoo's ``rl_model_{}_steps.zip`` for ``train_carracing.py``),
``progress.jsonl`` (one line per ``log_every`` steps, also printed) and ``state.json`` (steps and
training seconds at the newest checkpoint, summed over sessions). Ctrl-C or SIGTERM ends
``learn_resumably`` at the current step with a checkpoint; the same command resumes from it.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

# A gap this long between two env steps means the process was stopped (e.g. SIGSTOP while the
# machine was needed for something else); it is left out of the elapsed training time. A PPO
# update, an A2C step or saving a replay buffer takes well under this.
STALL_S = 60.0


def latest_checkpoint(run_dir: Path, name: str) -> Path | None:
    """The checkpoint in ``run_dir`` matching ``name`` (``{}`` for the step count) with the most steps."""
    prefix, suffix = name.split("{}")
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    found = [(int(m.group(1)), p) for p in run_dir.glob(name.format("*")) if (m := pattern.fullmatch(p.name))]
    return max(found)[1] if found else None


def elapsed_before(run_dir: Path) -> float:
    """Training seconds of the earlier sessions of this run (0 for a new run)."""
    state = run_dir / "state.json"
    return json.loads(state.read_text())["elapsed_s"] if state.exists() else 0.0


class Progress(BaseCallback):
    """Logs progress every ``log_every`` steps and saves a checkpoint every ``every`` steps.

    ``save_also(model, run_dir)`` saves what the checkpoint alone does not hold (a replay buffer,
    VecNormalize statistics), each time a checkpoint is saved.
    """

    def __init__(
        self,
        run_dir: Path,
        every: int,
        name: str = "ckpt_{}_steps.zip",
        log_every: int = 10_000,
        save_also: Callable | None = None,
    ):
        super().__init__()
        self.run_dir, self.every, self.name, self.log_every = run_dir, every, name, log_every
        self.save_also = save_also
        self.elapsed_before = elapsed_before(run_dir)
        self.started = time.time()
        self.stalled = 0.0  # seconds the process did not run (stopped, suspended): not training time
        self.last_step = self.started
        self.steps_at_start = self.next_log = self.next_ckpt = 0
        self.stop_requested = False  # set by SIGINT/SIGTERM: end learn() at this step, then save
        self.saved_at: int | None = None  # the step of the newest checkpoint saved by this run

    def _on_training_start(self) -> None:
        self.steps_at_start = self.num_timesteps
        self.next_log = (self.num_timesteps // self.log_every + 1) * self.log_every
        self.next_ckpt = (self.num_timesteps // self.every + 1) * self.every

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started - self.stalled

    def _on_step(self) -> bool:
        now = time.time()
        if now - self.last_step > STALL_S:  # a step never takes this long unless the process was stopped
            self.stalled += now - self.last_step
        self.last_step = now
        if self.num_timesteps >= self.next_log:
            self.next_log += self.log_every
            self.log()
        if self.num_timesteps >= self.next_ckpt:
            self.next_ckpt += self.every
            self.save()
        return not self.stop_requested

    def log(self) -> dict:
        infos = self.model.ep_info_buffer
        score = sum(i["r"] for i in infos) / len(infos) if infos else float("nan")
        rate = (self.num_timesteps - self.steps_at_start) / max(time.time() - self.started - self.stalled, 1e-9)
        row = dict(
            steps=self.num_timesteps,
            elapsed_s=round(self.elapsed(), 1),
            steps_per_s=round(rate, 1),
            train_score_mean=round(score, 2),
            episodes_in_mean=len(infos),
        )
        print(json.dumps(row), flush=True)
        with open(self.run_dir / "progress.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def save(self, path: Path | None = None) -> Path:
        """A checkpoint at the current step (or at ``path``), what ``save_also`` saves, and ``state.json``."""
        path = path or self.run_dir / self.name.format(self.num_timesteps)
        self.model.save(path)
        self.saved_at = self.num_timesteps
        if self.save_also is not None:
            self.save_also(self.model, self.run_dir)
        state = dict(steps=self.num_timesteps, elapsed_s=round(self.elapsed(), 1), checkpoint=path.name)
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=1))
        print(f"checkpoint {path}", flush=True)
        return path


def learn_resumably(model, steps: int, progress: Progress) -> bool:
    """Train ``model`` to ``steps`` in all, ending with a checkpoint; True once it has all of them.

    SIGINT and SIGTERM end the run after the current step (with the checkpoint). The model's own step
    count carries on (``reset_num_timesteps=False``), so schedules linear over ``steps`` follow the
    same course in a resumed run as in one that was never stopped.
    """
    remaining = steps - model.num_timesteps
    if remaining <= 0:
        print("already trained to --steps; nothing to do", flush=True)
        return True

    def stop(signum, frame):
        print(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint", flush=True)
        progress.stop_requested = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        model.learn(remaining, callback=progress, reset_num_timesteps=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if progress.saved_at != model.num_timesteps:  # the last step was not a scheduled checkpoint
        progress.save()
    return model.num_timesteps >= steps
