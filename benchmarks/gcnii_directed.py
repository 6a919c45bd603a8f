"""GCNII on a geom-gcn graph read as its authors read it: the edge list directed, not symmetrised.

Not part of bench_suite.  The suite's graphs are symmetric (``bench_suite.data.datasets.symmetric_graph``);
the GCNII authors' ``process.full_load_data`` builds ``nx.DiGraph`` from ``out1_graph_edges.txt`` and
normalises A + I by its row sums, so node i aggregates the nodes its edges point to.  This runs one
reproduce spec (``bench_suite.spec.spec_from_cli`` with the tuned defaults) on the suite's dataset with
only the graph replaced by that directed one (DGL edge j -> i for each listed i -> j, duplicates and
self-loops dropped; ``prepare_graph`` then adds the identity), and appends one JSON line per seed.

    python benchmarks/gcnii_directed.py chameleon depth=8 star=true --seeds 0-9 \\
        --out results/reference/gcnii_directed.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
from pathlib import Path

import dgl
import numpy as np
import torch


def directed_graph(data_dir: Path, name: str, num_nodes: int) -> dgl.DGLGraph:
    e = np.loadtxt(data_dir / "geom-gcn" / "new_data" / name / "out1_graph_edges.txt", skiprows=1, dtype=np.int64)
    e = e[e[:, 0] != e[:, 1]]
    return dgl.to_simple(dgl.graph((torch.from_numpy(e[:, 1]), torch.from_numpy(e[:, 0])), num_nodes=num_nodes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--seeds", default="0-9", help="a range a-b or a comma list")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BENCH_SUITE_DATA", "../shared/datasets")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("keys", nargs="*", help="spec keys after --, e.g. depth=8 star=true")
    args = ap.parse_intermixed_args()
    from bench_suite.data.datasets import load_dataset
    from bench_suite.registry import load_all
    from bench_suite.spec import spec_from_cli
    from bench_suite.train import run

    load_all()
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        spec = spec_from_cli([f"dataset={args.dataset}", "model=gcnii", f"seed={seed}", *args.keys], defaults=True)
        ds = {k: v for k, v in spec.data["dataset"].items() if k != "name"}
        data = load_dataset(args.dataset, seed=seed, data_dir=args.data_dir, **ds)
        data = dataclasses.replace(data, graph=directed_graph(args.data_dir, args.dataset, data.graph.num_nodes()))
        m = run(spec, data=data)["metrics"]
        row = {"dataset": args.dataset, "graph": "directed (geom-gcn edge list, the authors' reading)", "seed": seed,
               "spec": spec.data, "test_score": m["test_score"], "train_score": m["train_score"],
               "best_epoch": m["best_epoch"], "finished": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{args.dataset} seed {seed}: {100 * m['test_score']:.2f}", flush=True)


if __name__ == "__main__":
    main()
