"""The α every QLR quantizer starts from in stored runs, next to the run's test accuracy.

    python benchmarks/qlr_init_alpha.py [--results results/quantizers] [--dataset cora] [--quant qlr] [--bits 2]

For each stored GCN-2 record of a QLR run (plain, no truncation), the α of every quantizer after
the grid search of its first training forward pass, rebuilt exactly as the run built it (same
seed, same dropout draw): why plain QLR collapses on some seeds at INT2.

Plain QLR at INT2 on Cora GCN-2 collapses to a constant prediction on 6 of 10 seeds (14.9%).  The
seeds that collapse are exactly those whose grid search picks the grid's floor α = 0.1 for layer 1's
``input`` (layer 0's ReLU/dropout output, mostly zeros: the mean-|x̂ − x| criterion prefers a range
that resolves the near-zero bulk and clamps the rest), and with it 0.1 for the layer's
``feature``/``message``/``aggregate``/``update`` (logits in 2-3 distinct values).  α's own learning
rate (1e-4, METHOD §5) moves it by at most ~0.02 in 200 Adam steps, so training cannot leave that
start: QLR ≈ QLR-frozen at INT2.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Dict

import torch

from bench_suite.quant.qlr import alpha_grid
from bench_suite.record import iter_records, record_status
from bench_suite.registry import load_all


def init_alpha(args: argparse.Namespace) -> None:
    from bench_suite.data.datasets import load_dataset
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.spec import RunSpec
    from bench_suite.train import build_model, seed_everything

    torch.set_num_threads(1)
    recs = []
    for _, r, _ in iter_records(Path(args.results)):
        s = (r or {}).get("spec") or {}
        q = s.get("quant", {})
        if (r is not None and record_status(r) == "ok" and s.get("dataset", {}).get("name") == args.dataset
                and s["model"]["name"] == "gcn" and s["model"]["depth"] == 2 and q.get("name") == args.quant
                and q.get("bits") == args.bits and q.get("truncation", "none") == "none"):
            recs.append(r)
    if not recs:
        raise SystemExit(f"no ok {args.quant} INT{args.bits} GCN-2 {args.dataset} records in {args.results}")
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
    ap.add_argument("--results", default="results/quantizers", help="the records to read")
    ap.add_argument("--quant", default="qlr", choices=("qlr", "qlr-frozen"))
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=None, help="dataset directory (default: $BENCH_SUITE_DATA)")
    args = ap.parse_args()
    load_all()
    init_alpha(args)


if __name__ == "__main__":
    main()
