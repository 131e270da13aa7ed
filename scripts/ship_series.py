"""Ship checkpoints of one training run into agents/series/: small zips plain SB3 loads, each scored.

    python scripts/ship_series.py runs/a2c_breakout_s1 --steps 200000 500000 1000000 2000000 \\
        --out agents/series --games 10 --seed 100

Each ``<run-dir>/ckpt_<N>_steps.zip`` becomes ``<out>/<algo>_breakout_<N>.zip`` slimmed as
``scripts/ship_agent.py`` slims (fresh optimizer, no rollout buffer, members deflated) and, with
``--half`` (default), its weights stored as float16: SB3's ``load`` copies them into the float32
policy, so the file is half the size and loads everywhere a float32 one does. The rounding moves
weights by at most 2^-11 of their size; the argmax actions of the rounded copy are compared with the
checkpoint's on real observations and their agreement goes into the card. Every shipped file is then
scored with ``scripts/evaluate_agent.py``'s protocol (argmax and sampled actions), and
``<out>/series.json`` and the card ``<out>/README.md`` list each one's step, score and size; a later
call for more steps of the same run adds them to the list.
Scores are of the shipped file, not of the float32 checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_agent import evaluate  # noqa: E402
from ship_agent import _deflate, slim_copy  # noqa: E402

from rlcam.agents import algo_class, load_agent  # noqa: E402
from rlcam.envs import make_env  # noqa: E402


def halve(path: Path) -> None:
    """Store ``path``'s policy weights as float16 (SB3 loads them into its float32 policy)."""
    agent = load_agent(path, trust=True)
    model = agent.model
    model.policy.half()
    model.policy.optimizer = model.policy.optimizer_class(
        model.policy.parameters(), lr=1e-4, **model.policy.optimizer_kwargs
    )
    model.save(path)
    _deflate(path)


def action_agreement(src: Path, dst: Path, algo: str, steps: int = 300) -> float:
    """Share of argmax actions the shipped copy and the checkpoint agree on (4 envs, the checkpoint acting)."""
    cls = algo_class(algo)
    original, shipped = cls.load(src, device="cpu"), cls.load(dst, device="cpu")
    venv, _ = make_env("Breakout", n_envs=4, seed=0)
    obs = venv.reset()
    same = []
    for _ in range(steps):
        a, _ = original.predict(obs, deterministic=True)
        b, _ = shipped.predict(obs, deterministic=True)
        same.append(a == b)
        obs, *_ = venv.step(a)
    venv.close()
    return float(np.mean(same))


def card(rows: list[dict], run_dir: Path, games: int, seed: int) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    lines = [
        "# agents/series: checkpoints of one Breakout training run",
        "",
        f"{config['algo'].upper()} on `{config['env']}` (settings of `scripts/train_agent.py --algo {config['algo']}`, "
        f"seed {config['seed']}, {config['n_envs']} envs), checkpoints of the same run from weak to strong, for "
        "`rlcam compare`, `rlcam audit` and the discernment study (docs/discernment.md).",
        "",
        f"Scores: `scripts/evaluate_agent.py` protocol, {games} full games, env i seeded {seed} + i, "
        "of the shipped file (float16 weights where the size column says so).",
        "",
        "| file | step | argmax score | sampled score | argmax agreement with the float32 checkpoint | size | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['file']}` | {r['step']:,} | {r['argmax']['mean']:.1f} +- {r['argmax']['std']:.1f} | "
            f"{r['sampled']['mean']:.1f} +- {r['sampled']['std']:.1f} | {r['agreement']:.3f} | "
            f"{r['size_mb']:.1f} MB{' (float16)' if r['half'] else ''} | `{r['sha256'][:12]}` |"
        )
    total = sum(r["size_mb"] for r in rows)
    lines += [
        "",
        f"Total: {total:.1f} MB. Per-game scores are in `series.json`.",
        "",
        "Reproduce:",
        "",
        "```",
        f"python scripts/train_agent.py --algo {config['algo']} --env {config['env']} --steps {config['steps']} "
        f"--seed {config['seed']} --run-dir {run_dir}",
        f"python scripts/ship_series.py {run_dir} --steps {' '.join(str(r['step']) for r in rows)} "
        f"--games {games} --seed {seed}",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="checkpoint steps to ship")
    parser.add_argument("--out", type=Path, default=Path("agents/series"))
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--full", dest="half", action="store_false", help="keep float32 weights")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = json.loads((args.run_dir / "config.json").read_text())
    missing = [s for s in args.steps if not (args.run_dir / f"ckpt_{s}_steps.zip").exists()]
    if missing:
        sys.exit(f"ship_series: {args.run_dir} has no checkpoint at step(s) {missing}.")
    args.out.mkdir(parents=True, exist_ok=True)
    index = args.out / "series.json"
    kept = []  # rows shipped by an earlier call for other steps of the same run (a series grows with its run)
    if index.exists():
        before = json.loads(index.read_text())
        if before["run"] != config or (before["games"], before["seed"]) != (args.games, args.seed):
            sys.exit(f"ship_series: {index} lists another run or protocol; ship into another --out.")
        kept = [r for r in before["rows"] if r["step"] not in args.steps]
    rows = []
    for step in sorted(args.steps):
        src = args.run_dir / f"ckpt_{step}_steps.zip"
        dst = args.out / f"{config['algo']}_breakout_{step}.zip"
        slim_copy(src, dst)
        if args.half:
            halve(dst)
        row = dict(file=dst.name, step=step, half=args.half)
        row["agreement"] = action_agreement(src, dst, config["algo"])
        for mode, deterministic in (("argmax", True), ("sampled", False)):
            result = evaluate(dst, "Breakout", args.games, args.seed, deterministic, 27_000)
            row[mode] = {k: result[k] for k in ("mean", "std", "scores", "lengths", "games_hitting_cap")}
        row["size_mb"] = dst.stat().st_size / 1e6
        row["sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()
        rows.append(row)
        print(
            f"{dst}: argmax {row['argmax']['mean']:.1f}, sampled {row['sampled']['mean']:.1f}, "
            f"agreement {row['agreement']:.3f}, {row['size_mb']:.1f} MB",
            flush=True,
        )
    rows = sorted(kept + rows, key=lambda r: r["step"])
    index.write_text(json.dumps(dict(run=config, games=args.games, seed=args.seed, rows=rows), indent=1))
    (args.out / "README.md").write_text(card(rows, args.run_dir, args.games, args.seed))


if __name__ == "__main__":
    main()
