"""What explaining a step costs per policy family, next to SB3's own ``predict`` (issue 13).

    python scripts/benchmark_families.py [--quick] [--out docs/benchmarks.md]

For each family an untrained agent is built on 84x84 RGB observations (the discrete rows on
Breakout's 4x84x84 stack), and ``Explainer.explain(obs)`` (action + map, the default target) is
timed against ``model.predict(obs, deterministic=True)`` at batch 1 and 8, one torch thread,
interleaved in short rounds whose order rotates (``benchmark.interleaved``); the ratio is taken
round by round and reported as median (quartiles), from wall-clock time and, beside it, from the
thread's CPU time (which a busy machine's other work does not add to). ``predict`` runs on the
same model, inside ``Explainer.paused()`` (the open explainer's hooks idle). The table names the
path each explanation's gradient took (``Explainer.gradient_path``). For the critics' ``q``
targets a second table splits the cost: the actor's forward (what ``predict`` runs), the critics'
forward of the chosen action (what ``q`` adds), beside ``predict`` and ``explain``. The block
between the family markers in ``--out`` is rewritten.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import fmt_ratio, markdown_table, paired_ratio  # noqa: E402

from rlcam.api import as_agent  # noqa: E402
from rlcam.explainer import Explainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"
TARGET_RATIO = {"discrete": 1.0, "other": 1.3}


class Pixels(gym.Env):
    def __init__(self, obs_space, action_space):
        self.observation_space, self.action_space = obs_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def build(kind: str):
    import sb3_contrib
    import stable_baselines3 as sb3

    rgb = spaces.Box(0, 255, (3, 84, 84), np.uint8)
    stack = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    box = spaces.Box(-1.0, 1.0, (3,), np.float32)
    dict_obs = spaces.Dict({"image": rgb, "vector": spaces.Box(-1.0, 1.0, (8,), np.float32)})
    table = {
        "PPO Discrete (NatureCNN)": (sb3.PPO, "CnnPolicy", stack, spaces.Discrete(4), {}),
        "DQN (NatureCNN)": (sb3.DQN, "CnnPolicy", stack, spaces.Discrete(4), {"buffer_size": 8}),
        "PPO Box": (sb3.PPO, "CnnPolicy", rgb, box, {}),
        "PPO Box, gSDE": (sb3.PPO, "CnnPolicy", rgb, box, {"use_sde": True}),
        "SAC, mean:0": (sb3.SAC, "CnnPolicy", rgb, box, {"buffer_size": 8}),
        "SAC, q": (sb3.SAC, "CnnPolicy", rgb, box, {"buffer_size": 8}),
        "TD3, mean:0": (sb3.TD3, "CnnPolicy", rgb, box, {"buffer_size": 8}),
        "TQC, q": (sb3_contrib.TQC, "CnnPolicy", rgb, box, {"buffer_size": 8}),
        "A2C MultiDiscrete": (sb3.A2C, "CnnPolicy", rgb, spaces.MultiDiscrete([3, 3, 2]), {}),
        "RecurrentPPO": (sb3_contrib.RecurrentPPO, "CnnLstmPolicy", rgb, spaces.Discrete(4), {}),
        "PPO MultiInput": (sb3.PPO, "MultiInputPolicy", dict_obs, spaces.Discrete(4), {}),
    }
    cls, policy, obs_space, action_space, kwargs = table[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(policy, Pixels(obs_space, action_space), seed=0, device="cpu", **kwargs)
    target = "q" if kind.endswith(", q") else None
    return model, target, obs_space


def batches(obs_space, n: int, count: int = 8) -> list:
    rng = np.random.default_rng(0)
    if isinstance(obs_space, spaces.Dict):
        return [{k: _sample(s, n, rng) for k, s in obs_space.spaces.items()} for _ in range(count)]
    return [_sample(obs_space, n, rng) for _ in range(count)]


def _sample(space, n, rng):
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    return rng.uniform(-1, 1, (n, *space.shape)).astype(space.dtype)


def rounds(fns: dict, inputs: list, repeats: int, calls: int, warmup: int = 3) -> tuple[dict, dict]:
    """Seconds per call of each function, wall-clock and thread CPU time, one sample per round of
    ``calls`` calls each, the order rotating every round (as ``benchmark.interleaved``)."""
    names = list(fns)
    for name in names:
        for i in range(warmup):
            fns[name](inputs[i % len(inputs)])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            started, started_cpu = time.perf_counter(), time.thread_time()
            for i in range(calls):
                fn(inputs[i % len(inputs)])
            cpu[name].append((time.thread_time() - started_cpu) / calls)
            wall[name].append((time.perf_counter() - started) / calls)
    return wall, cpu


def measure(kind: str, n: int, repeats: int, calls: int) -> dict:
    model, target, obs_space = build(kind)
    inputs = batches(obs_space, n)
    recurrent = kind.startswith("Recurrent")
    with Explainer(as_agent(model), target=target) as explainer:
        state = {"s": None}

        def predict(obs):
            with explainer.paused():  # SB3's forward runs while the explainer's hooks are registered
                if recurrent:  # as a rollout calls it: the state carried
                    _, state["s"] = model.predict(obs, state=state["s"], deterministic=True)
                else:
                    model.predict(obs, deterministic=True)

        fns = {"predict": predict, "explain": explainer.explain}
        if target == "q":  # what the critics add: their forward of the chosen action, on their own extractor
            family = explainer.family

            def actor(obs):
                with explainer.paused(), torch.no_grad():
                    return family.forward(torch.as_tensor(obs))

            chosen = {}

            def critics_of_action(obs):
                key = id(obs)
                if key not in chosen:
                    chosen[key] = actor(obs).action_scores
                with explainer.paused(), torch.no_grad():
                    return family.critic_values(torch.as_tensor(obs), chosen[key])

            fns.update({"actor forward": actor, "critics forward": critics_of_action})
        wall, cpu = rounds(fns, inputs, repeats, calls)
        path = explainer.gradient_path
    return {
        "kind": kind,
        "n": n,
        "ratio": paired_ratio(wall, "explain", "predict"),
        "cpu_ratio": paired_ratio(cpu, "explain", "predict"),
        "samples": wall,
        "cpu": cpu,
        "path": path,
    }


def render(results: list[dict]) -> str:
    rows = []
    for r in results:
        limit = TARGET_RATIO["discrete" if "NatureCNN" in r["kind"] else "other"]
        verdict = "met" if r["ratio"][1] <= limit else "missed"
        predict_ms = np.median(r["samples"]["predict"]) * 1e3
        explain_ms = np.median(r["samples"]["explain"]) * 1e3
        rows.append(
            [
                r["kind"],
                r["n"],
                r["path"],
                f"{predict_ms:.2f}",
                f"{explain_ms:.2f}",
                fmt_ratio(r["ratio"]),
                fmt_ratio(r["cpu_ratio"]),
                f"<= {limit}",
                verdict,
            ]
        )
    headers = [
        "family / agent",
        "batch",
        "gradient",
        "predict ms",
        "explain ms",
        "explain / predict",
        "same, CPU time",
        "target",
        "",
    ]
    table = markdown_table(headers, rows)
    split = [r for r in results if "critics forward" in r["cpu"]]
    if not split:
        return table
    rows = []
    for r in split:
        for name in ("predict", "actor forward", "critics forward", "explain"):
            ms = np.median(r["cpu"][name]) * 1e3
            rows.append([r["kind"], r["n"], name, f"{ms:.2f}", fmt_ratio(paired_ratio(r["cpu"], name, "predict"))])
    headers = ["agent", "batch", "per call (CPU time)", "ms", "x predict"]
    return table + "\n\nWhere a critic target's time goes:\n\n" + markdown_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--note", default="", help="a sentence printed under the table (e.g. the machine's load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats, calls = (8, 5) if args.quick else (40, 5)
    load = os.getloadavg()
    kinds = [
        "PPO Discrete (NatureCNN)",
        "DQN (NatureCNN)",
        "PPO Box",
        "PPO Box, gSDE",
        "SAC, mean:0",
        "SAC, q",
        "TD3, mean:0",
        "TQC, q",
        "A2C MultiDiscrete",
        "RecurrentPPO",
        "PPO MultiInput",
    ]
    results = []
    for kind in kinds:
        for n in (1, 8):
            result = measure(kind, n, repeats, calls)
            print(f"{kind:28s} batch {n}: explain / predict {fmt_ratio(result['ratio'])}", flush=True)
            results.append(result)
    block = render(results)
    block += (
        f"\n\n`python scripts/benchmark_families.py{' --quick' if args.quick else ''}`: {repeats} rounds of {calls} calls"
        f" per function and batch; load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        f" ({os.cpu_count()} cores)."
    )
    if args.note:
        block += f" {args.note}"
    text = args.out.read_text() if args.out.exists() else ""
    generated = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Per policy family (issue 13)\n\n" + generated + "\n"
    args.out.write_text(text)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
