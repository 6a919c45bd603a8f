"""``bench-suite train key=value ...``: one run, its record printed as JSON."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                   help="spec keys, e.g. dataset=cora model=gcn depth=2 seed=0")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.cli import print_json
    from bench_suite.spec import spec_from_cli
    from bench_suite.train import run

    spec = spec_from_cli(args.assignments)
    record = run(spec, data_dir=args.data_dir, download=args.download)
    record["status"] = "ok"
    print_json(record)
    return 0
