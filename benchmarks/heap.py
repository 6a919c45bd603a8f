"""Training epochs with glibc's default heap against a heap that keeps freed memory
(:func:`bench_suite.engine.tuning.retain_heap`: every block below 1 GiB from the heap, never trimmed),
side by side.  The question: do a run's page faults (thousands per GCNII-64 epoch with the default
heap) cost enough to make runner workers keep their freed memory?

Measured (results/cost/heap.jsonl, 2026-12-07, 2-core EPYC VM): no.  With one runner worker busy beside
it (load 1.1), 4 rounds: speed-ups 0.94-1.10 over GCN-2, GCNII-64, APPNP-10, SMP-64 (FP32 and QLR INT4,
Cora; GCNII-64 on CiteSeer), faults per epoch down 2-3x; with two workers busy beside it: 0.95-1.02.  The runner keeps glibc's
defaults (an early probe of 5 process pairs on a machine with three busy processes had suggested
1.1-1.7x: that was the load, not the heap).

    python benchmarks/heap.py [--only cora/gcnii-64/qlr-4 ...] [--rounds 4] [--epochs 8]
                              [--out results/cost/heap.jsonl]

Each measurement is a fresh process (so the two heaps never share a history) that builds one basket
configuration from seed 0 (tuned defaults, as a matrix run), trains 2 epochs to warm up (QLR's grid
search, numba compilation), then times ``--epochs`` epochs of ``train.fit``: the CPU time of its one
thread (``time.thread_time``, kernel time of page faults included; a busy machine's waiting is not) and
the minor page faults (``getrusage``) per epoch.  Rounds alternate which mode goes first.  Every
measurement also hashes the per-epoch training losses and validation scores: the two modes must train
to the same bits (the setting changes where memory comes from, not the arithmetic), checked and recorded.

Reported per configuration: the median ms and page faults per epoch of each mode and
``speedup`` = default / retained.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from lean_epoch import QUANTS  # the same four quantizer settings (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
MODELS: Dict[str, dict] = {
    "gcn-2": {"model": "gcn", "depth": 2},
    "gcnii-64": {"model": "gcnii", "depth": 64},
    "appnp-10": {"model": "decoupled", "propagation": "appnp", "depth": 10},
    "smp-64": {"model": "decoupled", "propagation": "smp", "depth": 64},
}
BASKET: List[str] = [f"cora/{m}/{q}" for m in ("gcn-2", "gcnii-64") for q in ("fp32", "qlr-4")] + \
    ["cora/appnp-10/qlr-4", "cora/smp-64/qlr-4", "citeseer/gcnii-64/qlr-4"]
MODES = ("default", "retained")


def measure(entry: str, mode: str, epochs: int, data_dir: str) -> dict:
    """Inside the measuring process: one configuration, one heap mode."""
    import dataclasses
    import resource

    import torch

    torch.set_num_threads(1)
    if mode == "retained":
        from bench_suite.engine.tuning import retain_heap

        if not retain_heap():
            raise SystemExit("heap.py: retain_heap() did not take effect (not Linux/glibc?)")
    from bench_suite.data.datasets import load_dataset
    from bench_suite.defaults import apply_defaults
    from bench_suite.registry import load_all
    from bench_suite.spec import resolve_spec
    from bench_suite.train import build_model, fit, seed_everything

    load_all()
    dataset, model, quant = entry.split("/")
    flat = {"dataset": dataset, **MODELS[model], **QUANTS[quant]}
    if dataset in ("cora", "citeseer"):  # as every matrix now stores their bag-of-words features
        flat["sparse_features"] = True
    spec = resolve_spec(apply_defaults(flat))
    data = load_dataset(dataset, seed=0, data_dir=data_dir,
                        **{k: v for k, v in spec.data["dataset"].items() if k != "name"})
    seed_everything(0)
    m = build_model(spec, data)
    trace: list = []
    fit(m, data, dataclasses.replace(spec.train, epochs=2, patience=2), progress=lambda *a: trace.append(a))
    stamps: list = []

    def tick(*a):
        trace.append(a)
        stamps.append((time.thread_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))

    fit(m, data, dataclasses.replace(spec.train, epochs=epochs + 1, patience=epochs + 1), progress=tick)
    cpu = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    faults = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
    return {"ms": 1000 * statistics.median(cpu), "faults": statistics.median(faults),
            "trace_sha256": hashlib.sha256(json.dumps(trace, sort_keys=True, default=str).encode()).hexdigest()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=BASKET, help=f"entries DATASET/MODEL/QUANT (default: {' '.join(BASKET)})")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--data-dir", default=os.environ.get("BENCH_SUITE_DATA"))
    ap.add_argument("--out", default=str(ROOT / "results" / "cost" / "heap.jsonl"), help="JSONL to append to ('' for none)")
    ap.add_argument("--measure", nargs=2, metavar=("ENTRY", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.epochs, args.data_dir)))
        return
    for e in args.only:
        parts = e.split("/")
        if len(parts) != 3 or parts[1] not in MODELS or parts[2] not in QUANTS:
            ap.error(f"--only {e!r}: expected DATASET/MODEL/QUANT with MODEL in {', '.join(MODELS)} "
                     f"and QUANT in {', '.join(QUANTS)}")
    if args.rounds < 1 or args.epochs < 2:
        ap.error(f"--rounds {args.rounds} / --epochs {args.epochs}: need >= 1 round and >= 2 epochs")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OUTDATED_IGNORE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    load_before = os.getloadavg()
    samples: Dict[str, Dict[str, list]] = {e: {m: [] for m in MODES} for e in args.only}
    for r in range(args.rounds):
        for e in args.only:
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                cmd = [sys.executable, __file__, "--measure", e, mode, "--epochs", str(args.epochs)]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                if out.returncode:
                    raise SystemExit(f"heap.py: {e} {mode} failed:\n{out.stderr[-2000:]}")
                s = json.loads(out.stdout.strip().splitlines()[-1])
                samples[e][mode].append(s)
                print(f"round {r + 1}/{args.rounds} {e} {mode}: {s['ms']:.1f} ms, {s['faults']:.0f} faults per epoch",
                      flush=True)
    rows = []
    for e, by_mode in samples.items():
        hashes = {s["trace_sha256"] for m in MODES for s in by_mode[m]}
        row = {"entry": e, "bit_identical": len(hashes) == 1}
        for m in MODES:
            row[f"{m}_ms"] = statistics.median(s["ms"] for s in by_mode[m])
            row[f"{m}_faults"] = statistics.median(s["faults"] for s in by_mode[m])
        row["speedup"] = row["default_ms"] / row["retained_ms"]
        rows.append(row)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"benchmark": "heap", "commit": commit, "rounds": args.rounds, "epochs": args.epochs, "threads": 1,
              "machine": f"{os.uname().nodename}, {os.cpu_count()} cores", "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rows": rows}
    print(f"{'entry':28s} {'default ms':>10s} {'retained ms':>11s} {'speedup':>7s} {'faults d/r':>14s} identical")
    for row in rows:
        print(f"{row['entry']:28s} {row['default_ms']:10.1f} {row['retained_ms']:11.1f} {row['speedup']:7.2f} "
              f"{row['default_faults']:7.0f}/{row['retained_faults']:<6.0f} {row['bit_identical']}")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    if not all(r["bit_identical"] for r in rows):
        raise SystemExit("heap.py: the two heap modes trained to different bits")


if __name__ == "__main__":
    main()
