"""Ship a training checkpoint into agents/: a small zip plain SB3 loads, plus its model card.

    python scripts/ship_agent.py runs/ppo_breakout/ckpt_1000000_steps.zip agents/breakout_ppo.zip \
        --games 10 --seed 100

Smaller zip: the Adam state (moments for every weight, two thirds of a PPO zip) is
replaced by a fresh optimizer, and the last rollout observation is dropped. DQN and
QR-DQN also carry a target network, used only in training: it is saved as the online
network (its tensors share storage, so ``torch.save`` writes them once, and a load gets
a target freshly synced to the online net). Plain ``PPO.load`` / ``DQN.load`` /
``QRDQN.load`` still work and act identically (checked here on real observations).
Then the agent is scored with ``scripts/evaluate_agent.py``'s protocol and the model
card ``<zip stem>.md`` is written beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_agent import evaluate  # noqa: E402

import rlcam  # noqa: E402
from rlcam.agents import algo_class, load_agent  # noqa: E402
from rlcam.envs import make_env  # noqa: E402


def slim_copy(src: Path, dst: Path, env: str = "Breakout", make_venv=None):
    """Write ``dst``, the slimmed ``src``, and check it acts as ``src`` does; returns the loaded model.

    ``make_venv(model)``: builds the vec env the check steps (default ``make_env(env, n_envs=4,
    seed=0)``), called once ``dst`` is written.
    """
    # Our own checkpoint: SB3's full load, so the copy keeps every field plain SB3 needs to load it.
    agent = load_agent(src, trust=True)
    model = agent.model
    policy = model.policy
    networks = _target_network(policy)
    trained = policy if networks is None else networks[0]  # what SB3 builds the optimizer over
    policy.optimizer = policy.optimizer_class(trained.parameters(), lr=1e-4, **policy.optimizer_kwargs)
    model._last_obs = None
    model._last_original_obs = None
    if networks is not None:
        online, target = networks
        for mine, synced in zip(target.parameters(), online.parameters(), strict=True):
            mine.data = synced.data  # one storage: written once; loaded as two (load_state_dict copies)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save(dst)
    _deflate(dst)
    venv = make_venv(model) if make_venv is not None else make_env(env, n_envs=4, seed=0)[0]
    check_same_actions(model, algo_class(agent.algo).load(dst, device="cpu"), venv)
    return model


def _deflate(path: Path) -> None:
    """Re-pack SB3's zip with compression (it stores members uncompressed); ``zipfile`` reads both."""
    packed = path.with_suffix(".deflated.zip")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    packed.replace(path)


def _target_network(policy) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(online, target) networks of a DQN-family policy; None for actor-critics."""
    for online, target in (("q_net", "q_net_target"), ("quantile_net", "quantile_net_target")):
        if hasattr(policy, target):
            return getattr(policy, online), getattr(policy, target)
    return None


def check_same_actions(original, shipped, venv, steps: int = 200) -> None:
    """``SystemExit`` unless ``shipped`` takes ``original``'s argmax actions on ``steps`` steps of
    ``venv``, stepped with those actions (the states the agent itself reaches); closes ``venv``."""
    try:
        obs = venv.reset()
        for _ in range(steps):
            a, _ = original.predict(obs, deterministic=True)
            b, _ = shipped.predict(obs, deterministic=True)
            if not np.array_equal(a, b):
                raise SystemExit("the slimmed agent acts differently from the checkpoint; not shipping it")
            obs, *_ = venv.step(a)
    finally:
        venv.close()


def model_card(dst: Path, run_dir: Path, result: dict, result_det: dict, notes: str = "") -> str:
    import stable_baselines3

    config = json.loads((run_dir / "config.json").read_text())
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {}
    steps = result.get("trained_steps")
    hours = state.get("elapsed_s", float("nan")) / 3600
    if result["algo"] in ("ppo", "a2c"):
        sampled = "sampled actions (the policy's own distribution)"
        slimmed = "Adam state replaced by a fresh optimizer"
    else:
        sampled = f"epsilon-greedy actions (epsilon {result['epsilon']:g}, the final exploration rate)"
        slimmed = "Adam state replaced by a fresh optimizer, the target network saved as the online one"
    notes = f"\nNotes:\n\n{notes.strip()}\n" if notes.strip() else ""
    envs = f"{config['n_envs']} env{'s' if config['n_envs'] != 1 else ''}"
    stopped = (
        f"# stopped with Ctrl-C at {steps:,} steps (a stop saves a checkpoint there)\n"
        if steps < config["steps"]
        else ""
    )
    return f"""# {dst.name}

| | |
|---|---|
| algorithm | {result["algo"].upper()} (`{config["algo"]}` settings from rl-zoo's Atari hyperparameters, see `scripts/train_agent.py`) |
| env | `{config["env"]}` via SB3 `make_atari_env` (noop reset 30, frame skip 4 with max-pool, episodic life, fire reset, 84x84 grey, reward clipping in training) + `VecFrameStack(4)`; channel-first `(4, 84, 84)` uint8 |
| steps trained | {steps:,} env steps (of a {config["steps"]:,}-step schedule; {envs}) |
| wall time | {hours:.2f} h of training, summed over sessions |
| machine | {config["machine"]} at the start, 2 CPU cores, no GPU |
| seed | {config["seed"]} |
| score, argmax actions (what `rlcam record` plays by default) | **{result_det["mean"]:.1f} +- {result_det["std"]:.1f}** over {result_det["games"]} full games ({result_det["games_hitting_cap"]} hit the step cap) |
| score, {sampled} | **{result["mean"]:.1f} +- {result["std"]:.1f}** over {result["games"]} full games ({result["games_hitting_cap"]} hit the step cap) |
| versions | rlcam {rlcam.__version__}, stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}, Python {platform.python_version()} |
| sha256 | `{result["sha256"]}` |
| size | {dst.stat().st_size / 1e6:.1f} MB ({slimmed}, members deflated; plain `{algo_class(result["algo"]).__name__}.load` works) |

Evaluation protocol (`scripts/evaluate_agent.py`): {result["games"]} envs built as in training, env i seeded
{result["seed"]} + i, each plays one full game (to game over, not life loss; cap {result["max_steps"]:,} agent
steps), unclipped game score, actions from `model.predict`.
Per-game scores, argmax: {result_det["scores"]}; {sampled.split(" (")[0]}: {result["scores"]}
{notes}
Reproduce:

```
python scripts/train_agent.py --algo {config["algo"]} --env {config["env"]} --steps {config["steps"]} \\
    --seed {config["seed"]} --threads 2 --run-dir {run_dir}
{stopped}python scripts/ship_agent.py {run_dir}/ckpt_{steps}_steps.zip {dst} --games {result["games"]} --seed {result["seed"]}
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
    parser.add_argument("--notes", type=Path, help="a Markdown file appended to the card (the run's history)")
    args = parser.parse_args()
    notes = args.notes.read_text() if args.notes else ""  # before the minutes of work, not after
    torch.set_num_threads(1)
    config = args.checkpoint.parent / "config.json"  # the env the run trained in (train_agent.py writes it)
    env = json.loads(config.read_text())["env"] if config.exists() else "Breakout"
    slim_copy(args.checkpoint, args.dst, env)
    result = evaluate(args.dst, env, args.games, args.seed, deterministic=False, max_steps=27_000)
    result_det = evaluate(args.dst, env, args.games, args.seed, deterministic=True, max_steps=27_000)
    shipped = load_agent(args.dst).model
    result["trained_steps"] = int(shipped.num_timesteps)
    result["epsilon"] = float(getattr(shipped, "exploration_rate", 0.0))
    card = model_card(args.dst, args.checkpoint.parent, result, result_det, notes)
    args.dst.with_suffix(".md").write_text(card)
    args.dst.with_suffix(".eval.json").write_text(json.dumps(dict(sampled=result, argmax=result_det), indent=1))
    print(card)


if __name__ == "__main__":
    main()
