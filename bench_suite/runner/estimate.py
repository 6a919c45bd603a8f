"""How long the pending runs of a matrix will take, from the finished runs in its store.

Each pending run is estimated by the median ``timings.total_s`` of finished runs most like it:
the same spec but for the seed; else the same dataset, architecture (model, propagation,
transform) and depth under any quantizer; else the same dataset and architecture at the
nearest depth, scaled by the depth ratio (a deep model's epoch is linear in its depth).
Runs with nothing comparable are counted, not guessed.  Wall time of finished runs includes
any time they were paused, so estimates err long.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench_suite.spec import RunSpec


def _arch(d: Mapping[str, Any]) -> str:
    model = {k: v for k, v in d["model"].items() if k != "depth"}
    return json.dumps([d["dataset"], model, d.get("propagation"), d.get("transform")], sort_keys=True)


@dataclass
class Estimate:
    seconds: float = 0.0  # estimated single-worker wall time of the estimated runs
    estimated: int = 0
    unknown: List[str] = field(default_factory=list)  # labels of runs with no comparable finished run
    by_level: Dict[str, int] = field(default_factory=lambda: {"group": 0, "depth": 0, "scaled": 0})

    def summary(self, workers: int = 1) -> str:
        h = self.seconds / 3600
        text = (f"estimated {h:.1f} h of single-worker time for {self.estimated} pending runs "
                f"({h / max(1, workers):.1f} h with {workers} workers; from {self.by_level['group']} same-spec, "
                f"{self.by_level['depth']} same-depth and {self.by_level['scaled']} depth-scaled matches)")
        if self.unknown:
            text += f"; {len(self.unknown)} runs have no comparable finished run and are not counted"
        return text


def estimate(pending: Sequence[RunSpec], finished: Iterable[Mapping[str, Any]]) -> Estimate:
    """Estimate ``pending`` from finished records (``spec`` and ``timings.total_s``; ok runs only)."""
    by_group: Dict[str, List[float]] = defaultdict(list)
    by_depth: Dict[Tuple[str, int], List[float]] = defaultdict(list)
    for rec in finished:
        t = (rec.get("timings") or {}).get("total_s")
        if rec.get("status") != "ok" or not isinstance(t, (int, float)) or not rec.get("spec"):
            continue
        spec = RunSpec.from_dict(rec["spec"])
        by_group[spec.group_key()].append(float(t))
        by_depth[(_arch(spec.data), int(spec.data["model"]["depth"]))].append(float(t))
    depths: Dict[str, List[int]] = defaultdict(list)
    for arch, depth in by_depth:
        depths[arch].append(depth)
    out = Estimate()
    for spec in pending:
        d = spec.data
        depth = int(d["model"]["depth"])
        arch = _arch(d)
        seconds: Optional[float] = None
        if by_group.get(spec.group_key()):
            seconds, level = statistics.median(by_group[spec.group_key()]), "group"
        elif by_depth.get((arch, depth)):
            seconds, level = statistics.median(by_depth[(arch, depth)]), "depth"
        elif depths.get(arch):
            near = min(depths[arch], key=lambda k: (abs(k - depth), k))
            seconds, level = statistics.median(by_depth[(arch, near)]) * depth / near, "scaled"
        if seconds is None:
            out.unknown.append(spec.label())
            continue
        out.seconds += seconds
        out.estimated += 1
        out.by_level[level] += 1
    return out
