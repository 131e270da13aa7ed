"""Soak test: explain and write a trace for many steps; hooks and memory must stay flat.

    nice -n 10 python scripts/soak.py --agent agents/breakout_ppo.zip --steps 100000

Runs the same per-step path as ``rlcam record`` (Explainer -> VecEnv step -> StepWriter)
with the trace written to a temporary file and no video (encoding would only slow it
down; the video writer streams to ffmpeg, whose memory is its own). Every ``--every``
steps it prints the number of forward hooks on the policy and the process RSS; at the
end, RSS growth from the first report to the last, and the largest hook count seen.
Exit 1 when the hook count ever differs from 1 inside the explainer or from 0 after it,
or RSS grows by more than ``--max-growth-mb``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlcam.agents import load_agent
from rlcam.envs import action_names, make_env
from rlcam.explainer import Explainer
from rlcam.record import StepWriter
from rlcam.video import TraceWriter


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hook_count(policy) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in policy.modules())


def soak(agent_path: Path, env: str, steps: int, every: int, seed: int) -> tuple[float, int, int]:
    """Returns (RSS growth MB, most hooks seen inside, hooks left after)."""
    agent = load_agent(agent_path)
    venv, _ = make_env(env, n_envs=1, seed=seed)
    first_rss, most_hooks = None, 0
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        with Explainer(agent) as explainer, TraceWriter(Path(tmp) / "soak.npz", {"soak": True}) as trace:
            writer = StepWriter(explainer, action_names(venv), video=None, trace=trace)
            obs = venv.reset()
            for step in range(1, steps + 1):
                explained = explainer.explain(obs)
                next_obs, rewards, dones, infos = venv.step(explained.actions)
                writer.write(obs, None, explained, rewards, dones, infos)
                obs = next_obs
                if step % every == 0 or step == 1:
                    hooks = hook_count(agent.policy)
                    most_hooks = max(most_hooks, hooks)
                    rss = rss_mb()
                    first_rss = rss if first_rss is None else first_rss
                    rate = step / (time.time() - started)
                    print(f"step {step:>7}  hooks {hooks}  rss {rss:7.1f} MB  ({rate:.0f} steps/s)", flush=True)
            growth = rss_mb() - first_rss
        left = hook_count(agent.policy)
    venv.close()
    return growth, most_hooks, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", type=Path, default=Path("agents/breakout_ppo.zip"))
    parser.add_argument("--env", default="Breakout")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    growth, most, left = soak(args.agent, args.env, args.steps, args.every, args.seed)
    ok = most == 1 and left == 0 and growth <= args.max_growth_mb
    print(
        f"RSS growth {growth:+.1f} MB over {args.steps} steps; hooks inside at most {most}, after {left}: "
        f"{'OK' if ok else 'FAIL'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
