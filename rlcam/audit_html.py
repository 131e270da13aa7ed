"""The audit's ``summary.html``: one self-contained page (inline CSS and SVG, no script, no network).

It shows the verdict lines, a plot of each metric against training step (every seed's value as a
dot, the mean over seeds as a line, the seeds' range as a band; a line per run when checkpoints
of several runs are audited together), a table per checkpoint (mean and
range over seeds) and a table per job with links to its trace, video and check report (paths
relative to the page, so the audit folder can be moved or zipped whole).

Plots are drawn with matplotlib (``pip install 'rlcam[audit]'``) as SVG with text kept as text.
"""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import PurePath

import numpy as np

import rlcam

# metric -> (title, what it means); plotted in this order when present, then each object's and the check's.
METRICS = {
    "return": ("return", "mean full-game score"),
    "steps": ("steps", "agent steps played"),
    "action_entropy": ("action entropy", "0 = always one action, 1 = all equally often"),
    "top_action_share": ("top action share", "share of steps taking the most frequent action"),
    "action_sd": ("action spread", "continuous: mean of the components' SDs"),
    "policy_entropy": ("policy entropy", "of its action probabilities: 1 = uniform"),
    "map_entropy": ("map entropy", "of the normalised map: 1 = flat, 0 = one cell"),
    "map_peak_share": ("map peak share", "the map's largest cell's share of its mass"),
    "map_zero_share": ("all-zero maps", "share of steps whose map is zero everywhere"),
}
SEED_COLOURS = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def seed_colour(k: int) -> str:
    """The dot colour of the k-th seed (in sorted order), the same in every plot and in the key."""
    return SEED_COLOURS[k % len(SEED_COLOURS)]


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.settings { color: #555; }
.lines { background: #f6f6f6; padding: 8px 12px; white-space: pre-wrap; font: 13px monospace; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 8px; }
.plot { border: 1px solid #ddd; padding: 4px; } .plot svg { width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; } th, td { border: 1px solid #ddd; padding: 3px 6px; }
th { background: #f0f0f0; position: sticky; top: 0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; }
tr.error td { background: #fde8e8; } .regression { color: #b00; font-weight: bold; } .pass { color: #070; }
"""


def plotted(columns: list[str], rows: list[dict]) -> list[str]:
    """The numeric metrics worth a plot: the fixed ones, then objects', then the check's figures."""

    def numeric(key: str) -> bool:
        return any(isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool) for r in rows)

    extra = [c for c in columns if c.startswith("attn_")]
    extra += [c for c in columns if c.startswith("check_") and c not in ("check_failed", "check_verdict")]
    return [c for c in [*METRICS, *extra] if c in columns and numeric(c)]


def title(metric: str) -> tuple[str, str]:
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("attn_") and metric.endswith("_lift"):
        name = metric[5:-5]
        return f"{name}: share / chance", f"map mass near the {name} over a uniform map's"
    if metric.startswith("attn_"):
        return f"{metric[5:]}: attention share", f"share of the map's mass near the {metric[5:]}"
    return metric.replace("_", " "), "rlcam check against the baseline (first seed)"


def _series(rows: list[dict], metric: str):
    """Checkpoints in order with their x and every ok seed's value of ``metric``."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["checkpoint"], []).append(row)
    by_step = all(g[0].get("step") is not None for g in groups.values())
    out = []
    for i, (label, group) in enumerate(groups.items()):
        values = [
            (r["seed"], float(r[metric]))
            for r in group
            if r.get("status") == "ok" and isinstance(r.get(metric), int | float) and math.isfinite(r[metric])
        ]
        out.append((label, group[0]["step"] if by_step else i, values))
    return out, by_step


RUN_COLOURS = ["#1f4e79", "#9a3412", "#166534", "#6b21a8", "#854d0e", "#be185d"]


def run_of(row: dict) -> str:
    """The training run a checkpoint belongs to, as far as the rows tell: its algorithm and folder."""
    folder = PurePath(str(row.get("path") or "")).parent
    return f"{row.get('algo') or 'unknown'} in {PurePath(*folder.parts[-2:]).as_posix()}/"


def plot_svg(rows: list[dict], metric: str) -> str:
    """One metric against training step as inline SVG (no XML header).

    Checkpoints of different runs (``run_of``: algorithm and folder) are not joined: each run gets its
    own line and band, and a run of one checkpoint an open circle at its mean.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    series, by_step = _series(rows, metric)
    runs: dict[str, list[dict]] = {}
    for row in rows:
        runs.setdefault(run_of(row), []).append(row)
    if not by_step or len(runs) == 1:
        runs = {"": rows}
    heading, meaning = title(metric)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "rlcam", "font.size": 9}):
        fig = Figure(figsize=(5.2, 3.0))
        ax = fig.add_subplot()
        for r, (run, run_rows) in enumerate(runs.items()):
            colour = RUN_COLOURS[r % len(RUN_COLOURS)]
            points = [(x, v) for _, x, v in (_series(run_rows, metric)[0] if run else series) if v]
            xs = [x for x, _ in points]
            means = [np.mean([y for _, y in v]) for _, v in points]
            if len(points) == 1:
                ax.scatter(xs, means, s=46, facecolors="none", edgecolors=colour, linewidths=1.4, zorder=4, label=run)
            elif points:
                lows = [min(y for _, y in v) for _, v in points]
                highs = [max(y for _, y in v) for _, v in points]
                ax.fill_between(xs, lows, highs, color=colour, alpha=0.13, linewidth=0)
                ax.plot(xs, means, color=colour, linewidth=1.6, label=run or None)
        if len(runs) > 1:
            ax.legend(fontsize=7, frameon=False)
        seeds = sorted({s for _, _, v in series for s, _ in v})
        for k, seed in enumerate(seeds):
            points = [(x, y) for _, x, v in series for s, y in v if s == seed]
            ax.scatter(*zip(*points, strict=True), s=10, color=seed_colour(k), alpha=0.8, zorder=3)
        ax.set_title(f"{heading}  ({meaning})", fontsize=9, loc="left")
        if by_step:
            ax.set_xlabel("training step")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 1.5M
        else:
            ax.set_xticks(range(len(series)), [label for label, _, _ in series], rotation=30, ha="right")
            ax.set_xlabel("checkpoint (training step unknown)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", svg[svg.index("<svg") :], flags=re.DOTALL)


def _fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def _td(value, cls: str = "") -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    classes = " ".join(c for c in (cls, "num" if numeric else "") if c)
    attribute = f" class='{classes}'" if classes else ""
    return f"<td{attribute}>{html.escape(_fmt(value))}</td>"


def _range(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return ""
    if len(values) == 1:
        return _fmt(float(values[0]))
    return f"{_fmt(float(np.mean(values)))} [{_fmt(float(min(values)))}, {_fmt(float(max(values)))}]"


def checkpoint_table(rows: list[dict], metrics: list[str]) -> str:
    head = "".join(f"<th>{html.escape(title(m)[0])}</th>" for m in metrics)
    body = []
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["checkpoint"], []).append(row)
    for label, group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        verdict = next((r["check_verdict"] for r in ok if r.get("check_verdict")), "")
        cells = "".join(f"<td class='num'>{html.escape(_range([r.get(m) for r in ok]))}</td>" for m in metrics)
        body.append(
            f"<tr class='{'' if ok else 'error'}'><td>{html.escape(label)}</td>{_td(group[0].get('step'))}"
            f"<td class='num'>{len(ok)}/{len(group)}</td>{cells}<td class='{verdict}'>{html.escape(verdict)}</td></tr>"
        )
    return (
        f"<table><tr><th>checkpoint</th><th>step</th><th>jobs ok</th>{head}<th>check</th></tr>{''.join(body)}</table>"
    )


def _link(path) -> str:
    if not path:
        return ""
    name = html.escape(str(path))
    return f"<a href='{name}'>{html.escape(re.sub(r'^.*/', '', str(path)).rsplit('.', 1)[-1])}</a>"


def job_table(rows: list[dict], metrics: list[str]) -> str:
    head = "".join(f"<th>{html.escape(title(m)[0])}</th>" for m in metrics)
    body = []
    for r in rows:
        links = " ".join(_link(r.get(k)) for k in ("trace", "video", "check_report") if r.get(k))
        error = r.get("error") or ""
        body.append(
            f"<tr class='{'' if r.get('status') == 'ok' else 'error'}'><td>{html.escape(r['job'])}</td>"
            f"{_td(r.get('step'))}{_td(r.get('seed'))}<td>{html.escape(str(r.get('status')))}</td>"
            + "".join(_td(r.get(m)) for m in metrics)
            + f"{_td(r.get('games'))}{_td(r.get('same_run_as'))}<td>{links}</td>{_td(r.get('seconds'))}"
            f"<td>{html.escape(error)}</td></tr>"
        )
    return (
        "<table><tr><th>job</th><th>step</th><th>seed</th><th>status</th>"
        f"{head}<th>games</th><th>same run as seed</th><th>files</th><th>seconds</th><th>error</th></tr>"
        f"{''.join(body)}</table>"
    )


def summary_html(rows: list[dict], settings, columns: list[str], lines: list[str] | None = None) -> str:
    """The whole page for the audit's rows (``rlcam.audit``) and its ``Settings``."""
    metrics = plotted(columns, rows)
    length = (
        f"{settings.steps} steps"
        if settings.steps
        else f"{settings.episodes} game(s), at most {settings.max_steps} steps"
    )
    described = [
        f"env {settings.env}",
        f"{length} per job",
        "argmax actions" if settings.deterministic else "sampled actions",
        f"method {settings.method}",
        f"target {settings.target or 'default'}",
        f"layer {settings.layer or 'default'}",
        f"objects within {settings.radius:g} px",
    ]
    if settings.baseline:
        described.append(f"baseline {settings.baseline} ({settings.check_mode})")
    n_ck = len({r["checkpoint"] for r in rows})
    failed = sum(r.get("status") != "ok" for r in rows)
    plots = "".join(f"<div class='plot'>{plot_svg(rows, m)}</div>" for m in metrics)
    seeds = sorted({r["seed"] for r in rows if r.get("status") == "ok"})
    key = ", ".join(f"<span style='color:{seed_colour(k)}'>&#9679; seed {s}</span>" for k, s in enumerate(seeds))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rlcam audit: {html.escape(settings.env)}</title>
<style>{_CSS}</style></head><body>
<h1>rlcam audit: {n_ck} checkpoints, {len(rows)} jobs, {failed} failed</h1>
<p class="settings">{html.escape("; ".join(described))}. rlcam {rlcam.__version__}. Columns: docs/audit.md.</p>
<div class="lines">{html.escape(chr(10).join(lines or []))}</div>
<h2>Metrics against training step</h2>
<p class="settings">Dots: each seed's value ({key}); line: the mean over seeds; band: the seeds' range.
Checkpoints of different runs (algorithm and folder) have a line each; a run of one checkpoint is an open circle.</p>
<div class="plots">{plots}</div>
<h2>Checkpoints (mean [min, max] over seeds)</h2>
<div class="wide">{checkpoint_table(rows, metrics)}</div>
<h2>Jobs</h2>
<div class="wide">{job_table(rows, metrics)}</div>
</body></html>
"""
