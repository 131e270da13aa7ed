"""``rlcam compare``: two explained agents on the same seed, side by side in one video and one report.

A side is an agent with its target, method and layer, so the two sides can be two agents, two
checkpoints, or one agent under two methods or targets. Two modes:

- ``replay`` (default): one game; the first side acts and the second is shown the same
  observations, so both explain the same frames. Per step: does the second side choose the same
  action (``actions_agree``: equal for discrete and structured actions; for continuous ones every
  component within ``COMPONENT_TOLERANCE`` of its bounds' range), and how far apart are the maps on
  the policy input (Spearman rank correlation, overlap of the top 10% of pixels; ``rlcam.check``'s
  measures).
- ``own``: each side plays its own game from the same seed. While the games are still identical
  the maps are compared as in replay; after they part, only the action agreement is kept.

Outputs (from ``out``, e.g. ``cmp.mp4``): the side-by-side video, one trace per side
(``cmp.a.npz``, ``cmp.b.npz``; the second side's also holds the per-step comparison), and with
``report`` the page ``cmp.html``, where a Dict agent's every mapped image key is shown beside its
layer's key, as ``rlcam report`` shows one run.

    obs (1, C, H, W) -> side a: explain -> act (replay: a's action steps the env)
                     -> side b: explain (replay: the same obs; own: its own env's)
                     -> frames: compose(a) | compose(b) -> video; rows -> traces
                     -> views {image key (None: the env's frame): (T, H, W, 3)} per game -> page
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import rlcam
from rlcam.agents import load_agent
from rlcam.check import COMPONENT_TOLERANCE, _spans, actions_agree, rank_correlation, top_iou
from rlcam.envs import action_names, check_compatible, frames, make_env
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer, key_layers
from rlcam.norm import NORMS
from rlcam.objects import positions
from rlcam.record import StepWriter, _stop_on_signals, auto_scale, observation_frames
from rlcam.video import BackgroundFrames, FrameWriter, TraceWriter
from rlcam.zoo import trace_fields

__all__ = ["CompareConfig", "CompareResult", "Side", "compare"]

MODES = ("replay", "own")
TOP_FRACTION = 0.1
_BANNER_BG, _RULE = (18, 18, 24), (52, 52, 64)
_YES, _NO, _TEXT, _DIM = (140, 220, 160), (255, 120, 150), (232, 232, 236), (150, 150, 162)


@dataclass
class Side:
    """One side of a comparison: an agent and what of it is explained."""

    agent: Path
    target: str | None = None
    method: str = "gradcam"
    layer: str | None = None

    def __post_init__(self):
        self.agent = Path(self.agent)

    def label(self, other: Side) -> str:
        """The agent's file name, plus whatever tells this side apart from ``other``."""
        parts = [self.agent.name]
        if self.method != other.method:
            parts.append(self.method)
        if self.target != other.target and self.target is not None:
            parts.append(self.target)
        if self.layer != other.layer and self.layer is not None:
            parts.append(self.layer)
        return " \u00b7 ".join(parts)


@dataclass
class CompareConfig:
    """What to compare. ``sides`` holds exactly two."""

    sides: list[Side]
    env: str | None = None
    """The env both play; default: a side's rl-zoo run folder's own env, else Breakout."""
    steps: int = 500
    out: Path = Path("compare.mp4")
    """Video path (.mp4 or .gif); the traces and the page take its stem."""
    mode: str = "replay"
    seed: int = 0
    deterministic: bool = True
    norm: str = "running"
    placement: str = "bilinear"
    scale: int | None = None
    """Upscaling of the game frame (default: the recorder's, ~630 px tall)."""
    alpha: float = 0.6
    fps: int = 30
    report: bool = False
    """Also write the HTML report (``out`` with ``.html``)."""
    overwrite: bool = False
    trust: bool = False

    def __post_init__(self):
        self.out = Path(self.out)
        self.sides = [s if isinstance(s, Side) else Side(Path(s)) for s in self.sides]

    @property
    def traces(self) -> list[Path]:
        return [self.out.with_name(f"{self.out.stem}.{name}.npz") for name in ("a", "b")]

    @property
    def page(self) -> Path:
        return self.out.with_suffix(".html")


@dataclass
class CompareResult:
    video: Path
    traces: list[Path]
    page: Path | None
    steps: int
    agreement: float
    """Share of steps where both sides chose the same action."""
    map_correlation: float
    """Median rank correlation of the maps (over steps where both saw the same frame)."""
    top_overlap: float
    """Mean IoU of the maps' top 10% pixels (same steps)."""
    spans: list[dict] = field(default_factory=list)
    """The longest stretches of disagreement: ``{start, end, ...}``."""
    interrupted: bool = False

    def text(self) -> str:
        maps = (
            f"map rank correlation {self.map_correlation:.2f} (median), top-10% overlap {self.top_overlap:.2f} (mean)"
            if np.isfinite(self.map_correlation)
            else "maps not compared (on no step did both map the same frame, or the same image key)"
        )
        lines = [f"compared {self.steps} steps: actions agree on {self.agreement:.1%}, {maps}"]
        lines += [f"  disagree over steps {s['start']}-{s['end']}" for s in self.spans[:3]]
        outputs = [str(self.video), *map(str, self.traces)] + ([str(self.page)] if self.page else [])
        lines.append("wrote " + ", ".join(outputs))
        return "\n".join(lines)


def validate(cfg: CompareConfig) -> None:
    if len(cfg.sides) != 2:
        raise RlcamError(f"compare needs exactly two sides, not {len(cfg.sides)}.")
    if cfg.mode not in MODES:
        raise RlcamError(f"unknown mode {cfg.mode!r}; choose one of {', '.join(MODES)}.")
    if cfg.norm not in NORMS:
        raise RlcamError(f"unknown normalisation {cfg.norm!r}; choose one of {', '.join(NORMS)}.")
    if cfg.steps <= 0:
        raise RlcamError(f"--steps must be a positive number of steps, not {cfg.steps}.")
    if cfg.out.suffix.lower() not in (".mp4", ".gif"):
        raise RlcamError(f"--out must end in .mp4 or .gif, not {cfg.out.name!r}.")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise RlcamError(f"--alpha must lie in [0, 1], not {cfg.alpha}.")
    for path in [cfg.out, *cfg.traces] + ([cfg.page] if cfg.report else []):
        if path.is_dir():
            raise RlcamError(f"output {path} is a directory; give a file name.")
        if path.exists() and not cfg.overwrite:
            raise RlcamError(f"output {path} already exists; pass --overwrite to replace it.")
    if not cfg.out.parent.is_dir():
        raise RlcamError(f"output directory {cfg.out.parent} does not exist; create it first.")


def _models_and_env(cfg: CompareConfig) -> tuple[list[Path], object]:
    """Each side's model zip, and the env both play: an rl-zoo run folder's training env (a side's
    run, both sides' the same), else ``cfg.env`` (default Breakout)."""
    from rlcam.envs import EnvRecipe
    from rlcam.zoo import agent_and_env

    resolved = [agent_and_env(side.agent, cfg.env) for side in cfg.sides]
    runs = [(side.agent, env) for side, (_, env) in zip(cfg.sides, resolved, strict=True) if isinstance(env, EnvRecipe)]
    if len(runs) == 2 and runs[0][1].env_id != runs[1][1].env_id:
        raise RlcamError(
            f"the two run folders were trained on different envs ({runs[0][0]}: {runs[0][1].env_id}, {runs[1][0]}: "
            f"{runs[1][1].env_id}); compare agents trained on the same env."
        )
    env = runs[0][1] if runs else (cfg.env or "Breakout")
    return [model for model, _ in resolved], env


def _obs_layout(space):
    """An observation space's shape, or a Dict's keys with theirs."""
    if getattr(space, "spaces", None) is not None and isinstance(space.spaces, dict):
        return {k: _obs_layout(v) for k, v in space.spaces.items()}
    return tuple(space.shape)


def _check_same_spaces(agents, labels) -> None:
    """Both agents must act in the same spaces, else there is nothing to compare step by step."""
    (a, b), (la, lb) = agents, labels
    obs_a, obs_b = _obs_layout(a.model.observation_space), _obs_layout(b.model.observation_space)
    act_a, act_b = a.model.action_space, b.model.action_space
    if obs_a != obs_b or act_a != act_b:
        raise RlcamError(
            f"the two agents' spaces differ ({la}: observations {obs_a}, actions {act_a}; {lb}: "
            f"observations {obs_b}, actions {act_b}); compare agents trained on the same env."
        )


def _same_obs(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(np.array_equal(a[k], b[k]) for k in a)
        )
    return bool(np.array_equal(a, b))


class _Latest:
    """A video sink for ``StepWriter`` that keeps the last frame drawn, to be put beside the other side's."""

    frame: np.ndarray | None = None

    def append(self, frame: np.ndarray) -> None:
        self.frame = frame


class _WithRows:
    """A ``TraceWriter`` whose next row also gets ``pending`` (the comparison's per-step columns)."""

    def __init__(self, trace: TraceWriter):
        self.trace = trace
        self.pending: dict = {}

    def append(self, **row) -> None:
        self.trace.append(**row, **{k: np.float32(v) for k, v in self.pending.items()})
        self.pending = {}

    def set_meta(self, **fields) -> None:
        self.trace.set_meta(**fields)


def side_by_side(left: np.ndarray, right: np.ndarray, banner: list[tuple[str, tuple]], gap: int = 6) -> np.ndarray:
    """Two composed frames with a gap between them and a one-line banner above: ``(H + b, 2W + gap, 3)``."""
    h = max(len(left), len(right))
    width = left.shape[1] + gap + right.shape[1]
    size = max(12, round(h / 36))
    banner_h = round(size * 1.9)
    canvas = Image.new("RGB", (width + width % 2, h + banner_h + (h + banner_h) % 2), _BANNER_BG)
    canvas.paste(Image.fromarray(left), (0, banner_h))
    canvas.paste(Image.fromarray(right), (left.shape[1] + gap, banner_h))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([left.shape[1], banner_h, left.shape[1] + gap - 1, canvas.height], fill=_RULE)
    font = ImageFont.load_default(size=size)
    x = size * 0.6
    for text, colour in banner:
        draw.text((x, banner_h / 2), text, fill=colour, font=font, anchor="lm")
        x += draw.textlength(text, font=font) + size * 1.4
    return np.asarray(canvas)


def compare(cfg: CompareConfig, on_step: Callable[[int, int | None], None] | None = None) -> CompareResult:
    """Run both sides on the same seed; write the side-by-side video, the traces and (``report``) the page."""
    validate(cfg)
    models, env = _models_and_env(cfg)
    agents = [load_agent(m, trust=cfg.trust) for m in models]
    labels = [cfg.sides[0].label(cfg.sides[1]), cfg.sides[1].label(cfg.sides[0])]
    if labels[0] == labels[1]:
        labels = [f"A \u00b7 {labels[0]}", f"B \u00b7 {labels[1]}"]
    _check_same_spaces(agents, labels)
    n_envs = 1 if cfg.mode == "replay" else 2
    space = agents[0].model.observation_space
    venvs = [make_env(env, n_envs=1, seed=cfg.seed, agent_space=space) for _ in range(n_envs)]
    env_info = venvs[0][1]
    env_id = env_info.env_id
    try:
        for agent in agents:
            check_compatible(venvs[0][0], agent.model.observation_space, agent.model.action_space, env_id)
        names = action_names(venvs[0][0])
        explainers = [
            Explainer(
                agent,
                target=side.target,
                layer=side.layer,
                method=side.method,
                placement=cfg.placement,
                deterministic=cfg.deterministic,
                seed=cfg.seed,
                action_names=names,
                extras=True,  # as rlcam record: Dict shares and other image keys' maps, memory vs pixels, Q(s, a)
            )
            for agent, side in zip(agents, cfg.sides, strict=True)
        ]
        metas = [
            dict(
                rlcam_version=rlcam.__version__,
                env=str(env),
                env_id=env_id,
                **trace_fields(env_info.source),
                frame_stack=env_info.frame_stack,
                algo=agent.algo,
                family=ex.family.name,
                agreement_rule=None
                if ex.family.discrete or ex.family.bar_kind != "component"
                else f"max |a - b| <= {COMPONENT_TOLERANCE:g} x (high - low) over components",
                agent=str(side.agent),
                agent_sha256=agent.sha256,
                target=ex.target,
                layer=ex.layer_name,
                method=side.method,
                placement=cfg.placement,
                normalisation=cfg.norm,
                seed=cfg.seed,
                deterministic=cfg.deterministic,
                n_envs=1,
                action_names=names,
                video=str(cfg.out),
                fps=cfg.fps,
                scale=cfg.scale,
                compare_mode=cfg.mode,
                compare_side=i,
                compare_label=labels[i],
            )
            for i, (agent, side, ex) in enumerate(zip(agents, cfg.sides, explainers, strict=True))
        ]
        with (
            explainers[0],
            explainers[1],
            _stop_on_signals() as stop,
            BackgroundFrames(FrameWriter(cfg.out, fps=cfg.fps)) as video,
            TraceWriter(cfg.traces[0], metas[0]) as trace_a,
            TraceWriter(cfg.traces[1], metas[1]) as trace_b,
        ):
            loop = _Loop(cfg, [v for v, _ in venvs], env_id, explainers, names, [trace_a, trace_b], labels)
            shown, per_step = loop.run(video, stop, on_step)
            for trace, m in zip((trace_a, trace_b), metas, strict=True):
                run_meta = dict(steps=loop.steps, episodes_ended=loop.games, interrupted=stop.requested)
                m.update(run_meta)
                trace.close(extra_meta=run_meta)
    finally:
        for venv, _ in venvs:
            venv.close()
    agree, corr, iou = per_step["agree"], per_step["correlation"], per_step["top_overlap"]
    spans = sorted(_spans(agree < 0.5, {"map_correlation": corr}), key=lambda s: s["start"] - s["end"])
    result = CompareResult(
        video=cfg.out,
        traces=cfg.traces,
        page=None,
        steps=loop.steps,
        agreement=float(agree.mean()) if len(agree) else float("nan"),
        map_correlation=float(np.nanmedian(corr)) if np.isfinite(corr).any() else float("nan"),
        top_overlap=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        spans=spans,
        interrupted=stop.requested,
    )
    if cfg.report and loop.steps:
        spaces = (agents[0].model.action_space, agents[0].model.observation_space)
        result.page = write_compare_report(cfg, labels, shown, per_step, spans, spaces)
    return result


class _Loop:
    """The per-step story of a comparison, for both sides at once."""

    def __init__(self, cfg, venvs, env_id, explainers, names, traces, labels):
        self.cfg, self.venvs, self.env_id, self.explainers, self.labels = cfg, venvs, env_id, explainers, labels
        self.sinks = [_Latest(), _Latest()]
        self.traces = [_WithRows(t) for t in traces]
        self.writers = [
            StepWriter(ex, names, sink, trace, norm=cfg.norm, alpha=cfg.alpha)
            for ex, sink, trace in zip(explainers, self.sinks, self.traces, strict=True)
        ]
        self.steps = self.games = 0
        self.action_space = explainers[0].policy.action_space
        keys = []  # Dict observations: every image key either side maps (its layer's, and the others')
        for ex in explainers:
            if ex.image_key is not None:
                keys += [ex.image_key, *key_layers(ex.agent, ex.target)]
        self.image_keys = list(dict.fromkeys(keys))

    def views(self, venv, obs) -> dict[str | None, np.ndarray]:
        """What a step shows ``(H, W, 3)``: the env's frame (key ``None``), or each image key of a
        Dict observation as the agent sees it (as ``rlcam record``)."""
        if not self.image_keys:
            return {None: frames(venv)[0]}
        return {key: observation_frames(obs[key])[0] for key in self.image_keys}

    def run(self, video, stop, on_step) -> tuple[list[dict], dict[str, np.ndarray]]:
        """Returns what each game showed (side a's, and side b's in own mode), ``{key: (T, H, W, 3)}``
        as ``views`` names them, and the per-step comparison."""
        cfg = self.cfg
        obs = [venv.reset() for venv in self.venvs]
        views = [self.views(venv, o) for venv, o in zip(self.venvs, obs, strict=True)]
        mapped = [ex.image_key for ex in self.explainers]  # the frame each side's map is drawn on
        for w in self.writers:
            w.scale = cfg.scale or auto_scale(views[0][mapped[0]].shape[0])
        shown: list[dict[str | None, list[np.ndarray]]] = [{} for _ in self.venvs]
        rows: dict[str, list[float]] = {"agree": [], "correlation": [], "top_overlap": []}
        own = cfg.mode == "own"
        starts = [np.ones(1, dtype=bool) for _ in self.venvs]  # a recurrent policy's memory starts fresh
        while not stop.requested and self.steps < cfg.steps:
            seen = [obs[i] if own else obs[0] for i in range(2)]  # replay: b is shown a's observation
            explained = [
                ex.explain(seen[i], episode_start=starts[i if own else 0]) for i, ex in enumerate(self.explainers)
            ]
            agree = float(actions_agree(explained[0].actions[0], explained[1].actions[0], self.action_space))
            corr = iou = np.nan
            if _same_obs(seen[0], seen[1]) and mapped[0] == mapped[1]:  # own mode: until the games part
                maps = [e.cam_input[0] for e in explained]
                corr, iou = rank_correlation(*maps), top_iou(*maps, TOP_FRACTION)
            # Step the game(s): replay steps the one env with a's action; own steps each side's env.
            outcomes = []
            for i, venv in enumerate(self.venvs):
                objects = positions(venv, self.env_id)  # where things were when the agent acted
                outcomes.append((objects, *venv.step(explained[i].actions)))
            self.traces[1].pending = dict(agree=agree, map_correlation=corr, top_overlap=iou)
            for i, writer in enumerate(self.writers):
                env = i if own else 0
                objects, _, rewards, dones, infos = outcomes[env]
                raw = [views[env][mapped[i]]]
                game_over = writer.write(seen[i], raw, explained[i], rewards, dones, infos, objects)
                self.games += int(game_over.sum()) if i == 0 else 0
            for game, view in zip(shown, views, strict=True):
                for key, frame in view.items():
                    game.setdefault(key, []).append(np.array(frame))
            for key, value in zip(rows, (agree, corr, iou), strict=True):
                rows[key].append(value)
            video.append(side_by_side(self.sinks[0].frame, self.sinks[1].frame, self.banner(agree, corr, iou)))
            obs = [outcome[1] for outcome in outcomes]
            starts = [np.asarray(outcome[3], dtype=bool) for outcome in outcomes]
            views = [self.views(venv, o) for venv, o in zip(self.venvs, obs, strict=True)]
            self.steps += 1
            if on_step is not None:
                on_step(self.steps, cfg.steps)
        games = [{key: np.stack(f) for key, f in game.items()} for game in shown]
        return games, {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}

    def banner(self, agree: float, corr: float, iou: float) -> list[tuple[str, tuple]]:
        head = "replay: B explains A's frames" if self.cfg.mode == "replay" else "own: each plays its own game"
        parts = [(f"A  {self.labels[0]}", _TEXT), (f"B  {self.labels[1]}", _TEXT), (head, _DIM)]
        parts.append(("agree" if agree else "disagree", _YES if agree else _NO))
        if np.isfinite(corr):
            parts.append((f"map rank corr {corr:+.2f}   top-10% overlap {iou:.2f}", _TEXT))
        else:
            parts.append(("games have parted: maps not compared", _DIM))
        return parts


def write_compare_report(cfg, labels, shown, per_step, spans, spaces) -> Path:
    """The two-run page: both views, both panels, and the divergence tracks on one timeline.

    ``shown``: each game's views (``_Loop.views``); a side's frame is its layer's image key (or the
    env's frame), and beside it every other image key it has maps of, as ``rlcam report`` shows them.
    """
    from rlcam.report import (
        ReportRun,
        binary,
        check_output,
        other_image_keys,
        page_html,
        payload_for,
        space_info,
        trace_arrays,
        write_atomic,
    )

    check_output(cfg.page, cfg.overwrite)
    runs = []
    for i, path in enumerate(cfg.traces):
        meta, arrays, notes = trace_arrays(path)
        for key in ("agree", "map_correlation", "top_overlap"):
            arrays.pop(key, None)
        views = shown[i] if cfg.mode == "own" else shown[0]
        role = "acts" if i == 0 else ("explains A's frames" if cfg.mode == "replay" else "plays its own game")
        space = space_info(spaces[0], spaces[1], str(meta.get("layer", "")))
        beside = {key: views[key] for key in other_image_keys(space, arrays)}
        label = f"{'AB'[i]} \u00b7 {labels[i]} ({role})"
        runs.append(ReportRun(label, meta, arrays, views[space.get("image_key")], notes, space, beside))
    compare_info = {
        "mode": cfg.mode,
        "agree": binary(per_step["agree"].astype(np.uint8), "u1"),
        "correlation": binary(per_step["correlation"], "f4"),
        "top_overlap": binary(per_step["top_overlap"], "f4"),
        "spans": [{"start": int(s["start"]), "end": int(s["end"])} for s in spans],
        "agreement": float(per_step["agree"].mean()),
    }
    title = f"{labels[0]} vs {labels[1]} on {runs[0].meta['env_id']}: {runs[0].steps} steps ({cfg.mode})"
    payload = payload_for(runs, title, shared_frames=cfg.mode == "replay", compare=compare_info)
    write_atomic(cfg.page, page_html(payload))
    return cfg.page
