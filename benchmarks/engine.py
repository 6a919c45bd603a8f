"""Integer engine benchmark (METHOD.md §9).

    python benchmarks/engine.py speed      # 4-layer GCN, hidden 256, arxiv-like, 2 threads, INT8/4/2
    python benchmarks/engine.py decoupled  # decoupled APPNP and SMP at K = 10 and 64 (--propagations)
    python benchmarks/engine.py agreement  # integer vs fake-quant predictions on real graphs
    python benchmarks/engine.py bandwidth  # memory bandwidth (numpy copy) for the physical floor

Prints one JSON line per measurement; ``--results DIR`` stores speed records.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """GB/s of a large numpy copy (read + write counted)."""
    a = np.ones(mb * 2 ** 20 // 8)
    b = np.empty_like(a)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def speed(args) -> None:
    from bench_suite.engine.bench import measure, write_record
    from bench_suite.registry import load_all

    load_all()
    for model, depth, prop in args.configs:
        for bits in args.bits:
            for rec in measure(model=model, depth=depth, hidden=256 if model == "gcn" else 64, graph=args.graph,
                               bits=bits, threads=args.threads, repeats=args.repeats, warmup=1, propagation=prop):
                if args.results:
                    write_record(rec, args.results)
                rec.pop("times_ms")
                print(json.dumps(rec), flush=True)


def agreement(args) -> None:
    import torch

    from bench_suite.data.datasets import load_dataset
    from bench_suite.engine.bench import train_briefly
    from bench_suite.engine.convert import convert
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.quant.base import QuantFactory
    from bench_suite.registry import MODELS, load_all

    load_all()
    for ds in args.datasets:
        d = load_dataset(ds, seed=0, data_dir=args.data_dir)
        g = prepare_graph(d.graph)
        eg = EngineGraph.from_dgl(g)
        for model, params in (("gcn", {}), ("decoupled", {"propagation": "appnp"}),
                              ("decoupled", {"propagation": "smp"})):
            for bits in args.bits:
                torch.manual_seed(0)
                m = MODELS.create(model, in_dim=d.features.shape[1], num_classes=d.num_classes, depth=4,
                                  quant=QuantFactory(args.quant, bits), **params)
                train_briefly(m, g, d, args.epochs)
                m.eval()
                with torch.no_grad():
                    ref = m(g, d.features).argmax(1).numpy()
                out = convert(m)(eg, d.features.numpy()).argmax(1)
                print(json.dumps({"dataset": ds, "model": model, **params, "bits": bits, "quant": args.quant,
                                  "agreement": float((out == ref).mean()), "classes_predicted": int(len(set(ref)))}),
                      flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["speed", "decoupled", "agreement", "bandwidth"])
    p.add_argument("--graph", default="arxiv-like")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--results", default=None)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "coauthor-physics"])
    p.add_argument("--data-dir", default=None, help="dataset directory (default: $BENCH_SUITE_DATA)")
    p.add_argument("--quant", default="qlr")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--propagations", nargs="+", default=["appnp", "smp"], help="decoupled: propagations to time")
    a = p.parse_args()
    if a.what == "bandwidth":
        print(json.dumps({"copy_GBps": round(bandwidth(), 2)}))
    elif a.what == "agreement":
        agreement(a)
    else:
        a.configs = [("gcn", 4, "appnp")] if a.what == "speed" else \
            [("decoupled", k, p) for p in a.propagations for k in (10, 64)]
        speed(a)


if __name__ == "__main__":
    main()
