"""One audit job: a pure function from (checkpoint, seed, settings) to files and a row.

``run_job`` plays the checkpoint with the seed (``rlcam.record``: the trace, and the video when
asked), measures the run from its trace (``measure``), and on the first seed of each checkpoint
checks it against the baseline (``rlcam.check``). It never raises for the job's own failures: a
corrupt checkpoint or a failing env is the row's ``error``, and no file of a failed job is left.
The executors (``rlcam.audit_exec``) and the driver (``rlcam.audit``) are built around it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlcam.errors import RlcamError

OUTPUT_DIRS = ("rows", "traces", "videos", "checks")
DEFAULT_MAX_STEPS = 10_000

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
    device: str = "cpu"
    """Where each job computes its maps (``auto``, ``cpu``, ``cuda``, ``cuda:N``), resolved by the worker
    that runs it; each row says which it used. Like ``trust``, how the audit runs, not what it measures
    (the maps agree to float tolerance across devices), so not part of what makes two audits comparable."""

    def comparable(self) -> dict:
        """The fields two runs into one folder must share (the baseline by content, not by path)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("trust", "baseline", "device")}


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


def _action_metrics(taken: np.ndarray, names: list[str]) -> dict:
    """How varied the actions were: for discrete actions the normalised entropy of their frequencies
    and the most frequent one with its share; for structured ones the most frequent joint choice
    (``2-0-1``) and its share (no entropy: the trace does not hold how many choices there were);
    for continuous ones ``action_sd``, the mean over components of each one's standard deviation."""
    steps = len(taken)
    if taken.ndim == 2 and np.issubdtype(taken.dtype, np.floating):
        sd = float(taken.std(axis=0).mean()) if steps else None
        return {"action_entropy": None, "top_action": "", "top_action_share": None, "action_sd": sd}
    discrete = taken.ndim == 1
    if discrete:
        actions = taken.astype(np.int64)
    else:  # structured: the joint choice, e.g. "2-0-1"
        joint, actions = np.unique(taken.astype(np.int64), axis=0, return_inverse=True)
        actions = actions.reshape(-1)
        names = ["-".join(map(str, row)) for row in joint]
    counts = np.bincount(actions, minlength=len(names)).astype(np.float64)
    p = counts / max(steps, 1)
    nonzero = p[p > 0]
    entropy = None  # structured: how many joint choices there were is not known
    if discrete:
        entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(len(names))) if len(names) > 1 else 0.0
    return {
        "action_entropy": entropy,
        "top_action": names[int(counts.argmax())] if steps else "",
        "top_action_share": float(p.max()) if steps else None,
        "action_sd": None,
    }


def measure(trace, radius: float = 10.0) -> dict:
    """The per-job metrics of a single-env trace (``rlcam.video.load_trace``); docs/audit.md defines each."""
    from rlcam.video import PLACEMENT_META

    meta = trace.meta
    reward = np.asarray(trace["reward"], np.float64)
    game_over = np.asarray(trace["game_over"], bool)
    taken = np.asarray(trace["action"])  # (T,) discrete, (T, D) continuous, (T, P) structured
    steps = len(reward)
    ends = np.flatnonzero(game_over) + 1
    starts = np.r_[0, ends][: len(ends)]
    scores = [float(reward[a:b].sum()) for a, b in zip(starts, ends, strict=True)]
    requested = meta.get("episodes_requested")
    discrete = taken.ndim == 1
    default = [f"a{i}" for i in range(int(taken.max(initial=0)) + 1)] if discrete else []
    names = list(meta.get("action_names") or default)
    row: dict = {
        "return": float(np.mean(scores)) if scores else None,
        "return_sd": float(np.std(scores)) if len(scores) > 1 else None,
        "return_total": float(reward.sum()),
        "games": len(scores),
        "steps": steps,
        "truncated": bool(requested is not None and len(scores) < int(requested)),
        **_action_metrics(taken, names),
        "policy_entropy": None,
    }
    if discrete and meta.get("algo") in ("ppo", "a2c") and "action_values" in trace.keys() and len(names) > 1:
        probs = np.clip(np.asarray(trace["action_values"], np.float64), 1e-12, 1.0)  # (T, A) the policy's
        row["policy_entropy"] = _mean(-(probs * np.log(probs)).sum(1) / math.log(len(names)))

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
    digest = hashlib.sha256(np.ascontiguousarray(taken).tobytes() + reward.astype(np.float32).tobytes())
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


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, RlcamError) else f"{type(exc).__name__}: {text[:300]}"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check(job: Job, agent: Path, baseline: Path, root: Path) -> dict:
    from rlcam.check import Thresholds, check

    s = job.settings
    try:
        thresholds = Thresholds(**(s.thresholds or {}))
        report = check(agent, baseline, thresholds, mode=s.check_mode, trust=s.trust, device=s.device)
    except RlcamError as exc:
        return {"check_verdict": "error", "check_error": str(exc)}
    write_atomic(root / job.check_report, report.to_json().encode())
    row = {"check_verdict": "pass" if report.passed else "regression", "check_failed": len(report.failures)}
    row.update({f"check_{_slug(c.name)}": c.value for c in report.criteria})
    row["check_report"] = job.check_report
    return row


def _measured_keys(path: Path) -> list[str]:
    """The trace keys ``measure`` reads (not ``cam_input``, which load_trace would rebuild at 28 KB a step)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        stored = [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    wanted = ("reward", "game_over", "action", "cam", "action_values")
    return [k for k in stored if k in wanted or k.startswith("obj_")]


def _play_and_measure(job: Job, agent: Path, baseline: Path | None, root: Path) -> dict:
    """Run the job with its inputs at ``agent``/``baseline`` and its outputs under ``root``."""
    from rlcam.record import RecordConfig, record
    from rlcam.video import load_trace

    started, cpu = time.perf_counter(), time.process_time()
    s = job.settings
    row = base_row(job)
    trace, video = root / job.trace, root / job.video
    written = [trace] + [video] * s.videos + [root / job.check_report] * job.check  # this job's files only
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
            device=s.device,
        )
        result = record(cfg)
        if result.interrupted:  # SIGINT/SIGTERM reached the recorder: the run is shorter than asked
            raise KeyboardInterrupt
        meta = result.meta
        row.update(algo=meta["algo"], env_id=meta["env_id"], agent_sha256=meta["agent_sha256"], device=meta["device"])
        row.update(measure(load_trace(trace, keys=_measured_keys(trace)), s.radius))
        row.update(trace=job.trace, video=job.video if s.videos else "")
        if job.check and baseline is not None:
            row.update(_check(job, agent, baseline, root))
    except KeyboardInterrupt:
        row.update(status="interrupted", error="interrupted")
    except Exception as exc:  # RlcamError: bad input (a corrupt zip, a failing env); anything else: a bug
        row.update(status="error", error=one_line(exc))
    if row["status"] != "ok":  # outputs exist only for complete jobs
        for path in written:
            path.unlink(missing_ok=True)
    row.update(
        seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - cpu, 3),  # the worker's CPU time: one job at a time per worker
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    return row


_SCRATCH = "rlcam-audit-"  # + "<pid>-": a shipped job's working folder


def _drop_orphaned_scratch() -> None:
    """Delete the working folders of shipped jobs whose worker was killed (its pid is gone)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH}*-*"):
        pid = folder.name[len(_SCRATCH) :].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


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
    _drop_orphaned_scratch()
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH}{os.getpid()}-") as tmp:
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


def quiet_worker() -> None:
    """What each worker sets before its jobs: one torch thread and one BLAS thread, no library warnings."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    if not os.environ.get("RLCAM_WARNINGS"):
        warnings.simplefilter("ignore")


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
