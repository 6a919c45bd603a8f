"""FP32 test accuracy against depth for every deep model, and SMP's epoch time against APPNP.

    python benchmarks/depth.py accuracy [--datasets cora citeseer] [--depths 2 4 8 16 32 64]
                                        [--seeds 10] [--models gcn gcnii appnp smp ...] [--epochs N]
    python benchmarks/depth.py timing   [--dataset cora] [--depths 10 64] [--epochs 30] [--out FILE.jsonl]

``accuracy`` trains each model with its tuned defaults (bench_suite/defaults/*.yaml,
baselines/defaults.yaml) on the public split and prints mean ± unbiased std of the
test accuracy at the best-validation epoch, plus the Dirichlet energy of the last
layer.  ``timing`` times training epochs of decoupled+SMP and decoupled+APPNP at the
same K, interleaved in one process so both see the same machine load; ``--out`` appends one
JSON line per K (times, ratio, spec and machine) to a file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict, List

from bench_suite.defaults import apply_defaults
from bench_suite.registry import load_all
from bench_suite.spec import resolve_spec
from bench_suite.train import run

MODELS: Dict[str, dict] = {
    "gcn": {"model": "gcn"},
    "resgcn": {"model": "resgcn"},
    "jknet": {"model": "jknet"},
    "pairnorm": {"model": "pairnorm"},
    "dropedge": {"model": "gcn", "transform": "dropedge"},
    "gcnii": {"model": "gcnii"},
    "sgc": {"model": "sgc"},
    "appnp": {"model": "decoupled", "propagation": "appnp"},
    "smp": {"model": "decoupled", "propagation": "smp"},
    "smp-released": {"model": "decoupled", "propagation": "smp", "form": "released"},
    "dagnn": {"model": "decoupled", "propagation": "dagnn"},
    "elastic": {"model": "decoupled", "propagation": "elastic"},
}


def accuracy(args: argparse.Namespace) -> None:
    from bench_suite.data.datasets import load_dataset

    for dataset in args.datasets:
        data = load_dataset(dataset, seed=0, data_dir=args.data_dir)  # public split: same for every seed
        for name in args.models:
            for depth in args.depths:
                accs: List[float] = []
                energy: List[float] = []
                t0 = time.time()
                for seed in range(args.seeds):
                    flat = apply_defaults({"dataset": dataset, **MODELS[name], "depth": depth, "seed": seed})
                    if args.epochs:
                        flat["epochs"] = min(int(flat.get("epochs", 200)), args.epochs)
                    rec = run(resolve_spec(flat, where=f"benchmarks/depth.py {name}"), data=data)
                    accs.append(100 * rec["metrics"]["test_acc"])
                    energy.append(rec["layers"][-1]["dirichlet"] if rec["layers"] else float("nan"))
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                print(f"{dataset:9s} {name:13s} L={depth:3d}: {statistics.mean(accs):6.2f} ± {sd:5.2f} "
                      f"(n={len(accs)}, last-layer Dirichlet {statistics.mean(energy):.3g}, "
                      f"{time.time() - t0:.0f}s) {[round(a, 1) for a in accs]}", flush=True)


def timing(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.train import build_model, optimizer_for

    data = load_dataset(args.dataset, seed=0, data_dir=args.data_dir)
    g = prepare_graph(data.graph)
    x, y, mask = data.features, data.labels, data.train_mask
    for depth in args.depths:
        setups = {}
        for prop in ("appnp", "smp"):
            spec = resolve_spec({"dataset": args.dataset, "model": "decoupled", "propagation": prop, "depth": depth})
            torch.manual_seed(0)
            model = build_model(spec, data)
            setups[prop] = (model, optimizer_for(model, spec.train), [], spec)
        for epoch in range(args.epochs + 3):
            for prop, (model, opt, times, _) in setups.items():
                model.train()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(g, x)[mask], y[mask]).backward()
                opt.step()
                if epoch >= 3:  # warm-up epochs are not timed
                    times.append(time.perf_counter() - t0)
        med = {p: 1000 * statistics.median(t) for p, (_, _, t, _) in setups.items()}
        if args.out:
            from bench_suite.env import environment

            rec = {"benchmark": "smp-vs-appnp-epoch", "dataset": args.dataset, "depth": depth,
                   "epochs_timed": args.epochs, "threads": torch.get_num_threads(),
                   "median_ms": {p: round(m, 3) for p, m in med.items()}, "ratio": round(med["smp"] / med["appnp"], 3),
                   "times_ms": {p: [round(1000 * v, 3) for v in t] for p, (_, _, t, _) in setups.items()},
                   "specs": {p: spec.data for p, (_, _, _, spec) in setups.items()},
                   "env": environment(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
        print(f"{args.dataset} K={depth}: APPNP {med['appnp']:.1f} ms/epoch, SMP {med['smp']:.1f} ms/epoch, "
              f"ratio {med['smp'] / med['appnp']:.2f}x (median of {args.epochs} interleaved epochs, "
              f"{torch.get_num_threads()} threads)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    acc.add_argument("--depths", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64])
    acc.add_argument("--seeds", type=int, default=10)
    acc.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    acc.add_argument("--epochs", type=int, default=0, help="cap on epochs (0: the tuned defaults)")
    acc.add_argument("--data-dir", default=None)
    tim = sub.add_parser("timing")
    tim.add_argument("--dataset", default="cora")
    tim.add_argument("--depths", nargs="+", type=int, default=[10, 64])
    tim.add_argument("--epochs", type=int, default=30)
    tim.add_argument("--data-dir", default=None)
    tim.add_argument("--out", default=None, help="append one JSON line per K (times, ratio, machine) here")
    args = ap.parse_args()
    load_all()
    (accuracy if args.what == "accuracy" else timing)(args)


if __name__ == "__main__":
    main()
