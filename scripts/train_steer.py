"""Train the continuous known-attention agent and measure where its maps point.

    python scripts/train_steer.py --steps 120000 --out agents/toy_steer_ppo.zip

PPO (NatureCNN CnnPolicy, Box actions) on ``rlcam.toyenv:SteerToDot-v0``: the action is the
target's (y, x) in [-1, 1], the reward ``1 - mean |a - where|``, so a trained agent must find the
4-px target and ignore the distractor. After training: the deterministic policy's mean error on
fresh frames (in px of the 84-px frame), then, for ``mean:0`` and ``mean:1`` under ``fine`` and
last-conv ``gradcam``, the share of frames whose map peak lies within 4 and 8 px of the target
and of the distractor. Saved with a fresh optimizer and a JSON card beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import stable_baselines3 as sb3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlcam.toyenv  # noqa: F401  (registers the ids)
from rlcam.api import as_agent
from rlcam.explainer import Explainer
from rlcam.toyenv import SIZE, SteerToDot


def frames(n: int, seed: int):
    """``n`` fresh observations (n, 3, 84, 84) with the target's and distractor's centres."""
    env = SteerToDot()
    env.reset(seed=seed)
    obs, targets, distractors = [], [], []
    for _ in range(n):
        env._place()
        obs.append(env._obs().transpose(2, 0, 1))
        targets.append(env.target_centre())
        distractors.append(env.distractor_centre())
    return np.stack(obs), np.array(targets), np.array(distractors)


def pointing(model, method: str, target: str, obs, targets, distractors) -> dict:
    with Explainer(as_agent(model), target=target, method=method) as explainer:
        maps = np.concatenate([explainer.explain(obs[i : i + 50]).cam_input for i in range(0, len(obs), 50)])
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    peaks = np.stack([flat // maps.shape[2], flat % maps.shape[2]], axis=1)
    to_target = np.linalg.norm(peaks - targets, axis=1)
    to_distractor = np.linalg.norm(peaks - distractors, axis=1)
    return {
        "target_4px": float((to_target <= 4).mean()),
        "target_8px": float((to_target <= 8).mean()),
        "distractor_8px": float((to_distractor <= 8).mean()),
        "zero_maps": float((maps.reshape(len(maps), -1).max(axis=1) <= 0).mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("agents/toy_steer_ppo.zip"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    venv = make_vec_env("SteerToDot-v0", n_envs=8, seed=args.seed)
    model = PPO(
        "CnnPolicy",
        venv,
        n_steps=128,
        n_epochs=4,
        batch_size=256,
        learning_rate=3e-4,
        gamma=0.0,
        ent_coef=0.0,
        seed=args.seed,
        device="cpu",
    )
    started = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    minutes = (time.perf_counter() - started) / 60
    obs, targets, distractors = frames(args.frames, seed=10_000 + args.seed)
    actions, _ = model.predict(obs, deterministic=True)
    where = targets / (SIZE - 1) * 2.0 - 1.0
    error_px = float(np.abs(actions - where).mean() * (SIZE - 1) / 2)
    card = {
        "env": "rlcam.toyenv:SteerToDot-v0",
        "steps": model.num_timesteps,
        "seed": args.seed,
        "minutes": round(minutes, 1),
        "mean_error_px": round(error_px, 2),
        "pointing": {
            f"{method} {target}": pointing(model, method, target, obs, targets, distractors)
            for method in ("fine", "gradcam")
            for target in ("mean:0", "mean:1")
        },
        "versions": {"sb3": sb3.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    policy = model.policy
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-4, **policy.optimizer_kwargs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    card["size_mb"] = round(args.out.stat().st_size / 1e6, 1)
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
