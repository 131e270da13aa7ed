"""Where audit jobs run: a local process pool, or Ray (a cluster, or a local instance).

Both call the same job function (``rlcam.audit_job.run_job``, on a fresh thread of a worker
process) and hand each result to the driver's ``on_done(job, result, attempts)``; a job whose
worker died is resubmitted, up to ``attempts`` times, the same way on both.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from rlcam.audit_job import Job, JobResult, failed_row, one_line, quiet_worker, run_job_in_thread
from rlcam.errors import RlcamError

RAY_INSTALL = "pip install 'rlcam[ray]'"
POLL_S = 0.2  # how often a waiting executor looks whether a stop was asked for


class Stops:
    """SIGINT and SIGTERM while an audit runs: raise KeyboardInterrupt, and count that one came.

    The count is what the executors look at between results (``check``): Python runs a signal's
    handler wherever the main thread happens to be, a finalizer that garbage collection started
    included, and an exception raised there is printed and dropped. A stop must not depend on the
    raise alone. ``held`` keeps a block (a job's files and row landing) whole: a signal inside it
    raises when it ends.
    """

    def __init__(self):
        self.count = 0
        self._holding = 0
        self._held = 0

    @contextlib.contextmanager
    def installed(self):
        self.count = self._holding = self._held = 0
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self._holding:
            self._held += 1
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._held:
            self._held = 0
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.count:
            raise KeyboardInterrupt


STOPS = Stops()  # signals are the process's: one for it


def _init_pool_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the driver decides
    quiet_worker()


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
                done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                STOPS.check()
                for future in done:
                    job = running[future]  # kept until landing starts: a Ctrl-C before then lands it in _stop
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        died.append(job)
                        del running[future]
                        continue
                    except Exception as exc:  # the job or its result could not cross to the worker and back
                        result = JobResult(failed_row(job, f"the pool could not run it ({one_line(exc)})"))
                    try:
                        on_done(job, result, tries[job.name])
                    finally:  # landed, or stopped while landing: then not again in _stop (the audit sweeps it)
                        del running[future]
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
    quiet_worker()
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
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
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
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                STOPS.check()
                if not ready:
                    continue
                job = refs.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except crashes:
                    if tries[job.name] < self.attempts:
                        submit(job)
                        continue
                    result = _died(job, tries[job.name])
                except ray.exceptions.RayError as exc:
                    result = JobResult(failed_row(job, f"Ray could not run it ({one_line(exc)})"))
                on_done(job, result, tries[job.name])
        except KeyboardInterrupt:
            for ref in refs:  # their jobs are incomplete: end them now
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()
