"""``bench-suite list [KIND]``."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", default=None, help="datasets, models, propagations, quantizers, executors, transforms")


def execute(args: argparse.Namespace) -> int:
    from bench_suite.registry import REGISTRIES, registry

    kinds = [registry(args.kind)] if args.kind else list(REGISTRIES.values())
    for reg in kinds:
        print(f"{reg.kind}s:")
        for key in reg.keys():
            entry = reg.entry(key)
            params = ", ".join(p.describe() for p in reg.params(key))
            print(f"  {key:<18} {entry.doc}")
            print(f"  {'':<18} params: {params or '(none)'}   [{entry.source}]")
        print()
    return 0
