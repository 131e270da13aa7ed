"""Ship a training checkpoint into agents/: a small zip plain SB3 loads, plus its model card.

    python scripts/ship_agent.py runs/ppo_breakout/ckpt_1000000_steps.zip agents/breakout_ppo.zip \
        --games 10 --seed 100

Smaller zip: the Adam state (moments for every weight, two thirds of a PPO zip) is
replaced by a fresh optimizer, and the last rollout observation is dropped; plain
``PPO.load`` still works and acts identically (checked here on real observations).
Then the agent is scored with ``scripts/evaluate_agent.py``'s protocol and the model
card ``<zip stem>.md`` is written beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_agent import evaluate  # noqa: E402

import rlcam  # noqa: E402
from rlcam.agents import algo_class, load_agent  # noqa: E402
from rlcam.envs import make_env  # noqa: E402


def slim_copy(src: Path, dst: Path) -> None:
    # Our own checkpoint: SB3's full load, so the copy keeps every field plain SB3 needs to load it.
    agent = load_agent(src, trust=True)
    model = agent.model
    policy = model.policy
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-4, **policy.optimizer_kwargs)
    model._last_obs = None
    model._last_original_obs = None
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save(dst)
    check_same_actions(src, dst, agent.algo)


def check_same_actions(src: Path, dst: Path, algo: str) -> None:
    cls = algo_class(algo)
    original, shipped = cls.load(src, device="cpu"), cls.load(dst, device="cpu")
    venv, _ = make_env("Breakout", n_envs=4, seed=0)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, _ = original.predict(obs, deterministic=True)
        b, _ = shipped.predict(obs, deterministic=True)
        if not np.array_equal(a, b):
            raise SystemExit("the slimmed agent acts differently from the checkpoint; not shipping it")
        obs, *_ = venv.step(rng.integers(0, venv.action_space.n, size=4))
    venv.close()


def model_card(dst: Path, run_dir: Path, result: dict, result_det: dict) -> str:
    import stable_baselines3

    config = json.loads((run_dir / "config.json").read_text())
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {}
    steps = result.get("trained_steps")
    hours = state.get("elapsed_s", float("nan")) / 3600
    return f"""# {dst.name}

| | |
|---|---|
| algorithm | {result["algo"].upper()} (`{config["algo"]}` settings from rl-zoo's Atari hyperparameters, see `scripts/train_agent.py`) |
| env | `{config["env"]}` via SB3 `make_atari_env` (noop reset 30, frame skip 4 with max-pool, episodic life, fire reset, 84x84 grey, reward clipping in training) + `VecFrameStack(4)`; channel-first `(4, 84, 84)` uint8 |
| steps trained | {steps:,} env steps (of a {config["steps"]:,}-step schedule; {config["n_envs"]} envs) |
| wall time | {hours:.2f} h of training, summed over sessions |
| machine | {config["machine"]}, 2 CPU cores, no GPU |
| seed | {config["seed"]} |
| score, argmax actions (what `rlcam record` plays by default) | **{result_det["mean"]:.1f} +- {result_det["std"]:.1f}** over {result_det["games"]} full games ({result_det["games_hitting_cap"]} hit the step cap) |
| score, sampled actions (the policy's own distribution) | **{result["mean"]:.1f} +- {result["std"]:.1f}** over {result["games"]} full games |
| versions | rlcam {rlcam.__version__}, stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}, Python {platform.python_version()} |
| sha256 | `{result["sha256"]}` |
| size | {dst.stat().st_size / 1e6:.1f} MB (Adam state replaced by a fresh optimizer; plain `{algo_class(result["algo"]).__name__}.load` works) |

Evaluation protocol (`scripts/evaluate_agent.py`): {result["games"]} envs built as in training, env i seeded
{result["seed"]} + i, each plays one full game (to game over, not life loss; cap {result["max_steps"]:,} agent
steps), unclipped game score, actions from `model.predict`.
Per-game scores, argmax: {result_det["scores"]}; sampled: {result["scores"]}

Reproduce:

```
python scripts/train_agent.py --algo {config["algo"]} --env {config["env"]} --steps {config["steps"]} \\
    --seed {config["seed"]} --threads 2 --run-dir {run_dir}
python scripts/ship_agent.py {run_dir}/ckpt_{steps}_steps.zip {dst} --games {result["games"]} --seed {result["seed"]}
```

Training on a CPU is not bit-reproducible across machines or thread counts; expect scores of the same
order, not the same digits.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    slim_copy(args.checkpoint, args.dst)
    torch.manual_seed(args.seed)
    result = evaluate(args.dst, "Breakout", args.games, args.seed, deterministic=False, max_steps=27_000)
    result_det = evaluate(args.dst, "Breakout", args.games, args.seed, deterministic=True, max_steps=27_000)
    result["trained_steps"] = int(load_agent(args.dst).model.num_timesteps)
    card = model_card(args.dst, args.checkpoint.parent, result, result_det)
    args.dst.with_suffix(".md").write_text(card)
    args.dst.with_suffix(".eval.json").write_text(json.dumps(dict(sampled=result, argmax=result_det), indent=1))
    print(card)


if __name__ == "__main__":
    main()
