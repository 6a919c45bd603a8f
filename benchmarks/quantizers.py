"""Accuracy and training cost of the quantizers: QLR, BT/BT*, QAT, DQ.

    python benchmarks/quantizers.py accuracy [--seeds 10] [--model gcn-2|appnp-10] [--only fp32 qlr-2 ...]
    python benchmarks/quantizers.py cost [--dataset cora] [--depth 16] [--reps 20] [--threads 1] [--out FILE.jsonl]
    python benchmarks/quantizers.py init-alpha [--results results/quantizers] [--dataset cora] [--quant qlr] [--bits 2]

``accuracy``: mean ± unbiased std of the test accuracy at the best-validation epoch
over seeds 0..n−1 on the Cora public split.  ``cost``: median training-step time
(forward + backward + Adam step) of each quantizer relative to FP32, measured
interleaved in one process so that machine load affects all alike, at ``--threads`` intra-op
threads (default 1: how the runner trains, one thread per run, runs in parallel).

``init-alpha``: for each stored GCN-2 record of a QLR run (plain, no truncation), the α every
quantizer starts from (the grid search of its first training forward pass, rebuilt exactly as
the run built it: same seed, same dropout draw) next to the run's test accuracy -- why plain
QLR collapses on some seeds at INT2 (see the function's docstring).

At 2 threads on this 2-core machine a second thread buys FP32 GCN-16 on Cora only ~1.25x and
slows the quantized models (their per-tensor kernels are serial and run next to OpenMP's
spinning worker thread): measure both and say which.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from typing import Dict

import torch

from bench_suite.defaults import apply_defaults
from bench_suite.env import environment
from bench_suite.quant.qlr import alpha_grid
from bench_suite.registry import load_all
from bench_suite.spec import resolve_spec
from bench_suite.train import build_model, optimizer_for, run

QUANTS: Dict[str, dict] = {
    "fp32": {},
    **{f"{k}-{b}": {"quant": k, "bits": b} for k in ("qat", "dq", "qlr") for b in (8, 4, 2)},
    "qlr-2-bt": {"quant": "qlr", "bits": 2, "truncation": "bt"},
    "qlr-2-bt*": {"quant": "qlr", "bits": 2, "truncation": "bt*"},
    "qlr-frozen-2": {"quant": "qlr-frozen", "bits": 2},
}
MODELS: Dict[str, dict] = {
    "gcn-2": {"model": "gcn", "depth": 2},
    "appnp-10": {"model": "decoupled", "propagation": "appnp", "depth": 10},
    "smp-10": {"model": "decoupled", "propagation": "smp", "depth": 10},
}


def accuracy(args: argparse.Namespace) -> None:
    for name in args.only:
        t0 = time.time()
        accs = []
        for seed in range(args.seeds):
            flat = {"dataset": args.dataset, **MODELS[args.model], **QUANTS[name], "seed": seed}
            if args.defaults:
                flat = apply_defaults(flat)
            flat.update(dict(kv.split("=", 1) for kv in args.set))
            accs.append(100 * run(resolve_spec(flat), data_dir=args.data_dir)["metrics"]["test_acc"])
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{args.dataset} {args.model} {name:14s} {statistics.mean(accs):6.2f} ± {sd:5.2f} "
              f"(n={len(accs)}, {time.time() - t0:.0f}s)", flush=True)


def cost(args: argparse.Namespace) -> None:
    import torch.nn.functional as F

    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, seed=0, data_dir=args.data_dir)
    g = prepare_graph(data.graph)
    x, y, mask = data.features, data.labels, data.train_mask & (data.labels >= 0)
    steps = {}
    for name in args.only:
        spec = resolve_spec({"dataset": args.dataset, "model": "gcn", "depth": args.depth, **QUANTS[name]})
        torch.manual_seed(0)
        model = build_model(spec, data)
        opt = optimizer_for(model, spec.train)

        def step(model=model, opt=opt) -> None:
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(g, x)[mask], y[mask]).backward()
            opt.step()

        step()  # lazy initialisation (QLR grid search), warm-up
        steps[name] = step
    times: Dict[str, list] = {n: [] for n in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["fp32"]) if "fp32" in times else None
    env = environment()
    print(f"# {env['cpu']}, {env['cpu_count']} cores, torch {env['versions']['torch']}, "
          f"commit {env['git_commit']}", flush=True)
    for name, ts in times.items():
        med = statistics.median(ts)
        rel = f"{med / base:5.2f}x FP32" if base else ""
        print(f"{args.dataset} gcn-{args.depth} {name:14s} {1000 * med:8.1f} ms/epoch {rel}  "
              f"({args.threads} thread{'s' if args.threads > 1 else ''}, median of {args.reps})", flush=True)
        if args.out:
            rec = {"benchmark": "quantizer-cost", "dataset": args.dataset, "model": f"gcn-{args.depth}",
                   "quantizer": name, "spec": QUANTS[name], "threads": args.threads, "reps": args.reps,
                   "median_ms": round(1000 * med, 3), "vs_fp32": round(med / base, 4) if base else None,
                   "times_ms": [round(1000 * t, 3) for t in ts], "env": env,
                   "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            with open(args.out, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")


def init_alpha(args: argparse.Namespace) -> None:
    """Initial α per quantizer of stored QLR runs, with their accuracy.

    Plain QLR at INT2 on Cora GCN-2 collapses to a constant prediction on 6 of 10 seeds
    (14.9%).  The seeds that collapse are exactly those whose grid search picks the grid's
    floor α = 0.1 for layer 1's ``input`` (layer 0's ReLU/dropout output, mostly zeros: the
    mean-|x̂ − x| criterion prefers a range that resolves the near-zero bulk and clamps the
    rest), and with it 0.1 for the layer's ``feature``/``message``/``aggregate``/``update``
    (logits in 2-3 distinct values).  α's own learning rate (1e-4, METHOD §5) moves it by at
    most ~0.02 in 200 Adam steps, so training cannot leave that start: QLR ≈ QLR-frozen at INT2.
    """
    import glob
    import json

    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.spec import RunSpec
    from bench_suite.train import seed_everything

    torch.set_num_threads(1)
    recs = []
    for path in sorted(glob.glob(f"{args.results}/*.json")):
        with open(path) as fh:
            r = json.load(fh)
        s = r.get("spec") or {}
        q = s.get("quant", {})
        if (r.get("status") == "ok" and s["dataset"]["name"] == args.dataset and s["model"]["name"] == "gcn"
                and s["model"]["depth"] == 2 and q.get("name") == args.quant and q.get("bits") == args.bits
                and q.get("truncation", "none") == "none"):
            recs.append(r)
    if not recs:
        raise SystemExit(f"init-alpha: no ok {args.quant} INT{args.bits} GCN-2 {args.dataset} records in {args.results}")
    floor = float(alpha_grid(args.bits)[0])
    groups: Dict[bool, list] = {True: [], False: []}
    for r in sorted(recs, key=lambda r: r["spec"]["train"]["seed"]):
        spec = RunSpec.from_dict(r["spec"])
        data = load_dataset(args.dataset, seed=spec.seed, data_dir=args.data_dir)
        seed_everything(spec.seed)  # as train.run: the first training forward pass runs the grid search
        model = build_model(spec, data)
        model.train()
        model(prepare_graph(data.graph), data.features)
        alphas = {k[: -len(".alpha")].replace("layers.", "L").replace(".q.", "."): float(v)
                  for k, v in model.state_dict().items() if k.endswith(".alpha")}
        acc = 100 * r["metrics"]["test_acc"]
        at_floor = abs(alphas.get("L1.input", 1.0) - floor) < 1e-6
        groups[at_floor].append(acc)
        print(f"seed {spec.seed}: test {acc:5.1f}  " + " ".join(f"{k}={v:.2f}" for k, v in alphas.items()), flush=True)
    for flag, accs in groups.items():
        if accs:
            print(f"L1.input α {'=' if flag else '>'} {floor}: {len(accs)} seeds, test accuracy "
                  f"{statistics.mean(accs):.1f} (min {min(accs):.1f}, max {max(accs):.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("accuracy", "cost", "init-alpha"))
    ap.add_argument("--results", default="results/quantizers", help="init-alpha: the records to read")
    ap.add_argument("--quant", default="qlr", choices=("qlr", "qlr-frozen"), help="init-alpha: quantizer")
    ap.add_argument("--bits", type=int, default=2, help="init-alpha: bit width")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=None, help="dataset directory (default: $BENCH_SUITE_DATA)")
    ap.add_argument("--model", default="gcn-2", choices=list(MODELS))
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None, help="cost: append one JSON line per quantizer (times, ratio, machine) here")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the cost part (default 1)")
    ap.add_argument("--only", nargs="*", default=None, choices=list(QUANTS))
    ap.add_argument("--defaults", action="store_true",
                    help="apply the tuned default rules (bench_suite/defaults) as `bench train` does")
    ap.add_argument("--set", nargs="*", default=[], help="extra spec keys, e.g. quant_lr=0.01")
    args = ap.parse_args()
    if args.only is None:
        args.only = [n for n in QUANTS if n != "qlr-frozen-2"] if args.part == "accuracy" else \
            ["fp32", "qat-8", "dq-8", "qlr-8", "qlr-4", "qlr-2", "qlr-2-bt*"]
    # explicit, in case the installed entry point predates baselines/__init__.py (namespace package)
    load_all(("baselines.qat", "baselines.dq"))
    {"accuracy": accuracy, "cost": cost, "init-alpha": init_alpha}[args.part](args)


if __name__ == "__main__":
    main()
