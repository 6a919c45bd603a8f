"""``bench-suite train key=value ...``: one run, its record printed as JSON.

The tuned defaults apply as in a matrix run, so the same keys give the same spec and run id.
"""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                   help="spec keys, e.g. dataset=cora model=gcn depth=2 seed=0")
    p.add_argument("--no-defaults", action="store_true",
                   help="skip the tuned defaults (bench_suite/defaults/, baselines/defaults.yaml) that matrix runs "
                        "apply; unset keys then take the constructors' defaults")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.cli import print_json
    from bench_suite.spec import spec_from_cli
    from bench_suite.train import run

    spec = spec_from_cli(args.assignments, defaults=not args.no_defaults)
    record = run(spec, data_dir=args.data_dir, download=args.download)
    record["status"] = "ok"
    print_json(record)
    return 0
