"""``bench-suite speed key=value ... [--threads N --repeats N --warmup N --breakdown --results DIR]``:
one speed measurement, the one-off form of a ``kind: speed`` matrix run.

The keys are those of a speed spec (:func:`bench_suite.spec.resolve_speed_spec`, ``bench-suite list
speed``): graph (a generated graph: arxiv-like, arxiv-like-10, small, tiny; or a registered dataset,
read from --data-dir / $BENCH_SUITE_DATA), model (gcn, decoupled) with its keys (depth, hidden,
propagation: appnp or smp, SMP's lambda_min, ...), quant (default qlr) with bits (8, 4, 2) and its keys
(truncation: bt, bt* for INT2 QLR), and the measurement's: impls (dgl-fp32, suite-fp32, int, fp32-tuned;
the tuned FP32 path is timed with int even if not listed), repeats, warmup, breakdown, ranges
(dynamic: every QLR range from its current tensor, the exact simulation; calibrated: ranges frozen after
one integer pass over the deployed graph, or over calibration_graph / calibration_seed), sums (exact:
the integer neighbour sums, default; reference: the fake-quant model's float32 order where it decides
an aggregate code or range), train_epochs (datasets: train the fake-quant model first, that many epochs
of the default settings; the rows add test accuracy of both models and their agreement), train_protocol
(brief, the default: as train_epochs says; tuned: train in the suite's own protocol for that dataset,
model and quantizer, as a matrix run would), model_path (a saved integer model), seed.

The spec is resolved and checked before anything is built, then measured by the worker's own code
(:func:`bench_suite.runner.worker.perform`).  Prints one JSON line per implementation, each with its
speed-up over DGL FP32 (``speedup_vs_dgl``) and over the tuned FP32 path (``speedup_vs_fp32``);
``--results DIR`` also writes the record to ``DIR/<run id>.json`` as a runner would (replacing an
earlier measurement of the same spec).  ``--breakdown`` adds the integer model's time per stage, the
bytes each stage moves and the floor they imply (:mod:`bench_suite.engine.profile`).
"""
from __future__ import annotations

import argparse
import json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                   help="speed spec keys (`bench-suite list speed`), e.g. graph=cora bits=4 ranges=calibrated")
    p.add_argument("--threads", type=int, default=2, help="threads for torch, DGL and numba (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds, at least 5 (default 5; key repeats)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1; key warmup)")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile the integer model's stages: time, bytes moved, floor (bandwidth, int8 peak)")
    p.add_argument("--results", default=None, metavar="DIR", help="also write the record as JSON into DIR")


def execute(args: argparse.Namespace) -> int:
    import sys

    from bench_suite.record import SPEED, utc_now
    from bench_suite.runner.store import ResultStore
    from bench_suite.runner.worker import perform, set_threads
    from bench_suite.spec import SpecError, parse_assignments, resolve_speed_spec

    items = list(args.assignments)
    for key, value in (("repeats", args.repeats), ("warmup", args.warmup), ("breakdown", args.breakdown or None)):
        if value is not None:
            items.append(f"{key}={str(value).lower()}")  # a key also given as key=value is "given twice"
    if args.threads < 1:
        raise SpecError(f"--threads {args.threads} is not valid: give a number of threads >= 1")
    spec = resolve_speed_spec(parse_assignments(items, "command line"), "command line")
    store = None
    if args.results:
        store = ResultStore(args.results)
        store.check_writable()
    set_threads(args.threads)
    started = utc_now()
    try:
        record = perform(spec, data_dir=getattr(args, "data_dir", None), download=getattr(args, "download", False))
    except FloatingPointError as exc:  # a model that diverges on this graph
        print(f"bench-suite speed: error: {exc}", file=sys.stderr)
        return 2
    path = None
    if store is not None:
        path = store.write(dict(record, started=started, finished=utc_now()))
    for row in record["measurements"]:
        line = dict(row, kind=SPEED, run_id=record["run_id"], **({"path": str(path)} if path else {}))
        print(json.dumps(line, sort_keys=True), flush=True)
    return 0
