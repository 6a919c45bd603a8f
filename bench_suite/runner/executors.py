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

dask and submitit are imported only inside their executors.
"""
from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import dataclasses
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from bench_suite.registry import EXECUTORS
from bench_suite.runner.worker import THREAD_ENV, WorkerConfig, available_cores, execute_spec, pool_initializer

Outcome = Tuple[str, Any]  # (canonical spec JSON, summary dict or exception)


class WorkerLost(RuntimeError):
    """The process running a spec died without writing its record."""


class Executor:
    """Base class: ``run(canonicals, cfg)`` yields ``(canonical, outcome)`` as runs finish."""

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def threads_per_worker(workers: int) -> int:
    return max(1, available_cores() // max(1, workers))


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """A process pool on this machine; each worker gets ``threads`` (default ``cores // workers``) threads.

    A worker that dies (the timeout watchdog, a segfault, the OOM killer) breaks the
    pool; the pool is rebuilt and unfinished specs re-sent (the worker skips any whose
    record this session already wrote).  A spec in flight during ``max_crashes``
    crashes is reported as lost.
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
                    for c in todo:
                        crashes[c] = crashes.get(c, 0) + 1
                    lost = [c for c in todo if crashes[c] >= self.max_crashes]
                    for c in lost:
                        yield c, WorkerLost(f"a worker process died {crashes[c]} times while this run was "
                                            "queued or running")
                    todo = [c for c in todo if c not in lost]
            finally:
                _shutdown_pool(pool)


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
    """A dask ``distributed`` cluster: ``scheduler`` address, else a LocalCluster of ``workers`` processes."""

    def __init__(self, scheduler: Optional[str] = None, workers: int = 0, threads: int = 0) -> None:
        self.scheduler = scheduler
        self.workers = workers if workers > 0 else available_cores()
        self.threads = threads

    def run(self, canonicals: List[str], cfg: WorkerConfig) -> Iterator[Outcome]:
        import logging

        import dask
        from distributed import Client, LocalCluster, as_completed

        cluster = None
        if self.threads:
            cfg = dataclasses.replace(cfg, threads=self.threads)
        if self.scheduler:
            client = Client(self.scheduler)
        else:
            workers = max(1, min(self.workers, len(canonicals)))
            cfg = dataclasses.replace(cfg, threads=self.threads or threads_per_worker(workers))
            env = {var: str(cfg.threads) for var in THREAD_ENV}  # set before torch starts in the worker
            # The nanny's pre-spawn-environ MALLOC_TRIM_THRESHOLD_=65536 pins glibc's mmap threshold
            # at 128 KiB: runs were 2.5x slower from page faults (see worker.unfreeze_malloc, which
            # covers external clusters).  Start the workers with glibc's defaults, like `local`.
            # The workers' statistical profiler samples every thread's stack each 10 ms (holding the
            # GIL): ~10% slower runs.  A run's own timings are in its record; no profile is needed.
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                  "distributed.worker.profile.enabled": False,
                                  "distributed.admin.tick.interval": "1s"}):  # event-loop watchdog, 20 ms
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR, env=env)
            client = Client(cluster)
        try:
            args = cfg.as_dict()
            futures = {}
            for c in canonicals:
                fut = client.submit(execute_spec, c, args, pure=False, retries=0,
                                    key=f"bench-run-{_run_id(c)}-{cfg.session}")
                futures[fut] = c
            for fut in as_completed(list(futures)):
                try:
                    out = fut.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker and friends
                    out = exc
                yield futures[fut], out
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


@EXECUTORS.register("slurm")
class SlurmExecutor(Executor):
    """A Slurm job array through submitit (``map_array``), one spec per array task.

    ``cluster="local"`` runs the jobs as local subprocesses (submitit's LocalExecutor),
    at most ``workers`` at a time; on Slurm, ``workers`` is the array parallelism.
    """

    def __init__(self, workers: int = 0, partition: Optional[str] = None, time_min: int = 60,
                 cpus_per_task: int = 1, mem_gb: float = 4.0, folder: str = "slurm-logs",
                 cluster: Optional[str] = None, poll_s: float = 1.0) -> None:
        self.workers = workers if workers > 0 else 64
        self.partition = partition
        self.time_min = time_min
        self.cpus_per_task = cpus_per_task
        self.mem_gb = mem_gb
        self.folder = folder
        self.cluster = cluster
        self.poll_s = poll_s

    def _executor(self):
        import submitit

        ex = submitit.AutoExecutor(folder=str(Path(self.folder) / "%j"), cluster=self.cluster)
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
                        out = exc
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
