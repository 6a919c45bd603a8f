"""FP32 reference accuracies on the Cora public split, 10 seeds.

    python benchmarks/foundation.py [--seeds 10] [--data-dir DIR]

Prints mean ± unbiased std of the test accuracy at the best-validation epoch.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench_suite.registry import load_all
from bench_suite.spec import resolve_spec
from bench_suite.train import run

CONFIGS = {
    "gcn-2": {"model": "gcn", "depth": 2},
    "gat-2": {"model": "gat", "depth": 2, "lr": 0.005},
    "appnp-10": {"model": "decoupled", "propagation": "appnp", "depth": 10},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()
    load_all()
    for name in args.only:
        t0 = time.time()
        accs = []
        for seed in range(args.seeds):
            spec = resolve_spec({"dataset": args.dataset, **CONFIGS[name], "seed": seed})
            accs.append(100 * run(spec, data_dir=args.data_dir)["metrics"]["test_acc"])
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{args.dataset} {name}: {statistics.mean(accs):.2f} ± {sd:.2f} (n={len(accs)}, "
              f"{time.time() - t0:.0f}s) {[round(a, 1) for a in accs]}", flush=True)


if __name__ == "__main__":
    main()
