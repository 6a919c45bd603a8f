"""``bench-suite list [KIND]``: read from the cached plugin index (:mod:`bench_suite.plugin_index`),
so that listing imports no plugin (nor torch) while no plugin file has changed; ``list speed``
describes the keys of a speed measurement (:func:`bench_suite.spec.resolve_speed_spec`)."""
from __future__ import annotations

import argparse

SPEED = "speed"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", default=None,
                   help="datasets, models, propagations, quantizers, executors, transforms, or speed (the keys of a "
                        "speed measurement)")
    p.set_defaults(_loads_plugins=True)  # execute imports them, only when the index is stale


def speed_lines() -> list:
    """What a speed spec is made of: its graph, model and quantizer keys and its measurement keys."""
    from dataclasses import fields

    from bench_suite.bits import BITS
    from bench_suite.registry import declared_ranges
    from bench_suite.spec import GENERATED_GRAPHS, IMPLS, RANGES, SPEED_DEFAULTS, SUMS, TUNED_FP32, SpeedConfig

    ranges = {k: r.describe() for k, r in declared_ranges(SpeedConfig).items()}
    ranges.update(impls="any of " + ", ".join(IMPLS) + f"; {TUNED_FP32} is timed with int even if not listed",
                  ranges=" or ".join(RANGES), sums=" or ".join(SUMS))
    graphs = ", ".join(f"{k} ({n} nodes, {e} edges, {f} features)" for k, (n, e, f, _) in GENERATED_GRAPHS.items())
    keys = ", ".join(f"{f.name}={','.join(f.default) if isinstance(f.default, tuple) else f.default}"
                     + (f" ({ranges[f.name]})" if f.name in ranges else "") for f in fields(SpeedConfig))
    d = SPEED_DEFAULTS
    return ["speed measurements (kind: speed in a matrix file; `bench-suite speed key=value` runs one):",
            f"  {'graph':<18} a generated graph: {graphs}; or a registered dataset (default {d['graph']})",
            f"  {'model':<18} a model the integer engine converts (gcn; decoupled with propagation appnp or smp) "
            f"with its keys (default {d['model']}, depth {d['depth']}, hidden {d['hidden']})",
            f"  {'quant':<18} a quantizer with bits {', '.join(map(str, BITS))} and its keys "
            f"(default {d['quant']}, bits {d['bits']})",
            f"  {'measurement':<18} {keys}", ""]


def execute(args: argparse.Namespace) -> int:
    from bench_suite.plugin_index import plugin_index
    from bench_suite.registry import REGISTRIES, registry

    if args.kind == SPEED:
        print("\n".join(speed_lines()))
        return 0
    names = [next(n for n, r in REGISTRIES.items() if r is registry(args.kind))] if args.kind else list(REGISTRIES)
    index = plugin_index(args.plugin)
    for name in names:
        print(f"{index[name]['kind']}s:")
        for entry in index[name]["entries"]:
            params = ", ".join(p["text"] for p in entry["params"])
            print(f"  {entry['key']:<18} {entry['doc']}")
            print(f"  {'':<18} params: {params or '(none)'}   [{entry['source']}]")
        print()
    if not args.kind:
        print("\n".join(speed_lines()))
    return 0
