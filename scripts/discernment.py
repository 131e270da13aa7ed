"""Which audit metrics tell a stronger checkpoint from a weaker one? The Grad-CAM paper's human study, for RL.

    python scripts/discernment.py --series agents/series --seeds 0-2 --workers 2 --out docs/discernment.md

1. ``rlcam audit`` (its Python API) plays every checkpoint listed in ``<series>/series.json`` with
   each seed, one full game per job, sampled actions (the audit's default), and measures each run
   (``audit/results.csv``'s columns: docs/audit.md). ``--extra`` adds agents of other runs (with
   their ``<stem>.eval.json`` beside them, as ``scripts/ship_agent.py`` writes) to a second table.
2. A checkpoint's *strength* is its mean score in the series card: 10 full games of sampled actions
   on env seeds 100-109, games the audit does not play (its seeds are 0, 1, ...), so a metric is
   never ranked against the games it was measured on.
3. Per metric: the Spearman rank correlation over checkpoints between the metric's mean over seeds
   and the strength; beside it the range of the same correlation taken seed by seed (the seeds'
   spread), and a two-sided permutation p-value: the share of all orderings of the checkpoints'
   strengths (every one of the n! when n <= 8, else 20,000 drawn) whose |rho| is at least the
   observed one.
4. Writes the table between markers in ``--out``, a figure (each metric against strength) to
   ``docs/img/discernment.png``, and prints both.

Spearman and the permutation test are written out here (ranks with ties averaged, a Pearson
correlation of ranks, exact enumeration): a dozen lines, where scipy would be a new dependency.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def block_name(method: str) -> str:
    """The name of the results block in --out (``rlcam.faithfulness.write_block``): one per map method."""
    return "discernment" if method == "gradcam" else f"discernment-{method}"


# Columns that describe attention or behaviour (not bookkeeping); the ones present are ranked.
METRICS = (
    "return",
    "steps",
    "action_entropy",
    "top_action_share",
    "policy_entropy",
    "map_entropy",
    "map_peak_share",
    "map_zero_share",
    "map_mass",
    "attn_ball",
    "attn_ball_lift",
    "attn_paddle",
    "attn_paddle_lift",
)
MEANING = {
    "return": "the audit's own game score (same games as the metrics; not the strength used here)",
    "steps": "agent steps of the game",
    "action_entropy": "entropy of the actions taken",
    "top_action_share": "share of the most frequent action",
    "policy_entropy": "entropy of the policy's probabilities",
    "map_entropy": "entropy of the map (1 = flat)",
    "map_peak_share": "largest cell's share of the map",
    "map_zero_share": "share of all-zero maps",
    "map_mass": "raw map mass (score units)",
    "attn_ball": "map share within 10 px of the ball",
    "attn_ball_lift": "ball share over a flat map's",
    "attn_paddle": "map share within 10 px of the paddle",
    "attn_paddle_lift": "paddle share over a flat map's",
}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the ranks; nan when either side is constant."""
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def permutation_p(x, y, draws: int = 20_000, seed: int = 0) -> float:
    """Two-sided p of Spearman's rho under "the order of y is unrelated to x": exact for n <= 8."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    observed = abs(spearman(x, y))
    if math.isnan(observed):
        return float("nan")
    if len(y) <= 8:
        orders = (list(p) for p in itertools.permutations(range(len(y))))
        total = math.factorial(len(y))
    else:
        rng = np.random.default_rng(seed)
        orders = (rng.permutation(len(y)) for _ in range(draws))
        total = draws
    hits = sum(abs(spearman(x, y[list(order)])) >= observed - 1e-12 for order in orders)
    return hits / total


def read_results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if row["status"] == "ok"]


def table(rows: list[dict], strength: dict[str, float]) -> tuple[list[dict], list[str]]:
    """Per metric: rho of the seed mean, rho per seed (range), permutation p; over the checkpoints in ``strength``."""
    labels = [label for label in strength if any(r["checkpoint"] == label for r in rows)]
    seeds = sorted({int(r["seed"]) for r in rows})
    score = np.array([strength[label] for label in labels])
    out = []
    for metric in METRICS:
        if metric not in rows[0]:
            continue
        cell = {(r["checkpoint"], int(r["seed"])): r[metric] for r in rows}
        values = np.full((len(labels), len(seeds)), np.nan)
        for i, label in enumerate(labels):
            for j, seed in enumerate(seeds):
                text = cell.get((label, seed), "")
                values[i, j] = float(text) if text not in ("", None) else np.nan
        counts = np.isfinite(values).sum(axis=1)
        means = np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)
        keep = np.isfinite(means)
        if keep.sum() < 3:
            continue
        per_seed = [
            spearman(values[np.isfinite(values[:, j]), j], score[np.isfinite(values[:, j])])
            for j in range(len(seeds))
            if np.isfinite(values[:, j]).sum() >= 3
        ]
        per_seed = [r for r in per_seed if not math.isnan(r)]
        out.append(
            dict(
                metric=metric,
                rho=spearman(means[keep], score[keep]),
                p=permutation_p(means[keep], score[keep]),
                seed_min=min(per_seed) if per_seed else float("nan"),
                seed_max=max(per_seed) if per_seed else float("nan"),
                n=int(keep.sum()),
                means=means.tolist(),
                lo=np.nanmin(np.where(np.isfinite(values), values, np.inf), axis=1).tolist(),
                hi=np.nanmax(np.where(np.isfinite(values), values, -np.inf), axis=1).tolist(),
            )
        )
    return out, labels


def markdown(result: list[dict], labels: list[str], strength: dict[str, float], title: str) -> str:
    lines = [
        f"**{title}** - checkpoints in order of strength: "
        + ", ".join(f"`{label}` {strength[label]:.1f}" for label in sorted(labels, key=lambda k: strength[k])),
        "",
        "| metric | what it is | Spearman rho vs strength (seed means) | rho per seed (min to max) | permutation p | checkpoints |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(result, key=lambda r: -abs(r["rho"]) if not math.isnan(r["rho"]) else 0):
        if math.isnan(r["rho"]):  # no ranking: the metric is the same for every checkpoint
            same = next(v for v in r["means"] if math.isfinite(v))
            lines.append(
                f"| `{r['metric']}` | {MEANING.get(r['metric'], '')} | none: {same:.3g} for every checkpoint | | | {r['n']} |"
            )
            continue
        lines.append(
            f"| `{r['metric']}` | {MEANING.get(r['metric'], '')} | {r['rho']:+.2f} | "
            f"{r['seed_min']:+.2f} to {r['seed_max']:+.2f} | {r['p']:.3f} | {r['n']} |"
        )
    return "\n".join(lines)


def figure(result: list[dict], labels: list[str], strength: dict[str, float], series: set[str], path: Path) -> None:
    """Each metric against strength (log axis): the run's checkpoints joined in training order, other
    agents as open squares, a bar from the lowest to the highest seed's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in result if r["metric"] != "return" and not math.isnan(r["rho"])]  # not the constant ones
    cols = 4
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    x = np.array([strength[label] for label in labels])
    run = np.array([label in series for label in labels])
    for ax, r in zip(axes.flat, shown, strict=False):
        mean, lo, hi = (np.array(r[k], np.float64) for k in ("means", "lo", "hi"))
        finite = np.isfinite(mean)
        ax.vlines(x[finite], lo[finite], hi[finite], color="#9ca3af", lw=1.2)
        order = np.argsort(np.where(run & finite, x, np.inf))[: int((run & finite).sum())]
        ax.plot(x[order], mean[order], "o-", color="#c2410c", ms=5, lw=1, label="A2C run")
        other = ~run & finite
        ax.plot(x[other], mean[other], "s", mfc="white", mec="#1d4ed8", ms=5, label="other agents")
        ax.set_xscale("log")
        ax.set_title(f"{r['metric']}\nrho {r['rho']:+.2f}, p {r['p']:.3f} (n {r['n']})", fontsize=9)
        ax.set_xlabel("strength: mean score, seeds 100-109", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_audit(zips: list[Path], seeds: list[int], workers: int, out: Path, method: str, max_steps: int) -> Path:
    from rlcam import audit

    settings = audit.make_settings(env="Breakout", episodes=1, max_steps=max_steps, method=method)
    with audit.PoolExecutor(workers=workers) as pool:
        result = audit.audit(audit.checkpoints(zips), seeds, settings, out, pool, progress=False)
    print("\n".join(result.lines), flush=True)
    return out / "results.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=Path, default=ROOT / "agents" / "series")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="agents of other runs (zip + .eval.json)")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--audit-dir", type=Path, default=Path("audit_discernment"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "discernment.md")
    parser.add_argument("--figure", type=Path, help="default docs/img/discernment[_<method>].png")
    parser.add_argument("--method", default="gradcam", help="the audit's map method (its own results block)")
    parser.add_argument("--max-steps", type=int, default=10_000, help="agent steps per game at most (then cut)")
    args = parser.parse_args()
    from rlcam.audit import parse_seeds
    from rlcam.faithfulness import write_block

    series = json.loads((args.series / "series.json").read_text())
    zips = [args.series / r["file"] for r in series["rows"]]
    strength = {Path(r["file"]).stem: r["sampled"]["mean"] for r in series["rows"]}
    for extra in args.extra:
        zips.append(extra)
        strength[extra.stem] = json.loads(extra.with_suffix(".eval.json").read_text())["sampled"]["mean"]
    seeds = parse_seeds(args.seeds)
    rows = read_results(run_audit(zips, seeds, args.workers, args.audit_dir, args.method, args.max_steps))
    suffix = "" if args.method == "gradcam" else f"_{args.method}"
    note = f" ({args.method} maps" + (f", games cut at {args.max_steps} steps)" if args.max_steps < 10_000 else ")")
    args.figure = args.figure or ROOT / "docs" / "img" / f"discernment{suffix}.png"
    in_series = {Path(r["file"]).stem: strength[Path(r["file"]).stem] for r in series["rows"]}
    result, labels = table(rows, in_series)
    block = [
        markdown(
            result, labels, in_series, f"One run: {series['run']['algo'].upper()} seed {series['run']['seed']}{note}"
        ),
    ]
    if args.extra:
        everyone, all_labels = table(rows, strength)
        block += ["", markdown(everyone, all_labels, strength, f"Across runs: the series plus the other agents{note}")]
    block_text = "\n".join(block)
    if args.extra:  # every agent drawn; the rho in each panel's title is then the across-runs one
        figure(everyone, all_labels, strength, set(in_series), args.figure)
    else:
        figure(result, labels, in_series, set(in_series), args.figure)
    write_block(args.out, block_name(args.method), block_text)
    print(block_text)


if __name__ == "__main__":
    main()
