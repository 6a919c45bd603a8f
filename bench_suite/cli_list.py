"""``bench-suite list [KIND]``: read from the cached plugin index (:mod:`bench_suite.plugin_index`),
so that listing imports no plugin (nor torch) while no plugin file has changed."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", default=None, help="datasets, models, propagations, quantizers, executors, transforms")
    p.set_defaults(_loads_plugins=True)  # execute imports them, only when the index is stale


def execute(args: argparse.Namespace) -> int:
    from bench_suite.plugin_index import plugin_index
    from bench_suite.registry import REGISTRIES, registry

    names = [next(n for n, r in REGISTRIES.items() if r is registry(args.kind))] if args.kind else list(REGISTRIES)
    index = plugin_index(args.plugin)
    for name in names:
        print(f"{index[name]['kind']}s:")
        for entry in index[name]["entries"]:
            params = ", ".join(p["text"] for p in entry["params"])
            print(f"  {entry['key']:<18} {entry['doc']}")
            print(f"  {'':<18} params: {params or '(none)'}   [{entry['source']}]")
        print()
    return 0
