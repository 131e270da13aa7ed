"""``rlcam audit``: many checkpoints x seeds, one job each, on a local process pool or a Ray cluster.

A job is one (checkpoint, seed): play the agent, explain every step (``rlcam.record`` writes the
trace, and the video with ``videos``), measure the run from its trace, and, on the first seed of
each checkpoint when a baseline is given, run ``rlcam check`` against it. ``run_job`` is a pure
function of its ``Job`` (inputs in, files and a row out), so the rows are the same whichever
executor runs it; only ``seconds``, ``cpu_seconds``, ``worker`` and ``attempts`` say how it was run.

The audit folder::

    audit.json          the settings every job shares; a rerun into the folder must match them
    rows/<job>.json     a finished job's row, written by the driver after the job's files
    traces/<job>.npz    videos/<job>.mp4 (with videos)    checks/<checkpoint>.json (with a baseline)
    results.csv         every row of the folder, one per job (columns: docs/audit.md)
    summary.html        tables and plots of the metrics against training step (rlcam.audit_html)

A job is complete when its row says ``ok``, its checkpoint still has the same sha256 and the files
the row names exist; a rerun runs only the other jobs. Every file appears under its final name only
when complete (written under a hidden ``.<name>.partial`` name, then renamed).

This module holds the inputs (checkpoints, seeds, settings), the driver and the CSV; the job is
``rlcam.audit_job``, the executors ``rlcam.audit_exec``, the page ``rlcam.audit_html``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlcam.audit_exec import RAY_INSTALL, STOPS, PoolExecutor, RayExecutor, import_ray
from rlcam.audit_job import (
    DEFAULT_MAX_STEPS,
    OUTPUT_DIRS,
    Checkpoint,
    Job,
    JobResult,
    Settings,
    measure,
    object_shares,
    run_job,
    write_atomic,
)
from rlcam.errors import RlcamError

__all__ = [
    "DEFAULT_MAX_STEPS",
    "RAY_INSTALL",
    "AuditResult",
    "Checkpoint",
    "Job",
    "JobResult",
    "PoolExecutor",
    "RayExecutor",
    "Settings",
    "audit",
    "checkpoint_step",
    "checkpoints",
    "columns",
    "folder_zips",
    "import_ray",
    "infer_env",
    "make_settings",
    "measure",
    "object_shares",
    "parse_seeds",
    "plan",
    "run_job",
    "to_csv",
    "verdict_lines",
]

SETTINGS_FILE = "audit.json"
CSV_FILE = "results.csv"
HTML_FILE = "summary.html"

_STEPS_IN_NAME = re.compile(r"_(\d+)_steps\Z")


# -- inputs ---------------------------------------------------------------------------------------


def checkpoint_step(path: Path) -> tuple[int | None, str]:
    """``(step, where it came from)``: the CheckpointCallback name, else the zip's ``num_timesteps``."""
    from rlcam.agents import read_agent_data

    match = _STEPS_IN_NAME.search(path.stem)
    if match:
        return int(match.group(1)), "name"
    try:
        steps = read_agent_data(path).get("num_timesteps")
    except RlcamError:  # a damaged zip: its job will say so in its row
        return None, ""
    return (int(steps), "data") if isinstance(steps, int) and not isinstance(steps, bool) else (None, "")


def folder_zips(folder: Path) -> list[Path]:
    """The ``.zip`` files directly in ``folder`` (CheckpointCallback files, rl-zoo's run files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RlcamError(f"checkpoint folder {folder} does not exist or is not a folder.")
    zips = sorted(p for p in folder.glob("*.zip") if p.is_file())
    if not zips:
        raise RlcamError(
            f"folder {folder} holds no .zip checkpoints (SB3's CheckpointCallback writes <prefix>_<N>_steps.zip, "
            "rl-zoo writes <env>.zip, best_model.zip and rl_model_<N>_steps.zip)."
        )
    return zips


def checkpoints(paths: Iterable[Path]) -> list[Checkpoint]:
    """Checkpoints for the given zips, with unique labels, ordered by training step (unknown last)."""
    unique: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise RlcamError(f"checkpoint {path} does not exist or is not a file.")
        unique.setdefault(path.resolve(), path)
    stems = Counter(p.stem for p in unique.values())
    labels: set[str] = set()
    found = []
    for path in unique.values():
        label = path.stem if stems[path.stem] == 1 else f"{path.resolve().parent.name}-{path.stem}"
        base, n = label, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.add(label)
        step, source = checkpoint_step(path)
        found.append(Checkpoint(path=path, label=label, step=step, step_from=source))
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.label))


def infer_env(folders: Iterable[Path], zips: Iterable[Path]) -> str:
    """The env of an rl-zoo run: its folder ``<env>_<run>`` or its final ``<env>.zip``."""
    from rlcam.envs import resolve_env_id

    candidates = [re.sub(r"_\d+\Z", "", Path(f).resolve().name) for f in folders] + [Path(z).stem for z in zips]
    for name in candidates:
        if re.search(r"-v\d+\Z", name):
            with contextlib.suppress(RlcamError):
                return resolve_env_id(name).env_id
    raise RlcamError("say which env the checkpoints play with --env (e.g. --env Breakout).")


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"0,3,7"``, ``"0-2,9"`` -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise RlcamError(f"--seeds takes numbers and ranges like 0-4 or 0,3,7, not {text!r}.")
        low = int(match.group(1))
        seeds.update(range(low, int(match.group(2) or low) + 1))
    return sorted(seeds)


def make_settings(baseline: Path | None = None, spec: Path | None = None, **fields) -> Settings:
    """``Settings`` from user input, checked before any job runs (one sentence for what is wrong).

    Args:
        baseline: a trace written by ``rlcam record`` to check every checkpoint against.
        spec: the check's thresholds (JSON or TOML, ``rlcam.check.Thresholds`` fields).
        **fields: the other ``Settings`` fields.
    """
    from rlcam.agents import file_sha256
    from rlcam.check import MODES, REQUIRED, load_spec
    from rlcam.device import resolve_device
    from rlcam.video import load_trace

    if fields.get("steps") is not None:
        fields.setdefault("episodes", None)
    settings = Settings(**fields)
    resolve_device(settings.device)  # one sentence here, not one failed row per job
    if (settings.steps is None) == (settings.episodes is None):
        raise RlcamError("give either --episodes or --steps per job.")
    for name, value in (
        ("--steps", settings.steps),
        ("--episodes", settings.episodes),
        ("--max-steps", settings.max_steps),
    ):
        if value is not None and value < 1:
            raise RlcamError(f"{name} must be a positive number, not {value}.")
    if not settings.radius > 0:
        raise RlcamError(f"--radius must be a positive number of pixels, not {settings.radius}.")
    if settings.check_mode not in MODES:
        raise RlcamError(f"unknown check mode {settings.check_mode!r}; choose one of {', '.join(MODES)}.")
    if spec is not None and baseline is None:
        raise RlcamError("--spec sets the thresholds of the check against --baseline; give --baseline too.")
    if baseline is None:
        return settings
    trace = load_trace(baseline, keys=[k for k in REQUIRED if k != "cam_input"])
    missing = [k for k in ("env_id", "seed") if k not in trace.meta]
    if missing:
        raise RlcamError(
            f"baseline {baseline} lacks {', '.join(missing)} in its meta; write baselines with 'rlcam record'."
        )
    thresholds = dataclasses.asdict(load_spec(spec)) if spec is not None else None
    return dataclasses.replace(
        settings, baseline=str(Path(baseline).resolve()), baseline_sha256=file_sha256(baseline), thresholds=thresholds
    )


def plan(checkpoints: list[Checkpoint], seeds: list[int], settings: Settings, out: Path) -> list[Job]:
    """Every (checkpoint, seed) job, checkpoint by checkpoint."""
    return [
        Job(ck, seed, settings, Path(out), check=settings.baseline is not None and seed == seeds[0])
        for ck in checkpoints
        for seed in seeds
    ]


# -- the driver -----------------------------------------------------------------------------------


@dataclass
class AuditResult:
    rows: list[dict]
    """Every row in the folder (this run's and earlier ones'), by step, checkpoint, seed."""
    ran: int
    skipped: int
    interrupted: bool
    lines: list[str] = field(default_factory=list)
    """A one-line verdict per checkpoint, then warnings."""
    csv: Path | None = None
    html: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") != "ok"]

    @property
    def regressions(self) -> list[dict]:
        return [r for r in self.rows if r.get("check_verdict") in ("regression", "error")]


@contextlib.contextmanager
def _locked(out: Path):
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RlcamError(f"another rlcam audit is writing into {out}; wait for it or use another --out.") from None
        yield


def _prepare(out: Path, settings: Settings, overwrite: bool) -> None:
    """Claim ``out`` for these settings: refuse other settings, drop what killed runs left."""
    saved = out / SETTINGS_FILE
    if overwrite:
        for sub in OUTPUT_DIRS:
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in (SETTINGS_FILE, CSV_FILE, HTML_FILE):
            (out / name).unlink(missing_ok=True)
    elif saved.exists():
        try:
            old = json.loads(saved.read_text())
        except (OSError, ValueError):
            raise RlcamError(f"{saved} is unreadable; pass --overwrite to start the audit again.") from None
        new = json.loads(json.dumps(settings.comparable()))
        differ = [f"{k} {old.get(k)!r} then, {new[k]!r} now" for k in new if old.get(k) != new[k]]
        if differ:
            raise RlcamError(
                f"{out} holds an audit with other settings ({'; '.join(differ)}); "
                "use another --out, or --overwrite to start it again."
            )
    for sub in OUTPUT_DIRS:
        (out / sub).mkdir(exist_ok=True)
    _drop_partials(out)
    write_atomic(saved, json.dumps(settings.comparable(), indent=1).encode())


def _drop_partials(out: Path) -> None:
    """Delete the temporaries of jobs that were killed or stopped (only while holding the folder's lock)."""
    for sub in OUTPUT_DIRS:
        for stale in (out / sub).glob(".*.partial*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _drop_unlanded(jobs: list[Job], out: Path) -> None:
    """After a stop, delete the files of jobs that have no row: a worker ended between its trace and its row."""
    for job in jobs:
        if not (out / "rows" / f"{job.name}.json").exists():
            for rel in [job.trace, job.video] + [job.check_report] * job.check:  # a report is the first seed's
                (out / rel).unlink(missing_ok=True)


def _read_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((out / "rows").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            rows[path.stem] = json.loads(path.read_text())
    return rows


def _complete(job: Job, row: dict | None, sha: str | None) -> bool:
    if row is None or row.get("status") != "ok" or sha is None or row.get("agent_sha256") != sha:
        return False
    if job.check and "check_verdict" not in row:
        return False
    return all((job.out / row[key]).is_file() for key in ("trace", "video", "check_report") if row.get(key))


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def audit(
    checkpoints: list[Checkpoint],
    seeds: list[int],
    settings: Settings,
    out: Path,
    executor,
    overwrite: bool = False,
    progress: bool = True,
) -> AuditResult:
    """Run every (checkpoint, seed) job not already complete in ``out``; write the CSV and the summary.

    Ctrl-C stops the run: the jobs that finished are kept (and written to the CSV and the summary),
    and ``interrupted`` is set. A rerun of the same audit runs the rest.
    """
    from tqdm import tqdm

    from rlcam.agents import file_sha256

    if not checkpoints:
        raise RlcamError("no checkpoints to audit; give .zip files or --folder.")
    if not seeds:
        raise RlcamError("no seeds to audit; give --seeds.")
    out = Path(out)
    if not out.parent.exists():
        raise RlcamError(f"output directory {out.parent} does not exist; create it first.")
    if out.exists() and not out.is_dir():
        raise RlcamError(f"--out {out} is a file; give a folder.")
    out.mkdir(exist_ok=True)
    with _locked(out):
        _prepare(out, settings, overwrite)
        jobs = plan(checkpoints, seeds, settings, out)
        shas = {}
        for ck in checkpoints:
            with contextlib.suppress(OSError):
                shas[ck.label] = file_sha256(ck.path)
        previous = _read_rows(out)
        todo = [j for j in jobs if not _complete(j, previous.get(j.name), shas.get(j.checkpoint.label))]
        # disable=None: a bar only on a terminal, not in logs
        bar = tqdm(total=len(todo), unit="job", desc="rlcam audit", disable=None if progress and todo else True)
        failures = 0

        def on_done(job: Job, result: JobResult, attempts: int) -> None:
            nonlocal failures
            row = result.row
            if row.get("status") == "interrupted":
                return  # not complete: a rerun runs it again
            row = {key: _clean(value) for key, value in row.items()} | {"attempts": attempts}
            with STOPS.held():  # the files and their row land together, or a rerun redoes the job
                for rel, data in (result.files or {}).items():
                    write_atomic(out / rel, data)
                write_atomic(out / "rows" / f"{job.name}.json", json.dumps(row, indent=1).encode())
            failures += row["status"] != "ok"
            bar.update(1)
            bar.set_postfix(failed=failures, refresh=False)

        interrupted = False
        try:
            with STOPS.installed():  # SIGTERM (a CI timeout, kill) stops the run as Ctrl-C does
                if todo:
                    executor.run(todo, on_done)
                interrupted = STOPS.count > 0  # a stop whose KeyboardInterrupt was lost
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            _drop_partials(out)
            if interrupted:
                _drop_unlanded(todo, out)
        rows = sorted(_read_rows(out).values(), key=_order)
        _mark_identical(rows)
        result = AuditResult(rows=rows, ran=len(todo), skipped=len(jobs) - len(todo), interrupted=interrupted)
        result.lines = verdict_lines(rows, settings)
        result.csv = out / CSV_FILE
        write_atomic(result.csv, to_csv(rows).encode())
        result.html = out / HTML_FILE
        from rlcam.audit_html import summary_html

        write_atomic(result.html, summary_html(rows, settings, columns(rows), result.lines).encode())
    return result


def _order(row: dict):
    return (row.get("step") is None, row.get("step") or 0, str(row.get("checkpoint")), int(row.get("seed") or 0))


def _mark_identical(rows: list[dict]) -> None:
    """``same_run_as``: the lowest seed of the same checkpoint that played exactly the same run."""
    first: dict[tuple, int] = {}
    for row in rows:
        row["same_run_as"] = None
        if row.get("status") != "ok" or not row.get("run_sha"):
            continue
        key = (row["checkpoint"], row["run_sha"])
        if key in first:
            row["same_run_as"] = first[key]
        else:
            first[key] = row["seed"]


# -- results.csv and the verdicts -----------------------------------------------------------------

LEADING = [
    "job", "checkpoint", "step", "step_from", "seed", "status", "error",
    "return", "return_sd", "return_total", "games", "steps", "truncated",
    "action_entropy", "top_action", "top_action_share", "action_sd", "policy_entropy",
    "map_entropy", "map_peak_share", "map_zero_share", "map_mass",
]  # fmt: skip
TRAILING = [
    "run_sha", "same_run_as", "algo", "env_id", "agent_sha256", "path", "trace", "video", "check_report",
    "attempts", "seconds", "cpu_seconds", "worker", "device",
]  # fmt: skip


def columns(rows: list[dict]) -> list[str]:
    """results.csv's columns: the fixed ones, then each object's, then the check's, then where and how."""
    keys = {k for row in rows for k in row}
    attn = sorted(k for k in keys if k.startswith("attn_"))
    checks = sorted(k for k in keys if k.startswith("check_") and k not in TRAILING)
    checks = [k for k in ("check_verdict", "check_failed") if k in checks] + [
        k for k in checks if k not in ("check_verdict", "check_failed", "check_error")
    ]
    checks += ["check_error"] if "check_error" in keys else []
    known = set(LEADING) | set(TRAILING) | set(attn) | set(checks)
    return LEADING + attn + checks + TRAILING + sorted(keys - known)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = columns(rows)
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buffer.getvalue()


def by_checkpoint(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["checkpoint"], []).append(row)
    return groups


def _spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{np.mean(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def verdict_lines(rows: list[dict], settings: Settings) -> list[str]:
    """One line per checkpoint (its seeds' figures, the check's verdict, failures), then warnings."""
    lines, identical = [], []
    for label, group in by_checkpoint(rows).items():
        ok = [r for r in group if r.get("status") == "ok"]
        step = group[0].get("step")
        head = f"{label} (step {step:,})" if step is not None else f"{label} (step unknown)"
        if not ok:
            lines.append(f"{head}: FAILED, {len(group)} of {len(group)} jobs: {group[0].get('error')}")
            continue
        returns = [r.get("return") if r.get("return") is not None else r.get("return_total") for r in ok]
        parts = [f"{len(ok)}/{len(group)} jobs ok", f"return {_spread(returns)}"]
        for key in sorted(k for k in ok[0] if k.startswith("attn_") and not k.endswith("_lift")):
            lift = _spread([r.get(f"{key}_lift") for r in ok])
            parts.append(f"{key[5:]} share {_spread([r.get(key) for r in ok])} ({lift}x chance)")
        parts.append(f"map entropy {_spread([r.get('map_entropy') for r in ok])}")
        verdicts = [r["check_verdict"] for r in ok if r.get("check_verdict")]
        if verdicts:
            failed = next((r.get("check_failed") for r in ok if r.get("check_verdict")), 0)
            shown = {"pass": "check PASS", "regression": f"check REGRESSION ({failed} failed)"}
            parts.append(shown.get(verdicts[0], "check ERROR"))
        if any(r.get("truncated") for r in ok):
            parts.append(f"{sum(bool(r.get('truncated')) for r in ok)} truncated at {settings.max_steps} steps")
        if len(ok) < len(group):
            bad = next(r for r in group if r.get("status") != "ok")
            parts.append(f"{len(group) - len(ok)} failed: {bad.get('error')}")
        lines.append(f"{head}: " + "; ".join(parts))
        same = [r for r in ok if r.get("same_run_as") is not None]
        if same:
            pairs = ", ".join(f"{r['seed']}={r['same_run_as']}" for r in same)
            identical.append(f"{label} seeds {pairs}")
    if identical:
        why = "argmax actions differ only by the noop reset" if settings.deterministic else "the runs did not diverge"
        lines.append(
            f"warning: some seeds played identical runs ({why}): {'; '.join(identical)}; their spread is not a "
            "spread over behaviour (sampled actions, the default, avoid it)."
        )
    return lines
