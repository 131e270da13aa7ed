"""rlcam audit: inputs, metrics against independent computations, both executors, faults, resume, Ctrl-C.

Jobs run tiny untrained agents on the 32-step FindTarget toy env (and a few Breakout steps for the
object metrics); a pool and a local Ray of 2 CPUs are shared by the tests of this module.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rlcam import audit, audit_exec
from rlcam.cli import main
from rlcam.errors import RlcamError
from rlcam.video import load_trace
from tests.conftest import build_model

TOY = "rlcam.toyenv:FindTarget-v0"
FAILING = "tests.failing_env:FailingFindTarget-v0"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "audit.md"
HOW_RUN = ("seconds", "cpu_seconds", "worker", "attempts")  # the only columns allowed to differ between executors


def small_ppo(venv, seed: int):
    kwargs = dict(features_extractor_kwargs=dict(features_dim=32), net_arch=[])
    return build_model("ppo", venv, seed=seed, n_steps=16, batch_size=16, policy_kwargs=kwargs)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A CheckpointCallback-style folder: two tiny agents, a corrupt checkpoint, and a baseline trace."""
    from rlcam.envs import make_env
    from rlcam.record import RecordConfig, record

    root = tmp_path_factory.mktemp("toy_run")
    venv, _ = make_env(TOY)
    for seed, step in ((0, 100), (1, 20)):
        small_ppo(venv, seed).save(root / f"rl_model_{step}_steps.zip")
    venv.close()
    damaged = bytearray((root / "rl_model_20_steps.zip").read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(64)  # a bad copy: a member fails its checksum
    (root / "rl_model_300_steps.zip").write_bytes(bytes(damaged))
    baseline = root.parent / "baseline.npz"
    record(RecordConfig(agent=root / "rl_model_100_steps.zip", env=TOY, steps=32, video=False, trace=baseline))
    return root, baseline


@pytest.fixture(scope="module")
def pool():
    with audit.PoolExecutor(workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def ray_session():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("ray is not installed here (pip install -e '.[ray]'); CI installs it with the dev extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def toy_settings(**fields) -> audit.Settings:
    return audit.make_settings(env=TOY, **fields)


@pytest.fixture(scope="module")
def pool_audit(toy_run, pool, tmp_path_factory):
    root, baseline = toy_run
    out = tmp_path_factory.mktemp("pool") / "audit"
    cks = audit.checkpoints(audit.folder_zips(root))
    result = audit.audit(cks, [0, 1], toy_settings(baseline=baseline), out, pool, progress=False)
    return cks, out, result


def holder(fragment: str) -> int | None:
    """The process with a file open whose path contains ``fragment`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(fragment in os.readlink(fd) for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


class Killer(threading.Thread):
    """SIGKILLs, once, the process writing the trace of job ``name`` while it is mid-job."""

    def __init__(self, name: str):
        super().__init__(daemon=True)
        self.fragment = f".{name}.partial.d/"
        self.killed: int | None = None
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pid = holder(self.fragment)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.01)


def leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if ".partial" in p.name]


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in HOW_RUN}


# -- inputs ---------------------------------------------------------------------------------------


def test_seeds_take_ranges_and_lists():
    assert audit.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert audit.parse_seeds("7,0-2,2") == [0, 1, 2, 7]
    for bad in ("", "3-1", "a", "1-"):
        with pytest.raises(RlcamError, match="--seeds takes"):
            audit.parse_seeds(bad)


def test_checkpoints_ordered_by_the_step_in_the_name_or_the_zip(tmp_path, toy_run):
    from rlcam.agents import read_agent_data

    source = toy_run[0] / "rl_model_20_steps.zip"
    zoo = tmp_path / "BreakoutNoFrameskip-v4_3"
    zoo.mkdir()
    for name in ("rl_model_1000_steps.zip", "rl_model_200_steps.zip", "best_model.zip", "BreakoutNoFrameskip-v4.zip"):
        (zoo / name).write_bytes(source.read_bytes())
    (zoo / "notes.txt").write_text("not a checkpoint")
    found = audit.checkpoints(audit.folder_zips(zoo))
    stored = read_agent_data(source)["num_timesteps"]  # the untrained agents' own count: 0
    assert [(c.label, c.step, c.step_from) for c in found] == [
        ("BreakoutNoFrameskip-v4", stored, "data"),
        ("best_model", stored, "data"),
        ("rl_model_200_steps", 200, "name"),
        ("rl_model_1000_steps", 1000, "name"),
    ]
    assert audit.infer_env([zoo], []) == "BreakoutNoFrameskip-v4"
    assert audit.infer_env([], [zoo / "BreakoutNoFrameskip-v4.zip"]) == "BreakoutNoFrameskip-v4"
    with pytest.raises(RlcamError, match="--env"):
        audit.infer_env([tmp_path], [source])
    # The same stem in two folders: labels stay apart.
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / "best_model.zip").write_bytes(source.read_bytes())
    labels = {c.label for c in audit.checkpoints([zoo / "best_model.zip", twin / "best_model.zip"])}
    assert labels == {"BreakoutNoFrameskip-v4_3-best_model", "other-best_model"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(RlcamError, match="holds no .zip checkpoints"):
        audit.folder_zips(tmp_path / "empty")
    with pytest.raises(RlcamError, match="does not exist or is not a folder"):
        audit.folder_zips(tmp_path / "missing")


def test_settings_reject_bad_input(toy_run, tmp_path):
    with pytest.raises(RlcamError, match="--episodes must be a positive"):
        toy_settings(episodes=0)
    with pytest.raises(RlcamError, match="--radius"):
        toy_settings(radius=0)
    with pytest.raises(RlcamError, match="give --baseline too"):
        toy_settings(spec=tmp_path / "spec.json")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(RlcamError, match="not a valid rlcam trace"):
        toy_settings(baseline=tmp_path / "bad.npz")
    assert toy_settings(steps=5).episodes is None


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_match_an_independent_computation(tmp_path, breakout_env):
    """A real Breakout trace (objects from RAM): every metric recomputed here the slow, obvious way."""
    from rlcam.check import attention_series
    from rlcam.objects import share_near
    from rlcam.record import RecordConfig, record

    trace_path = tmp_path / "b.npz"
    small_ppo(breakout_env, seed=0).save(tmp_path / "agent.zip")
    record(RecordConfig(agent=tmp_path / "agent.zip", env="Breakout", steps=60, video=False, trace=trace_path))
    trace = load_trace(trace_path)
    got = audit.measure(trace, radius=10.0)

    actions = trace["action"].tolist()
    shares = [n / len(actions) for n in Counter(actions).values()]
    assert got["action_entropy"] == pytest.approx(-sum(p * math.log(p) for p in shares) / math.log(4), abs=1e-12)
    assert got["steps"] == 60 and got["return_total"] == pytest.approx(float(trace["reward"].sum()))
    per_step = [-sum(q * math.log(q) for q in probs if q > 0) / math.log(4) for probs in trace["action_values"]]
    assert got["policy_entropy"] == pytest.approx(np.mean(per_step), rel=1e-6)
    entropies, peaks = [], []
    for cam in trace["cam"].astype(np.float64):
        if cam.sum() > 0:
            p = (cam / cam.sum()).ravel()
            entropies.append(-sum(x * math.log(x) for x in p if x > 0) / math.log(p.size))
            peaks.append(p.max())
    assert got["map_entropy"] == pytest.approx(np.mean(entropies), rel=1e-9)
    assert got["map_peak_share"] == pytest.approx(np.mean(peaks), rel=1e-9)
    assert got["map_zero_share"] == pytest.approx(1 - len(entropies) / 60)

    for name in ("ball", "paddle"):
        centres = trace[f"obj_{name}"]
        reference = attention_series(trace["cam_input"][:, None], centres[:, None], 10.0, (210, 160))[:, 0]
        assert np.isfinite(reference).any(), f"the {name} was never on screen with a non-zero map"
        assert got[f"attn_{name}"] == pytest.approx(np.nanmean(reference), rel=1e-5)
        uniform = np.ones((210, 160))
        chance = [share_near(uniform, c, 10.0) for c, r in zip(centres, reference, strict=True) if np.isfinite(r)]
        assert got[f"attn_{name}_lift"] == pytest.approx(np.nanmean(reference) / np.mean(chance), rel=1e-5)


def test_continuous_and_structured_actions_get_their_own_action_metrics(tmp_path):
    """A continuous run: no entropy or top action, but each component's spread; a structured one: its
    most frequent joint choice; neither computes a 'policy entropy' from non-probabilities."""
    from rlcam.record import RecordConfig, record
    from tests.test_families_cli import _save

    for name, env in (("box", "rlcam.toyenv:SteerToDot-v0"), ("parts", "rlcam.toyenv:SteerToDotParts-v0")):
        agent, trace_path = tmp_path / f"{name}.zip", tmp_path / f"{name}.npz"
        _save("ppo", env, agent)
        record(RecordConfig(agent=agent, env=env, steps=30, video=False, trace=trace_path, deterministic=False))
        trace = load_trace(trace_path)
        got, taken = audit.measure(trace), trace["action"]
        assert got["policy_entropy"] is None and got["action_entropy"] is None
        if np.issubdtype(taken.dtype, np.floating):
            assert got["action_sd"] == pytest.approx(float(np.mean([np.std(taken[:, i]) for i in range(2)])))
            assert (got["top_action"], got["top_action_share"]) == ("", None)
        else:
            counts = Counter("-".join(map(str, row)) for row in taken.tolist())
            n = max(counts.values())
            assert got["top_action"] in {joint for joint, c in counts.items() if c == n}  # a tie: any of them
            assert got["top_action_share"] == n / 30 and len(counts) > 1
            assert got["action_sd"] is None


def test_returns_are_per_full_game():
    from rlcam.video import Trace

    reward = np.array([1, 0, 2, 5, 0, 1], np.float32)
    game_over = np.array([0, 0, 1, 0, 1, 0], bool)  # games of 3 and 2, then a game in progress
    arrays = dict(reward=reward, game_over=game_over, action=np.zeros(6, np.int64), cam=np.zeros((6, 2, 2), np.float32))
    got = audit.measure(Trace(arrays, {"action_names": ["A", "B"], "episodes_requested": 3}))
    assert (got["games"], got["return"], got["return_sd"], got["return_total"]) == (2, 4.0, 1.0, 9.0)
    assert got["truncated"] is True and got["map_zero_share"] == 1.0 and got["map_entropy"] is None
    assert got["action_entropy"] == 0.0 and got["top_action"] == "A"


# -- the pool -------------------------------------------------------------------------------------


def test_pool_audit_rows_files_summary_and_resume(pool_audit, pool, toy_run):
    cks, out, result = pool_audit
    assert (result.ran, result.skipped, result.interrupted) == (6, 0, False)
    assert [c.step for c in cks] == [20, 100, 300]
    rows = {r["job"]: r for r in result.rows}
    assert sorted(rows) == sorted(f"rl_model_{n}_steps_seed{s}" for n in (20, 100, 300) for s in (0, 1))
    for seed in (0, 1):
        bad = rows[f"rl_model_300_steps_seed{seed}"]
        assert bad["status"] == "error" and "rl_model_300_steps.zip is corrupt (member" in bad["error"]
        assert not (out / f"traces/rl_model_300_steps_seed{seed}.npz").exists()
        for n in (20, 100):
            row = rows[f"rl_model_{n}_steps_seed{seed}"]
            assert row["status"] == "ok" and row["steps"] == 32 and row["games"] == 1 and row["attempts"] == 1
            trace = load_trace(out / row["trace"])
            assert trace.meta["seed"] == seed and not trace.meta["deterministic"]  # sampled actions by default
            assert row["return"] == float(trace["reward"].sum())
            assert ("check_verdict" in row) == (seed == 0)  # the check runs once per checkpoint
    # The baseline was recorded from rl_model_100_steps with seed 0 and argmax actions: replayed, it agrees.
    assert rows["rl_model_100_steps_seed0"]["check_verdict"] == "pass"
    assert rows["rl_model_100_steps_seed0"]["check_action_agreement"] == 1.0
    assert json.loads((out / "checks/rl_model_100_steps.json").read_text())["passed"] is True

    with open(out / "results.csv") as f:
        header = f.readline().strip().split(",")
        assert len(f.readlines()) == 6
    assert header == audit.columns(result.rows)
    documented = DOCS.read_text()
    for column in header:
        assert f"`{re.sub(r'^check_(?!verdict|failed|error|report).+', 'check_<criterion>', column)}`" in documented

    page = (out / "summary.html").read_text()
    assert page.count("<svg") >= 6 and "href='traces/rl_model_20_steps_seed1.npz'" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)|url\((?!#)|<script", page)  # nothing fetched, no script
    assert len(result.lines) == 3 and result.lines[0].startswith("rl_model_20_steps (step 20): 2/2 jobs ok")
    assert "FAILED, 2 of 2 jobs" in result.lines[2] and "check PASS" in result.lines[1]

    # Rerun: only the failed jobs run again; the complete ones are kept as they were.
    again = audit.audit(cks, [0, 1], toy_settings(baseline=toy_run[1]), out, pool, progress=False)
    assert (again.ran, again.skipped) == (2, 4)
    assert [strip(r) for r in again.rows if r["status"] == "ok"] == [
        strip(r) for r in result.rows if r["status"] == "ok"
    ]
    with pytest.raises(RlcamError, match="other settings.*episodes 1 then, 2 now"):
        audit.audit(cks, [0, 1], toy_settings(baseline=toy_run[1], episodes=2), out, pool, progress=False)


def test_a_failing_env_is_an_error_row_and_leaves_no_file(toy_run, pool, tmp_path):
    cks = audit.checkpoints([toy_run[0] / "rl_model_20_steps.zip"])
    result = audit.audit(cks, [0], audit.make_settings(env=FAILING), tmp_path / "a", pool, progress=False)
    (row,) = result.rows
    assert row["status"] == "error" and "simulated emulator crash" in row["error"]
    assert not list((tmp_path / "a" / "traces").iterdir()) and not leftovers(tmp_path / "a")


# -- the command line -----------------------------------------------------------------------------


def test_cli_prints_a_verdict_per_checkpoint_and_exits_1_on_a_failed_job(toy_run, pool, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(audit, "PoolExecutor", lambda workers: pool)
    root = toy_run[0]
    argv = ["audit", str(root / "rl_model_20_steps.zip"), str(root / "rl_model_300_steps.zip"), "--env", TOY]
    assert main([*argv, "--seeds", "3", "--steps", "5", "--out", str(tmp_path / "a"), "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rl_model_20_steps (step 20): 1/1 jobs ok; return ")
    assert lines[1].startswith("rl_model_300_steps (step 300): FAILED, 1 of 1 jobs: agent file")
    assert lines[2].startswith("2 jobs run, 0 already complete, 1 failed (process pool): ")
    argv = ["audit", str(root / "rl_model_20_steps.zip"), "--env", TOY, "--steps", "5", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0


def test_cli_bad_input_is_one_sentence(toy_run, tmp_path, monkeypatch, capsys):
    zip_path = str(toy_run[0] / "rl_model_20_steps.zip")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    cases = [
        (
            ["audit", zip_path, "--env", TOY, "--ray"],
            "--ray needs Ray, which is not installed: pip install 'rlcam[ray]'.",
        ),
        (["audit", "--env", TOY], "give checkpoint zips, or --folder DIR"),
        (["audit", zip_path], "say which env the checkpoints play with --env"),
        (["audit", zip_path, "--env", TOY, "--seeds", "x"], "--seeds takes numbers"),
        (["audit", str(tmp_path / "no.zip"), "--env", TOY], "does not exist"),
        (["audit", zip_path, "--env", TOY, "--out", str(tmp_path / "no" / "a")], "does not exist; create it first"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def killed_pool_run(toy_run, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("killed") / "audit"
    cks = audit.checkpoints([toy_run[0] / "rl_model_20_steps.zip"])
    killer = Killer("rl_model_20_steps_seed1")
    killer.start()
    result = audit.audit(cks, [0, 1], toy_settings(steps=200), out, pool, progress=False)
    killer.done.set()
    return killer, out, result


def test_a_killed_pool_worker_is_retried_and_leaves_no_partial_file(killed_pool_run):
    killer, out, result = killed_pool_run
    assert killer.killed is not None, "the test never caught the worker mid-job"
    rows = {r["seed"]: r for r in result.rows}
    assert rows[1]["status"] == "ok" and rows[1]["attempts"] == 2 and rows[1]["steps"] == 200
    assert rows[0]["status"] == "ok" and rows[0]["attempts"] in (1, 2)  # in flight beside it: maybe run again
    assert load_trace(out / rows[1]["trace"]).steps == 200
    assert not leftovers(out)


@pytest.mark.parametrize("raise_lost", [False, True], ids=["raised", "raise-lost"])
def test_ctrl_c_keeps_finished_jobs_and_a_rerun_does_the_rest(toy_run, pool, tmp_path, monkeypatch, raise_lost):
    out = tmp_path / "audit"
    cks = audit.checkpoints([toy_run[0] / "rl_model_20_steps.zip"])
    settings = toy_settings(steps=800)  # 3 jobs on 2 workers: the third is in flight after the first ends
    if raise_lost:  # as when Python runs the handler inside a finalizer, which prints and drops its exception
        handle = audit_exec.STOPS._handle

        def handle_and_lose(signum, frame):
            with contextlib.suppress(KeyboardInterrupt):
                handle(signum, frame)

        monkeypatch.setattr(audit_exec.STOPS, "_handle", handle_and_lose)

    def interrupt_after_first_row():
        while not (out / "rows").is_dir() or not any((out / "rows").glob("*.json")):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_row, daemon=True).start()
    result = audit.audit(cks, [0, 1, 2], settings, out, pool, progress=False)
    assert result.interrupted
    done = len(result.rows)
    assert 1 <= done < 3 and all(r["status"] == "ok" for r in result.rows)
    assert not leftovers(out) and len(list((out / "traces").glob("*.npz"))) == done
    assert len((out / "results.csv").read_text().splitlines()) == done + 1
    again = audit.audit(cks, [0, 1, 2], settings, out, pool, progress=False)
    assert (again.ran, again.skipped, len(again.rows)) == (3 - done, done, 3)


class StoppedMidway:
    """An executor stopped as a pool or Ray run can be: a job landed, a Ctrl-C as the next one's files land,
    and a third job's trace on disk without its result when the stop comes."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def run(self, jobs, on_done):
        from rlcam.audit_job import JobResult, run_job

        first, second, third = jobs
        on_done(first, run_job(first), 1)
        ran = run_job(second)  # as Ray returns it: the files in the result, none yet in the folder
        files = {ran.row["trace"]: (second.out / second.trace).read_bytes()}
        (second.out / second.trace).unlink()
        real_write = audit.write_atomic

        def write_then_interrupt(path, data):
            real_write(path, data)
            if Path(path).parent.name == "traces":
                os.kill(os.getpid(), signal.SIGINT)

        self.monkeypatch.setattr(audit, "write_atomic", write_then_interrupt)
        try:
            on_done(second, JobResult(ran.row, files), 1)
        finally:
            self.monkeypatch.setattr(audit, "write_atomic", real_write)
        raise AssertionError("the interrupt was not raised once the second job had landed")


def test_a_stop_keeps_each_jobs_files_and_row_together(toy_run, tmp_path, monkeypatch):
    out = tmp_path / "audit"
    cks = audit.checkpoints([toy_run[0] / "rl_model_20_steps.zip"])
    settings = toy_settings(steps=40)
    orphan = out / "traces" / "rl_model_20_steps_seed2.npz"

    class ThirdWritten(StoppedMidway):
        def run(self, jobs, on_done):
            orphan.write_bytes(b"a worker ended after writing this and before its row")
            super().run(jobs, on_done)

    result = audit.audit(cks, [0, 1, 2], settings, out, ThirdWritten(monkeypatch), progress=False)
    assert result.interrupted and [r["seed"] for r in result.rows] == [0, 1]
    assert sorted(p.name for p in (out / "traces").glob("*.npz")) == [
        "rl_model_20_steps_seed0.npz",
        "rl_model_20_steps_seed1.npz",
    ]
    assert load_trace(out / "traces" / "rl_model_20_steps_seed1.npz").steps == 40
    assert not leftovers(out)


# -- Ray ------------------------------------------------------------------------------------------


def test_ray_gives_the_pools_rows(ray_session, pool_audit, toy_run, tmp_path):
    cks, _, pooled = pool_audit
    settings = toy_settings(baseline=toy_run[1])
    result = audit.audit(cks, [0, 1], settings, tmp_path / "ray", audit.RayExecutor(), progress=False)
    assert result.ran == 6
    assert [strip(r) for r in result.rows] == [strip(r) for r in pooled.rows]


def test_ray_ships_files_and_retries_a_killed_task(ray_session, killed_pool_run, toy_run, tmp_path):
    """Inputs through the object store and files back (as on a cluster without a shared disk)."""
    _, pool_out, pooled = killed_pool_run
    cks = audit.checkpoints([toy_run[0] / "rl_model_20_steps.zip"])
    killer = Killer("rl_model_20_steps_seed0")
    killer.start()
    executor = audit.RayExecutor(ship=True)
    result = audit.audit(cks, [0, 1], toy_settings(steps=200), tmp_path / "ray", executor, progress=False)
    killer.done.set()
    assert killer.killed is not None, "the test never caught the Ray worker mid-job"
    assert {r["seed"]: r["attempts"] for r in result.rows}[0] == 2
    assert [strip(r) for r in result.rows] == [strip(r) for r in pooled.rows]
    for row in result.rows:
        shipped, local = load_trace(tmp_path / "ray" / row["trace"]), load_trace(pool_out / row["trace"])
        assert shipped.keys() == local.keys()
        assert all(np.array_equal(shipped[k], local[k]) for k in local.keys())
    assert not leftovers(tmp_path / "ray")
    # The killed job's working folder went with its worker; the retry on another worker removed it.
    assert not list(Path(tempfile.gettempdir()).glob(f"rlcam-audit-{killer.killed}-*"))


def test_benchmark_audit_arithmetic():
    """scripts/benchmark.py --audit turns given wall times into rates and a cluster figure (no timing here)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("rlcam_benchmark_audit", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rates = bench.audit_rates({1: [60.0, 58.0, 70.0], 2: [33.0, 31.0]}, jobs=6)
    assert rates[1] == {"jobs_per_min": 6.0, "x1": 1.0}  # the median round, 60 s
    assert rates[2]["jobs_per_min"] == pytest.approx(6 / 32 * 60) and rates[2]["x1"] == pytest.approx(60 / 32)
    assert bench.cluster_per_hour(5.0, machines=100, workers_per_machine=2, scaling=0.9) == pytest.approx(129_600)
    text = bench.replace_audit_block("# Title\n", "figures")
    assert text.count(bench.AUDIT_BEGIN) == 1 and "figures" in text
    assert bench.replace_audit_block(text, "new") == text.replace("figures", "new")


def test_identical_runs_are_marked_and_warned_about():
    def row(seed, sha, ret):
        return dict(checkpoint="ck", step=10, seed=seed, status="ok", run_sha=sha, **{"return": ret}, map_entropy=0.5)

    rows = [row(11, "aaa", 30.0), row(12, "aaa", 30.0), row(13, "bbb", 12.0), row(14, "aaa", 30.0)]
    audit._mark_identical(rows)
    assert [r["same_run_as"] for r in rows] == [None, 11, None, 11]
    lines = audit.verdict_lines(rows, audit.Settings(env="Breakout", deterministic=True))
    assert lines[0] == "ck (step 10): 4/4 jobs ok; return 25.5 [12-30]; map entropy 0.5 [0.5-0.5]"
    assert lines[1].startswith("warning: some seeds played identical runs (argmax actions differ only by the noop")
    assert "ck seeds 12=11, 14=11" in lines[1]


def test_summary_plots_give_each_run_its_own_line():
    """Checkpoints of several runs audited together are not joined into one line across the runs."""
    from rlcam.audit_html import plot_svg, run_of

    def row(path, algo, step, seed, value):
        name = Path(path).stem
        return dict(checkpoint=name, step=step, seed=seed, status="ok", path=path, algo=algo, steps=value)

    one_run = [
        row(f"runs/a2c/ckpt_{s}_steps.zip", "a2c", s, seed, s / 1000 + seed) for s in (100, 200) for seed in (0, 1)
    ]
    other = [row("agents/breakout_ppo.zip", "ppo", 150, seed, 7.0 + seed) for seed in (0, 1)]
    assert run_of(one_run[0]) == "a2c in runs/a2c/" and run_of(other[0]) == "ppo in agents/"
    single = plot_svg(one_run, "steps")
    assert "a2c in runs/a2c/" not in single  # one run: no key
    mixed = plot_svg(one_run + other, "steps")
    assert "a2c in runs/a2c/" in mixed and "ppo in agents/" in mixed
