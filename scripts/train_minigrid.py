"""Train the Dict-observation agent: PPO ``MultiInputPolicy`` on MiniGrid with pixels and a compass.

    python scripts/train_minigrid.py --env RlcamMiniGrid-Empty-Random-6x6-v0 --steps 150000 \\
        --out agents/minigrid_empty6_ppo.zip

Observations are ``rlcam.gridenvs``' ``{"image": (56, 56, 3) uint8, "direction": (4,) one-hot}``;
the policy is SB3's MultiInputPolicy (CombinedExtractor: NatureCNN on the image, the direction
flattened). Settings follow rl-zoo's MiniGrid PPO (8 envs, n_steps 128, batch 64, 10 epochs,
gamma 0.99, gae 0.95, ent 0.0, lr 2.5e-4, clip 0.2). After training the deterministic policy plays
``--eval-episodes`` fresh seeded episodes; success = the episode ends with a positive reward (the
goal reached before MiniGrid's step limit). The zip is saved with a fresh optimizer (no Adam
state), with a model card beside it; exit 1 when success is below ``--min-success``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3 as sb3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlcam.gridenvs  # noqa: F401  (registers the ids)


def evaluate(model, env_id: str, episodes: int, seed: int, deterministic: bool = True) -> dict:
    env = gym.make(env_id)
    wins, returns, lengths = 0, [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, steps = False, 0.0, 0
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            steps += 1
            done = terminated or truncated
        wins += int(total > 0)
        returns.append(total)
        lengths.append(steps)
    return {
        "success": wins / episodes,
        "mean_return": float(np.mean(returns)),
        "mean_length": float(np.mean(lengths)),
        "episodes": episodes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RlcamMiniGrid-Empty-Random-6x6-v0")
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("agents/minigrid_empty6_ppo.zip"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--min-success", type=float, default=0.9)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    venv = make_vec_env(args.env, n_envs=8, seed=args.seed)
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=128,
        batch_size=64,
        n_epochs=10,
        gamma=0.99,
        gae_lambda=0.95,
        ent_coef=0.0,
        learning_rate=2.5e-4,
        clip_range=0.2,
        seed=args.seed,
        device="cpu",
    )
    started = time.time()
    model.learn(args.steps)
    minutes = (time.time() - started) / 60
    greedy = evaluate(model, args.env, args.eval_episodes, seed=10_000)
    sampled = evaluate(model, args.env, args.eval_episodes, seed=10_000, deterministic=False)
    policy = model.policy
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-4, **policy.optimizer_kwargs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    card = {
        "env": f"rlcam.gridenvs:{args.env}",
        "steps": model.num_timesteps,
        "seed": args.seed,
        "minutes": round(minutes, 1),
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch thread(s)",
        "deterministic": greedy,
        "sampled": sampled,
        "versions": {"sb3": sb3.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "size_mb": round(args.out.stat().st_size / 1e6, 1),
    }
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))
    return 0 if greedy["success"] >= args.min_success else 1


if __name__ == "__main__":
    sys.exit(main())
