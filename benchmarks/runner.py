"""Runner throughput and overhead.

    python benchmarks/runner.py [--runs 16] [--epochs 60] [--nodes 1500] [--skip-dask]

On one matrix of small csbm runs, side by side in one invocation:

* ``local`` with 2 workers against serial (1 worker) — target speed-up >= 1.7x;
* ``dask`` with 2 workers (LocalCluster) against ``local`` with 2 — target within 15%;
* the runner's own overhead per run (spec expansion, store scan, record writing, pool
  start-up amortised) against the training time of the smallest run.

Each executor writes into a fresh store; wall-clock includes pool/cluster start-up,
as a user sees it.  The load average is printed: on a shared machine it matters.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Dict, List

from bench_suite.registry import EXECUTORS, load_all
from bench_suite.runner.matrix import expand_matrix
from bench_suite.runner.session import plan, run_specs
from bench_suite.runner.store import ResultStore


def small_matrix(path: Path, runs: int, epochs: int, nodes: int) -> Path:
    seeds = max(1, runs // 2)
    path.write_text(textwrap.dedent(f"""
        name: bench
        seeds: {seeds}
        fixed: {{dataset: csbm, dataset.nodes: {nodes}, epochs: {epochs}, patience: {epochs}}}
        axes: {{model: gcn, depth: [2, 4]}}
    """))
    return path


def timed(label: str, specs, executor, root: Path) -> Dict[str, float]:
    store = ResultStore(root / label)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = run_specs(specs, store, executor, progress=False, matrix="bench")
    wall = time.perf_counter() - t0
    recs = list(store.records())
    assert summary.counts["ok"] == len(specs) == len(recs), (label, summary.counts)
    train = [r["timings"]["total_s"] for r in recs]
    return {"wall": wall, "train_sum": sum(train), "train_min": min(train), "load": load0}


def bookkeeping(specs, root: Path, matrix_path: Path) -> Dict[str, float]:
    """Per-run cost of the runner's own work, measured without training."""
    t0 = time.perf_counter()
    for _ in range(5):
        expand_matrix(matrix_path)
    expand = (time.perf_counter() - t0) / 5 / len(specs)
    store = ResultStore(root / "bookkeeping")
    record = next(ResultStore(root / "serial").records())
    t0 = time.perf_counter()
    for s in specs:
        store.write(dict(record, run_id=s.run_id))
    write = (time.perf_counter() - t0) / len(specs)
    t0 = time.perf_counter()
    plan(specs, store)
    scan = (time.perf_counter() - t0) / len(specs)
    return {"expand": expand, "write": write, "scan": scan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--nodes", type=int, default=1500)
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()
    load_all()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mpath = small_matrix(root / "bench.yaml", args.runs, args.epochs, args.nodes)
        specs = expand_matrix(mpath)
        print(f"{len(specs)} runs: csbm nodes={args.nodes}, gcn depth 2/4, {args.epochs} epochs; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start (shared machine)")
        results = {}
        # serial as the runner does it (1 worker, cores // 1 threads) and with one thread
        results["serial"] = timed("serial", specs, EXECUTORS.create("local", workers=1), root)
        results["serial-1t"] = timed("serial-1t", specs, EXECUTORS.create("local", workers=1, threads=1), root)
        results["local-2"] = timed("local-2", specs, EXECUTORS.create("local", workers=2), root)
        if not args.skip_dask:
            results["dask-2"] = timed("dask-2", specs, EXECUTORS.create("dask", workers=2), root)
        print(f"\n{'executor':10s} {'wall s':>8s} {'runs/min':>9s} {'sum of run s':>13s} {'load':>6s}")
        for k, r in results.items():
            print(f"{k:10s} {r['wall']:8.1f} {60 * len(specs) / r['wall']:9.1f} {r['train_sum']:13.1f} {r['load']:6.2f}")
        speedup = results["serial"]["wall"] / results["local-2"]["wall"]
        speedup1 = results["serial-1t"]["wall"] / results["local-2"]["wall"]
        print(f"\nlocal 2 workers vs serial: {speedup:.2f}x (vs serial with 1 thread: {speedup1:.2f}x; "
              "target >= 1.7x)")
        if "dask-2" in results:
            rel = results["dask-2"]["wall"] / results["local-2"]["wall"] - 1
            print(f"dask 2 workers vs local 2 workers: {100 * rel:+.1f}% wall-clock (target within 15%)")
        book = bookkeeping(specs, root, mpath)
        smallest = min(r["train_min"] for r in results.values())
        serial = results["serial"]
        per_run = (serial["wall"] - serial["train_sum"]) / len(specs)
        print(f"\nrunner bookkeeping per run: expand {1000 * book['expand']:.2f} ms, write record "
              f"{1000 * book['write']:.2f} ms, scan store {1000 * book['scan']:.2f} ms "
              f"= {1000 * sum(book.values()):.2f} ms")
        print(f"serial wall-clock not spent in train.run, per run (pool start-up amortised, worker "
              f"imports, result passing): {1000 * per_run:.0f} ms")
        print(f"smallest run's own time (data + train + layer metrics): {1000 * smallest:.0f} ms -> bookkeeping is "
              f"{100 * sum(book.values()) / smallest:.2f}%, all overhead {100 * per_run / smallest:.1f}% of it")


if __name__ == "__main__":
    main()
