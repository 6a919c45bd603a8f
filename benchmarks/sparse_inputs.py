"""Training-epoch time with dense and with sparse (CSR) input features, side by side.

    python benchmarks/sparse_inputs.py [--rounds 3] [--epochs 5] [--datasets coauthor-cs cora]
                                       [--quants fp32 qlr-4] [--threads 1] [--out FILE.jsonl]
    python benchmarks/sparse_inputs.py --sampled [--widths 16 64 128 256] [--datasets ...] [--rounds 9]

GCN-2 (the suite's defaults: hidden 64, dropout 0.5 on the input too) is built for every
(dataset, quantizer, dense|sparse) from the same seed and trained in one process; each round
runs ``--epochs`` training epochs (forward, backward, Adam step, as ``train.fit`` does) of
every configuration in turn, so machine load affects all alike.  Reported: the median epoch
time of each configuration and the ratio dense/sparse (the speed-up), per dataset and quantizer.

``--sampled`` times the kernel behind the sparse product's value gradient instead
(``bench_suite.sparse._sampled_rows_kernel``, four entries' sums side by side) against the one-entry
loop it replaced (``_sampled_rows_reference``) on each dataset's feature pattern, random G and W of
``--widths`` columns: both in turn in every round, the median of the per-round ratios, and whether
the two wrote the same bits.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

from bench_suite.data.datasets import load_dataset
from bench_suite.env import environment
from bench_suite.nn.graph import prepare_graph
from bench_suite.registry import load_all
from bench_suite.sparse import features_for
from bench_suite.spec import resolve_spec
from bench_suite.train import build_model, optimizer_for, seed_everything

QUANTS: Dict[str, dict] = {
    "fp32": {"quant": "fp32"},
    "qlr-4": {"quant": "qlr", "bits": 4},
    "qlr-2-bt*": {"quant": "qlr", "bits": 2, "truncation": "bt*"},
    "qat-4": {"quant": "qat", "bits": 4},
    "dq-4": {"quant": "dq", "bits": 4},
}


def _setup(dataset: str, quant: str, sparse: bool):
    spec = resolve_spec({"dataset": dataset, "model": "gcn", "depth": 2, "sparse_features": sparse, **QUANTS[quant]})
    data = load_dataset(dataset, seed=0, sparse_features=sparse)
    seed_everything(0)
    model = build_model(spec, data)
    opt = optimizer_for(model, spec.train)
    g = prepare_graph(data.graph)
    x = features_for(model, data.features)
    idx = data.train_mask & (data.labels >= 0)
    return model, opt, g, x, data.labels, idx


def _epochs(setup, n: int) -> List[float]:
    model, opt, g, x, y, idx = setup
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(g, x)[idx], y[idx]).backward()
        opt.step()
        out.append(time.perf_counter() - t0)
    return out


def sampled(args) -> None:
    import numpy as np

    from bench_suite.sparse import _sampled_rows_kernel, _sampled_rows_reference

    rows = []
    print(f"{'dataset':16s} {'nnz':>9s} {'K':>4s} {'one-entry ms':>13s} {'kernel ms':>10s} {'ratio':>6s} same")
    for d in args.datasets:
        x = load_dataset(d, seed=0, sparse_features=True).features
        crow, col = x.crow_indices().numpy(), x.col_indices().numpy()
        rng = np.random.default_rng(0)
        for K in args.widths:
            G = rng.standard_normal((x.shape[0], K)).astype(np.float32)
            W = rng.standard_normal((x.shape[1], K)).astype(np.float32)
            a, b = np.empty(col.size, np.float32), np.empty(col.size, np.float32)
            _sampled_rows_reference(crow, col, G, W, a)  # compile, warm the caches
            _sampled_rows_kernel(crow, col, G, W, b)
            ta, tb = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                _sampled_rows_reference(crow, col, G, W, a)
                t1 = time.perf_counter()
                _sampled_rows_kernel(crow, col, G, W, b)
                t2 = time.perf_counter()
                ta.append(t1 - t0)
                tb.append(t2 - t1)
            ratio = statistics.median(r / k for r, k in zip(ta, tb))
            same = bool(np.array_equal(a.view(np.int32), b.view(np.int32)))
            rows.append({"dataset": d, "nnz": int(col.size), "K": K, "one_entry_ms": 1000 * statistics.median(ta),
                         "kernel_ms": 1000 * statistics.median(tb), "ratio": ratio, "same_bits": same})
            print(f"{d:16s} {col.size:9d} {K:4d} {rows[-1]['one_entry_ms']:13.2f} {rows[-1]['kernel_ms']:10.2f} "
                  f"{ratio:5.2f}x {same}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps({"benchmark": "sampled_rows", "rounds": args.rounds, "threads": args.threads,
                                "load_avg": list(os.getloadavg()), "rows": rows, "env": environment()}) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per configuration per round")
    ap.add_argument("--datasets", nargs="+", default=["coauthor-cs", "cora"])
    ap.add_argument("--quants", nargs="+", default=["fp32", "qlr-4"], choices=sorted(QUANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="append the result as one JSON line")
    ap.add_argument("--sampled", action="store_true", help="time the value-gradient kernel instead (see above)")
    ap.add_argument("--widths", nargs="+", type=int, default=[16, 64, 128, 256], help="--sampled: columns of G and W")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_all()
    if args.sampled:
        return sampled(args)
    configs = [(d, q, s) for d in args.datasets for q in args.quants for s in (False, True)]
    setups = {c: _setup(*c) for c in configs}
    for c in configs:  # warm-up: lazy initialisation (QLR's grid search), numba compilation
        _epochs(setups[c], 1)
    times: Dict[tuple, List[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for c in configs:
            times[c] += _epochs(setups[c], args.epochs)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    print(f"\n{'dataset':14s} {'quant':10s} {'dense ms':>10s} {'sparse ms':>10s} {'dense/sparse':>13s}")
    for d in args.datasets:
        for q in args.quants:
            dense = 1000 * statistics.median(times[(d, q, False)])
            sparse = 1000 * statistics.median(times[(d, q, True)])
            rows.append({"dataset": d, "quant": q, "dense_ms": dense, "sparse_ms": sparse, "ratio": dense / sparse})
            print(f"{d:14s} {q:10s} {dense:10.1f} {sparse:10.1f} {dense / sparse:12.1f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps({"rounds": args.rounds, "epochs": args.epochs, "threads": args.threads,
                                "rows": rows, "env": environment()}) + "\n")


if __name__ == "__main__":
    main()
