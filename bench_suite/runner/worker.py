"""The unit of work of every executor: run one spec (a training run or a speed measurement,
:func:`perform`) and write its record into the store.

The worker itself writes the record (ok, failed with traceback, or timeout), so a run
on a dask worker or in a Slurm job is stored exactly like a local one and a matrix
resumes the same way wherever it ran.  This module imports torch only inside
functions, so a worker process can set its thread count before torch starts.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
#: exit code of a worker killed by the hard watchdog after a run ignored its timeout
WATCHDOG_EXIT = 86


class RunTimeout(Exception):
    """A run exceeded the wall-clock limit ``--timeout``."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs besides the spec; plain values so it pickles anywhere."""

    store_root: str
    session: str
    plugins: Tuple[str, ...] = ()
    data_dir: Optional[str] = None
    download: bool = False
    timeout: Optional[float] = None
    threads: int = 0  # 0: leave torch's default
    sys_path: Tuple[str, ...] = ()
    matrix: str = ""
    grace: float = 30.0  # seconds after the timeout before the hard watchdog ends the process
    attempt: int = 0  # 1, 2, ...: a re-submission after the run's worker was lost (``run --retries``)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Pin this process's thread pools (call before heavy work; sets OMP env for children too)."""
    if threads <= 0:
        return
    numba = sys.modules.get("numba")
    for var in THREAD_ENV:
        # numba re-reads NUMBA_NUM_THREADS at every compile and refuses a new value once its pool
        # has started; after numba is imported its thread count is set through its API instead
        if not (var == "NUMBA_NUM_THREADS" and numba is not None):
            os.environ[var] = str(threads)
    if numba is not None:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    import torch

    torch.set_num_threads(threads)


def die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (e.g. ``kill -9`` of the runner)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover
        pass


def pool_initializer(threads: int) -> None:
    """Initializer of local pool workers: die with the runner, do not oversubscribe cores."""
    die_with_parent()
    set_threads(threads)


_malloc_fixed = False


def unfreeze_malloc() -> None:
    """Undo what ``MALLOC_TRIM_THRESHOLD_`` does to glibc (dask's nanny sets 65536 in its workers).

    Setting that variable, to any value, turns off glibc's dynamic mmap threshold: it stays at
    128 KiB, so every larger block (each tensor of a training step) is mmap'd fresh and unmapped
    on free, ~1.4 M page faults and 2.5x the time of a csbm run.  Set the thresholds glibc's
    dynamic scheme tends to (mmap 32 MiB on 64-bit, trim twice that).  Once per process.
    """
    global _malloc_fixed
    if _malloc_fixed or "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    _malloc_fixed = True
    from bench_suite.engine.tuning import set_malloc_thresholds

    set_malloc_thresholds(32 << 20, 64 << 20)


def _prepare(cfg: WorkerConfig) -> None:
    unfreeze_malloc()
    for p in reversed(cfg.sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    from bench_suite.registry import load_all

    load_all(list(cfg.plugins))
    import bench_suite.train  # noqa: F401  (imported outside the timed run)
    if cfg.threads:
        import torch

        if torch.get_num_threads() != cfg.threads:
            set_threads(cfg.threads)


class _Deadline:
    """Raise :class:`RunTimeout` in the running thread after ``seconds``.

    In the main thread SIGALRM interrupts even a sleep; elsewhere (dask worker threads)
    the exception is injected asynchronously and fires at the next bytecode.  If the
    run is stuck in C code past ``grace`` more seconds, ``on_hard_timeout`` is called
    (it writes the timeout record) and the process exits.
    """

    def __init__(self, seconds: Optional[float], grace: float, on_hard_timeout) -> None:
        self.seconds = seconds
        self.grace = grace
        self.on_hard_timeout = on_hard_timeout
        self._timers: List[threading.Timer] = []
        self._old = None
        self._main = threading.current_thread() is threading.main_thread()
        self._ident = threading.get_ident()
        self.fired = False
        self._done = threading.Event()

    def __enter__(self) -> "_Deadline":
        if not self.seconds:
            return self
        if self._main:
            self._old = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            t = threading.Timer(self.seconds, self._inject)
            t.daemon = True
            t.start()
            self._timers.append(t)
        hard = threading.Timer(self.seconds + self.grace, self._hard)
        hard.daemon = True
        hard.start()
        self._timers.append(hard)
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._main and self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old if self._old is not None else signal.SIG_DFL)
        for t in self._timers:
            t.cancel()

    def _on_alarm(self, signum, frame) -> None:
        self.fired = True
        raise RunTimeout(f"run exceeded the timeout of {self.seconds:g} s")

    def _inject(self) -> None:
        if self._done.is_set():
            return
        self.fired = True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._ident), ctypes.py_object(RunTimeout))

    def _hard(self) -> None:
        if self._done.is_set():
            return
        self.on_hard_timeout()
        os._exit(WATCHDOG_EXIT)


def perform(spec, data_dir: Optional[str] = None, download: bool = False) -> Dict[str, Any]:
    """The ``ok`` record of one spec, by its kind: a training run (:func:`bench_suite.train.run`) or a
    speed measurement (:func:`bench_suite.engine.bench.run`); the same for every executor and for
    the one-off commands (``bench-suite speed``)."""
    from bench_suite.record import SPEED

    if spec.kind == SPEED:
        from bench_suite.engine.bench import run
    else:
        from bench_suite.train import run
    return run(spec, data_dir=data_dir, download=download)


def execute_spec(canonical: str, cfg: WorkerConfig | Dict[str, Any]) -> Dict[str, Any]:
    """Run one spec (its canonical JSON) and store its record; returns a short outcome.

    Skips the run when the store already holds an ``ok`` record, or a record written in
    this same session (a task re-sent after a worker died must not run twice), or when
    another runner has claimed it (status ``elsewhere``; see :mod:`bench_suite.runner.store`).
    """
    if isinstance(cfg, dict):
        cfg = WorkerConfig(**{k: tuple(v) if k in ("plugins", "sys_path") else v for k, v in cfg.items()})
    _prepare(cfg)
    from bench_suite.runner.store import ResultStore, try_claim
    from bench_suite.spec import RunSpec

    spec = RunSpec(canonical)
    store = ResultStore(cfg.store_root)
    done = _finished(store, spec.run_id, cfg.session)
    if done is not None:
        return done
    # a re-submission takes over the claim its lost predecessor of this session left behind
    claim, holder = try_claim(store.root, spec.run_id, cfg.session, take_over_own=cfg.attempt > 0)
    if claim is None:  # another runner is at it now
        return {"run_id": spec.run_id, "status": "elsewhere", "seconds": 0.0, "skipped": True, "holder": holder}
    try:
        done = _finished(store, spec.run_id, cfg.session)  # it may have finished between our look and our claim
        if done is not None:
            return done
        claim.heartbeat()
        store.set_aside(spec.run_id)  # a corrupt record file is kept for inspection, not overwritten
        return _execute(spec, store, cfg)
    finally:
        claim.release()


def _finished(store, run_id: str, session: str) -> Optional[Dict[str, Any]]:
    """The outcome of a run needing no work: its record is ``ok`` (``elsewhere`` when another
    runner wrote it) or was written by this session (a task re-sent after its worker died)."""
    from bench_suite.record import is_ok, record_status

    old = store.read(run_id)
    if old is None:
        return None
    if old.get("session") == session:
        return {"run_id": run_id, "status": record_status(old), "seconds": 0.0, "skipped": True}
    if is_ok(old):
        return {"run_id": run_id, "status": "elsewhere", "seconds": 0.0, "skipped": True}
    return None


def _execute(spec, store, cfg: WorkerConfig) -> Dict[str, Any]:
    from bench_suite.env import environment
    from bench_suite.record import failure_record, runner_fields, utc_now

    started = utc_now()
    where = runner_fields(matrix=cfg.matrix, session=cfg.session, started=started)
    t0 = time.perf_counter()
    written = threading.Lock()
    state = {"written": False}

    def write_failure(status: str, exc: BaseException, tb: str) -> None:
        with written:
            if state["written"]:
                return
            store.write(failure_record(spec, status, exc, tb, **where, finished=utc_now(),
                                       timings={"total_s": time.perf_counter() - t0}, env=environment()))
            state["written"] = True

    def hard_timeout() -> None:
        write_failure("timeout", RunTimeout(f"exceeded {cfg.timeout:g} s"),
                      "run did not stop within the grace period after its timeout; "
                      "the worker process was ended by the watchdog")

    status = "ok"
    try:
        with _Deadline(cfg.timeout, cfg.grace, hard_timeout):
            record = perform(spec, data_dir=cfg.data_dir, download=cfg.download)
        with written:
            store.write(dict(record, **where, finished=utc_now()))
            state["written"] = True
    except RunTimeout as exc:
        status = "timeout"
        write_failure(status, exc, traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record, the matrix goes on
        status = "failed"
        write_failure(status, exc, traceback.format_exc())
    return {"run_id": spec.run_id, "status": status, "seconds": time.perf_counter() - t0, "skipped": False}
