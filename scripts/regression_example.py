"""Rerun the worked example of docs/regression.md on the shipped agent and print it as the docs show it.

    python scripts/regression_example.py [--steps 300] [--workdir /tmp/rlcam-regression]

Records a baseline of ``agents/breakout_ppo.zip``, builds a damaged copy (its last conv layer's
weights shuffled, seed 0) and checks it, the shipped agent itself and the 100k-step checkpoint in
``tests/data`` against the baseline, plus a missing and a truncated baseline; then ``rlcam sanity``.
Each command's output and exit code are printed in a ``$ command`` transcript to paste into the docs.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlcam.agents import load_agent  # noqa: E402

SHIPPED = Path("agents/breakout_ppo.zip")
EARLY = Path("tests/data/breakout_ppo_100k.zip")


def damaged_copy(src: Path, dst: Path) -> Path:
    """``src`` with its last conv layer's weights shuffled (same values, wrong places; seed 0), saved
    to ``dst``: the damage docs/regression.md and tests/test_shipped_agent.py check against."""
    agent = load_agent(src)
    network = "quantile_net." if agent.algo == "qrdqn" else ""
    conv = agent.policy.get_submodule(f"{network}features_extractor.cnn.4")
    with torch.no_grad():
        flat = conv.weight.flatten()
        order = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))
        conv.weight.copy_(flat[order].view_as(conv.weight))
    agent.model.save(dst)
    return dst


def run(shown: str, argv: list[str], cwd: Path) -> None:
    """Run ``argv`` in ``cwd``; print ``$ shown``, its output and ``exit N``."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    print(f"$ {shown}")
    banner = ("A.L.E: ", "[Powered by Stella]")  # ALE's start-up lines on stderr
    err = "".join(line for line in done.stderr.splitlines(keepends=True) if not line.startswith(banner))
    text = (done.stdout + err).rstrip()
    if text:
        print(text)
    print(f"exit {done.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlcam-regression"))
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rlcam = [sys.executable, "-m", "rlcam.cli"]
    base = work / "base.npz"
    subprocess.run(
        [*rlcam, "record", "--agent", str(ROOT / SHIPPED), "--steps", str(args.steps), "--seed", "0", "--save-obs"]
        + ["--out", str(work / "base.mp4"), "--overwrite"],
        check=True,
        capture_output=True,
    )
    damaged_copy(ROOT / SHIPPED, work / "damaged.zip")
    (work / "broken.npz").write_bytes(base.read_bytes()[:5000])
    # Copies beside the baseline, so the transcript shows short relative paths.
    (work / "breakout_ppo.zip").write_bytes((ROOT / SHIPPED).read_bytes())
    (work / "breakout_ppo_100k.zip").write_bytes((ROOT / EARLY).read_bytes())
    for agent, baseline in [
        ("breakout_ppo.zip", "base.npz"),
        ("damaged.zip", "base.npz"),
        ("breakout_ppo_100k.zip", "base.npz"),
        ("breakout_ppo.zip", "nothere.npz"),
    ]:
        run(
            f"rlcam check --agent {agent} --baseline {baseline}",
            [*rlcam, "check", "--agent", agent, "--baseline", baseline],
            work,
        )
    run(
        "head -c 5000 base.npz > broken.npz; rlcam check --agent breakout_ppo.zip --baseline broken.npz",
        [*rlcam, "check", "--agent", "breakout_ppo.zip", "--baseline", "broken.npz"],
        work,
    )
    print()
    sanity = ["sanity", "--agent", str(SHIPPED), "--steps", "64"]
    run("rlcam " + shlex.join(sanity), [*rlcam, *sanity], ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
