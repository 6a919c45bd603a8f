"""Training-epoch time of quantized deep GNNs: the code at a git ref against this working tree.

    python benchmarks/lean_layers.py [--ref REF] [--rounds 5] [--epochs 2] [--threads 1]
                                     [--only gcnii64/qlr-4 ...] [--out results/cost/lean_layers.jsonl]

The basket is Cora with GCN-2 (hidden 128, the reproduce matrix's, and the generic hidden 64) at
FP32, QLR INT4, QAT INT4, DQ INT4 and QLR INT2 with BT*; GCNII-64, APPNP-10 (``decoupled``,
propagation ``appnp``) and SMP-64 (``decoupled``, propagation ``smp``) at FP32 and QLR INT4.

``--ref`` (default: the merge-base of ``HEAD`` and ``main``, the release this branch started
from) is checked out into a temporary ``git worktree``; two worker processes import
``bench_suite`` from that checkout and from this working tree (``PYTHONPATH``), build every
model of the basket from the same seed and wait.  Each round asks every configuration of both
workers in turn (the order of the two alternates from round to round) for ``--epochs`` epochs
of what ``bench_suite.train.fit`` does per epoch: forward, loss, backward and Adam step in
training mode, then a forward pass in evaluation mode.  Only one worker computes at a time, so
machine load affects both alike.  Reported per configuration: the median epoch time in wall
clock and in CPU time of the worker's thread (``time.thread_time``; with one thread it is the
whole computation and does not count time the process waited for a core on a busy machine),
``speedup`` = ref / tree (CPU time), and each quantizer's cost relative to the FP32 epoch of the
same model in the same worker.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]

QUANTS: Dict[str, dict] = {
    "fp32": {"quant": "fp32"},
    "qlr-4": {"quant": "qlr", "bits": 4},
    "qat-4": {"quant": "qat", "bits": 4},
    "dq-4": {"quant": "dq", "bits": 4},
    "qlr-2-bt*": {"quant": "qlr", "bits": 2, "truncation": "bt*"},
}
MODELS: Dict[str, dict] = {
    "gcn2-h128": {"model": "gcn", "depth": 2, "hidden": 128},
    "gcn2": {"model": "gcn", "depth": 2},
    "gcnii64": {"model": "gcnii", "depth": 64},
    "appnp10": {"model": "decoupled", "propagation": "appnp", "depth": 10},
    "smp64": {"model": "decoupled", "propagation": "smp", "depth": 64},
}
BASKET: List[str] = (
    [f"{m}/{q}" for m in ("gcn2-h128", "gcn2") for q in ("fp32", "qlr-4", "qat-4", "dq-4", "qlr-2-bt*")]
    + [f"{m}/{q}" for m in ("gcnii64", "appnp10", "smp64") for q in ("fp32", "qlr-4")]
)


# -- worker: runs inside a subprocess whose PYTHONPATH selects the code under test --------------

def worker(dataset: str, data_dir: str, threads: int, entries: List[str]) -> None:
    """Build every entry, then answer ``<entry> <epochs>`` lines on stdin with a JSON list of
    (wall s, cpu s) per epoch on stdout."""
    import torch
    import torch.nn.functional as F

    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.registry import load_all
    from bench_suite.sparse import features_for
    from bench_suite.spec import resolve_spec
    from bench_suite.train import build_model, optimizer_for, seed_everything

    torch.set_num_threads(threads)
    load_all()
    data = load_dataset(dataset, seed=0, data_dir=data_dir)
    g = prepare_graph(data.graph)
    y = data.labels
    idx = data.train_mask & (y >= 0)
    epochs = {}
    for entry in entries:
        m, q = entry.split("/")
        spec = resolve_spec({"dataset": dataset, **MODELS[m], **QUANTS[q]})
        seed_everything(0)
        model = build_model(spec, data)
        opt = optimizer_for(model, spec.train)
        x = features_for(model, data.features)

        def epoch(model=model, opt=opt, x=x) -> None:
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(g, x)[idx], y[idx]).backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                model(g, x)

        epoch()  # lazy initialisation (QLR's grid search), numba compilation
        epochs[entry] = epoch
    print(json.dumps({"ready": True, "bench_suite": __import__("bench_suite").__file__}), flush=True)
    for line in sys.stdin:
        entry, n = line.split()
        out = []
        for _ in range(int(n)):
            w, c = time.perf_counter(), time.thread_time()
            epochs[entry]()
            out.append((time.perf_counter() - w, time.thread_time() - c))
        print(json.dumps(out), flush=True)


# -- driver ---------------------------------------------------------------------------------------

def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def _start(pythonpath: Path, args, entries: List[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), OUTDATED_IGNORE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dataset", args.dataset,
           "--threads", str(args.threads), "--only", *entries]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=pythonpath)
    ready = json.loads(proc.stdout.readline())
    expected = pythonpath / "bench_suite" / "__init__.py"
    if Path(ready["bench_suite"]).resolve() != expected.resolve():
        raise RuntimeError(f"worker imported {ready['bench_suite']}, not {expected}")
    return proc


def _ask(proc: subprocess.Popen, entry: str, epochs: int) -> list:
    proc.stdin.write(f"{entry} {epochs}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", help="git ref of the code to compare against (default: merge-base of HEAD and main)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per configuration per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=os.environ.get("BENCH_SUITE_DATA"))
    ap.add_argument("--only", nargs="+", default=BASKET, help=f"basket entries (default: all: {' '.join(BASKET)})")
    ap.add_argument("--out", default=str(ROOT / "results" / "cost" / "lean_layers.jsonl"),
                    help="append the result as one JSON line ('' for none)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = [e for e in args.only if e not in BASKET]
    if unknown:
        ap.error(f"unknown basket entries {unknown}; valid: {', '.join(BASKET)}")
    if args.worker:
        return worker(args.dataset, args.data_dir, args.threads, args.only)

    ref = args.ref or _git("merge-base", "HEAD", "main")
    ref_commit = _git("rev-parse", ref)
    tmp = Path(tempfile.mkdtemp(prefix="lean-layers-"))
    ref_tree = tmp / "ref"
    _git("worktree", "add", "--detach", str(ref_tree), ref_commit)
    procs = {}
    try:
        procs = {"ref": _start(ref_tree, args, args.only), "tree": _start(ROOT, args, args.only)}
        times: Dict[tuple, list] = {(side, e): [] for side in procs for e in args.only}
        for r in range(args.rounds):
            sides = ("ref", "tree") if r % 2 == 0 else ("tree", "ref")
            for e in args.only:
                for side in sides:
                    times[(side, e)] += _ask(procs[side], e, args.epochs)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_tree)], check=False)

    def med(side: str, e: str, k: int) -> float:
        return 1000 * statistics.median(t[k] for t in times[(side, e)])

    rows = []
    for e in args.only:
        m = e.split("/")[0]
        row = {"entry": e, "ref_ms": med("ref", e, 1), "tree_ms": med("tree", e, 1),
               "ref_wall_ms": med("ref", e, 0), "tree_wall_ms": med("tree", e, 0)}
        row["speedup"] = row["ref_ms"] / row["tree_ms"]
        fp = f"{m}/fp32"
        if fp in args.only:
            row["ref_vs_fp32"] = row["ref_ms"] / med("ref", fp, 1)
            row["tree_vs_fp32"] = row["tree_ms"] / med("tree", fp, 1)
        rows.append(row)
    print(f"\n{'entry':22s} {'ref ms':>8s} {'tree ms':>8s} {'speedup':>8s} {'ref/FP32':>9s} {'tree/FP32':>9s}"
          f" {'ref wall':>9s} {'tree wall':>9s}   (CPU ms of the worker thread; wall ms)")
    for row in rows:
        print(f"{row['entry']:22s} {row['ref_ms']:8.1f} {row['tree_ms']:8.1f} {row['speedup']:7.2f}x"
              f" {row.get('ref_vs_fp32', float('nan')):8.2f}x {row.get('tree_vs_fp32', float('nan')):8.2f}x"
              f" {row['ref_wall_ms']:9.1f} {row['tree_wall_ms']:9.1f}")
    if args.out:
        import torch

        from bench_suite.env import environment

        torch.set_num_threads(args.threads)  # recorded in the environment as the workers' setting
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        line = {"benchmark": "lean_layers", "ref": ref, "ref_commit": ref_commit, "tree": _git("rev-parse", "HEAD"),
                "tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "bench_suite",
                                        "baselines")),
                "dataset": args.dataset, "rounds": args.rounds, "epochs": args.epochs, "threads": args.threads,
                "load_avg": os.getloadavg(), "machine": f"{os.uname().nodename}, {os.cpu_count()} cores",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows, "env": environment()}
        with open(args.out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
