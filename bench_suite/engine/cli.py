"""``bench-suite speed key=value ... [--threads N --repeats N --warmup N --results DIR]``.

Keys: model (gcn, decoupled), depth, hidden, graph (a generated graph:
arxiv-like, arxiv-like-10, small, tiny; or a registered dataset, read from --data-dir /
$BENCH_SUITE_DATA), bits (8, 4, 2), propagation (decoupled: appnp, smp), quant (quantizer key;
default qlr if registered, else a static min/max calibration), truncation (bt, bt*: QLR at
INT2 with bit truncation), lambda_min (SMP: project the multiplier onto [lambda_min, ∞)), model_path (a saved
integer model), train_epochs (datasets: train the fake-quant model this many epochs
first; the record adds test accuracy of both models and their agreement), seed, ranges (dynamic:
every QLR range from its current tensor, the exact simulation; calibrated: ranges frozen after one
integer pass over the deployed graph, or over calibration_graph / calibration_seed).
Prints one JSON line per implementation; ``--breakdown`` adds the integer model's time per
stage, the bytes each stage moves and the floor they imply (:mod:`bench_suite.engine.profile`).
"""
from __future__ import annotations

import argparse
import json

KEYS = ("model", "depth", "hidden", "graph", "bits", "quant", "truncation", "model_path", "seed", "propagation",
        "train_epochs", "lambda_min", "ranges", "calibration_graph", "calibration_seed")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help=f"keys: {', '.join(KEYS)}")
    p.add_argument("--threads", type=int, default=2, help="threads for torch, DGL and numba (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, at least 5 (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile the integer model's stages: time, bytes moved, floor (bandwidth, int8 peak)")
    p.add_argument("--results", default=None, metavar="DIR", help="also write each record as JSON into DIR")


def parse_assignments(items: list) -> dict:
    from bench_suite.spec import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in KEYS:
            raise ValueError(f"speed: bad argument {item!r}; expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
        out[key] = parse_value(value)
    return out


def execute(args: argparse.Namespace) -> int:
    import sys

    from bench_suite.engine.bench import measure, write_record

    try:
        kw = parse_assignments(args.assignments)
        records = measure(threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                          data_dir=getattr(args, "data_dir", None), breakdown=args.breakdown, **kw)
    except (ValueError, FloatingPointError) as exc:  # bad input; a model that diverges on this graph
        print(f"bench-suite speed: error: {exc}", file=sys.stderr)
        return 2
    for rec in records:
        if args.results:
            rec["path"] = str(write_record(rec, args.results))
        print(json.dumps(rec, sort_keys=True), flush=True)
    return 0
