"""Run a list of specs through an executor into a store: skip finished runs, count, show progress."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from bench_suite.env import environment
from bench_suite.record import failure_record, record_status, runner_fields, utc_now
from bench_suite.runner.executors import Executor, WorkerLost
from bench_suite.runner.store import ResultStore, StoreWriteError, sweep_stale_claims
from bench_suite.runner.worker import WorkerConfig
from bench_suite.spec import RunSpec


@dataclass
class Plan:
    """Which specs of a matrix still need to run."""

    specs: List[RunSpec]
    todo: List[RunSpec]
    counts: Dict[str, int]  # ok / failed / timeout / pending (pending includes corrupt)
    corrupt: Dict[str, str] = field(default_factory=dict)


def plan(specs: Sequence[RunSpec], store: ResultStore, retry_failed: bool = False) -> Plan:
    scan = store.scan()
    counts = {"ok": 0, "failed": 0, "timeout": 0, "pending": 0}
    todo = []
    corrupt = {}
    for s in specs:
        st = scan.of(s.run_id)
        counts[st] += 1
        if s.run_id in scan.corrupt:
            corrupt[s.run_id] = scan.corrupt[s.run_id]
        if st == "pending" or (retry_failed and st in ("failed", "timeout")):
            todo.append(s)
    return Plan(list(specs), todo, counts, corrupt)


@dataclass
class Summary:
    counts: Dict[str, int]
    interrupted: bool = False
    seconds: float = 0.0
    run_seconds: List[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.counts.get("failed", 0) == 0 and self.counts.get("timeout", 0) == 0


def run_specs(specs: Sequence[RunSpec], store: ResultStore, executor: Executor, *, plugins: Sequence[str] = (),
              data_dir: Optional[str] = None, download: bool = False, timeout: Optional[float] = None,
              retry_failed: bool = False, matrix: str = "", progress: bool = True,
              retries: int = 1, log=None) -> Summary:
    """Run every pending spec (and failed ones with ``retry_failed``); Ctrl-C stops cleanly.

    A run whose worker was lost (the executor yields :class:`WorkerLost`: a killed process, a
    dead dask worker, a Slurm job that ended without a result) is re-submitted up to ``retries``
    times, on every executor alike; then it is stored as a failed record (``--retry-failed``
    runs it again).  A run that raises or times out is recorded at once, never retried here.
    Messages go to ``log`` (default: the ``sys.stderr`` of the moment of the call)."""
    log = sys.stderr if log is None else log
    t0 = time.perf_counter()
    sweep_stale_claims(store.root)
    store.sweep_temp_files()
    p = plan(specs, store, retry_failed)
    for run_id, reason in p.corrupt.items():
        print(f"warning: {reason}; the run will be repeated (the file is kept as "
              f"{store.path(run_id).name}.corrupt)", file=log)
    skipped = len(p.specs) - len(p.todo)
    if skipped:
        print(f"{skipped} of {len(p.specs)} runs already finished in {store.root}, skipping them", file=log)
    cfg = WorkerConfig(store_root=str(store.root), session=uuid.uuid4().hex, plugins=tuple(plugins),
                       data_dir=data_dir, download=download, timeout=timeout or None,
                       sys_path=(os.getcwd(),), matrix=matrix)
    counts = {"ok": 0, "failed": 0, "timeout": 0, "elsewhere": 0}
    summary = Summary(counts)
    if not p.todo:
        return summary
    by_canonical = {s.canonical: s for s in p.todo}
    bar = _progress(len(p.todo), progress, log)
    submit = [s.canonical for s in p.todo]
    try:
        for attempt in range(retries + 1):
            resubmit = []
            for canonical, outcome in executor.run(submit, dataclasses.replace(cfg, attempt=attempt)):
                spec = by_canonical[canonical]
                if isinstance(outcome, BaseException):
                    mine = store.read(spec.run_id)
                    if mine is not None and mine.get("session") == cfg.session:
                        status = record_status(mine)  # the worker wrote its record before it went (hard timeout)
                    elif isinstance(outcome, WorkerLost) and attempt < retries:
                        print(f"lost: {spec.label()} ({spec.run_id}): {outcome}; re-submitting it "
                              f"(retry {attempt + 1} of {retries})", file=log)
                        resubmit.append(canonical)
                        continue
                    else:
                        if isinstance(outcome, WorkerLost):
                            print(f"lost: {spec.label()} ({spec.run_id}): {outcome}; no retry left "
                                  f"(--retries {retries}), stored as failed", file=log)
                        status = _record_lost(store, spec, cfg, outcome, log)
                else:
                    status = outcome["status"]
                    summary.run_seconds.append(float(outcome.get("seconds", 0.0)))
                counts[status] = counts.get(status, 0) + 1
                if status not in ("ok", "elsewhere"):  # elsewhere: another runner on the store ran or runs it
                    print(f"{status}: {spec.label()} ({store.path(spec.run_id)})", file=log)
                if bar is not None:
                    bar.set_postfix(done=counts["ok"], failed=counts["failed"] + counts["timeout"],
                                    left=len(p.todo) - bar.n - 1, refresh=False)
                    bar.update(1)
            if not resubmit:
                break
            submit = resubmit
    except KeyboardInterrupt:
        summary.interrupted = True
        print("\ninterrupted: finished records are kept; run the same command to resume", file=log)
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _record_lost(store: ResultStore, spec: RunSpec, cfg: WorkerConfig, exc: BaseException, log=None) -> str:
    """A task lost with its worker: keep a record the worker wrote this session, else write a failed one
    (when even that cannot be written, e.g. a full disk, say so in one line: the run stays pending)."""
    old = store.read(spec.run_id)
    if old is not None and old.get("session") == cfg.session:
        return record_status(old)
    rec = failure_record(spec, "failed", exc, "".join(traceback.format_exception(exc)),
                         **runner_fields(matrix=cfg.matrix, session=cfg.session, started=""),
                         finished=utc_now(), timings={}, env=environment())
    try:
        store.write(rec)
    except OSError as write_exc:
        print(f"error: {spec.label()}: {type(exc).__name__}: {exc}; its failed record could not be written either "
              f"({StoreWriteError(store.root, write_exc)}); the run stays pending", file=log or sys.stderr)
    return "failed"


def _progress(total: int, enabled: bool, log):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="run", file=log, dynamic_ncols=True, smoothing=0.1)
