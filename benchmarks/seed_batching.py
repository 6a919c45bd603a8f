"""Does training several seeds in one pass pay?  S GCNs one after another vs one pass with the
S seeds' parameters stacked, timed side by side in one process.

    python benchmarks/seed_batching.py [--dataset cora] [--seeds 10] [--depth 2] [--hidden 128]
                                       [--rounds 5] [--sparse] [--out FILE.jsonl]

Each round times one training epoch of S seeds as `train.fit` does it (forward with dropout,
cross-entropy on the training nodes, backward, and the evaluation forward) both ways, in turn, so
machine load hits both alike.  One-by-one: S plain GCNs (X W, symmetric-normalised aggregation
with DGL's `update_all`, ReLU, dropout 0.5 between layers).  Batched: the first layer's S weight
matrices side by side (one X [W_1 … W_S] product), the hidden layers as one `bmm` over the seed
axis, one aggregation of the N x (S·H) features; every seed's dropout mask is its own (dropout on
the stacked tensor).  The input features are not dropped in either (with dropout on X the batched
form would need S masked copies of X and lose the shared product).  Reported: median epoch time
of each and the ratio one-by-one / batched.  The model is the suite's FP32 GCN in structure, not
its code: the benchmark asks whether the arithmetic can be shared, before any model is rewritten.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import dgl.function as fn
import torch
import torch.nn.functional as F

from bench_suite.data.datasets import load_dataset
from bench_suite.env import environment
from bench_suite.nn.graph import prepare_graph


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sparse", action="store_true", help="CSR input features (sparse_features=true)")
    ap.add_argument("--out", default=None, help="append the result as a JSON line")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = load_dataset(a.dataset, seed=0, data_dir=a.data_dir)
    g = prepare_graph(data.graph)
    x = data.features.to_sparse_csr() if a.sparse else data.features
    y, tr = data.labels, data.train_mask & (data.labels >= 0)
    n, f, h, c, s = g.num_nodes(), data.num_features, a.hidden, data.num_classes, a.seeds
    norm = g.in_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(1)

    def prop(t):
        g.ndata["h"] = t * norm
        g.update_all(fn.copy_u("h", "m"), fn.sum("m", "h"))
        return g.ndata.pop("h") * norm

    dims = [f] + [h] * (a.depth - 1) + [c]

    def single_params():
        return [torch.randn(i, o, requires_grad=True) for i, o in zip(dims, dims[1:])]

    def fwd_single(p, train):
        t = x
        for i, w in enumerate(p):
            t = prop(t @ w)
            if i < len(p) - 1:
                t = F.dropout(torch.relu(t), 0.5, train)
        return t

    singles = [single_params() for _ in range(s)]
    first = torch.randn(f, s * h, requires_grad=True)
    rest = [torch.randn(s, i, o, requires_grad=True) for i, o in zip(dims[1:], dims[2:])]

    def fwd_batched(train):
        t = F.dropout(torch.relu(prop(x @ first)), 0.5, train) if rest else prop(x @ first)
        for i, w in enumerate(rest):
            width = w.shape[1]
            t = torch.bmm(t.view(n, s, width).transpose(0, 1), w)          # s x n x out
            t = prop(t.transpose(0, 1).reshape(n, s * w.shape[2]))
            if i < len(rest) - 1:
                t = F.dropout(torch.relu(t), 0.5, train)
        return t.view(n, s, c)

    def epoch_single():
        for p in singles:
            F.cross_entropy(fwd_single(p, True)[tr], y[tr]).backward()
            with torch.no_grad():
                fwd_single(p, False)

    def epoch_batched():
        out = fwd_batched(True)[tr]
        sum(F.cross_entropy(out[:, k], y[tr]) for k in range(s)).backward()
        with torch.no_grad():
            fwd_batched(False)

    one, bat = [], []
    epoch_single(), epoch_batched()  # warm-up
    for _ in range(a.rounds):
        t0 = time.perf_counter(); epoch_single(); one.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); epoch_batched(); bat.append(time.perf_counter() - t0)
    row = {"dataset": a.dataset, "sparse_features": a.sparse, "depth": a.depth, "hidden": h, "seeds": s,
           "threads": a.threads, "rounds": a.rounds, "one_by_one_ms": 1000 * statistics.median(one),
           "batched_ms": 1000 * statistics.median(bat), "ratio": statistics.median(one) / statistics.median(bat),
           "env": environment()}
    print(f"{a.dataset} depth {a.depth} hidden {h} {'sparse' if a.sparse else 'dense'} x, {s} seeds: one by one "
          f"{row['one_by_one_ms']:.0f} ms, batched {row['batched_ms']:.0f} ms per epoch: ratio {row['ratio']:.2f}")
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
