"""How long the pending runs of a matrix will take on this machine, from finished runs and from
measured epoch times.

Two sources, tried in this order for each pending run:

1. **Finished runs** (the median ``timings.total_s``) of this spec version in any store under the
   results root (:func:`finished_records`; a record of another spec version was made by code that
   trains differently and is never used): the same spec but for the seed (``group``).
2. **The cost table** (``results/cost/throughput.jsonl``, written by ``bench-suite throughput``:
   the current code's median epoch time per configuration, :class:`CostTable`): epochs the run
   will train × the epoch time of its (dataset with its feature storage, architecture, depth,
   quantizer, bits, truncation, hidden width).  Epochs: the mean ``epochs_run`` of finished runs
   of the same spec under any quantizer (:func:`protocol_key`), else the mean share of their
   budget (``epochs_run / epochs``) that finished runs of the same plugins at the same depth
   trained under any other protocol (another dataset, other hyper-parameters) times the spec's
   ``epochs`` (``share``: early stopping ends a dataset's runs at its own epoch, so this errs
   either way), else the spec's ``epochs`` (an upper bound: early stopping ends most runs sooner).
   Without that exact configuration (``cost``), the entries of the same dataset, architecture and quantizer (the same bits and
   truncation if measured: fake quantization does the same work at any width) at the nearest
   hidden width are scaled (``cost-scaled``) **in depth**: linearly between the nearest measured
   depths around L; beyond them from the nearest measured depth L0 as finished runs of the same
   architecture (any quantizer) scale from L0 to L (estimated as in 3) where there are any, else
   proportionally, t = t0 · L / L0 (a deep model's epoch is its layers' or propagation steps'
   work; from a shallow entry alone this errs long, as the input layer's fixed cost is scaled
   too); **in width proportionally**,
   × h / h0 (each layer's product is linear in the width; where per-call overhead dominates,
   small graphs, this errs long).
3. **Finished runs** again, less alike: the same dataset, architecture and depth under any
   quantizer (``depth``); the same dataset and architecture at other depths, interpolated linearly
   between the nearest finished depths around it, or beyond them scaled by the depth ratio
   (``scaled``).
4. **A proxy in the cost table** (``proxy``): an architecture not measured is costed as the
   measured one of its kind, GCN for models without a propagation and APPNP for decoupled ones, a
   quantizer not measured as QLR at its bits, then scaled as in 2.
5. **Finished runs of another dataset** (``dataset``): the epoch time of the same model, propagation
   and transform on another dataset (its finished runs' ``total_s / epochs_run``, found as in 3; the
   same architecture where that dataset has it, else the median over its architectures of those
   plugins: tuned hyper-parameters differ by dataset), times the epochs the run will train (as in
   2), scaled by how much slower the pending run's dataset has been than that one (the median ratio
   over the architectures and depths finished on both).  The source is a dataset whose features are
   stored alike (dense or sparse: a dense first layer can be most of an epoch), then one that has the
   same architecture, then the one with most shared configurations.  Per epoch, because tuned
   budgets differ by dataset as well (SMP: 200 epochs on CiteSeer, 1,000 on Cora); from records
   without ``epochs_run``, their run times.

Runs with none of these are listed as not estimated and left out of the total, which then is a
lower bound, and says so.  Wall times of finished runs include any time they were paused, so those
estimates err long; cost-table estimates leave out dataset loading and the final layer metrics.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from bench_suite.record import TRAIN
from bench_suite.spec import SPEC_VERSION, RunSpec


def finished_records(results_root: Path) -> Iterator[Dict[str, Any]]:
    """The ok records of every store under ``results_root`` (``RESULTS/*/``) of this spec version:
    a record of another version was made by code that trains differently (``results/v1/README.md``)."""
    from bench_suite.runner.store import ResultStore

    if not results_root.is_dir():
        return
    for folder in sorted(p for p in results_root.iterdir() if p.is_dir()):
        for rec in ResultStore(folder).records():
            if rec.get("status") == "ok" and (rec.get("spec") or {}).get("version") == SPEC_VERSION:
                yield rec


def _arch(d: Mapping[str, Any]) -> str:
    """The architecture without its dataset and depth."""
    model = {k: v for k, v in d["model"].items() if k != "depth"}
    return json.dumps([model, d.get("propagation"), d.get("transform")], sort_keys=True)


def _names(d: Mapping[str, Any]) -> Tuple[Any, ...]:
    """The architecture's plugin names, without hyper-parameters."""
    return tuple((d.get(k) or {}).get("name") for k in ("model", "propagation", "transform"))


def protocol_key(d: Mapping[str, Any]) -> str:
    """The spec but for its seed and quantizer: runs that train the same model under the same protocol
    (whose mean ``epochs_run`` says how many epochs a run of it trains before early stopping)."""
    return json.dumps({k: ({n: v for n, v in d["train"].items() if n != "seed"} if k == "train" else v)
                       for k, v in d.items() if k != "quant"}, sort_keys=True)


def _dataset(d: Mapping[str, Any]) -> str:
    return json.dumps(d["dataset"], sort_keys=True)


#: levels in the order they are tried, with how the summary names them
LEVELS = {"group": "same spec finished", "cost": "cost table, same configuration",
          "cost-scaled": "cost table, depth/width-scaled (depth: linear between measured depths, beyond "
                         "them as finished runs of the architecture scale, else ∝ depth; ∝ hidden)",
          "depth": "same dataset/architecture/depth finished", "scaled": "depth-scaled finished runs",
          "proxy": "cost table via a proxy architecture or quantizer", "dataset": "scaled from another dataset",
          "dense": "as the same run with dense features (an upper bound: sparse inputs cost less)"}
#: the measured architecture a model without cost entries is costed as: (model, propagation)
PROXIES = {"coupled": ("gcn", None), "decoupled": ("decoupled", "appnp")}


@dataclass
class Estimate:
    seconds: float = 0.0  # estimated single-worker wall time of the estimated runs
    estimated: int = 0
    unknown: List[str] = field(default_factory=list)  # labels of runs nothing could estimate
    by_level: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    epochs_from: Dict[str, int] = field(default_factory=lambda: {"finished": 0, "share": 0, "maximum": 0})
    records: int = 0  # finished records used
    sources: List[str] = field(default_factory=list)  # where the finished records and the cost table came from

    def summary(self, workers: int = 1) -> str:
        h = self.seconds / 3600
        w = max(1, workers)
        total = (f"{_duration(h)} of single-worker time for {self.estimated} pending runs, "
                 f"{_duration(h / w)} with {w} worker{'s' if w > 1 else ''}")
        if self.unknown:
            total = "at least " + total
        parts = [f"{n} {LEVELS[k]}" for k, n in self.by_level.items() if n]
        lines = [f"estimated {total}", "  from: " + ("; ".join(parts) if parts else "nothing")]
        if self.by_level["cost"] or self.by_level["cost-scaled"] or self.by_level["proxy"]:
            lines.append(f"  epochs per cost-table or other-dataset run: {self.epochs_from['finished']} the mean of finished runs of "
                         f"the spec (any quantizer), {self.epochs_from['share']} the spec's maximum times the mean share "
                         f"of it finished runs of the plugins at that depth trained under other protocols (datasets, "
                         f"settings), {self.epochs_from['maximum']} the spec's maximum epochs "
                         f"(an upper bound: early stopping ends most runs sooner)")
        lines += [f"  source: {s}" for s in self.sources]
        if self.unknown:
            lines.append(f"  {len(self.unknown)} pending runs not estimated (no finished run or cost-table entry "
                         f"comparable) and not in the total, e.g. {', '.join(self.unknown[:3])}")
        return "\n".join(lines)


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{60 * hours:.0f} min" if hours >= 1 / 60 else f"{3600 * hours:.0f} s"
    return f"{hours:.1f} h" + (f" ({hours / 24:.1f} days)" if hours >= 48 else "")


@dataclass
class CostEntry:
    dataset: Tuple[str, bool]
    arch: Tuple[Any, Any, Any]
    quant: Tuple[str, int, str]
    depth: int
    hidden: Optional[int]
    epoch_s: float


def _cost_key(d: Mapping[str, Any]) -> Tuple[Tuple[str, bool], Tuple[Any, Any, Any], Tuple[str, int, str], int,
                                              Optional[int]]:
    """(dataset with its feature storage, architecture names, quantizer, depth, hidden) of a spec."""
    q = d["quant"]
    return ((d["dataset"]["name"], bool(d["dataset"].get("sparse_features", False))), _names(d),
            (q["name"], int(q["bits"]), str(q.get("truncation") or "none")), int(d["model"]["depth"]),
            d["model"].get("hidden"))


def _in_depth(known: Mapping[int, float], depth: int) -> float:
    """Time at ``depth`` from times at other depths: linear between the nearest known depths around
    it, beyond them proportional to depth from the nearest."""
    if depth in known:
        return known[depth]
    below, above = [k for k in known if k < depth], [k for k in known if k > depth]
    if below and above:
        lo, hi = max(below), min(above)
        return known[lo] + (known[hi] - known[lo]) * (depth - lo) / (hi - lo)
    near = max(below) if below else min(above)
    return known[near] * depth / near


def _shape_ratio(shape: Optional[Callable[[int], Optional[float]]], depth: int, near: int) -> Optional[float]:
    if shape is None:
        return None
    at, base = shape(depth), shape(near)
    return at / base if at and base else None


class CostTable:
    """Median epoch times of the current code per configuration, from ``bench-suite throughput``'s
    JSONL (its ``release: current`` rows; the newest measurement of a configuration wins)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], source: str = "") -> None:
        newest: Dict[Any, Tuple[str, CostEntry]] = {}
        self.commits: set = set()
        for row in rows:
            if row.get("release") != "current" or not row.get("spec") or not row.get("epoch_s_median"):
                continue
            key = _cost_key(row["spec"])
            when = str(row.get("measured", ""))
            if key not in newest or when >= newest[key][0]:
                newest[key] = (when, CostEntry(*key, epoch_s=float(row["epoch_s_median"])))
                commit = str((row.get("env") or {}).get("git_commit", "?"))
                self.commits.add(commit[:12] + ("-dirty" if commit.endswith("-dirty") else ""))
        self.entries = [e for _, e in newest.values()]
        self.dates = sorted(w[:10] for w, _ in newest.values() if w)
        self.source = source
        self._by: Dict[Tuple[Any, Any], List[CostEntry]] = defaultdict(list)
        for e in self.entries:
            self._by[(e.dataset, e.arch)].append(e)

    @classmethod
    def from_jsonl(cls, path: Path) -> Optional["CostTable"]:
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return cls(rows, str(path))

    def describe(self) -> str:
        when = f"measured {self.dates[0]}" + (f"..{self.dates[-1]}" if self.dates[-1] != self.dates[0] else "") \
            if self.dates else "undated"
        return (f"cost table {self.source}: {len(self.entries)} configurations, {when}, "
                f"code {', '.join(sorted(self.commits))}")

    def epoch_s(self, d: Mapping[str, Any], proxies: bool = False,
                shape: Optional[Callable[[int], Optional[float]]] = None) -> Optional[Tuple[float, str]]:
        """Epoch time of the spec ``d`` and its level (``cost``, ``cost-scaled``; ``proxy`` when
        ``proxies``: another architecture of its kind, another quantizer), or None.  ``shape(L)``:
        how long finished runs of this architecture take at depth L (any unit), used to scale
        beyond the measured depths when it knows both depths."""
        dataset, arch, quant, depth, hidden = _cost_key(d)
        archs = [arch]
        if proxies:
            kind = PROXIES["decoupled" if arch[1] is not None else "coupled"]
            archs = [arch, (kind[0], kind[1], None)]
        for a in archs:
            found = self._by.get((dataset, a))
            if not found:
                continue
            same = [e for e in found if e.quant == quant]
            if a == arch and same:
                exact = [e for e in same if e.depth == depth and e.hidden == hidden]
                if exact:
                    return exact[0].epoch_s, "cost"
            candidates = same or [e for e in found if e.quant[0] == quant[0]]
            level = "cost-scaled" if a == arch and candidates else "proxy"
            if not candidates and proxies:  # a quantizer not measured: QLR at the nearest bits, or FP32
                stand_in = "fp32" if quant[0] == "fp32" else "qlr"
                candidates = [e for e in found if e.quant[0] == stand_in]
                level = "proxy"
            if not candidates or (level == "proxy" and not proxies):
                continue
            q = min({e.quant for e in candidates}, key=lambda k: (abs(k[1] - quant[1]), k[2] != quant[2], k))
            h = min({e.hidden for e in candidates if e.quant == q},
                    key=lambda k: (abs(math.log((k or 1) / (hidden or k or 1))), k or 0))
            by_depth = {e.depth: e.epoch_s for e in candidates if e.quant == q and e.hidden == h}
            scale = hidden / h if hidden and h else 1.0
            near = min(by_depth, key=lambda k: (abs(math.log(k / depth)), k))
            outside = all(k < depth for k in by_depth) or all(k > depth for k in by_depth)
            ratio = _shape_ratio(shape, depth, near) if a == arch and outside else None
            if ratio is not None:
                return by_depth[near] * ratio * scale, level
            return _in_depth(by_depth, depth) * scale, level
        return None


def estimate(pending: Sequence[RunSpec], finished: Iterable[Mapping[str, Any]],
             costs: Optional[CostTable] = None) -> Estimate:
    """Estimate ``pending`` from finished records (``spec``, ``timings.total_s``, ``metrics.epochs_run``;
    ok runs only) and the cost table, in the order of the module docstring."""
    by_group: Dict[str, List[float]] = defaultdict(list)
    epochs_run: Dict[str, List[int]] = defaultdict(list)
    # (plugin names, depth) -> protocol -> epochs_run / epochs of its finished runs
    share: Dict[Tuple[Tuple[Any, ...], int], Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    used = 0
    times: Dict[Tuple[str, str, int], List[float]] = defaultdict(list)  # (dataset, arch, depth)
    per_epoch: Dict[Tuple[str, str, int], List[float]] = defaultdict(list)  # the same, total_s / epochs_run
    named: Dict[Tuple[str, Tuple[Any, ...]], set] = defaultdict(set)  # (dataset, plugin names) -> archs
    for rec in finished:
        t = (rec.get("timings") or {}).get("total_s")
        if rec.get("status") != "ok" or not isinstance(t, (int, float)) or not rec.get("spec"):
            continue
        spec = RunSpec.from_dict(rec["spec"])
        used += 1
        by_group[spec.group_key()].append(float(t))
        n = (rec.get("metrics") or {}).get("epochs_run")
        dataset, arch, depth = _dataset(spec.data), _arch(spec.data), int(spec.data["model"]["depth"])
        if isinstance(n, int) and not isinstance(n, bool):
            protocol = protocol_key(spec.data)
            epochs_run[protocol].append(n)
            budget = (spec.data.get("train") or {}).get("epochs")
            if isinstance(budget, int) and budget > 0:
                share[(_names(spec.data), depth)][protocol].append(n / budget)
            if n > 0:
                per_epoch[(dataset, arch, depth)].append(float(t) / n)
        times[(dataset, arch, depth)].append(float(t))
        named[(dataset, _names(spec.data))].add(arch)
    median = {key: statistics.median(ts) for key, ts in times.items()}
    median_epoch = {key: statistics.median(ts) for key, ts in per_epoch.items()}
    depths: Dict[Tuple[str, str], List[int]] = defaultdict(list)
    for dataset, arch, depth in median:
        depths[(dataset, arch)].append(depth)

    def same_dataset(dataset: str, arch: str, depth: int,
                     median: Dict[Tuple[str, str, int], float] = median) -> Optional[Tuple[float, str]]:
        """A run's time (or, given ``median_epoch``, an epoch's) from finished runs of ``dataset``,
        ``arch`` at ``depth``, else interpolated or scaled in depth (level 3)."""
        if (dataset, arch, depth) in median:
            return median[(dataset, arch, depth)], "depth"
        known = [k for k in depths.get((dataset, arch), ()) if (dataset, arch, k) in median]
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

    def epochs(d: Dict[str, Any]) -> float:
        """The epochs a pending run will train: the mean of finished runs of its protocol, else its maximum
        times the share of the budget runs of its plugins at its depth trained under other protocols (the
        mean over protocols, each the mean of its runs), else its maximum."""
        key = protocol_key(d)
        runs = epochs_run.get(key)
        if runs:
            out.epochs_from["finished"] += 1
            return statistics.mean(runs)
        others = [statistics.mean(v) for k, v in share.get((_names(d), int(d["model"]["depth"])), {}).items() if k != key]
        if others:
            out.epochs_from["share"] += 1
            return statistics.mean(others) * int(d["train"]["epochs"])
        out.epochs_from["maximum"] += 1
        return int(d["train"]["epochs"])

    def from_costs(d: Dict[str, Any], proxies: bool) -> Optional[Tuple[float, str]]:
        dataset, arch = _dataset(d), _arch(d)

        def shape(depth: int) -> Optional[float]:
            found = same_dataset(dataset, arch, depth)
            return found[0] if found else None

        found = costs.epoch_s(d, proxies, shape) if costs is not None else None
        if found is None:
            return None
        return found[0] * epochs(d), found[1]

    def find(spec: RunSpec) -> Optional[Tuple[float, str]]:
        d = spec.data
        dataset, arch, names, depth = _dataset(d), _arch(d), _names(d), int(d["model"]["depth"])
        group = by_group.get(spec.group_key())
        found = (statistics.median(group), "group") if group else from_costs(d, proxies=False)
        if found is None:
            found = same_dataset(dataset, arch, depth)
        if found is None:
            found = from_costs(d, proxies=True)
        if found is None:  # nothing of this architecture on this dataset: borrow the best-linked dataset's
            links = {source: ratio(dataset, source) for source, n in named if n == names and source != dataset}
            links = {source: r for source, r in links.items() if r is not None}
            if links:  # features stored alike (dense/sparse), the same architecture, most shared configurations
                sparse = bool(d["dataset"].get("sparse_features", False))
                source = max(sorted(links), key=lambda src: (bool(json.loads(src).get("sparse_features", False)) == sparse,
                                                             arch in named[(src, names)], links[src][1]))
                archs = [arch] if arch in named[(source, names)] else sorted(named[(source, names)])
                each = [e[0] for e in (same_dataset(source, a, depth, median_epoch) for a in archs) if e]
                if each:
                    found = (statistics.median(each) * epochs(d) * links[source][0], "dataset")
                else:  # records without epochs_run: their run times
                    each = [e[0] for e in (same_dataset(source, a, depth) for a in archs) if e]
                    found = (statistics.median(each) * links[source][0], "dataset") if each else None
        return found

    out = Estimate(records=used)
    for spec in pending:
        if spec.kind != TRAIN:  # a speed measurement: no epochs, no cost table
            out.unknown.append(spec.label())
            continue
        found = find(spec)
        if found is None and spec.data["dataset"].get("sparse_features"):
            # a dataset stored sparse for the first time: its dense-feature twin, an upper bound
            d = spec.data
            twin = find(RunSpec.from_dict(dict(d, dataset={k: v for k, v in d["dataset"].items()
                                                           if k != "sparse_features"})))
            found = (twin[0], "dense") if twin else None
        if found is None:
            out.unknown.append(spec.label())
            continue
        out.seconds += found[0]
        out.estimated += 1
        out.by_level[found[1]] += 1
    return out
