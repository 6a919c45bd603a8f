"""``bench-suite run MATRIX [key=value ...]``: run a benchmark matrix, resuming where it stopped."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict


def configure(p: argparse.ArgumentParser) -> None:
    from bench_suite.runner.matrix import shipped_matrices

    p.add_argument("matrix", help=f"shipped matrix name ({', '.join(shipped_matrices())}) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="spec keys applied to every run (win over the matrix)")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="run only the matrix's runs with one of these values of KEY (repeatable: all must match; "
                        "run ids unchanged), e.g. --only model=gcnii --only depth=64")
    p.add_argument("--results", default="results", help="results root; records go to RESULTS/<matrix-name>/")
    p.add_argument("--executor", default="local", help="local (default), dask, slurm or a plugin executor")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (default: number of cores)")
    p.add_argument("--threads", type=int, default=None, help="torch/OMP threads per worker (default: cores // workers)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="wall-clock limit per run")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="copy the ok record of a pending run from another matrix's results directory DIR when it "
                        "holds the same spec (same run id), instead of training it again (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed and timed-out runs")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="re-submit a run whose worker was lost (process killed, dask worker died, Slurm job "
                        "ended without a result) up to N times (default 1), on every executor; after that it "
                        "is stored as a failed record, which --retry-failed runs again. A run that raises or "
                        "exceeds --timeout is recorded at once")
    p.add_argument("--dry-run", action="store_true", help="list the specs and their status, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("dask")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="dask scheduler (default: a LocalCluster)")
    g.add_argument("--dask-wait", type=float, default=None, metavar="SECONDS",
                   help="with --scheduler: wait this long for a first worker, and give the unfinished runs up as "
                        "lost when no worker is left for this long (default 60)")
    g.add_argument("--dask-connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --scheduler: give up connecting after this long (default 10)")
    g = p.add_argument_group("slurm (submitit)")
    g.add_argument("--partition", default=None)
    g.add_argument("--time-min", type=int, default=None, help="job time limit in minutes")
    g.add_argument("--cpus-per-task", type=int, default=None)
    g.add_argument("--mem-gb", type=float, default=None)
    g.add_argument("--slurm-folder", default=None, help="submitit log folder (default: RESULTS/.slurm/<matrix>)")
    g.add_argument("--slurm-cluster", default=None,
                   help="submitit cluster: slurm (the default; refused when sbatch/srun are not on PATH), or local "
                        "/ debug to run the jobs on this machine through submitit")


#: CLI option -> executor constructor keyword
EXECUTOR_OPTIONS = {"workers": "workers", "threads": "threads", "scheduler": "scheduler",
                    "dask_wait": "wait", "dask_connect_timeout": "connect_timeout", "partition": "partition",
                    "time_min": "time_min", "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb",
                    "slurm_folder": "folder", "slurm_cluster": "cluster"}


def build_executor(args: argparse.Namespace, matrix_name: str):
    from bench_suite.registry import EXECUTORS, RegistryError, range_message

    accepted = {p.name: p for p in EXECUTORS.params(EXECUTORS.entry(args.executor, "--executor").key)}
    params: Dict[str, Any] = {}
    for opt, kw in EXECUTOR_OPTIONS.items():
        value = getattr(args, opt)
        option = f"--{opt.replace('_', '-')}"
        if kw in accepted and accepted[kw].range is not None and value not in accepted[kw].range:
            raise RegistryError(range_message(option, value, accepted[kw].range, owner=f"executor {args.executor!r}"))
        if value is None or (value == 0 and opt in ("workers", "threads")):
            continue
        if kw not in accepted:
            raise RegistryError(f"option {option}={value!r} does not apply to executor "
                                f"{args.executor!r}; it accepts: {', '.join(sorted(accepted)) or '(nothing)'}")
        params[kw] = value
    if "folder" in accepted and "folder" not in params:
        params["folder"] = str(Path(args.results) / ".slurm" / matrix_name)
    try:
        return EXECUTORS.create(args.executor, where="--executor", **params)
    except ValueError as exc:
        raise RegistryError(f"executor {args.executor!r}: {exc}") from None


def check_dataset_files(specs, data_dir, download: bool) -> None:
    """Stop before any run when a dataset the pending runs need has missing, unreadable or refused
    files: each is read once here (``check_readable``, which fills the loaders' caches for the
    workers), so a truncated file is one error instead of one failed record per run.

    Datasets that are not file-backed (csbm) pass; a plugin dataset is checked with
    ``check_readable`` or else ``check_files`` when it has one.
    """
    from bench_suite.data.datasets import clear_memory_cache
    from bench_suite.registry import DATASETS

    seen = set()
    for s in specs:
        if s.dataset is None:  # a speed measurement on a generated graph
            continue
        params = dict(s.dataset)
        name = params.pop("name")
        key = (name, tuple(sorted(params.items())))
        if key in seen:
            continue
        seen.add(key)
        ds = DATASETS.create(name, data_dir=data_dir, download=download, **params)
        check = getattr(ds, "check_readable", None) or getattr(ds, "check_files", None)
        if check is not None:
            check()
    clear_memory_cache()  # the runner itself trains nothing: keep no graph in memory


def _without_record(specs, status):
    """The specs with no record file at all (not even a corrupt one): those ``--reuse`` may fill."""
    return [s for s in specs if status.of(s.run_id) == "pending" and s.run_id not in status.corrupt]


def execute(args: argparse.Namespace) -> int:
    from bench_suite.runner.matrix import expand_matrix, load_matrix, parse_only, parse_overrides
    from bench_suite.runner.reuse import check_sources, find_reusable, reuse_records
    from bench_suite.runner.session import plan, run_specs
    from bench_suite.record import SPEED
    from bench_suite.registry import plugin_refs, report_load_failures
    from bench_suite.runner.store import ResultStore
    from bench_suite.spec import SpecError

    if args.timeout is not None and not args.timeout > 0:
        raise SpecError(f"--timeout {args.timeout:g} is not valid: give a positive number of seconds per run "
                        "(or leave it out for no limit)")
    if args.retries < 0:
        raise SpecError(f"--retries {args.retries} is not valid: give a number of retries >= 0 (0: none)")
    matrix = load_matrix(args.matrix)
    specs = expand_matrix(matrix, parse_overrides(args.overrides), parse_only(args.only))
    store = ResultStore(Path(args.results) / matrix.name)
    sources = check_sources(args.reuse, store)
    if args.dry_run:
        p = plan(specs, store, args.retry_failed)
        status = store.scan()
        reusable = find_reusable(_without_record(specs, status), sources)
        for s in specs:
            shown = "reusable" if s.run_id in reusable else status.of(s.run_id)
            print(f"{s.run_id}  {shown:8s} {s.label()}")
        print(f"{len(specs)} runs in {matrix.path}: " + ", ".join(f"{v} {k}" for k, v in p.counts.items())
              + (f" ({len(reusable)} of them reusable)" if reusable else "")
              + f"; {len(p.todo) - len(reusable)} would run", file=sys.stderr)
        return 0
    if args.workers != 1 and any(s.kind == SPEED for s in specs):
        print(f"warning: matrix {matrix.name} times speed measurements; runs side by side share the cores and "
              "time each other's load (--workers 1 gives each the machine)", file=sys.stderr)
    executor = build_executor(args, matrix.name)
    reusable = find_reusable(_without_record(specs, store.scan()), sources) if sources else {}
    check_dataset_files([s for s in plan(specs, store, args.retry_failed).todo if s.run_id not in reusable],
                        args.data_dir, args.download)
    executor.start()  # an executor that cannot run here (no Slurm, no scheduler) stops before a write
    try:
        store.check_writable()
        if sources:
            copied = reuse_records(_without_record(specs, store.scan()), store, sources, matrix.name)
            print(f"reused {len(copied)} finished records from {', '.join(map(str, sources))}", file=sys.stderr)
        report_load_failures()  # before a long run, not after it
        print(f"matrix {matrix.name}: {len(specs)} runs -> {store.root} on {args.executor}", file=sys.stderr)
        summary = run_specs(specs, store, executor, plugins=plugin_refs(args.plugin), data_dir=args.data_dir,
                            download=args.download, timeout=args.timeout, retry_failed=args.retry_failed,
                            matrix=matrix.name, progress=not args.no_progress, retries=args.retries)
    finally:
        executor.close()
    c = summary.counts
    print(f"finished in {summary.seconds:.1f} s: {c['ok']} ok, {c['failed']} failed, {c['timeout']} timeout"
          + (f", {c['elsewhere']} taken by another runner on {store.root}" if c.get("elsewhere") else "")
          + (" (interrupted)" if summary.interrupted else ""), file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1
