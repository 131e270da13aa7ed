"""What RISE and Integrated Gradients cost per step, as a ratio to Grad-CAM (for docs/methods.md).

    python scripts/cost_rise_ig.py [--agent agents/breakout_ppo.zip] [--repeats 7]

``Explainer.explain(obs)`` of each method is timed against Grad-CAM's on real Breakout
observations, batch 1 and 8, one torch thread, in rounds whose order rotates (as
``benchmark.interleaved`` does, but one explainer open at a time); the ratio is taken round by
round and printed as median (quartiles), with the median ms per call. Score-CAM and perturbation
saliency are timed beside them for scale.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import fmt_ratio, markdown_table, paired_ratio  # noqa: E402

from rlcam import ig, rise  # noqa: E402
from rlcam.agents import load_agent  # noqa: E402
from rlcam.envs import make_env  # noqa: E402
from rlcam.explainer import Explainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("gradcam", "rise", "ig", "scorecam", "perturbation")


def observations(count: int, seed: int = 0) -> np.ndarray:
    """``(count, 4, 84, 84)`` uint8 Breakout observations from a random-action rollout."""
    venv, _ = make_env("Breakout", n_envs=1, seed=seed)
    rng = np.random.default_rng(seed)
    obs, batch = venv.reset(), []
    for _ in range(count * 4):
        obs, *_ = venv.step(rng.integers(0, 4, size=1))
        batch.append(obs[0])
    venv.close()
    return np.stack(batch[::4])


def rounds(agent, inputs: list[np.ndarray], repeats: int, calls: int = 2) -> dict[str, list[float]]:
    """Seconds per ``explain`` call of each method, one sample per round, the order rotating.

    Each method's explainer is open only during its own block (two open explainers on one policy
    would each hook the layer, and one's capture hook cuts the other's graph from the input); one
    untimed call after opening warms its caches.
    """
    explainers = {m: Explainer(agent, method=m) for m in METHODS}
    samples: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats):
        order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
        for m in order:
            with explainers[m] as ex:
                ex.explain(inputs[0])
                started = time.perf_counter()
                for i in range(calls):
                    ex.explain(inputs[(r * calls + i) % len(inputs)])
                samples[m].append((time.perf_counter() - started) / calls)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent", type=Path, default=REPO / "agents" / "breakout_ppo.zip")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent = load_agent(args.agent)
    obs = observations(16)
    print(
        f"RISE {rise.MASKS} masks at {rise.CELLS}x{rise.CELLS} cells; IG {ig.STEPS} steps; load {os.getloadavg()[0]:.2f}"
    )
    for batch in (1, 8):
        inputs = [obs[i : i + batch] for i in range(0, len(obs) - batch + 1, batch)]
        samples = rounds(agent, inputs, args.repeats)
        rows = [
            [m, f"{1000 * float(np.median(samples[m])):.1f}", fmt_ratio(paired_ratio(samples, m, "gradcam"))]
            for m in METHODS
        ]
        print(f"\nbatch {batch}")
        print(markdown_table(["method", "ms per call", "x gradcam, median (p25-p75)"], rows))
    print(f"\nload at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
