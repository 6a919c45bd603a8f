"""Whole training epochs (``train.fit``) of quantized deep GNNs: this working tree against git refs,
side by side, with a check that every ref trains to the same bits.

    python benchmarks/lean_epoch.py [--refs REF ...] [--rounds 5] [--epochs 4] [--check-epochs 12]
                                    [--only gcnii64/qlr-4 ...] [--sparse] [--out results/cost/lean_epoch.jsonl]

The basket is Cora with GCN-2, GCNII-64 and the decoupled SMP and APPNP at K = 64 at FP32, QLR INT4,
QLR INT2 with BT* and DQ INT4, each spec completed by the tuned defaults as a matrix run is
(``defaults.apply_defaults``); ``--sparse`` keeps Cora's bag-of-words features in CSR
(``sparse_features: true``, as every shipped matrix trains Cora and CiteSeer; its default refs are then the
merge-base alone: the previous release has no sparse inputs).  An epoch is one
epoch of ``train.fit`` as a run pays it: training step, evaluation forward, scoring, and the copy of
the best state when validation improves; its cost is the CPU time of the worker's one thread
(``time.thread_time``, which a busy machine's waiting does not inflate) between consecutive
progress callbacks, the first epoch of each call left out (it also pays ``fit``'s set-up).

Every ref (default: the merge-base with ``main``, and the previous release of
``bench_suite.throughput``) is checked out into a temporary ``git worktree``; one worker process per
side imports ``bench_suite`` from its checkout (``PYTHONPATH``), builds every configuration from
seed 0, trains it once to warm up (QLR's grid search, numba compilation), and waits.  Each round asks
every configuration of every side in turn for ``--epochs`` epochs, the order of the sides rotating
from round to round, so only one worker computes at a time and machine load falls on all alike.

Before timing, each side trains a fresh model of every configuration for ``--check-epochs`` epochs
(patience 3, so early stopping and the restore of the best state run too) and reports a SHA-256 of the
per-epoch training losses and validation scores, of the returned metrics (timings left out), of the
restored state dict and of the evaluation logits; the line records which refs match the tree.

Reported per configuration: median CPU ms per epoch for every side, ``speedup`` = ref / tree, and
each quantizer's epoch relative to the FP32 epoch of the same model on the same side.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from lean_layers import _ask, _git  # the same git helper and worker protocol (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
#: the release ``bench_suite.throughput`` measures against (the suite before the throughput work)
PREVIOUS_RELEASE = "04552245ce5f6b7c26a4bb7a5b1c85af9fe85e94"

QUANTS: Dict[str, dict] = {
    "fp32": {"quant": "fp32"},
    "qlr-4": {"quant": "qlr", "bits": 4},
    "qlr-2-bt*": {"quant": "qlr", "bits": 2, "truncation": "bt*"},
    "dq-4": {"quant": "dq", "bits": 4},
}
MODELS: Dict[str, dict] = {
    "gcn2": {"model": "gcn", "depth": 2},
    "gcnii64": {"model": "gcnii", "depth": 64},
    "smp64": {"model": "decoupled", "propagation": "smp", "depth": 64},
    "appnp64": {"model": "decoupled", "propagation": "appnp", "depth": 64},
}
BASKET: List[str] = [f"{m}/{q}" for m in MODELS for q in QUANTS]


# -- worker: runs inside a subprocess whose PYTHONPATH selects the code under test --------------

def worker(dataset: str, data_dir: str, entries: List[str], check_epochs: int, sparse: bool = False) -> None:
    """Build every entry; answer ``check`` with digests and ``<entry> <epochs>`` lines with a JSON list
    of (wall s, CPU s) per epoch."""
    import dataclasses

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from bench_suite.data.datasets import load_dataset
    from bench_suite.defaults import apply_defaults
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.registry import load_all
    from bench_suite.sparse import features_for
    from bench_suite.spec import resolve_spec
    from bench_suite.train import build_model, fit, seed_everything

    load_all()
    extra = {"sparse_features": True} if sparse else {}
    data = load_dataset(dataset, seed=0, data_dir=data_dir, **extra)
    specs = {e: resolve_spec(apply_defaults({"dataset": dataset, **extra, **MODELS[e.split("/")[0]],
                                             **QUANTS[e.split("/")[1]]}))
             for e in entries}

    def digest(entry: str) -> dict:
        spec = specs[entry]
        seed_everything(spec.train.seed)
        model = build_model(spec, data)
        trace: list = []
        cfg = dataclasses.replace(spec.train, epochs=check_epochs, patience=3)
        out = fit(model, data, cfg, progress=lambda *a: trace.append(a))
        h = hashlib.sha256(json.dumps([trace, {k: v for k, v in sorted(out.items()) if not k.startswith("epoch_ms")}],
                                      sort_keys=True).encode())
        state = model.state_dict()
        for k in state:
            h.update(k.encode())
            h.update(np.ascontiguousarray(state[k].numpy()).tobytes())
        model.eval()
        with torch.no_grad():
            h.update(model(prepare_graph(data.graph), features_for(model, data.features)).numpy().tobytes())
        return {"sha256": h.hexdigest(), "best_epoch": out["best_epoch"], "epochs_run": out["epochs_run"],
                "val_acc": out.get("val_acc"), "test_acc": out.get("test_acc")}

    checks = {e: digest(e) for e in entries} if check_epochs else {}
    models = {}
    for e in entries:
        seed_everything(0)
        models[e] = build_model(specs[e], data)
        fit(models[e], data, dataclasses.replace(specs[e].train, epochs=2, patience=2))  # warm-up
    print(json.dumps({"ready": True, "bench_suite": __import__("bench_suite").__file__, "checks": checks,
                      "specs": {e: s.data for e, s in specs.items()}}), flush=True)
    for line in sys.stdin:
        entry, n = line.split()
        stamps: list = []
        cfg = dataclasses.replace(specs[entry].train, epochs=int(n) + 1, patience=int(n) + 1)
        fit(models[entry], data, cfg, progress=lambda *_: stamps.append((time.perf_counter(), time.thread_time())))
        print(json.dumps([(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]), flush=True)


# -- driver ---------------------------------------------------------------------------------------

def _start(pythonpath: Path, args, entries: List[str]) -> tuple:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), OUTDATED_IGNORE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dataset", args.dataset,
           "--check-epochs", str(args.check_epochs), "--only", *entries]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.sparse:
        cmd += ["--sparse"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=pythonpath)
    ready = json.loads(proc.stdout.readline())
    expected = pythonpath / "bench_suite" / "__init__.py"
    if Path(ready["bench_suite"]).resolve() != expected.resolve():
        raise RuntimeError(f"worker imported {ready['bench_suite']}, not {expected}")
    return proc, ready


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", nargs="+", help="git refs to compare against (default: the merge-base of HEAD and "
                                              f"main, and the previous release {PREVIOUS_RELEASE[:7]})")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs per configuration per round")
    ap.add_argument("--check-epochs", type=int, default=12, help="epochs of the bit-identity check (0: none)")
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=os.environ.get("BENCH_SUITE_DATA"))
    ap.add_argument("--only", nargs="+", default=BASKET, help=f"basket entries (default: all: {' '.join(BASKET)})")
    ap.add_argument("--out", default=str(ROOT / "results" / "cost" / "lean_epoch.jsonl"),
                    help="append the result as one JSON line ('' for none)")
    ap.add_argument("--sparse", action="store_true", help="the dataset's features in CSR (sparse_features: true)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = [e for e in args.only if e not in BASKET]
    if unknown:
        ap.error(f"unknown basket entries {unknown}; valid: {', '.join(BASKET)}")
    if args.worker:
        return worker(args.dataset, args.data_dir, args.only, args.check_epochs, args.sparse)

    refs = args.refs or [_git("merge-base", "HEAD", "main")] + ([] if args.sparse else [PREVIOUS_RELEASE])
    commits = {ref: _git("rev-parse", ref) for ref in refs}
    tmp = Path(tempfile.mkdtemp(prefix="lean-epoch-"))
    trees = {ref: tmp / f"ref{i}" for i, ref in enumerate(refs)}
    load_before = os.getloadavg()
    procs, ready = {}, {}
    try:
        for ref, path in trees.items():
            _git("worktree", "add", "--detach", str(path), commits[ref])
        for side, path in [("tree", ROOT), *trees.items()]:
            procs[side], ready[side] = _start(path, args, args.only)
        sides = list(procs)
        times: Dict[tuple, list] = {(side, e): [] for side in sides for e in args.only}
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for e in args.only:
                for side in order:
                    times[(side, e)] += _ask(procs[side], e, args.epochs)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
        for path in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)

    def med(side: str, e: str, k: int = 1) -> float:
        return 1000 * statistics.median(t[k] for t in times[(side, e)])

    rows = []
    for e in args.only:
        fp = f"{e.split('/')[0]}/fp32"
        row: dict = {"entry": e, "spec": ready["tree"]["specs"][e]}
        for side in sides:
            row[f"{side}_ms"] = med(side, e)
            row[f"{side}_wall_ms"] = med(side, e, 0)
            if fp in args.only:
                row[f"{side}_vs_fp32"] = med(side, e) / med(side, fp)
            if side != "tree":
                row[f"speedup_vs_{side}"] = med(side, e) / med("tree", e)
        if args.check_epochs:
            row["check"] = {side: ready[side]["checks"][e] for side in sides}
            row["bit_identical_to_tree"] = {side: ready[side]["checks"][e]["sha256"] == ready["tree"]["checks"][e]["sha256"]
                                            for side in sides if side != "tree"}
        rows.append(row)
    names = {ref: ref[:9] for ref in refs}
    print(f"\n{'entry':18s} {'tree ms':>8s} {'/FP32':>6s}" + "".join(
        f" {names[s] + ' ms':>13s} {'/FP32':>6s} {'speedup':>8s} {'same':>5s}" for s in sides[1:]))
    for row in rows:
        line = f"{row['entry']:18s} {row['tree_ms']:8.1f} {row.get('tree_vs_fp32', float('nan')):6.2f}"
        for s in sides[1:]:
            same = row.get("bit_identical_to_tree", {}).get(s)
            line += (f" {row[f'{s}_ms']:13.1f} {row.get(f'{s}_vs_fp32', float('nan')):6.2f}"
                     f" {row[f'speedup_vs_{s}']:7.2f}x {'-' if same is None else ('yes' if same else 'NO'):>5s}")
        print(line)
    print("(median CPU ms per fit epoch of the worker's thread; speedup = ref / tree; same = bit-identical "
          f"training over {args.check_epochs} epochs)")
    if args.out:
        import torch

        from bench_suite.env import environment

        torch.set_num_threads(1)  # recorded in the environment as the workers' setting
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        line = {"benchmark": "lean_epoch", "refs": commits, "tree": _git("rev-parse", "HEAD"),
                "tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "bench_suite",
                                        "baselines")),
                "dataset": args.dataset, "sparse_features": args.sparse, "rounds": args.rounds, "epochs": args.epochs,
                "check_epochs": args.check_epochs, "threads": 1,
                "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                "machine": f"{os.uname().nodename}, {os.cpu_count()} cores",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows, "env": environment()}
        with open(args.out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
