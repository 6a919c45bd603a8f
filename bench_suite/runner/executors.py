"""Executors: where the runs of a matrix execute, registered in :data:`EXECUTORS`.

An executor takes the canonical JSON of the pending specs and a
:class:`~bench_suite.runner.worker.WorkerConfig`, calls
:func:`~bench_suite.runner.worker.execute_spec` on each somewhere (which writes the
record into the store itself), and yields ``(canonical, outcome)`` as runs finish;
``outcome`` is the worker's summary dict, or the exception raised when the task
itself was lost (worker process died, job killed by the scheduler).

* ``local`` — a process pool on this machine (spawn/forkserver), threads split
  between workers so they do not oversubscribe the cores;
* ``dask`` — a ``distributed`` cluster: ``--scheduler ADDRESS`` or a LocalCluster;
* ``slurm`` — a Slurm job array through submitit (``cluster="local"`` runs the
  same code path as local subprocesses, for tests).

An executor that cannot work here (no Slurm, an unreachable scheduler, a scheduler
without workers) raises :class:`ExecutorError`, one line, from its constructor or
:meth:`Executor.start`, which the runner calls before it writes anything.  A task lost
with its worker is yielded as an exception; the session re-submits it a bounded number
of times (``run --retries``) before it stores a failed record.

dask and submitit are imported only inside their executors.
"""
from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import dataclasses
import multiprocessing
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Dict, Iterator, List, Optional, Tuple

from bench_suite.registry import EXECUTORS, Range, one_line_error as _one_line
from bench_suite.runner.worker import THREAD_ENV, WorkerConfig, available_cores, execute_spec, pool_initializer

Outcome = Tuple[str, Any]  # (canonical spec JSON, summary dict or exception)


class WorkerLost(RuntimeError):
    """The process running a spec died without writing its record."""


class ExecutorError(RuntimeError):
    """An executor that cannot run here (no Slurm, no scheduler, no workers); the message is one line."""


class Executor:
    """Base class: ``run(canonicals, cfg)`` yields ``(canonical, outcome)`` as runs finish.

    ``start()`` acquires what the executor needs (a cluster connection) and raises
    :class:`ExecutorError` when it cannot; the runner calls it before writing anything, and
    ``close()`` at the end.  ``run`` calls ``start`` itself when nobody did.
    """

    def start(self) -> None:
        """Check that the executor can run here; acquire its resources."""

    def close(self) -> None:
        """Release what :meth:`start` acquired."""

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:  # pragma: no cover
        raise NotImplementedError


def threads_per_worker(workers: int) -> int:
    return max(1, available_cores() // max(1, workers))


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """A process pool on this machine; each worker gets ``threads`` (default ``cores // workers``) threads.

    A worker that dies (the timeout watchdog, a segfault, the OOM killer) breaks the
    pool; the pool is rebuilt.  A spec that was running then (its claim, held by this
    session, names a process that is gone) is yielded as lost, and the session decides
    whether to re-submit it (``--retries``); specs that were only queued are re-sent (the
    worker skips any whose record this session already wrote), and reported as lost after
    ``max_crashes`` crashes.
    """

    def __init__(self, workers: int = 0, threads: int = 0, mp_context: str = "spawn", max_crashes: int = 3) -> None:
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError(f"local executor mp_context={mp_context!r}: use 'spawn' or 'forkserver' "
                             "(fork is unsafe with torch's thread pools)")
        self.workers = workers if workers > 0 else available_cores()
        self.threads = threads
        self.mp_context = mp_context
        self.max_crashes = max_crashes

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:
        workers = max(1, min(self.workers, len(canonicals)))
        threads = self.threads or threads_per_worker(workers)
        cfg = dataclasses.replace(cfg, threads=threads)
        todo = list(canonicals)
        crashes: Dict[str, int] = {}
        ctx = multiprocessing.get_context(self.mp_context)
        while todo:
            pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=pool_initializer,
                                          initargs=(threads,))
            broken = False
            try:
                futures = {pool.submit(execute_spec, c, cfg): c for c in todo}
                finished = set()
                for fut in cf.as_completed(futures):
                    c = futures[fut]
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        break
                    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                        out = exc
                    finished.add(c)
                    yield c, out
                todo = [c for c in todo if c not in finished]
                if broken:
                    _shutdown_pool(pool)  # reaps the dead worker: its pid no longer answers
                    lost = {}
                    for c in todo:
                        pid = _dead_claimant(cfg, c)
                        crashes[c] = crashes.get(c, 0) + 1
                        if pid is not None:
                            lost[c] = f"local worker process {pid} died while running it"
                        elif crashes[c] >= self.max_crashes:
                            lost[c] = f"a local worker process died {crashes[c]} times while this run was queued"
                    for c, why in lost.items():
                        yield c, WorkerLost(why)
                    todo = [c for c in todo if c not in lost]
            finally:
                _shutdown_pool(pool)


def _dead_claimant(cfg: WorkerConfig, canonical: str) -> Optional[int]:
    """The pid of this session's process that claimed the run and is gone (it died running it), else None."""
    from bench_suite.runner.store import _pid_alive, read_claim

    held = read_claim(cfg.store_root, _run_id(canonical))
    if held is None or held[0].get("session") != cfg.session or held[0].get("host") != platform.node():
        return None
    pid = held[0].get("pid")
    return pid if isinstance(pid, int) and not _pid_alive(pid) else None


def _shutdown_pool(pool: cf.ProcessPoolExecutor) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:  # a run still going (Ctrl-C, early exit) must not outlive the runner
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


@EXECUTORS.register("dask")
class DaskExecutor(Executor):
    """A dask ``distributed`` cluster: ``scheduler`` address, else a LocalCluster of ``workers`` processes.

    With a ``scheduler``, the connection must succeed within ``connect_timeout`` seconds and at
    least one worker must be there within ``wait`` seconds (else :class:`ExecutorError`); while
    runs go on, a worker that leaves is reported on stderr with the runs it was at, and when no
    worker is left for ``wait`` seconds the unfinished runs are given up as lost.  The
    LocalCluster's scheduler re-runs no task of a dead worker itself (``allowed-failures`` 0):
    the session's ``--retries`` decides, as for every executor.  An external scheduler applies
    its own ``distributed.scheduler.allowed-failures`` first.
    """

    def __init__(self, scheduler: Optional[str] = None, workers: int = 0, threads: int = 0,
                 wait: Annotated[float, Range(0)] = 60.0,
                 connect_timeout: Annotated[float, Range(0.1)] = 10.0, poll_s: float = 0.5) -> None:
        self.scheduler = scheduler
        self.workers = workers if workers > 0 else available_cores()
        self.threads = threads
        self.wait = wait
        self.connect_timeout = connect_timeout
        self.poll_s = poll_s
        self._client = None
        self._cluster = None

    def start(self) -> None:
        if self._client is not None or not self.scheduler:
            return
        from distributed import Client

        try:
            self._client = Client(self.scheduler, timeout=self.connect_timeout)
        except (OSError, ValueError, TypeError) as exc:
            raise ExecutorError(f"--scheduler {self.scheduler!r}: cannot connect to a dask scheduler within "
                                f"{self.connect_timeout:g} s ({_one_line(exc)}); give the address the scheduler "
                                "prints (tcp://HOST:PORT), or leave --scheduler out for a local cluster") from None
        try:
            self._client.wait_for_workers(1, timeout=self.wait)
        except (TimeoutError, OSError):
            self.close()
            raise ExecutorError(f"--scheduler {self.scheduler!r}: no dask worker joined within {self.wait:g} s "
                                f"(--dask-wait); start one with `dask worker {self.scheduler}`") from None

    def _start_local(self, canonicals: List[str], cfg: WorkerConfig) -> WorkerConfig:
        import logging

        import dask
        from distributed import Client, LocalCluster

        workers = max(1, min(self.workers, len(canonicals)))
        cfg = dataclasses.replace(cfg, threads=self.threads or threads_per_worker(workers))
        env = {var: str(cfg.threads) for var in THREAD_ENV}  # set before torch starts in the worker
        # The nanny's pre-spawn-environ MALLOC_TRIM_THRESHOLD_=65536 pins glibc's mmap threshold
        # at 128 KiB: runs were 2.5x slower from page faults (see worker.unfreeze_malloc, which
        # covers external clusters).  Start the workers with glibc's defaults, like `local`.
        # The workers' statistical profiler samples every thread's stack each 10 ms (holding the
        # GIL): ~10% slower runs.  A run's own timings are in its record; no profile is needed.
        # allowed-failures 0: a task whose worker died is given back at once (KilledWorker), and
        # the session re-submits it within --retries, as under Slurm.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              "distributed.worker.profile.enabled": False,
                              "distributed.scheduler.allowed-failures": 0,
                              "distributed.admin.tick.interval": "1s"}):  # event-loop watchdog, 20 ms
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=logging.ERROR, env=env)
        self._client = Client(self._cluster)
        return cfg

    def close(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:
        from distributed import as_completed

        if self.threads:
            cfg = dataclasses.replace(cfg, threads=self.threads)
        external = bool(self.scheduler)
        if external:
            self.start()
        elif self._client is None:
            cfg = self._start_local(canonicals, cfg)
        else:
            cfg = dataclasses.replace(cfg, threads=self.threads or threads_per_worker(
                max(1, min(self.workers, len(canonicals)))))
        client = self._client
        try:
            args = cfg.as_dict()
            futures = {}
            for c in canonicals:
                fut = client.submit(execute_spec, c, args, pure=False, retries=0,
                                    key=f"bench-run-{_run_id(c)}-{cfg.session}-{cfg.attempt}")
                futures[fut] = c
            by_key = {f.key: c for f, c in futures.items()}
            watch = _WorkerWatch(client, by_key)
            ac = as_completed(list(futures))
            while not ac.is_empty():
                batch = ac.next_batch(block=False)
                for fut in batch:
                    try:
                        out = fut.result()
                    except Exception as exc:  # noqa: BLE001 - KilledWorker and friends
                        out = _lost_on_dask(exc)
                    yield futures[fut], out
                if batch:
                    continue
                time.sleep(self.poll_s)
                if watch.check() > self.wait and external:
                    left = [futures[f] for f in futures if not f.done()]
                    for c in left:
                        yield c, WorkerLost(f"no dask worker left on {self.scheduler} for {self.wait:g} s "
                                            "(--dask-wait)")
                    for f in futures:
                        f.cancel()
                    return
        finally:
            if not external:
                self.close()


class _WorkerWatch:
    """Reports dask workers that leave while runs are going on (with the runs they were at) and
    how long the cluster has been without any worker."""

    def __init__(self, client, by_key: Dict[str, str]) -> None:
        self.client = client
        self.by_key = by_key
        self.at: Dict[str, List[str]] = {}
        self.empty_since: Optional[float] = None

    def check(self) -> float:
        """Seconds the cluster has had no worker (0 while it has some)."""
        try:
            processing = self.client.processing()
        except Exception:  # noqa: BLE001 - the scheduler itself went away: as_completed reports it
            return 0.0
        for worker in set(self.at) - set(processing):
            runs = [_label(self.by_key[k]) for k in self.at[worker] if k in self.by_key]
            print(f"dask worker {worker} left" + (f" while running {', '.join(runs)}" if runs else ""),
                  file=sys.stderr)
        self.at = {w: [str(k) for k in keys] for w, keys in processing.items()}
        if processing:
            self.empty_since = None
            return 0.0
        if self.empty_since is None:
            self.empty_since = time.monotonic()
        return time.monotonic() - self.empty_since


def _lost_on_dask(exc: BaseException) -> BaseException:
    """A KilledWorker as :class:`WorkerLost` naming the worker; other exceptions unchanged."""
    worker = getattr(getattr(exc, "last_worker", None), "address", None)
    if type(exc).__name__ == "KilledWorker" and worker:
        return WorkerLost(f"dask worker {worker} died while running it")
    return exc


@EXECUTORS.register("slurm")
class SlurmExecutor(Executor):
    """A Slurm job array through submitit (``map_array``), one spec per array task.

    ``cluster="local"`` runs the jobs as local subprocesses (submitit's LocalExecutor),
    at most ``workers`` at a time; on Slurm, ``workers`` is the array parallelism.  Without
    ``cluster``, Slurm must be there (``sbatch`` and ``srun`` on ``PATH``): the executor refuses
    rather than fall back to local subprocesses silently.
    """

    CLUSTERS = ("slurm", "local", "debug")
    SLURM_COMMANDS = ("sbatch", "srun")

    def __init__(self, workers: int = 0, partition: Optional[str] = None, time_min: int = 60,
                 cpus_per_task: int = 1, mem_gb: float = 4.0, folder: str = "slurm-logs",
                 cluster: Optional[str] = None, poll_s: float = 1.0) -> None:
        if cluster is not None and cluster not in self.CLUSTERS:
            raise ExecutorError(f"--slurm-cluster {cluster!r} is not a submitit cluster; valid: "
                                f"{', '.join(self.CLUSTERS)} (local and debug run without Slurm)")
        missing = [c for c in self.SLURM_COMMANDS if shutil.which(c) is None]
        if cluster in (None, "slurm") and missing:
            how = "--slurm-cluster slurm" if cluster else "--executor slurm"
            raise ExecutorError(f"{how}: Slurm is not available here ({' and '.join(missing)} not on PATH); "
                                "run on a Slurm login node, or pass --slurm-cluster local to run the jobs as "
                                "local subprocesses through submitit")
        self.workers = workers if workers > 0 else 64
        self.partition = partition
        self.time_min = time_min
        self.cpus_per_task = cpus_per_task
        self.mem_gb = mem_gb
        self.folder = folder
        self.cluster = cluster
        self.poll_s = poll_s

    def start(self) -> None:
        if self.cluster in ("local", "debug"):
            print(f"slurm executor: --slurm-cluster {self.cluster} runs the jobs through submitit's "
                  f"{self.cluster} executor on this machine, not on Slurm", file=sys.stderr)

    def _executor(self):
        import submitit

        ex = submitit.AutoExecutor(folder=str(Path(self.folder) / "%j"), cluster=self.cluster or "slurm")
        params: Dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_task,
                                  "mem_gb": self.mem_gb, "name": "bench-suite"}
        if ex.cluster == "slurm":
            params["slurm_array_parallelism"] = self.workers
            if self.partition:
                params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:
        ex = self._executor()
        cfg = dataclasses.replace(cfg, threads=self.cpus_per_task)
        args = cfg.as_dict()
        if ex.cluster == "slurm":
            window = len(canonicals)  # the array parallelism limits Slurm itself
        else:
            window = max(1, self.workers if self.workers != 64 else available_cores())
        queue = list(canonicals)
        running: Dict[Any, str] = {}
        try:
            while queue or running:
                if len(running) < window and queue:
                    batch, queue = queue[: window - len(running)], queue[window - len(running):]
                    jobs = ex.map_array(execute_spec, batch, [args] * len(batch))
                    running.update(zip(jobs, batch))
                done = [j for j in running if j.done()]
                for job in done:
                    c = running.pop(job)
                    try:
                        out = job.result()
                    except Exception as exc:  # noqa: BLE001 - job failed / killed by the scheduler
                        out = WorkerLost(f"{ex.cluster} job {job.job_id} ended without a result "
                                         f"({_one_line(exc)[:300]})")
                    yield c, out
                if not done:
                    time.sleep(self.poll_s)
        finally:
            for job in running:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001
                    pass


def _run_id(canonical: str) -> str:
    from bench_suite.spec import RunSpec

    return RunSpec(canonical).run_id


def _label(canonical: str) -> str:
    from bench_suite.spec import RunSpec

    spec = RunSpec(canonical)
    return f"{spec.label()} ({spec.run_id})"
