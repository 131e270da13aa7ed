"""``rlcam audit``: many checkpoints x seeds, one job each, on a local process pool or a Ray cluster.

A job is one (checkpoint, seed): play the agent, explain every step (``rlcam.record`` writes the
trace, and the video with ``videos``), measure the run from its trace, and, on the first seed of
each checkpoint when a baseline is given, run ``rlcam check`` against it. ``run_job`` is a pure
function of its ``Job`` (inputs in, files and a row out), so the rows are the same whichever
executor runs it; only ``seconds``, ``worker`` and ``attempts`` say how it was run.

The audit folder::

    audit.json          the settings every job shares; a rerun into the folder must match them
    rows/<job>.json     a finished job's row, written by the driver after the job's files
    traces/<job>.npz    videos/<job>.mp4 (with videos)    checks/<checkpoint>.json (with a baseline)
    results.csv         every row of the folder, one per job (columns: docs/audit.md)
    summary.html        tables and plots of the metrics against training step (rlcam.audit_html)

A job is complete when its row says ``ok``, its checkpoint still has the same sha256 and the files
the row names exist; a rerun runs only the other jobs. Every file appears under its final name only
when complete (written under a hidden ``.<name>.partial`` name, then renamed).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlcam.errors import RlcamError

SETTINGS_FILE = "audit.json"
CSV_FILE = "results.csv"
HTML_FILE = "summary.html"
OUTPUT_DIRS = ("rows", "traces", "videos", "checks")
DEFAULT_MAX_STEPS = 10_000
RAY_INSTALL = "pip install 'rlcam[ray]'"

# -- settings, checkpoints, jobs ----------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What every job of an audit shares. Saved in ``audit.json``; a rerun must match it."""

    env: str
    """Env name, as for ``rlcam record``."""
    episodes: int | None = 1
    """Play this many full games per job (capped by ``max_steps``), or None with ``steps``."""
    steps: int | None = None
    """Play exactly this many agent steps per job instead of ``episodes``."""
    max_steps: int = DEFAULT_MAX_STEPS
    """With ``episodes``: stop a job after this many steps (its row then says ``truncated``)."""
    deterministic: bool = False
    """Argmax actions. The default samples them (seeded): with argmax, Breakout's runs differ only
    by their noop reset, and different seeds often play byte-identical games."""
    target: str | None = None
    layer: str | None = None
    method: str = "gradcam"
    placement: str = "bilinear"
    radius: float = 10.0
    """px on the raw frame counted as near an object (as ``rlcam check``'s default)."""
    videos: bool = False
    """Also write each job's annotated MP4."""
    baseline: str | None = None
    """A trace written by ``rlcam record``: each checkpoint is checked against it (``rlcam check``)."""
    baseline_sha256: str | None = None
    check_mode: str = "replay"
    thresholds: dict | None = None
    """``rlcam.check.Thresholds`` fields; None for the defaults."""
    trust: bool = False
    """Allow SB3's full (unpickling) load; not part of what makes two audits comparable."""

    def comparable(self) -> dict:
        """The fields two runs into one folder must share (the baseline by content, not by path)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("trust", "baseline")}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    label: str
    """Unique in the audit: the file's stem, or ``<folder>-<stem>`` where stems repeat."""
    step: int | None
    """Training step: from ``*_<N>_steps.zip``, else the zip's ``num_timesteps``; None if unknown."""
    step_from: str = ""
    """``name``, ``data`` or empty (unknown)."""


@dataclass(frozen=True)
class Job:
    """One (checkpoint, seed) of an audit writing into ``out``."""

    checkpoint: Checkpoint
    seed: int
    settings: Settings
    out: Path
    check: bool = False
    """Run ``rlcam check`` against the baseline in this job (the first seed of each checkpoint:
    the check replays the baseline's own seed, so it would give the same figures for every seed)."""

    @property
    def name(self) -> str:
        return f"{self.checkpoint.label}_seed{self.seed}"

    @property
    def trace(self) -> str:
        return f"traces/{self.name}.npz"

    @property
    def video(self) -> str:
        return f"videos/{self.name}.mp4"

    @property
    def check_report(self) -> str:
        return f"checks/{self.checkpoint.label}.json"


@dataclass
class JobResult:
    row: dict
    files: dict[str, bytes] | None = None
    """Output files (relative path -> bytes) when the job ran away from the audit folder."""


_STEPS_IN_NAME = re.compile(r"_(\d+)_steps\Z")


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
    from rlcam.video import load_trace

    if fields.get("steps") is not None:
        fields.setdefault("episodes", None)
    settings = Settings(**fields)
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


# -- metrics --------------------------------------------------------------------------------------


def object_shares(
    cam: np.ndarray,
    centres: np.ndarray,
    to_input_y: np.ndarray,
    to_input_x: np.ndarray,
    frame_hw: tuple[int, int],
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the share of the frame-placed map within ``radius`` px of an object, and a uniform map's.

    The map on the frame is ``Fy @ cam @ Fx^T`` (the trace's placement on the input, then the
    bilinear stretch to the frame, as ``rlcam check`` places it), so its mass inside the disc is
    ``sum(cam * Fy_disc^T @ disc @ Fx_disc)`` over the disc's bounding box: a few small matmuls per
    step instead of a 210x160 map. NaN where the object is off screen or the map is all zero.

        cam (T, h, w)   centres (T, 2) (y, x) frame px   to_input_y (H, h)   to_input_x (W, w)
    """
    from rlcam.geometry import stretch_matrix

    height, width = frame_hw
    fy = stretch_matrix(height, to_input_y.shape[0]) @ np.asarray(to_input_y, np.float64)  # (Hf, h)
    fx = stretch_matrix(width, to_input_x.shape[0]) @ np.asarray(to_input_x, np.float64)  # (Wf, w)
    cam = np.asarray(cam, np.float64)
    totals = np.einsum("a,tab,b->t", fy.sum(0), cam, fx.sum(0))
    share = np.full(len(cam), np.nan)
    chance = np.full(len(cam), np.nan)
    for t in np.flatnonzero(np.isfinite(centres).all(1) & (totals > 0)):
        cy, cx = (float(v) for v in centres[t])
        y0, y1 = max(0, math.ceil(cy - radius)), min(height, math.floor(cy + radius) + 1)
        x0, x1 = max(0, math.ceil(cx - radius)), min(width, math.floor(cx + radius) + 1)
        if y0 >= y1 or x0 >= x1:  # the disc lies outside the frame
            share[t] = chance[t] = 0.0
            continue
        ys, xs = np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :]
        disc = ((ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2).astype(np.float64)
        share[t] = float((fy[y0:y1].T @ disc @ fx[x0:x1] * cam[t]).sum() / totals[t])
        chance[t] = float(disc.sum() / (height * width))
    return share, chance


def _mean(values: np.ndarray) -> float | None:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else None


def measure(trace, radius: float = 10.0) -> dict:
    """The per-job metrics of a single-env trace (``rlcam.video.load_trace``); docs/audit.md defines each."""
    from rlcam.video import PLACEMENT_META

    meta = trace.meta
    reward = np.asarray(trace["reward"], np.float64)
    game_over = np.asarray(trace["game_over"], bool)
    actions = np.asarray(trace["action"], np.int64)
    steps = len(reward)
    ends = np.flatnonzero(game_over) + 1
    starts = np.r_[0, ends][: len(ends)]
    scores = [float(reward[a:b].sum()) for a, b in zip(starts, ends, strict=True)]
    requested = meta.get("episodes_requested")
    names = list(meta.get("action_names") or [f"a{i}" for i in range(int(actions.max(initial=0)) + 1)])
    counts = np.bincount(actions, minlength=len(names)).astype(np.float64)
    p = counts / max(steps, 1)
    nonzero = p[p > 0]
    row: dict = {
        "return": float(np.mean(scores)) if scores else None,
        "return_sd": float(np.std(scores)) if len(scores) > 1 else None,
        "return_total": float(reward.sum()),
        "games": len(scores),
        "steps": steps,
        "truncated": bool(requested is not None and len(scores) < int(requested)),
        "action_entropy": float(-(nonzero * np.log(nonzero)).sum() / math.log(len(names))) if len(names) > 1 else 0.0,
        "top_action": names[int(counts.argmax())] if steps else "",
        "top_action_share": float(p.max()) if steps else None,
    }

    cam = np.asarray(trace["cam"], np.float64)  # (T, h, w) raw maps on the layer grid
    sums = cam.sum((1, 2))
    lit = sums > 0
    dist = cam[lit] / sums[lit, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(dist > 0, dist * np.log(dist), 0.0).sum((1, 2))
    cells = cam.shape[1] * cam.shape[2]
    row.update(
        map_entropy=_mean(-plogp / math.log(cells)) if cells > 1 else None,
        map_peak_share=_mean(dist.max((1, 2))) if len(dist) else None,
        map_zero_share=float(1.0 - lit.mean()) if steps else None,
        map_mass=_mean(sums),
    )

    placement = meta.get(PLACEMENT_META)
    frame_hw = (210, 160) if meta.get("atari_wrappers") else None
    for key in sorted(k for k in trace.keys() if k.startswith("obj_")):
        name = key[4:]
        share = chance = np.full(steps, np.nan)
        if placement is not None:
            to_y, to_x = np.asarray(placement["y"]), np.asarray(placement["x"])
            hw = frame_hw or (to_y.shape[0], to_x.shape[0])
            share, chance = object_shares(cam, np.asarray(trace[key], np.float64), to_y, to_x, hw, radius)
        mean_share, mean_chance = _mean(share), _mean(chance)
        row[f"attn_{name}"] = mean_share
        row[f"attn_{name}_lift"] = mean_share / mean_chance if mean_share is not None and mean_chance else None
    digest = hashlib.sha256(actions.tobytes() + reward.astype(np.float32).tobytes())
    row["run_sha"] = digest.hexdigest()[:16]
    return row


# -- the job --------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def base_row(job: Job) -> dict:
    ck = job.checkpoint
    return {
        "job": job.name,
        "checkpoint": ck.label,
        "step": ck.step,
        "step_from": ck.step_from,
        "seed": job.seed,
        "status": "ok",
        "error": "",
        "path": str(ck.path),
    }


def failed_row(job: Job, message: str) -> dict:
    return {**base_row(job), "status": "error", "error": message}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, RlcamError) else f"{type(exc).__name__}: {text[:300]}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check(job: Job, agent: Path, baseline: Path, root: Path) -> dict:
    from rlcam.check import Thresholds, check

    s = job.settings
    try:
        report = check(agent, baseline, Thresholds(**(s.thresholds or {})), mode=s.check_mode, trust=s.trust)
    except RlcamError as exc:
        return {"check_verdict": "error", "check_error": str(exc)}
    _write_atomic(root / job.check_report, report.to_json().encode())
    row = {"check_verdict": "pass" if report.passed else "regression", "check_failed": len(report.failures)}
    row.update({f"check_{_slug(c.name)}": c.value for c in report.criteria})
    row["check_report"] = job.check_report
    return row


def _play_and_measure(job: Job, agent: Path, baseline: Path | None, root: Path) -> dict:
    """Run the job with its inputs at ``agent``/``baseline`` and its outputs under ``root``."""
    from rlcam.record import RecordConfig, record
    from rlcam.video import load_trace

    started = time.perf_counter()
    s = job.settings
    row = base_row(job)
    trace, video = root / job.trace, root / job.video
    written = [trace, video, root / job.check_report]
    try:
        for sub in OUTPUT_DIRS[1:]:
            (root / sub).mkdir(parents=True, exist_ok=True)
        cfg = RecordConfig(
            agent=agent,
            env=s.env,
            out=video,
            trace=trace,
            steps=s.steps,
            episodes=s.episodes,
            max_steps=s.max_steps if s.episodes is not None else None,
            seed=job.seed,
            deterministic=s.deterministic,
            target=s.target,
            layer=s.layer,
            method=s.method,
            placement=s.placement,
            overwrite=True,  # the audit decides what is complete; a file here is a killed attempt's
            video=s.videos,
            trust=s.trust,
        )
        result = record(cfg)
        if result.interrupted:  # SIGINT/SIGTERM reached the recorder: the run is shorter than asked
            raise KeyboardInterrupt
        meta = result.meta
        row.update(algo=meta["algo"], env_id=meta["env_id"], agent_sha256=meta["agent_sha256"])
        row.update(measure(load_trace(trace), s.radius))
        row.update(trace=job.trace, video=job.video if s.videos else "")
        if job.check and baseline is not None:
            row.update(_check(job, agent, baseline, root))
    except KeyboardInterrupt:
        row.update(status="interrupted", error="interrupted")
    except Exception as exc:  # RlcamError: bad input (a corrupt zip, a failing env); anything else: a bug
        row.update(status="error", error=_one_line(exc))
    if row["status"] != "ok":  # outputs exist only for complete jobs
        for path in written:
            path.unlink(missing_ok=True)
    row.update(seconds=round(time.perf_counter() - started, 3), worker=f"{socket.gethostname()}:{os.getpid()}")
    return row


def run_job(job: Job, inputs: dict[str, bytes] | None = None) -> JobResult:
    """Run one job; never raises for the job's own failures (they go in the row's ``error``).

    Args:
        job: what to run; its outputs go under ``job.out``.
        inputs: the checkpoint's bytes (``agent``) and the baseline's (``baseline``) when the job
            runs where the audit's files are not (a Ray cluster without a shared filesystem): the
            job then works in a temporary folder and returns its output files in the result.
    """
    if inputs is None:
        baseline = Path(job.settings.baseline) if job.settings.baseline else None
        return JobResult(_play_and_measure(job, job.checkpoint.path, baseline, job.out))
    with tempfile.TemporaryDirectory(prefix="rlcam-audit-") as tmp:
        root = Path(tmp)
        (root / "inputs").mkdir()
        agent = root / "inputs" / job.checkpoint.path.name
        agent.write_bytes(inputs["agent"])
        baseline = None
        if inputs.get("baseline") is not None:
            baseline = root / "inputs" / "baseline.npz"
            baseline.write_bytes(inputs["baseline"])
        row = _play_and_measure(job, agent, baseline, root)
        names = [row.get(key) for key in ("trace", "video", "check_report")]
        files = {rel: (root / rel).read_bytes() for rel in names if rel}
    return JobResult(row, files)


def _quiet_worker() -> None:
    """What each worker sets before its jobs: one torch thread and one BLAS thread, no library warnings."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    if not os.environ.get("RLCAM_WARNINGS"):
        warnings.simplefilter("ignore")


def _init_pool_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the driver decides
    _quiet_worker()


def run_job_in_thread(job: Job, inputs: dict[str, bytes] | None = None) -> JobResult:
    """``run_job`` on a fresh thread of a worker process, which is how both executors call it.

    Off the main thread the recorder installs no signal handlers, so a SIGTERM (how a pool ends its
    workers) or a SIGKILL ends the worker at once, as executors expect; in the main thread the
    recorder would finish the step and close a shorter trace first.
    """
    import torch

    box: list = []

    def work() -> None:
        torch.set_num_threads(1)
        box.append(run_job(job, inputs))

    thread = threading.Thread(target=work, name=f"rlcam-audit-{job.name}")
    thread.start()
    thread.join()
    if not box:
        raise RuntimeError(f"job {job.name} ended without a result")
    return box[0]


# -- executors ------------------------------------------------------------------------------------

OnDone = Callable[[Job, JobResult, int], None]


def _died(job: Job, tries: int) -> JobResult:
    return JobResult(failed_row(job, f"its worker process died in all {tries} attempts (killed, or out of memory)"))


class PoolExecutor:
    """Jobs on local worker processes (spawn start method, one torch thread each).

    At most ``workers`` jobs are in flight, so a worker that dies (killed, out of memory) breaks the
    pool with only those jobs in it: the pool is rebuilt and they run again, up to ``attempts`` times.
    Used as a context manager, the workers (and their imports) live on across ``run`` calls.
    """

    name = "process pool"

    def __init__(self, workers: int = 2, attempts: int = 3):
        if workers < 1:
            raise RlcamError(f"--workers must be at least 1, not {workers}.")
        self.workers = workers
        self.attempts = attempts
        self._pool: ProcessPoolExecutor | None = None
        self._older: set[int] = set()  # child processes that are not this pool's workers
        self._kept = False

    def __enter__(self) -> PoolExecutor:
        self._kept = True
        return self

    def __exit__(self, *exc) -> None:
        self._kept = False
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def worker_pids(self) -> list[int]:
        """The pool's live worker processes (children started since the pool was)."""
        return [p.pid for p in multiprocessing.active_children() if p.pid not in self._older]

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._older = {p.pid for p in multiprocessing.active_children()}
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_pool_worker)
        return self._pool

    def run(self, jobs: list[Job], on_done: OnDone) -> None:
        queue, tries = deque(jobs), Counter()
        try:
            while queue:
                for job in reversed(self._round(queue, tries, on_done)):
                    if tries[job.name] < self.attempts:
                        queue.appendleft(job)
                    else:
                        on_done(job, _died(job, tries[job.name]), tries[job.name])
        finally:
            if not self._kept:
                self.close()

    def _round(self, queue: deque, tries: Counter, on_done: OnDone) -> list[Job]:
        """Run jobs from ``queue`` until it is empty or a worker dies; returns the jobs a death took."""
        pool = self._start()
        running: dict[Future, Job] = {}
        died: list[Job] = []
        try:
            while (queue and not died) or running:
                while queue and not died and len(running) < self.workers:
                    job = queue.popleft()
                    tries[job.name] += 1
                    running[pool.submit(run_job_in_thread, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        died.append(job)
                        continue
                    except Exception as exc:  # the job or its result could not cross to the worker and back
                        result = JobResult(failed_row(job, f"the pool could not run it ({_one_line(exc)})"))
                    on_done(job, result, tries[job.name])
        except KeyboardInterrupt:
            self._stop(running, on_done, tries)
            raise
        if died:  # a broken pool takes no more work: the next round starts a new one
            self.close()
        return died

    def _stop(self, running: dict[Future, Job], on_done: OnDone, tries: Counter) -> None:
        """Ctrl-C: keep the jobs whose results are in, end the workers (their jobs are incomplete)."""
        for future, job in running.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                on_done(job, future.result(), tries[job.name])
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.close()


def import_ray():
    try:
        import ray
    except ImportError:
        raise RlcamError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}.") from None
    return ray


def _ray_task(job: Job, agent: bytes | None, baseline: bytes | None) -> JobResult:
    _quiet_worker()
    return run_job_in_thread(job, None if agent is None else {"agent": agent, "baseline": baseline})


class RayExecutor:
    """Each job a Ray task on the cluster at ``address`` (``RAY_ADDRESS``), else on a local Ray instance.

    Connected to an existing cluster, the jobs get their inputs through Ray's object store and send
    their files back (``ship``), so the nodes need rlcam installed but no shared filesystem. Ray's
    own retries are off: a task whose worker dies is resubmitted here, up to ``attempts`` times, as
    with the pool, so ``attempts`` in the rows means the same on both executors.
    """

    name = "Ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, attempts: int = 3, ship=None):
        self.ray = import_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.attempts = attempts
        self.ship = bool(self.address) if ship is None else ship

    def run(self, jobs: list[Job], on_done: OnDone) -> None:
        ray = self.ray
        started = not ray.is_initialized()
        if started:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        crashes = tuple(
            getattr(ray.exceptions, n) for n in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError")
        )
        shipped: dict[str, object] = {}
        refs: dict[object, Job] = {}
        tries: Counter = Counter()

        def blob(path) -> object:
            if path not in shipped:
                shipped[path] = ray.put(Path(path).read_bytes())
            return shipped[path]

        def submit(job: Job) -> None:
            tries[job.name] += 1
            agent = baseline = None
            if self.ship:
                try:
                    agent = blob(job.checkpoint.path)
                    baseline = blob(job.settings.baseline) if job.check else None
                except OSError as exc:
                    on_done(job, JobResult(failed_row(job, f"cannot read its input ({exc.strerror}).")), 1)
                    return
            refs[task.remote(job, agent, baseline)] = job

        try:
            for job in jobs:
                submit(job)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except crashes:
                    if tries[job.name] < self.attempts:
                        submit(job)
                        continue
                    result = _died(job, tries[job.name])
                except ray.exceptions.RayError as exc:
                    result = JobResult(failed_row(job, f"Ray could not run it ({_one_line(exc)})"))
                on_done(job, result, tries[job.name])
        except KeyboardInterrupt:
            for ref in refs:  # their jobs are incomplete: end them now
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


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
    _write_atomic(saved, json.dumps(settings.comparable(), indent=1).encode())


def _drop_partials(out: Path) -> None:
    """Delete the temporaries of jobs that were killed or stopped (only while holding the folder's lock)."""
    for sub in OUTPUT_DIRS:
        for stale in (out / sub).glob(".*.partial*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


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
        bar = tqdm(total=len(todo), unit="job", desc="rlcam audit", disable=not progress or not todo, smoothing=0.1)
        failures = 0

        def on_done(job: Job, result: JobResult, attempts: int) -> None:
            nonlocal failures
            row = result.row
            if row.get("status") == "interrupted":
                return  # not complete: a rerun runs it again
            for rel, data in (result.files or {}).items():
                _write_atomic(out / rel, data)
            row = {key: _clean(value) for key, value in row.items()} | {"attempts": attempts}
            _write_atomic(out / "rows" / f"{job.name}.json", json.dumps(row, indent=1).encode())
            failures += row["status"] != "ok"
            bar.update(1)
            bar.set_postfix(failed=failures, refresh=False)

        interrupted = False
        try:
            if todo:
                executor.run(todo, on_done)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            _drop_partials(out)
        rows = sorted(_read_rows(out).values(), key=_order)
        _mark_identical(rows)
        result = AuditResult(rows=rows, ran=len(todo), skipped=len(jobs) - len(todo), interrupted=interrupted)
        result.lines = verdict_lines(rows, settings)
        result.csv = out / CSV_FILE
        _write_atomic(result.csv, to_csv(rows).encode())
        result.html = out / HTML_FILE
        from rlcam.audit_html import summary_html

        _write_atomic(result.html, summary_html(rows, settings, columns(rows), result.lines).encode())
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
    "action_entropy", "top_action", "top_action_share",
    "map_entropy", "map_peak_share", "map_zero_share", "map_mass",
]  # fmt: skip
TRAILING = [
    "run_sha", "same_run_as", "algo", "env_id", "agent_sha256", "path", "trace", "video", "check_report",
    "attempts", "seconds", "worker",
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
