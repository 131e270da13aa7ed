"""How faithful is each explanation method on Atari agents, measured as published work measures it?
One command writes the tables into docs/methods.md (between the ``faithfulness`` markers).

    nice -n 10 python scripts/faithfulness.py agents/breakout_ppo.zip agents/breakout_qrdqn.zip [more.zip[@Game] ...]

Each agent is ``PATH`` or ``PATH@Game`` (the game is read from the file name when it names one that
``rlcam.objects`` knows, e.g. ``pong_ppo.zip``). Per agent, from seeded deterministic rollouts,
``--states`` observations (every ``--stride``-th step that has five steps of its episode before it):

1. deletion (``rlcam.faithfulness.deletion``, as ``scripts/truthfulness.py``);
2. insertion (Huber et al. 2022): black input, the map's pixels revealed 84 at a time;
3. XRL-Bench's AIM, PGI and PGU with the top / bottom ``--k`` pixels zeroed;
4. object interventions (Atrey et al. 2020, ``rlcam.interventions``): Spearman correlation over the
   states between the map's share within ``--radius`` px of an object and how far moving that object
   moves the policy's output;
5. the sanity check (``rlcam.sanity``, Adebayo et al.) on the first ``--sanity-states`` observations.

Rows: every method in ``rlcam.cam.METHODS`` and the extra rows of ``scripts/truthfulness.py``
(Grad-CAM of the contrast with the runner-up, LayerCAM at the first conv block, the input's
intensity), then three random baselines averaged over ``--draws`` maps per state: smooth random maps
(the ratios' reference), uniform noise per pixel (Huber et al.'s baseline) and uniform noise on the
pixels that are not black in some stacked frame, 0 elsewhere (zeroing, the perturbation of AIM, PGI,
PGU and insertion's black start, changes only those pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from truthfulness import Row, maps_for, rows, sanity_row, shown  # noqa: E402

from rlcam.agents import algo_title, load_agent  # noqa: E402
from rlcam.check import rank_correlation  # noqa: E402
from rlcam.errors import RlcamError  # noqa: E402
from rlcam.explainer import conv_layers  # noqa: E402
from rlcam.faithfulness import (  # noqa: E402
    TOP_K,
    aim,
    deletion,
    insertion,
    policy_scores,
    prediction_gap,
    random_maps,
    random_pixel_maps,
    write_block,
)
from rlcam.families import family_for  # noqa: E402
from rlcam.interventions import (  # noqa: E402
    Replayer,
    counterfactuals,
    frame_to_input,
    record,
    usable,
)
from rlcam.objects import OBJECTS, game_name, locator_for, share_near  # noqa: E402

DEFAULT_AGENTS = ("agents/breakout_ppo.zip", "agents/breakout_qrdqn.zip")
SMOOTH, PIXELS = "random map (baseline)", "random pixels (Huber et al.'s baseline)"
LIT = "random lit pixels (control: zeroing a black pixel changes nothing)"

# Published Breakout figures (their agents, not ours). Huber et al. 2022: insertion AUC of the Q-value,
# black substrate (belimmer/PerturbationSaliencyEvaluation, applications/atari/insertion_metric/results/
# Results_with_gray_occlsarfa/breakout_cleaned.csv, row black_insertion_qvals). XRL-Bench: the
# README's "Image states (Breakout)" leaderboard (fuxiAIlab/xrl-bench).
HUBER = {"occlusion": 1.99, "noise (Greydanus)": 3.04, "SARFA": 3.00, "RISE": 3.39, "LIME": (5.80, 7.48)}
HUBER_RANDOM = 2.13
XRL = {
    "DeepSHAP": (0.162, 1.748, 0.347),
    "GradientSHAP": (0.260, 1.755, 0.384),
    "Integrated Gradients": (0.292, 1.812, 0.364),
    "SARFA": (0.253, 1.225, 0.991),
    "perturbation saliency": (0.258, 1.370, 0.621),
}
OURS = {
    "noise (Greydanus)": "perturbation",
    "RISE": "rise",
    "Integrated Gradients": "ig",
    "perturbation saliency": "perturbation",
}


@dataclass
class AgentSpec:
    path: Path
    env: str


@dataclass
class States:
    """The observations measured and what the interventions found about them."""

    obs: np.ndarray  # (N, D, H, W)
    actions: np.ndarray  # (N,)
    centres: dict[str, np.ndarray]  # object -> (N, 2) centre on the input grid, NaN where not on screen
    importance: dict[str, np.ndarray]  # object -> (N,) mean L2 change of the scores, NaN: no counterfactual
    value_change: dict[str, np.ndarray]  # object -> (N,) mean |change| of the value
    info: dict = field(default_factory=dict)


def parse_agent(text: str) -> AgentSpec:
    path, _, env = text.partition("@")
    if not env:
        stem = Path(path).stem.lower()
        known = [g for g in OBJECTS if g.lower() in stem]
        if len(known) != 1:
            raise RlcamError(f"cannot tell which game {path} plays from its name; pass it as {path}@Game.")
        env = known[0]
    return AgentSpec(Path(path), env)


# -- states and interventions ----------------------------------------------------------------------


def gather(agent, env: str, n: int, stride: int, seed: int, rng: np.random.Generator) -> States:
    """``n`` usable observations from seeded rollouts (seed, seed + 1, ...) and their counterfactuals."""
    depth = agent.model.observation_space.shape[0]
    picked_obs, picked_actions, cfs, checked = [], [], [], {"states": 0, "reference_failed": 0}
    centres: dict[str, list] = {}
    replayer = None
    for k in range(8):
        if len(picked_obs) >= n:
            break
        rec = record(agent, env, steps=stride * (n - len(picked_obs)) + 2 * depth + 2, seed=seed + k)
        replayer = replayer or Replayer(rec.env_id, depth, rec.obs.shape[-2:])
        locate = locator_for(rec.env_id)
        for t in range(depth + 1, len(rec.obs), stride):
            if len(picked_obs) >= n or not usable(rec, t, depth):
                continue
            checked["states"] += 1
            ok, found = counterfactuals(rec, t, replayer, rng)
            if not ok:
                checked["reference_failed"] += 1
                continue
            i = len(picked_obs)
            picked_obs.append(rec.obs[t])
            picked_actions.append(rec.actions[t])
            where = locate(rec.rams[t]) if locate else {}
            for name, centre in where.items():
                centres.setdefault(name, []).append(frame_to_input(centre, rec.obs.shape[-2:]))
            cfs += [(i, c) for c in found]
    if replayer is not None:
        replayer.close()
    obs = np.stack(picked_obs)
    objects = sorted({c.obj for _, c in cfs})
    family = family_for(agent)

    def outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            f = family.forward(torch.as_tensor(x).float())
        scores = f.action_scores.double().numpy()
        if family.bar_kind != "q":  # logits: a shift common to all of them leaves the policy as it is
            scores = scores - scores.mean(axis=1, keepdims=True)
        return scores, f.value.double().numpy()

    s0, v0 = outputs(obs)
    if cfs:
        s1, v1 = outputs(np.stack([c.obs for _, c in cfs]))
    importance, value_change, shifts = {}, {}, {}
    for name in objects:
        rows_ = [(j, i) for j, (i, c) in enumerate(cfs) if c.obj == name]
        imp, val = np.full(len(obs), np.nan), np.full(len(obs), np.nan)
        for i in sorted({i for _, i in rows_}):
            js = [j for j, ii in rows_ if ii == i]
            imp[i] = np.mean([np.linalg.norm(s1[j] - s0[i]) for j in js])
            val[i] = np.mean([abs(v1[j] - v0[i]) for j in js])
        importance[name], value_change[name] = imp, val
        shifts[name] = [c.shift for _, c in cfs if c.obj == name]
    info = {
        **checked,
        "counterfactuals": {k: len(v) for k, v in shifts.items()},
        "shift_px_median": {k: float(np.median(v)) for k, v in shifts.items()},
        "states_with": {k: int(np.isfinite(importance[k]).sum()) for k in objects},
        "importance_median": {k: float(np.nanmedian(importance[k])) for k in objects},
        "value_change_median": {k: float(np.nanmedian(value_change[k])) for k in objects},
    }
    return States(
        obs, np.array(picked_actions), {k: np.stack(v) for k, v in centres.items()}, importance, value_change, info
    )


def attention_rho(maps: np.ndarray, states: States, radius: float) -> dict[str, tuple[float, float, int]]:
    """Per object: Spearman correlation over states of the map's share near it with its importance and
    with its value change, and the number of states both are defined for."""
    out = {}
    for name, importance in states.importance.items():
        share = np.array([share_near(m, c, radius) for m, c in zip(maps, states.centres[name], strict=True)])
        ok = np.isfinite(share) & np.isfinite(importance)
        if ok.sum() < 3:
            out[name] = (float("nan"), float("nan"), int(ok.sum()))
            continue
        out[name] = (
            rank_correlation(share[ok], importance[ok]),
            rank_correlation(share[ok], states.value_change[name][ok]),
            int(ok.sum()),
        )
    return out


# -- the metrics for one row -----------------------------------------------------------------------


def measure(agent, states: States, maps: np.ndarray, rng: np.random.Generator, k: int, radius: float) -> dict:
    """Every metric of one set of maps ``(N, H, W)`` (for a random baseline: ``(draws, N, H, W)``)."""
    probs, score = policy_scores(agent, "prob"), policy_scores(agent)
    if maps.ndim == 3:
        maps = maps[None]
    draws = len(maps)
    obs = np.concatenate([states.obs] * draws)
    actions = np.concatenate([states.actions] * draws)
    flat = maps.reshape(-1, *maps.shape[2:])
    rhos = [attention_rho(m, states, radius) for m in maps]
    result = {
        "deletion": deletion(probs, obs, flat, actions, rng)["auc"],
        "insertion": insertion(score, obs, flat, actions, rng)["auc"],
        "aim": aim(score, obs, flat, actions, rng, k),
        "pgi": prediction_gap(score, obs, flat, actions, rng, k, important=True),
        "pgu": prediction_gap(score, obs, flat, actions, rng, k, important=False),
        "rho": {name: [float(np.mean([r[name][j] for r in rhos])) for j in (0, 1)] for name in rhos[0]},
        "rho_spread": {name: float(np.std([r[name][0] for r in rhos])) for name in rhos[0]},
        "rho_n": {name: rhos[0][name][2] for name in rhos[0]},
    }
    return result


def first_conv(agent, layer: str) -> str:
    """The agent's module path ending in ``layer`` (truthfulness.py names PPO's; QR-DQN nests it)."""
    return next(name for name in conv_layers(agent) if name.endswith(layer))


def run_agent(spec: AgentSpec, args) -> dict:
    started = time.perf_counter()
    agent = load_agent(spec.path)
    rng = np.random.default_rng(args.seed)
    states = gather(agent, spec.env, args.states, args.stride, args.seed, rng)
    n, hw = len(states.obs), states.obs.shape[-2:]
    print(f"{spec.path}: {n} states, interventions {json.dumps(states.info)}", flush=True)
    results = []
    table_rows = [r for r in rows() if r.baseline != "random"]
    for i, row in enumerate(table_rows):
        t = time.perf_counter()
        if row.layer is not None:
            row = Row(row.label, row.method, layer=first_conv(agent, row.layer), contrast=row.contrast)
        maps, actions = maps_for(agent, states.obs, row, "bilinear", np.random.default_rng(args.seed))
        if not (actions == states.actions).all():
            raise RlcamError(f"{spec.path}: the explainer chose other actions than the rollout did.")
        got = measure(agent, states, maps, np.random.default_rng([args.seed, i]), args.k, args.radius)
        if args.sanity_states:
            s = sanity_row(agent, states.obs[: args.sanity_states], row)
            got["sanity"] = None if s is None else {k: s[k] for k in ("lowest", "head", "passed")}
        got["seconds"] = round(time.perf_counter() - t, 1)
        print(f"  {row.label}: {json.dumps(got)}", flush=True)
        results.append({"label": row.label, "method": row.method, **got})
    draw_rng = np.random.default_rng([args.seed, 10_000])
    for label, make in (
        (SMOOTH, lambda: random_maps(n, hw[0], draw_rng)),
        (PIXELS, lambda: random_pixel_maps(n, hw, draw_rng)),
        (LIT, lambda: random_pixel_maps(n, hw, draw_rng) * (states.obs.max(axis=1) > 0)),
    ):
        t = time.perf_counter()
        maps = np.stack([make() for _ in range(args.draws)])
        got = measure(agent, states, maps, np.random.default_rng([args.seed, len(results)]), args.k, args.radius)
        got["seconds"] = round(time.perf_counter() - t, 1)
        print(f"  {label}: {json.dumps(got)}", flush=True)
        results.append({"label": label, "method": None, **got})
    family = family_for(agent)
    return {
        "agent": str(shown(spec.path)),
        "algo": algo_title(agent.algo),
        "game": game_name(spec.env),
        "states": n,
        "score": "Q-value" if family.bar_kind == "q" else "probability",
        "outputs": "Q-values" if family.bar_kind == "q" else "logits (centred)",
        "value": "max Q" if family.bar_kind == "q" else "the critic's V",
        "interventions": states.info,
        "rows": results,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }


# -- the tables ------------------------------------------------------------------------------------


def _ratio(value: float, reference: float) -> str:
    return "-" if not reference else f"{value / reference:.2f}x"


def _rho(pair) -> str:
    if pair is None or not np.isfinite(pair[0]):
        return "-"
    return f"{pair[0]:+.2f} / {pair[1]:+.2f}"


def agent_table(result: dict, k: int) -> str:
    rows_ = result["rows"]
    rand = next(r for r in rows_ if r["label"] == SMOOTH)
    objects = sorted(rand["rho"])
    head = (
        "| method | deletion AUC, lower better (x random) | insertion AUC, higher better (x random) "
        f"| AIM @{k}px, lower better (x random) | PGI @{k}px, higher better (x random) "
        f"| PGU @{k}px, lower better (x random) "
        + "".join(f"| {o}: rho outputs / value, higher better (n={rand['rho_n'][o]}) " for o in objects)
        + "| sanity: lowest / head |"
    )
    lines = [head, "|" + "---|" * (7 + len(objects))]
    for r in rows_:
        s = r.get("sanity")
        san = "-" if s is None else f"{'pass' if s['passed'] else 'FAIL'} {s['lowest']:+.2f} / {s['head']:+.2f}"
        if r["method"] is None and r["label"] in (SMOOTH, PIXELS, LIT):
            rho = "".join(f"| {r['rho'][o][0]:+.2f} (sd {r['rho_spread'][o]:.2f} over draws) " for o in objects)
        else:
            rho = "".join(f"| {_rho(r['rho'].get(o))} " for o in objects)
        lines.append(
            f"| {r['label']} | {r['deletion']:.3f} ({_ratio(r['deletion'], rand['deletion'])}) "
            f"| {r['insertion']:.3g} ({_ratio(r['insertion'], rand['insertion'])}) "
            f"| {r['aim']:.3f} ({_ratio(r['aim'], rand['aim'])}) "
            f"| {r['pgi']:.3g} ({_ratio(r['pgi'], rand['pgi'])}) "
            f"| {r['pgu']:.3g} ({_ratio(r['pgu'], rand['pgu'])}) {rho}| {san} |"
        )
    return "\n".join(lines)


def published_table(results: list[dict]) -> str:
    """Their figures beside ours for the methods both have: the ranking and the ratio to random."""
    cols = [f"{r['algo']} `{r['agent']}`" for r in results]
    lines = [
        "Insertion (their agent, not ours: compare the ranking and the ratio to random, not the values)",
        "",
        "| method | Huber et al. 2022, DQN, Q-value AUC | their x random (2.13) | "
        + " | ".join(f"ours, {c}: x pixel-noise random" for c in cols)
        + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for method, value in HUBER.items():
        shown_value = f"{value[0]:.2f}-{value[1]:.2f}" if isinstance(value, tuple) else f"{value:.2f}"
        ratio = (
            f"{value[0] / HUBER_RANDOM:.2f}-{value[1] / HUBER_RANDOM:.2f}x"
            if isinstance(value, tuple)
            else f"{value / HUBER_RANDOM:.2f}x"
        )
        ours = [_ours(r, OURS.get(method), "insertion", PIXELS) for r in results]
        lines.append(f"| {method} | {shown_value} | {ratio} | " + " | ".join(ours) + " |")
    ours = [_ours(r, "gradcam", "insertion", PIXELS) for r in results]
    lines.append("| Grad-CAM (last conv; not in their table) | - | - | " + " | ".join(ours) + " |")
    lines.append(f"| random | {HUBER_RANDOM:.2f} | 1.00x | " + " | ".join("1.00x" for _ in results) + " |")
    lines += [
        "",
        "XRL-Bench fidelity (their agent, not ours: compare the ranking, not the values; they report no random map)",
        "",
        "| method | XRL-Bench AIM, lower better | PGI, higher better | PGU, lower better | "
        + " | ".join(f"ours, {c}: AIM / PGI / PGU (x smooth random)" for c in cols)
        + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for method, (a, p, u) in XRL.items():
        ours = [_ours_xrl(r, OURS.get(method)) for r in results]
        lines.append(f"| {method} | {a:.3f} | {p:.3f} | {u:.3f} | " + " | ".join(ours) + " |")
    lines.append(
        "| Grad-CAM (last conv; not in their table) | - | - | - | "
        + " | ".join(_ours_xrl(r, "gradcam") for r in results)
        + " |"
    )
    return "\n".join(lines)


def _row(result: dict, method: str | None) -> dict | None:
    return next((r for r in result["rows"] if r["method"] == method and r["label"] == method), None)


def _ours(result: dict, method: str | None, metric: str, baseline: str) -> str:
    row = _row(result, method) if method else None
    if row is None:
        return "-"
    base = next(r for r in result["rows"] if r["label"] == baseline)
    return f"`{method}` {_ratio(row[metric], base[metric])}"


def _ours_xrl(result: dict, method: str | None) -> str:
    row = _row(result, method) if method else None
    if row is None:
        return "-"
    base = next(r for r in result["rows"] if r["label"] == SMOOTH)
    return f"`{method}` {row['aim']:.2f} / {row['pgi']:.3g} / {row['pgu']:.3g} ({_ratio(row['aim'], base['aim'])} / {_ratio(row['pgi'], base['pgi'])} / {_ratio(row['pgu'], base['pgu'])})"


def document(results: list[dict], args, minutes: float, load: float) -> str:
    parts = []
    for r in results:
        info = r["interventions"]
        moved = ", ".join(
            f"{o}: {info['counterfactuals'][o]} counterfactuals on {info['states_with'][o]} states, median shift "
            f"{info['shift_px_median'][o]:.0f} px, median output change {info['importance_median'][o]:.3g} "
            f"(value {info['value_change_median'][o]:.3g})"
            for o in sorted(info["counterfactuals"])
        )
        parts.append(
            f"**{r['algo']} `{r['agent']}`** ({r['game']}; {r['states']} states; insertion, AIM, PGI and PGU read the "
            f"chosen action's {r['score']}, the interventions the L2 change of the {r['outputs']} and of {r['value']}; "
            f"{moved}; {info['reference_failed']} of {info['states']} candidate states dropped because the replay "
            f"did not reproduce the observation; {r['minutes']} min)\n\n{agent_table(r, args.k)}"
        )
    parts.append(published_table(results))
    parts.append(
        f"Written by `python scripts/faithfulness.py {' '.join(args.agents)}` in {minutes:.1f} min "
        f"(one torch thread; load average {load:.2f} at the start): seeds from {args.seed}, every {args.stride}th "
        f"usable step, {args.draws} random maps per state for each baseline, k = {args.k} px, radius "
        f"{args.radius:g} px, sanity on the first {args.sanity_states} states."
    )
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agents", nargs="*", default=list(DEFAULT_AGENTS), help="PATH or PATH@Game, one per agent")
    parser.add_argument("--states", type=int, default=48, help="observations per agent (default 48)")
    parser.add_argument("--stride", type=int, default=5, help="every n-th usable rollout step (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=8, help="random maps per state for each baseline (default 8)")
    parser.add_argument("--k", type=int, default=TOP_K, help=f"pixels AIM/PGI/PGU perturb (default {TOP_K})")
    parser.add_argument("--radius", type=float, default=7.0, help="input px around an object for its share (default 7)")
    parser.add_argument("--sanity-states", type=int, default=16, help="observations for the sanity check (0: skip)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "methods.md")
    parser.add_argument("--json", type=Path, help="also write every number as JSON")
    args = parser.parse_args(argv)
    try:
        specs = [parse_agent(a) for a in args.agents]
        for spec in specs:
            if not spec.path.exists():
                raise RlcamError(f"agent file {spec.path} does not exist.")
        if args.states < 3 or args.stride < 1 or args.draws < 1 or args.k < 1 or args.sanity_states < 0:
            raise RlcamError("--states must be >= 3, --stride, --draws and --k >= 1, --sanity-states >= 0.")
        if not args.docs.parent.is_dir():
            raise RlcamError(f"the docs folder {args.docs.parent} does not exist.")
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        started, load = time.perf_counter(), os.getloadavg()[0]
        results = [run_agent(spec, args) for spec in specs]
    except RlcamError as exc:
        print(f"faithfulness: {exc}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - started) / 60
    text = document(results, args, minutes, load)
    print(text)
    write_block(args.docs, "faithfulness", text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"runtime {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
