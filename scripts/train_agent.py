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
import sys
from pathlib import Path

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecFrameStack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resumable import Progress, latest_checkpoint, learn_resumably  # noqa: E402

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
CHECKPOINT = "ckpt_{}_steps.zip"


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


def save_replay_buffer(model, run_dir: Path) -> None:
    """Beside each checkpoint, for DQN and QR-DQN: written beside, then renamed, so a kill mid-write
    never leaves a truncated buffer."""
    if hasattr(model, "replay_buffer"):
        partial = run_dir / "replay_buffer.partial.pkl"
        model.save_replay_buffer(partial)
        partial.replace(run_dir / REPLAY_BUFFER)


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

    checkpoint = latest_checkpoint(args.run_dir, CHECKPOINT)
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
        print(f"resuming from {checkpoint} at {model.num_timesteps} steps", flush=True)

    use_fused_adam(model)
    progress = Progress(args.run_dir, args.checkpoint_every, CHECKPOINT, save_also=save_replay_buffer)
    learn_resumably(model, args.steps, progress)


if __name__ == "__main__":
    main()
