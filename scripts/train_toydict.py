"""Train the Dict known-attention agents and measure where their maps and input shares point.

    python scripts/train_toydict.py --variant image --steps 150000 --out agents/toydict_image_ppo.zip
    python scripts/train_toydict.py --variant image --measure agents/toydict_image_ppo.zip

PPO (MultiInputPolicy: a NatureCNN per image key, the vector passed through) on
``rlcam.toydict``'s envs (Box actions, a point (y, x) in [-1, 1], reward ``1 - mean |a - goal|``):
``image`` (the goal is the image's 4-px dot; the cue vector is noise), ``vector`` (the goal is the
cue; the image and its dot are noise), ``two_images`` (the goal is the dot in ``left``; ``right``
holds a decoy dot). After training, on fresh frames: the deterministic policy's mean error (px of
the 48-px image, or of its scale for the cue), each key's share of ``mean:0`` and ``mean:1``
(gradient x input), and on each image key the share of frames whose ``fine`` and last-conv
``gradcam`` map peak lies within 4 / 8 px of that image's dot and within 8 px of its square.
Saved with a fresh optimizer (no Adam state) and a JSON card beside it.
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

from rlcam.api import as_agent
from rlcam.coverage import unseen
from rlcam.explainer import Explainer, key_layers
from rlcam.toydict import DOT, IDS, SIZE, SQUARE, SteerDict, centre

TARGETS = ("mean:0", "mean:1")


def frames(variant: str, n: int, seed: int):
    """``n`` fresh observations as the policy sees them (images channel-first), the right actions
    ``(n, 2)``, and per image key the dot's and the square's centres ``(n, 2)`` in pixels."""
    env = SteerDict(variant)
    env.reset(seed=seed)
    obs = {key: [] for key in env.observation_space.spaces}
    goals, dots, squares = [], {k: [] for k in env.image_keys}, {k: [] for k in env.image_keys}
    for _ in range(n):
        env.place()
        for key, value in env.observation().items():
            obs[key].append(value if key == "cue" else value.transpose(2, 0, 1))
        goals.append(env.goal())
        for key in env.image_keys:
            dots[key].append(centre(env.dots[key]))
            squares[key].append(centre(env.squares[key], SQUARE))
    as_arrays = {key: np.array(values) for key, values in obs.items()}
    return (
        as_arrays,
        np.array(goals),
        {k: np.array(v) for k, v in dots.items()},
        {k: np.array(v) for k, v in squares.items()},
    )


def peaks(maps: np.ndarray) -> np.ndarray:
    """(y, x) of each map's maximum, ``(N, H, W) -> (N, 2)``."""
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack([flat // maps.shape[2], flat % maps.shape[2]], axis=1)


SOLVED_PX = 2.0  # a frame the agent solves: both action components within this of the goal


def solved(actions: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the frames whose deterministic action lies within ``SOLVED_PX`` of the goal on
    both components (the action clipped to its bounds, as the env applies it)."""
    return (np.abs(np.clip(actions, -1, 1) - goals) * (SIZE - 1) / 2 <= SOLVED_PX).all(axis=1)


def pointing(model, method: str, target: str, key: str, obs, dots, squares, ok=None) -> dict:
    """Where the map on image ``key`` peaks, against that image's dot and square.

    Split by whether the whole dot lies in pixels the network reads (``rlcam.coverage``), and, with
    ``ok`` (the frames the agent solves, ``solved``), by that: where the agent acts on
    the dot, the dot decides and the map should find it; where it misses, what did decide is the
    question the map answers (``square_8px_missed``: its peak on the distractor square).
    """
    layer = key_layers(as_agent(model), target)[key]
    with Explainer(as_agent(model), target=target, method=method, layer=layer) as explainer:
        maps = np.concatenate([explainer.explain(_rows(obs, i, i + 50)).cam_input for i in range(0, _n(obs), 50)])
    blind = unseen(model.policy, layer)  # NatureCNN on 48 px never reads rows and columns 44-47
    seen = np.ones(len(maps), bool) if blind is None else ~np.array([_touches(d, blind) for d in dots[key]])
    at = peaks(maps)
    to_dot = np.linalg.norm(at - dots[key], axis=1)
    to_square = np.linalg.norm(at - squares[key], axis=1)
    result = {
        "dot_4px": float((to_dot <= 4).mean()),
        "dot_8px": float((to_dot <= 8).mean()),
        "square_8px": float((to_square <= 8).mean()),
        "zero_maps": float((maps.reshape(len(maps), -1).max(axis=1) <= 0).mean()),
        "mass": float(maps.sum(axis=(1, 2)).mean()),  # mean total map: how much there is to see on this key
        "dot_seen_frames": int(seen.sum()),  # the whole dot in pixels the network reads
        "dot_4px_seen": float((to_dot[seen] <= 4).mean()) if seen.any() else None,
        "dot_4px_partly_unseen": float((to_dot[~seen] <= 4).mean()) if (~seen).any() else None,
    }
    if ok is not None:
        result.update(
            solved_frames=int(ok.sum()),
            dot_4px_solved=float((to_dot[ok] <= 4).mean()) if ok.any() else None,
            missed_frames=int((~ok).sum()),
            dot_4px_missed=float((to_dot[~ok] <= 4).mean()) if (~ok).any() else None,
            square_8px_missed=float((to_square[~ok] <= 8).mean()) if (~ok).any() else None,
        )
    return result


def _touches(dot_centre, blind) -> bool:
    """Whether the 4-px dot centred at ``dot_centre`` (y, x) has a pixel the network never reads."""
    half = (DOT - 1) / 2
    ys = range(int(dot_centre[0] - half), int(dot_centre[0] + half) + 1)
    xs = range(int(dot_centre[1] - half), int(dot_centre[1] + half) + 1)
    return bool(set(ys) & set(blind.rows) or set(xs) & set(blind.cols))


def shares(model, target: str, obs) -> np.ndarray:
    """Each key's share of ``target`` (gradient x input), ``(N, K)``, keys in the space's order."""
    with Explainer(as_agent(model), target=target, extras=True) as explainer:
        return np.concatenate([explainer.explain(_rows(obs, i, i + 50)).input_shares for i in range(0, _n(obs), 50)])


def share_summary(model, obs, deciding: str) -> dict:
    keys = list(model.policy.observation_space.spaces)
    out = {}
    for target in TARGETS:
        s = shares(model, target, obs)
        top = s.argmax(axis=1) == keys.index(deciding)
        out[target] = {
            "median": {key: round(float(np.median(s[:, i])), 4) for i, key in enumerate(keys)},
            "mean": {key: round(float(s[:, i].mean()), 4) for i, key in enumerate(keys)},
            f"{deciding}_largest": float(top.mean()),
            f"{deciding}_over_half": float((s[:, keys.index(deciding)] > 0.5).mean()),
        }
    return out


def _rows(obs: dict, start: int, stop: int) -> dict:
    return {key: value[start:stop] for key, value in obs.items()}


def _n(obs: dict) -> int:
    return len(next(iter(obs.values())))


def measure(model, variant: str, n: int, seed: int) -> dict:
    """The card's figures on ``n`` fresh frames drawn from ``seed``."""
    obs, goals, dots, squares = frames(variant, n, seed)
    actions, _ = model.predict(obs, deterministic=True)
    env = SteerDict(variant)
    ok = solved(actions, goals) if env.deciding_key in env.image_keys else None
    card = {
        "frames": n,
        "frames_seed": seed,
        "mean_error_px": round(float(np.abs(actions - goals).mean() * (SIZE - 1) / 2), 2),
        "solved_within_px": SOLVED_PX,
        "shares": share_summary(model, obs, env.deciding_key),
        "pointing": {
            f"{method} {target} on {key}": pointing(
                model, method, target, key, obs, dots, squares, ok if key == env.deciding_key else None
            )
            for key in env.image_keys
            for method in ("fine", "gradcam")
            for target in TARGETS
        },
    }
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=tuple(IDS), default="image")
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", type=Path, metavar="ZIP", help="measure a saved agent (no training); prints JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        card = measure(PPO.load(args.measure, device="cpu"), args.variant, args.frames, seed=10_000 + args.seed)
        print(json.dumps(card, indent=1))
        return 0
    if args.out is None:
        parser.error("give --out (where to save the trained agent) or --measure ZIP")
    venv = make_vec_env(f"rlcam.toydict:{IDS[args.variant]}", n_envs=8, seed=args.seed)
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=128,
        n_epochs=4,
        batch_size=256,
        learning_rate=3e-4,
        gamma=0.0,  # every step's reward depends only on that step's action
        ent_coef=0.0,
        seed=args.seed,
        device="cpu",
    )
    started = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    minutes = (time.perf_counter() - started) / 60
    policy = model.policy  # saved before measuring, so a failed measurement keeps the agent
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-4, **policy.optimizer_kwargs)
    model._last_obs = None
    model._last_original_obs = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    card = {
        "env": f"rlcam.toydict:{IDS[args.variant]}",
        "steps": model.num_timesteps,
        "seed": args.seed,
        "minutes": round(minutes, 1),
        "size_mb": round(args.out.stat().st_size / 1e6, 2),
        **measure(PPO.load(args.out, device="cpu"), args.variant, args.frames, seed=10_000 + args.seed),
        "versions": {"sb3": sb3.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
