"""``bench-suite status MATRIX``: how many runs of a matrix are done, failed, timed out or pending,
and how many of the pending ones a runner is at now (``--estimate [WORKERS]``: and how long the
pending ones will take on this machine, from the finished runs under the results root and the cost
table of ``bench-suite throughput``: :mod:`bench_suite.runner.estimate`)."""
from __future__ import annotations

import argparse
import json
import sys


def configure(p: argparse.ArgumentParser) -> None:
    from bench_suite.runner.matrix import shipped_matrices

    p.add_argument("matrix", help=f"shipped matrix name ({', '.join(shipped_matrices())}) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the same overrides given to `run`")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="only the matrix's runs with one of these values of KEY (repeatable: all must match; "
                        "run ids unchanged), e.g. --only model=gcnii --only depth=64")
    p.add_argument("--results", default="results", help="results root (records in RESULTS/<matrix-name>/)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--estimate", type=int, nargs="?", const=1, default=0, metavar="WORKERS",
                   help="also estimate the pending runs' time (for WORKERS workers) from the finished runs of "
                        "every store under --results and the cost table (--costs)")
    p.add_argument("--costs", default=None, metavar="FILE",
                   help="cost table for --estimate: the JSONL of `bench-suite throughput` "
                        "(default RESULTS/cost/throughput.jsonl)")
    p.add_argument("--list", choices=("failed", "timeout", "pending", "running"), action="append", default=[],
                   help="also list the runs with this status (repeatable)")


def execute(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench_suite.runner.matrix import expand_matrix, load_matrix, parse_only, parse_overrides
    from bench_suite.runner.session import plan
    from bench_suite.runner.store import ResultStore, live_claims
    from bench_suite.spec import SPEC_VERSION

    matrix = load_matrix(args.matrix)
    specs = expand_matrix(matrix, parse_overrides(args.overrides), parse_only(args.only))
    store = ResultStore(Path(args.results) / matrix.name)
    p = plan(specs, store)
    counts = {"total": len(specs), "done": p.counts["ok"], "failed": p.counts["failed"],
              "timeout": p.counts["timeout"], "pending": p.counts["pending"], "corrupt": len(p.corrupt)}
    claims = live_claims(store.root)
    counts["running"] = sum(1 for s in p.todo if s.run_id in claims)  # pending runs some runner is at now
    for reason in p.corrupt.values():
        print(f"warning: {reason} (counted as pending)", file=sys.stderr)
    est = None
    if args.estimate:
        from bench_suite.runner.estimate import CostTable, estimate, finished_records

        root = Path(args.results)
        costs_path = Path(args.costs) if args.costs else root / "cost" / "throughput.jsonl"
        if args.costs and not costs_path.is_file():
            raise FileNotFoundError(f"--costs {args.costs}: no such file (write one with `bench-suite throughput`)")
        costs = CostTable.from_jsonl(costs_path)
        est = estimate(p.todo, finished_records(root), costs)
        est.sources = [f"finished runs: {est.records} ok records of spec version {SPEC_VERSION} under {root}/*/",
                       costs.describe() if costs else f"cost table: none ({costs_path} does not exist; "
                       f"`bench-suite throughput` writes it)"]
    if args.json:
        extra = {} if est is None else {"estimated_hours": round(est.seconds / 3600, 2),
                                        "estimated_runs": est.estimated, "estimated_from": est.by_level,
                                        "epochs_from": est.epochs_from, "sources": est.sources,
                                        "not_estimated": len(est.unknown)}
        print(json.dumps(dict(counts, **extra), sort_keys=True))
    else:
        print(f"{matrix.name} ({store.root}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if est is not None:
            print(est.summary(args.estimate))
    if args.list:
        scan = store.scan()
        for s in specs:
            st = scan.of(s.run_id)
            if st in args.list:
                print(f"{st:8s} {s.run_id} {s.label()}")
            if "running" in args.list and st == "pending" and s.run_id in claims:
                c = claims[s.run_id]
                print(f"running  {s.run_id} {s.label()} (host {c.get('host', '?')}, pid {c.get('pid', '?')}, "
                      f"since {c.get('since', '?')})")
    return 0
