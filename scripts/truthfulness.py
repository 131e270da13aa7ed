"""How truthful is each explanation method? One command measures it and writes the table into docs/methods.md.

    nice -n 10 python scripts/truthfulness.py --breakout-agent agents/breakout_ppo.zip

1. Pointing, on a known-attention env: a PPO agent trained on ``rlcam.toyenv:FindTarget-v0``
   (``agents/toy_findtarget_ppo.zip``, trained by ``scripts/train_toy.py`` when missing), per
   method and placement: share of frames whose map peak lies within 4 and 8 px of the target's
   centre, and share whose peak lies nearer the distractor than the target.
2. Sanity (Adebayo et al.): ``rlcam.sanity.sanity`` on the toy agent; the lowest mean rank
   correlation over the cascade, and the lowest over the stages after the explained layer.
3. Deletion, on a Breakout PPO agent: blur the top-k% pixels of the map (k = 5..50%) and follow the
   probability of the action the agent chose, relative to the intact frame; AUC over k (lower: the
   map found what the decision rests on), beside the same curve for random smooth maps.
4. Cost: median time of ``explain`` at batch 1, one thread, over SB3 ``predict``'s, timed in turns.

Rows: every method in ``rlcam.cam.METHODS`` at the default layer, plus Grad-CAM of the contrast with
the runner-up action, LayerCAM at the first conv block, and a random map.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlcam.agents import load_agent  # noqa: E402
from rlcam.cam import METHODS  # noqa: E402
from rlcam.explainer import Explainer  # noqa: E402
from rlcam.faithfulness import deletion, policy_scores, random_maps, write_block  # noqa: E402
from rlcam.sanity import rollout_observations, sanity  # noqa: E402
from rlcam.toyenv import FindTarget  # noqa: E402

PLACEMENTS = ("bilinear", "rf")


@dataclass
class Row:
    label: str
    method: str | None  # None: a model-blind baseline
    layer: str | None = None
    baseline: str | None = None  # "random" smooth maps, or the input's "intensity"
    contrast: bool = False  # target: contrast with the runner-up action
    results: dict = field(default_factory=dict)


def rows() -> list[Row]:
    out = [Row(name, name) for name in METHODS]
    out.append(Row("gradcam, contrast with runner-up", "gradcam", contrast=True))
    out.append(Row("layercam @ cnn.1 (20x20)", "layercam", layer="features_extractor.cnn.1"))
    out.append(Row("input intensity (model-blind baseline)", None, baseline="intensity"))
    out.append(Row("random map (baseline)", None, baseline="random"))
    return out


# -- maps ------------------------------------------------------------------------------------------


def maps_for(agent, obs: np.ndarray, row: Row, placement: str, rng: np.random.Generator, batch: int = 50):
    """``(N, H, W)`` maps on the input grid for ``row``, and the actions explained."""
    if row.method is None:
        with Explainer(agent) as ex:
            actions = np.concatenate([ex.explain(obs[i : i + batch]).actions for i in range(0, len(obs), batch)])
        if row.baseline == "intensity":
            return obs.astype(np.float32).sum(1), actions
        return random_maps(len(obs), obs.shape[-1], rng), actions
    if not row.contrast:
        with Explainer(agent, method=row.method, layer=row.layer, placement=placement) as ex:
            parts = [ex.explain(obs[i : i + batch]) for i in range(0, len(obs), batch)]
        return np.concatenate([p.cam_input for p in parts]), np.concatenate([p.actions for p in parts])
    with Explainer(agent) as ex:
        chosen = [ex.explain(obs[i : i + batch]) for i in range(0, len(obs), batch)]
    actions = np.concatenate([c.actions for c in chosen])
    values = np.concatenate([c.action_values for c in chosen]).copy()
    values[np.arange(len(obs)), actions] = -np.inf
    runner_up = values.argmax(1)
    maps = np.zeros((len(obs), *obs.shape[-2:]), np.float32)
    for other in np.unique(runner_up):
        idx = np.flatnonzero(runner_up == other)
        with Explainer(agent, method=row.method, target=f"contrast:{other}", placement=placement) as ex:
            for i in range(0, len(idx), batch):
                part = idx[i : i + batch]
                maps[part] = ex.explain(obs[part], actions=actions[part]).cam_input
    return maps, actions


# -- 1. pointing -----------------------------------------------------------------------------------


def toy_frames(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``obs (n, 3, 84, 84)`` as the agent sees them, target and distractor centres ``(n, 2)``."""
    env = FindTarget()
    frame, _ = env.reset(seed=seed)
    obs, targets, distractors = [], [], []
    for _ in range(n):
        obs.append(frame.transpose(2, 0, 1))  # channel-last -> channel-first, as SB3's VecTransposeImage
        targets.append(env.target_centre())
        distractors.append(env.distractor_centre())
        frame, _, terminated, truncated, _ = env.step(0)  # every step shows a fresh frame
        if terminated or truncated:
            frame, _ = env.reset()
    return np.stack(obs), np.array(targets), np.array(distractors)


def untrained_agent(seed: int, directory: Path):
    """A freshly initialised PPO CnnPolicy for FindTarget: the control for pointing."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("rlcam.toyenv:FindTarget-v0", n_envs=1, seed=seed)
    path = directory / "untrained_findtarget_ppo.zip"
    PPO("CnnPolicy", venv, seed=seed, device="cpu").save(path)
    venv.close()
    return load_agent(path)


def pointing(maps: np.ndarray, targets: np.ndarray, distractors: np.ndarray) -> dict:
    flat = maps.reshape(len(maps), -1)
    peak = np.stack(np.unravel_index(flat.argmax(1), maps.shape[1:]), axis=1).astype(float)
    to_target = np.linalg.norm(peak - targets, axis=1)
    to_distractor = np.linalg.norm(peak - distractors, axis=1)
    return {
        "at4": float((to_target <= 4).mean()),
        "at8": float((to_target <= 8).mean()),
        "distractor": float((to_distractor < to_target).mean()),
    }


# -- 2. sanity -------------------------------------------------------------------------------------


def sanity_row(agent, obs: np.ndarray, row: Row) -> dict | None:
    if row.baseline == "intensity":  # blind to the model: the same map at every stage, by construction
        return {"lowest": 1.0, "head": 1.0, "passed": False, "stages": []}
    if row.method is None:
        return None
    target = None
    if row.contrast:  # one fixed contrast per run: the frames whose runner-up is the commonest one
        with Explainer(agent) as ex:
            got = ex.explain(obs)
        values = got.action_values.copy()
        values[np.arange(len(obs)), got.actions] = -np.inf
        runner_up = values.argmax(1)
        other = int(np.bincount(runner_up).argmax())
        obs = obs[runner_up == other]
        target = f"contrast:{other}"
    result = sanity(agent, obs, target=target, layer=row.layer, method=row.method)
    return {
        "lowest": result.lowest.correlation,
        "head": result.head_lowest,
        "passed": result.passed,
        "stages": [(s.randomised, round(s.correlation, 3)) for s in result.stages],
    }


# -- 3. deletion: rlcam.faithfulness.deletion ------------------------------------------------------


# -- 4. cost ---------------------------------------------------------------------------------------


def cost_ratio(agent, obs1: np.ndarray, row: Row, budget_s: float = 4.0) -> float | None:
    """Median over turns of (explain time / predict time), batch 1."""
    if row.method is None:
        return None
    target = "contrast:0" if row.contrast else None
    ratios = []
    with Explainer(agent, method=row.method, layer=row.layer, target=target) as ex:
        ex.explain(obs1)
        agent.model.predict(obs1, deterministic=True)
        started = time.perf_counter()
        while len(ratios) < 5 or (time.perf_counter() - started < budget_s and len(ratios) < 200):
            t0 = time.perf_counter()
            for _ in range(5):
                agent.model.predict(obs1, deterministic=True)
            t1 = time.perf_counter()
            ex.explain(obs1)
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / ((t1 - t0) / 5))
    return float(statistics.median(ratios))


# -- the table -------------------------------------------------------------------------------------


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(all_rows: list[Row]) -> str:
    lines = [
        "| method | pointing @4px (bilinear / rf) | @8px (bilinear / rf) | distractor picked (bilinear / rf) "
        "| @4px, untrained agent (bilinear) | sanity: lowest / head correlation | deletion AUC (random maps) "
        "| cost x predict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in all_rows:
        r = row.results
        p = {pl: r["pointing"][pl] for pl in PLACEMENTS}
        s = r.get("sanity")
        san = "-" if s is None else f"{s['lowest']:+.2f} / {s['head']:+.2f} {'pass' if s['passed'] else 'FAIL'}"
        d = r.get("deletion")
        dele = "-" if d is None else f"{d['auc']:.3f} ({r['deletion_random']:.3f})"
        cost = "-" if r.get("cost") is None else f"{r['cost']:.1f}"
        lines.append(
            f"| {row.label} | {pct(p['bilinear']['at4'])} / {pct(p['rf']['at4'])} "
            f"| {pct(p['bilinear']['at8'])} / {pct(p['rf']['at8'])} "
            f"| {pct(p['bilinear']['distractor'])} / {pct(p['rf']['distractor'])} | {pct(r['untrained_at4'])} "
            f"| {san} | {dele} | {cost} |"
        )
    return "\n".join(lines)


def shown(path: Path) -> Path:
    """``path`` relative to the repository when inside it."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def newest_checkpoint() -> Path | None:
    found = sorted((ROOT / "runs" / "ppo_breakout").glob("ckpt_*_steps.zip"), key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy-agent", type=Path, default=ROOT / "agents" / "toy_findtarget_ppo.zip")
    parser.add_argument("--breakout-agent", type=Path, default=ROOT / "agents" / "breakout_ppo.zip")
    parser.add_argument("--toy-frames", type=int, default=500, help="frames for pointing (default 500)")
    parser.add_argument("--untrained-frames", type=int, default=200, help="frames for the untrained control")
    parser.add_argument("--sanity-frames", type=int, default=32)
    parser.add_argument("--breakout-steps", type=int, default=200, help="rollout steps; every 4th frame is used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "methods.md")
    parser.add_argument("--json", type=Path, help="also write every number (curves, stages) as JSON")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]  # other work on the machine moves the cost column

    if not args.toy_agent.exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        import train_toy

        print(f"{args.toy_agent} missing: training it", flush=True)
        if train_toy.main(["--out", str(args.toy_agent)]) != 0:
            return 1
    toy = load_agent(args.toy_agent)
    scratch = tempfile.TemporaryDirectory()
    untrained = untrained_agent(args.seed, Path(scratch.name))
    breakout_path = args.breakout_agent
    if not breakout_path.exists():
        breakout_path = newest_checkpoint()
        if breakout_path is None:
            print(f"no Breakout agent: {args.breakout_agent} missing and no checkpoint in runs/ppo_breakout")
            return 1
        print(f"{args.breakout_agent} missing: using the newest checkpoint {breakout_path}", flush=True)
    breakout = load_agent(breakout_path)

    obs, targets, distractors = toy_frames(args.toy_frames, args.seed)
    correct = (targets[:, 1] + 0.5 >= 42).astype(int)
    rng = np.random.default_rng(args.seed)
    breakout_obs = rollout_observations(breakout, "Breakout", args.breakout_steps, args.seed)[::4]
    _, breakout_actions = maps_for(breakout, breakout_obs, Row("actions", None, baseline="random"), "bilinear", rng)
    probs = policy_scores(breakout, "prob")
    random_deletion = deletion(probs, breakout_obs, random_maps(len(breakout_obs), 84, rng), breakout_actions, rng)
    all_rows = rows()
    accuracy = None
    for row in all_rows:
        t = time.perf_counter()
        row.results["pointing"] = {}
        for placement in PLACEMENTS:
            if placement != PLACEMENTS[0] and (row.method is None or row.method == "perturbation"):
                # no layer grid to place: the probe grid is placed at its centres either way
                row.results["pointing"][placement] = row.results["pointing"][PLACEMENTS[0]]
                continue
            maps, actions = maps_for(toy, obs, row, placement, np.random.default_rng(args.seed))
            accuracy = float((actions == correct).mean())
            row.results["pointing"][placement] = pointing(maps, targets, distractors)
        maps, _ = maps_for(untrained, obs[: args.untrained_frames], row, "bilinear", np.random.default_rng(args.seed))
        n = args.untrained_frames
        row.results["untrained_at4"] = pointing(maps, targets[:n], distractors[:n])["at4"]
        row.results["sanity"] = sanity_row(toy, obs[: args.sanity_frames], row)
        if row.baseline == "random":
            row.results["deletion"] = random_deletion
        else:
            maps, actions = maps_for(breakout, breakout_obs, row, "bilinear", rng)
            assert (actions == breakout_actions).all()
            row.results["deletion"] = deletion(probs, breakout_obs, maps, actions, rng)
        row.results["deletion_random"] = random_deletion["auc"]
        row.results["cost"] = None if args.skip_cost else cost_ratio(breakout, breakout_obs[:1], row)
        print(
            f"{row.label}: {json.dumps({k: v for k, v in row.results.items() if k != 'sanity'})} "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )

    text = table(all_rows)
    minutes = (time.perf_counter() - started) / 60
    note = (
        f"Toy agent `{shown(args.toy_agent)}` "
        f"(deterministic accuracy {100 * accuracy:.1f}% on the {args.toy_frames} pointing frames); "
        f"sanity on {args.sanity_frames} of them; the untrained control is a freshly initialised agent of the same "
        f"architecture (seed {args.seed}) on the first {args.untrained_frames}. Deletion and cost on "
        f"`{shown(breakout_path)}` "
        f"{'' if breakout_path == args.breakout_agent else f'(the newest checkpoint: {shown(args.breakout_agent)} is missing) '}"
        f"({len(breakout_obs)} frames, every 4th of {args.breakout_steps} deterministic steps, seed {args.seed}). "
        f"Cost: batch 1, one torch thread, median over turns, on this machine (load average {load_at_start:.2f} at the start). "
        f"Written by `python scripts/truthfulness.py` in {minutes:.0f} min."
    )
    print(text)
    print(note)
    write_block(args.docs, "truthfulness", f"{text}\n\n{note}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in all_rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
