"""How long the pending runs of a matrix will take, from the finished runs in its store.

Each pending run is estimated by the median ``timings.total_s`` of finished runs most like it:
the same spec but for the seed; else the same dataset, architecture (model, propagation,
transform) and depth under any quantizer; else the same dataset and architecture at other
depths: interpolated linearly between the nearest finished depths around it, or beyond them
scaled by the depth ratio from the nearest (a deep model's epoch is linear in its depth); else the
same model, propagation and transform on another dataset (with that dataset's hyper-parameters,
which tuned defaults set per dataset), estimated as above and scaled by how much slower the
pending run's dataset has been than that one (the median ratio over the architectures and depths
finished on both).  Runs with nothing comparable are counted, not guessed.  Wall time of finished
runs includes any time they were paused, so estimates err long.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench_suite.spec import RunSpec


def _arch(d: Mapping[str, Any]) -> str:
    """The architecture without its dataset and depth."""
    model = {k: v for k, v in d["model"].items() if k != "depth"}
    return json.dumps([model, d.get("propagation"), d.get("transform")], sort_keys=True)


def _names(d: Mapping[str, Any]) -> Tuple[Any, ...]:
    """The architecture's plugin names, without hyper-parameters."""
    return tuple((d.get(k) or {}).get("name") for k in ("model", "propagation", "transform"))


def _dataset(d: Mapping[str, Any]) -> str:
    return json.dumps(d["dataset"], sort_keys=True)


@dataclass
class Estimate:
    seconds: float = 0.0  # estimated single-worker wall time of the estimated runs
    estimated: int = 0
    unknown: List[str] = field(default_factory=list)  # labels of runs with no comparable finished run
    by_level: Dict[str, int] = field(default_factory=lambda: {"group": 0, "depth": 0, "scaled": 0, "dataset": 0})

    def summary(self, workers: int = 1) -> str:
        h = self.seconds / 3600
        text = (f"estimated {h:.1f} h of single-worker time for {self.estimated} pending runs "
                f"({h / max(1, workers):.1f} h with {workers} workers; from {self.by_level['group']} same-spec, "
                f"{self.by_level['depth']} same-depth and {self.by_level['scaled']} depth-scaled matches"
                + (f", {self.by_level['dataset']} scaled from another dataset" if self.by_level["dataset"] else "")
                + ")")
        if self.unknown:
            text += f"; {len(self.unknown)} runs have no comparable finished run and are not counted"
        return text


def estimate(pending: Sequence[RunSpec], finished: Iterable[Mapping[str, Any]]) -> Estimate:
    """Estimate ``pending`` from finished records (``spec`` and ``timings.total_s``; ok runs only)."""
    by_group: Dict[str, List[float]] = defaultdict(list)
    times: Dict[Tuple[str, str, int], List[float]] = defaultdict(list)  # (dataset, arch, depth)
    named: Dict[Tuple[str, Tuple[Any, ...]], set] = defaultdict(set)  # (dataset, plugin names) -> archs
    for rec in finished:
        t = (rec.get("timings") or {}).get("total_s")
        if rec.get("status") != "ok" or not isinstance(t, (int, float)) or not rec.get("spec"):
            continue
        spec = RunSpec.from_dict(rec["spec"])
        by_group[spec.group_key()].append(float(t))
        dataset, arch = _dataset(spec.data), _arch(spec.data)
        times[(dataset, arch, int(spec.data["model"]["depth"]))].append(float(t))
        named[(dataset, _names(spec.data))].add(arch)
    median = {key: statistics.median(ts) for key, ts in times.items()}
    depths: Dict[Tuple[str, str], List[int]] = defaultdict(list)
    for dataset, arch, depth in median:
        depths[(dataset, arch)].append(depth)

    def same_dataset(dataset: str, arch: str, depth: int) -> Optional[Tuple[float, str]]:
        if (dataset, arch, depth) in median:
            return median[(dataset, arch, depth)], "depth"
        known = depths.get((dataset, arch))
        if not known:
            return None
        below, above = [k for k in known if k < depth], [k for k in known if k > depth]
        if below and above:  # between two finished depths: linear in depth between them
            lo, hi = max(below), min(above)
            t_lo, t_hi = median[(dataset, arch, lo)], median[(dataset, arch, hi)]
            return t_lo + (t_hi - t_lo) * (depth - lo) / (hi - lo), "scaled"
        near = max(below) if below else min(above)  # beyond them: proportional to depth
        return median[(dataset, arch, near)] * depth / near, "scaled"

    ratios: Dict[Tuple[str, str], Optional[Tuple[float, int]]] = {}

    def ratio(target: str, source: str) -> Optional[Tuple[float, int]]:
        """How much slower ``target`` has been than ``source``, and over how many shared configurations."""
        if (target, source) not in ratios:
            shared = [median[(target, a, k)] / median[(source, a, k)]
                      for (ds, a, k) in median if ds == source and (target, a, k) in median]
            ratios[(target, source)] = (statistics.median(shared), len(shared)) if shared else None
        return ratios[(target, source)]

    out = Estimate()
    for spec in pending:
        d = spec.data
        dataset, arch, names, depth = _dataset(d), _arch(d), _names(d), int(d["model"]["depth"])
        group = by_group.get(spec.group_key())
        found = (statistics.median(group), "group") if group else same_dataset(dataset, arch, depth)
        if found is None:  # nothing of this architecture on this dataset: borrow the best-linked dataset's
            links = {source: ratio(dataset, source) for source, n in named if n == names and source != dataset}
            links = {source: r for source, r in links.items() if r is not None}
            if links:  # most shared configurations; ties go to the first dataset in sorted order
                source = max(sorted(links), key=lambda src: links[src][1])
                archs = named[(source, names)]
                found = same_dataset(source, arch if arch in archs else min(archs), depth)
                found = (found[0] * links[source][0], "dataset") if found else None
        if found is None:
            out.unknown.append(spec.label())
            continue
        out.seconds += found[0]
        out.estimated += 1
        out.by_level[found[1]] += 1
    return out
