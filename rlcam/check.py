"""Regression checks of a saved policy against a baseline trace.

A baseline is any trace written by ``rlcam record``: its meta says which env, seed, number
of envs, target, layer, method and placement produced it, and it holds the actions taken.
``check`` rebuilds that env with the same seed and runs the new agent in one of two modes:

- ``replay`` (default): the env is stepped with the *baseline's* actions, so both agents
  see exactly the same observations at every step (verified: the rewards, and the
  observations when the baseline stored them, must match, else the env is not
  reproducible and the check stops). Per step it compares the new agent's own choice
  and its map with the baseline's: action agreement, map rank correlation, top-k%
  overlap, and attention near labelled game objects. This isolates what changed in the
  policy from where a changed policy would have steered the game.
- ``own``: the new agent acts for itself from the same seed, for as many steps. Its
  trajectory differs, so maps are not compared step by step; it compares the return
  and the attention near game objects, aggregated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from rlcam.agents import Agent, load_agent
from rlcam.device import on_device, resolve_device
from rlcam.envs import check_compatible, make_env
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, conv_layers
from rlcam.families import family_for
from rlcam.geometry import stretch_matrix
from rlcam.objects import positions, share_near
from rlcam.video import Trace, load_trace
from rlcam.zoo import trace_env

MODES = ("replay", "own")


@dataclass
class Thresholds:
    """What counts as a regression. Load from flags or a JSON/TOML spec (same field names)."""

    min_action_agreement: float = 0.8
    """replay: share of steps where the new agent picks the baseline's action."""
    min_map_correlation: float = 0.5
    """replay: median Spearman rank correlation of the maps on the policy-input grid."""
    min_top_iou: float = 0.3
    """replay: mean IoU of the top ``top_fraction`` pixels of the two maps."""
    top_fraction: float = 0.1
    min_attention: dict[str, float] = field(default_factory=dict)
    """object -> least mean share of map mass within ``radius`` px of it (steps where it is on screen)."""
    max_attention_drop: float = 0.5
    """object -> the new share must be at least (1 - this) x the baseline's."""
    radius: float = 10.0
    """px on the raw frame."""
    max_return_drop: float = 0.5
    """own: the new return must be at least (1 - this) x the baseline's (when the baseline's is positive)."""


def load_spec(path: Path) -> Thresholds:
    """Thresholds from a JSON or TOML file with ``Thresholds`` field names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RlcamError(f"cannot read spec {path} ({exc.strerror}).") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except Exception as exc:
        raise RlcamError(f"spec {path} is not valid {path.suffix[1:].upper() or 'JSON'} ({exc}).") from None
    known = set(Thresholds.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise RlcamError(f"spec {path} has unknown fields {sorted(unknown)}; known: {sorted(known)}.")
    return Thresholds(**values)


@dataclass
class Criterion:
    name: str
    value: float
    threshold: float
    passed: bool
    detail: str = ""


@dataclass
class CheckReport:
    """The outcome: criteria, per-step series, and where the regressions are."""

    agent: str
    baseline: str
    mode: str
    steps: int
    criteria: list[Criterion]
    spans: list[dict]  # worst stretches of consecutive regressed steps
    series: dict[str, list] = field(repr=False)  # per-step values (NaN where undefined)
    device: str = "cpu"  # where the new agent's maps were computed

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    @property
    def failures(self) -> list[Criterion]:
        return [c for c in self.criteria if not c.passed]

    def text(self) -> str:
        lines = [f"rlcam check: {self.agent} against baseline {self.baseline} ({self.mode} mode, {self.steps} steps)"]
        width = max(len(c.name) for c in self.criteria) if self.criteria else 10
        for c in self.criteria:
            mark = "pass" if c.passed else "FAIL"
            lines.append(f"  {mark}  {c.name:<{width}}  {c.value:8.3f}  (needs >= {c.threshold:.3f}){c.detail}")
        for span in self.spans:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in span.items() if k not in ("start", "end"))
            lines.append(f"  regressed steps {span['start']}-{span['end']}: {parts}")
        verdict = "PASS" if self.passed else f"REGRESSION ({len(self.failures)} of {len(self.criteria)} failed)"
        lines.append(f"result: {verdict}")
        return "\n".join(lines)

    def to_json(self) -> str:
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, list):
                return [clean(v) for v in x]
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return x

        body = asdict(self)
        body["passed"] = self.passed
        return json.dumps(clean(body), indent=1)

    def to_junit(self) -> str:
        suite = ElementTree.Element(
            "testsuite", name="rlcam check", tests=str(len(self.criteria)), failures=str(len(self.failures))
        )
        for c in self.criteria:
            case = ElementTree.SubElement(suite, "testcase", classname=f"rlcam.check.{self.mode}", name=c.name)
            if not c.passed:
                failure = ElementTree.SubElement(
                    case, "failure", message=f"{c.name} = {c.value:.3f}, needs >= {c.threshold:.3f}"
                )
                failure.text = self.text()
        return ElementTree.tostring(suite, encoding="unicode")


# -- map comparisons ------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (the zeros of a ReLU'd map are many)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    mean_rank = (starts + ends - 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps; two flat maps agree (1), one flat map does not (0)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    ra, rb = _average_ranks(a), _average_ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> float:
    """IoU of the top ``fraction`` of pixels of two maps (an all-zero map has no top)."""
    a, b = np.ravel(a), np.ravel(b)
    k = max(1, int(round(fraction * a.size)))
    if a.max() <= 0 or b.max() <= 0:
        return 1.0 if a.max() <= 0 and b.max() <= 0 else 0.0
    top_a = np.zeros(a.size, bool)
    top_b = np.zeros(b.size, bool)
    top_a[np.argpartition(-a, k - 1)[:k]] = True
    top_b[np.argpartition(-b, k - 1)[:k]] = True
    return float((top_a & top_b).sum() / (top_a | top_b).sum())


# -- running the new agent on the baseline's rollout ---------------------------------------------


REQUIRED = ("action", "cam_input", "reward")


COMPONENT_TOLERANCE = 0.05  # continuous actions agree when every component is within 5% of its bounds' range


def actions_agree(a: np.ndarray, b: np.ndarray, space) -> bool:
    """Whether two env actions count as the same choice.

    Discrete and structured (MultiDiscrete, MultiBinary) actions: equal in every part. Continuous
    (``Box``) actions cannot be expected to be equal: they agree when ``max_i |a_i - b_i| /
    (high_i - low_i) <= COMPONENT_TOLERANCE`` (5% of each component's range); a component with an
    unbounded side is measured against a range of 2 (the [-1, 1] of a squashed policy).
    """
    from gymnasium import spaces

    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if not isinstance(space, spaces.Box):
        return bool(np.array_equal(a, b))
    span = (np.asarray(space.high, np.float64) - np.asarray(space.low, np.float64)).reshape(-1)
    span = np.where(np.isfinite(span) & (span > 0), span, 2.0)
    return bool((np.abs(a - b) / span).max() <= COMPONENT_TOLERANCE)


def _with_env_axis(trace: Trace, key: str, n_envs: int) -> np.ndarray:
    value = trace[key]
    return value if n_envs > 1 else value[:, None]


def _explainer_for(agent: Agent, meta: dict) -> Explainer:
    """The baseline's target, layer and method where they apply to the new agent, else its defaults."""
    target = meta.get("target")
    try:
        target = family_for(agent).check_target(target, meta.get("action_names"))
    except RlcamError:  # the baseline's target does not apply to this agent: its default
        target = None
    layer = meta.get("layer") if meta.get("layer") in conv_layers(agent) else None
    return Explainer(
        agent,
        target=target,
        layer=layer,
        method=meta.get("method", "gradcam"),
        placement=meta.get("placement", "bilinear"),
    )


def run_new_agent(agent: Agent, baseline: Trace, mode: str) -> dict[str, np.ndarray]:
    """Run ``agent`` over the baseline's rollout; returns ``(T, n, ...)`` arrays for the new agent."""
    meta = baseline.meta
    n, steps = int(meta.get("n_envs", 1)), baseline.steps
    base_actions = _with_env_axis(baseline, "action", n)
    base_rewards = _with_env_axis(baseline, "reward", n)
    base_obs = _with_env_axis(baseline, "obs", n) if "obs" in baseline else None
    env = trace_env(meta, "the baseline")  # an rl-zoo run's env: its wrappers, stack and statistics
    venv, info = make_env(env, n_envs=n, seed=int(meta["seed"]), agent_space=agent.model.observation_space)
    out: dict[str, list] = {"action": [], "cam_input": [], "reward": []}
    try:
        check_compatible(venv, agent.model.observation_space, agent.model.action_space, info.env_id)
        obs = venv.reset()
        with _explainer_for(agent, meta) as explainer:
            for t in range(steps):
                if mode == "replay" and base_obs is not None and not np.array_equal(obs, base_obs[t]):
                    raise RlcamError(f"replaying the baseline diverged at step {t}: the observations differ.")
                explained = explainer.explain(obs)
                found = positions(venv, info.env_id)
                for name, centres in found.items():
                    out.setdefault(f"obj_{name}", []).append(centres)
                act = base_actions[t] if mode == "replay" else explained.actions
                obs, rewards, _, _ = venv.step(act)
                if mode == "replay" and not np.allclose(rewards, base_rewards[t]):
                    raise RlcamError(
                        f"replaying the baseline diverged at step {t}: reward {rewards.tolist()} vs the baseline's "
                        f"{base_rewards[t].tolist()}; the env is not reproducible from its seed."
                    )
                out["action"].append(explained.actions)
                out["cam_input"].append(explained.cam_input)
                out["reward"].append(rewards.astype(np.float32))
    finally:
        venv.close()
    result = {key: np.stack(value) for key, value in out.items()}
    result["atari"] = np.array(info.atari)
    return result


def _frame_heat(cam_input: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    ys = stretch_matrix(frame_hw[0], cam_input.shape[-2])
    xs = stretch_matrix(frame_hw[1], cam_input.shape[-1])
    return ys @ cam_input.astype(np.float64) @ xs.T


def attention_series(cam_input: np.ndarray, centres: np.ndarray, radius: float, frame_hw) -> np.ndarray:
    """Per-step share of map mass near an object: ``(T, n, H, W)`` maps, ``(T, n, 2)`` centres -> ``(T, n)``."""
    shares = np.full(cam_input.shape[:2], np.nan)
    for t in range(cam_input.shape[0]):
        for i in range(cam_input.shape[1]):
            if np.isfinite(centres[t, i]).all():
                shares[t, i] = share_near(_frame_heat(cam_input[t, i], frame_hw), centres[t, i], radius)
    return shares


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the env axis ignoring NaN; NaN where a step has no finite value (without numpy's warning)."""
    finite = np.isfinite(values)
    counts = finite.sum(1)
    sums = np.where(finite, values, 0.0).sum(1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _spans(bad: np.ndarray, series: dict[str, np.ndarray], limit: int = 5) -> list[dict]:
    """Longest runs of consecutive regressed steps, with the mean of each series over the run."""
    runs, start = [], None
    for t, flag in enumerate(np.append(bad, False)):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            runs.append((start, t - 1))
            start = None
    runs.sort(key=lambda r: r[0] - r[1])
    out = []
    for s, e in runs[:limit]:
        entry = {"start": int(s), "end": int(e)}
        for name, values in series.items():
            entry[name] = float(np.nanmean(values[s : e + 1])) if np.isfinite(values[s : e + 1]).any() else math.nan
        out.append(entry)
    return sorted(out, key=lambda r: r["start"])


def check(
    agent: str | Path | Agent,
    baseline: str | Path | Trace,
    thresholds: Thresholds | None = None,
    mode: str = "replay",
    trust: bool = False,
    device: str | None = None,
) -> CheckReport:
    """Compare ``agent`` with the baseline trace; see the module docstring for the modes.

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is where the new agent's maps are computed;
    None: where its policy is (the CPU for a path). A given ``Agent`` is moved back afterwards.
    """
    if mode not in MODES:
        raise RlcamError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    target = None if device is None else resolve_device(device)
    thresholds = thresholds or Thresholds()
    base = baseline if isinstance(baseline, Trace) else load_trace(baseline)
    base_name = str(baseline) if not isinstance(baseline, Trace) else "trace"
    missing = [k for k in REQUIRED if k not in base] + [k for k in ("env_id", "seed") if k not in base.meta]
    if missing:
        raise RlcamError(f"baseline {base_name} lacks {', '.join(missing)}; write baselines with 'rlcam record'.")
    agent = agent if isinstance(agent, Agent) else load_agent(agent, trust=trust)
    with on_device(agent, target) as used:
        new = run_new_agent(agent, base, mode)
    n = int(base.meta.get("n_envs", 1))
    base_cams = _with_env_axis(base, "cam_input", n).astype(np.float32)
    frame_hw = (210, 160) if bool(new["atari"]) else base_cams.shape[-2:]
    criteria: list[Criterion] = []
    series: dict[str, np.ndarray] = {}

    if mode == "replay":
        base_actions = _with_env_axis(base, "action", n)
        space = agent.model.action_space
        agree = np.array(
            [
                [actions_agree(new["action"][t, i], base_actions[t, i], space) for i in range(n)]
                for t in range(base.steps)
            ],
            dtype=float,
        )
        corr = np.array(
            [[rank_correlation(base_cams[t, i], new["cam_input"][t, i]) for i in range(n)] for t in range(base.steps)]
        )
        iou = np.array(
            [
                [top_iou(base_cams[t, i], new["cam_input"][t, i], thresholds.top_fraction) for i in range(n)]
                for t in range(base.steps)
            ]
        )
        series.update(action_agreement=agree.mean(1), map_correlation=corr.mean(1), top_iou=iou.mean(1))
        criteria += [
            Criterion("action agreement", agree.mean(), thresholds.min_action_agreement, False),
            Criterion("map correlation (median)", float(np.median(corr)), thresholds.min_map_correlation, False),
            Criterion(f"top-{thresholds.top_fraction:.0%} IoU (mean)", iou.mean(), thresholds.min_top_iou, False),
        ]
    else:
        base_return = float(base["reward"].sum())
        new_return = float(new["reward"].sum())
        needed = (1 - thresholds.max_return_drop) * base_return if base_return > 0 else base_return
        criteria.append(Criterion("return", new_return, needed, False, f"  baseline {base_return:.1f}"))

    for key in sorted(k for k in new if k.startswith("obj_")):
        name = key[4:]
        new_share = attention_series(new["cam_input"], new[key], thresholds.radius, frame_hw)
        base_centres = _with_env_axis(base, key, n) if key in base else new[key]
        base_share = attention_series(base_cams, base_centres, thresholds.radius, frame_hw)
        series[f"{name}_attention"] = _nanmean_rows(new_share)
        if not np.isfinite(new_share).any():
            continue
        new_mean, base_mean = float(np.nanmean(new_share)), float(np.nanmean(base_share))
        need = (1 - thresholds.max_attention_drop) * base_mean
        detail = f"  baseline {base_mean:.3f}, within {thresholds.radius:g} px"
        criteria.append(Criterion(f"{name} attention vs baseline", new_mean, need, False, detail))
        if name in thresholds.min_attention:
            criteria.append(Criterion(f"{name} attention", new_mean, thresholds.min_attention[name], False, detail))
    unknown = set(thresholds.min_attention) - {k[4:] for k in new if k.startswith("obj_")}
    if unknown:
        raise RlcamError(f"no object named {', '.join(sorted(unknown))} in {base.meta['env_id']}.")

    for c in criteria:
        c.value = float(c.value)
        c.passed = bool(c.value >= c.threshold - 1e-12)
    if mode == "replay":
        bad = (series["action_agreement"] < 1) | (series["map_correlation"] < thresholds.min_map_correlation)
        spans = _spans(bad, {k: v for k, v in series.items()})
    else:
        spans = []
    return CheckReport(
        agent=str(agent.path),
        baseline=base_name,
        mode=mode,
        steps=base.steps,
        criteria=criteria,
        spans=spans,
        series={k: [float(x) for x in v] for k, v in series.items()},
        device=str(used),
    )
