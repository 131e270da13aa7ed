"""Train a reference Atari agent with SB3, resumably, the way rl-zoo trains them.

    python scripts/train_agent.py --algo ppo --env BreakoutNoFrameskip-v4 \
        --steps 2000000 --seed 0 --run-dir runs/ppo_breakout

Run the same command again to resume from the newest checkpoint in ``--run-dir``;
Ctrl-C (or SIGTERM) ends the run at the current step with a checkpoint, to resume from.
The learning-rate and clip schedules are linear in the progress over ``--steps``,
so a resumed run follows the same schedule as an uninterrupted one. Progress
(steps, steps/s, elapsed wall time summed over sessions, without stretches over a minute in which
the process was stopped, training score) goes to
``<run-dir>/progress.jsonl`` and stdout.

DQN and QR-DQN also keep their replay buffer (``<run-dir>/replay_buffer.pkl``, about
2.8 GB, the newest only) so a resume continues from the same experience; without it, a
resumed run refills the buffer with ``learning_starts`` fresh steps before learning again.
Their exploration schedule is adjusted to the step budget: the zoo's settings are for
10 M steps, so epsilon decays over ``max(zoo fraction, 10%)`` of ``--steps`` here, and
learning starts after 50k steps instead of 100k.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecFrameStack

gym.register_envs(ale_py)


def zoo_hyperparameters(algo: str) -> dict:
    """rl-zoo's Atari settings (hyperparams/{ppo,a2c,dqn,qrdqn}.yml), per algorithm, for short budgets."""
    if algo == "a2c":
        # zoo: 16 envs, n_steps 5, constant lr 7e-4, ent 0.01, vf 0.25, and TF-like RMSprop (eps 1e-5).
        # Here SB3's default optimizer instead: torch's RMSprop, alpha 0.99, eps 1e-5. The TF-like one
        # adds eps under the square root (a floor of sqrt(1e-5) = 0.003 on the denominator), so a weight
        # whose gradient is ~1e-4 moves ~30x less per update than with torch's eps outside it: two runs
        # with it (seeds 0 and 1, here) still had a near-uniform policy after 0.3-2.15 M steps (training
        # mean 1-3), where the torch optimizer gave a training mean of ~79 at 1.2 M steps (FACTS.md).
        return dict(ent_coef=0.01, vf_coef=0.25)
    if algo == "ppo":
        return dict(
            n_steps=128,
            n_epochs=4,
            batch_size=256,
            learning_rate=LinearSchedule(2.5e-4, 0.0, 1.0),
            clip_range=LinearSchedule(0.1, 0.0, 1.0),
            vf_coef=0.5,
            ent_coef=0.01,
        )
    dqn_like = dict(
        buffer_size=100_000,
        learning_rate=1e-4,
        batch_size=32,
        learning_starts=50_000,  # zoo: 100k of 10 M steps
        target_update_interval=1000,
        train_freq=4,
        gradient_steps=1,
        # zoo: 0.1 (DQN) and 0.025 (QR-DQN) of 10 M steps; 0.025 of a 2 M budget would end
        # exploring before learning starts, so both decay over 10% of the budget here.
        exploration_fraction=0.1,
        exploration_final_eps=0.01,
        # Stores each frame once; halves the replay buffer's 5.6 GB.
        optimize_memory_usage=True,
        replay_buffer_kwargs=dict(handle_timeout_termination=False),
    )
    return dqn_like


N_ENVS = {"ppo": 8, "a2c": 16, "dqn": 1, "qrdqn": 1}
REPLAY_BUFFER = "replay_buffer.pkl"
# A gap this long between two env steps means the process was stopped (e.g. SIGSTOP while the
# machine was needed for something else); it is left out of the elapsed training time. A PPO
# update (4 epochs over 1024 samples) or saving the replay buffer takes well under this.
STALL_S = 60.0


def algo_class(algo: str):
    if algo == "ppo":
        return PPO
    if algo == "a2c":
        return A2C
    if algo == "dqn":
        return DQN
    from sb3_contrib import QRDQN

    return QRDQN


def use_fused_adam(model) -> None:
    """Switch the policy's Adam to torch's fused kernel: the same update (to float rounding; 4e-9 apart
    after 5 steps on QR-DQN's weights) and a faster step (4.7 vs 13.8 ms for QR-DQN's 2.1M weights,
    one thread, beside a training run); Adam's share of QR-DQN's training time fell from 16% to 9%
    (py-spy). The moments carry over, so a resumed run continues the same optimisation."""
    optimizer = model.policy.optimizer
    if isinstance(optimizer, torch.optim.Adam):
        for group in optimizer.param_groups:
            group["fused"] = True
            group["foreach"] = None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = []
    for path in run_dir.glob("ckpt_*_steps.zip"):
        match = re.fullmatch(r"ckpt_(\d+)_steps\.zip", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class Progress(BaseCallback):
    """Logs progress and saves a checkpoint every ``every`` steps."""

    def __init__(self, run_dir: Path, every: int, elapsed_before: float):
        super().__init__()
        self.run_dir = run_dir
        self.every = every
        self.elapsed_before = elapsed_before
        self.started = time.time()
        self.stalled = 0.0  # seconds the process did not run (stopped, suspended): not training time
        self.last_step = self.started
        self.steps_at_start = 0
        self.next_log = 0
        self.next_ckpt = 0
        self.stop_requested = False  # set by SIGINT/SIGTERM: end learn() at this step, then save

    def _on_training_start(self) -> None:
        self.steps_at_start = self.num_timesteps
        self.next_log = (self.num_timesteps // 10_000 + 1) * 10_000
        self.next_ckpt = (self.num_timesteps // self.every + 1) * self.every

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started - self.stalled

    def _on_step(self) -> bool:
        now = time.time()
        if now - self.last_step > STALL_S:  # a step never takes this long unless the process was stopped
            self.stalled += now - self.last_step
        self.last_step = now
        if self.num_timesteps >= self.next_log:
            self.next_log += 10_000
            self._log()
        if self.num_timesteps >= self.next_ckpt:
            self.next_ckpt += self.every
            self.save()
        return not self.stop_requested

    def _log(self) -> None:
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

    def save(self) -> None:
        path = self.run_dir / f"ckpt_{self.num_timesteps}_steps.zip"
        self.model.save(path)
        if hasattr(self.model, "replay_buffer"):
            # Written beside, then renamed: a kill mid-write never leaves a truncated buffer.
            partial = self.run_dir / "replay_buffer.partial.pkl"
            self.model.save_replay_buffer(partial)
            partial.replace(self.run_dir / REPLAY_BUFFER)
        state = dict(steps=self.num_timesteps, elapsed_s=round(self.elapsed(), 1), checkpoint=path.name)
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=1))
        print(f"checkpoint {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["ppo", "a2c", "dqn", "qrdqn"], required=True)
    parser.add_argument("--env", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, required=True, help="total env steps (agent steps x n_envs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-every", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    env = VecFrameStack(make_atari_env(args.env, n_envs=N_ENVS[args.algo], seed=args.seed), n_stack=4)
    cls = algo_class(args.algo)

    checkpoint = latest_checkpoint(args.run_dir)
    elapsed_before = 0.0
    if checkpoint is None:
        model = cls("CnnPolicy", env, seed=args.seed, verbose=0, **zoo_hyperparameters(args.algo))
        config = dict(
            algo=args.algo,
            env=args.env,
            steps=args.steps,
            seed=args.seed,
            n_envs=N_ENVS[args.algo],
            frame_stack=4,
            machine=f"{platform.machine()} {platform.processor()} {torch.get_num_threads()} torch thread(s)",
        )
        (args.run_dir / "config.json").write_text(json.dumps(config, indent=1))
    else:
        model = cls.load(checkpoint, env=env)
        if hasattr(model, "replay_buffer"):
            buffer = args.run_dir / REPLAY_BUFFER
            if buffer.exists():
                model.load_replay_buffer(buffer)
                print(f"replay buffer: {model.replay_buffer.size()} transitions", flush=True)
            else:  # refill before learning again, rather than learn from a handful of transitions
                model.learning_starts = model.num_timesteps + model.learning_starts
                print(f"no replay buffer: learning resumes after {model.learning_starts} steps", flush=True)
        state_file = args.run_dir / "state.json"
        if state_file.exists():
            elapsed_before = json.loads(state_file.read_text())["elapsed_s"]
        print(f"resuming from {checkpoint} at {model.num_timesteps} steps", flush=True)

    use_fused_adam(model)
    remaining = args.steps - model.num_timesteps
    if remaining <= 0:
        print("already trained to --steps; nothing to do")
        return
    progress = Progress(args.run_dir, args.checkpoint_every, elapsed_before)

    def stop(signum, frame):
        print(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint", flush=True)
        progress.stop_requested = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # reset_num_timesteps=False adds num_timesteps to the total, so the schedules
    # keep running over the full --steps budget after a resume.
    model.learn(remaining, callback=progress, reset_num_timesteps=False)
    progress.save()


if __name__ == "__main__":
    main()
