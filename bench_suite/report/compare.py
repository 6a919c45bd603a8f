"""Two result stores side by side (``bench-suite report A --against B``).

Groups are matched by their group key (the spec without the seed, :func:`~bench_suite.record.group_key`),
so the same configuration run by two versions of the code, or on two machines, lines up.  Per group
found in both: each store's mean over its finished seeds, the difference A − B and its Welch 95%
interval (:func:`~bench_suite.report.tables.welch_interval`), and the seed count of each side.  A group
found in one store only is listed as such, never dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import pandas as pd

from bench_suite.record import OK
from bench_suite.report.aggregate import GROUP_COLS, group_labels, short_hash
from bench_suite.report.tables import EMPTY, Table, metric_scale, welch_interval

COMPARE_COLS = ["group"] + GROUP_COLS + ["found_in", "n_a", "mean_a", "n_b", "mean_b", "diff", "ci95_low", "ci95_high"]


@dataclass
class Comparison:
    """What the report says about A against B: the per-group frame and its table."""

    roots_a: List[str]
    roots_b: List[str]
    frame: pd.DataFrame
    table: Table

    def count(self, where: str) -> int:
        """Groups found in ``both`` stores, or in ``A`` or ``B`` only."""
        return int((self.frame["found_in"] == where).sum()) if len(self.frame) else 0


def _values(runs: pd.DataFrame, col: str) -> Dict[str, List[float]]:
    """Per group key with at least one record: the metric of its finished runs (possibly none)."""
    out: Dict[str, List[float]] = {k: [] for k in runs["group_key"]} if len(runs) else {}
    if col in runs:
        ok = runs[(runs["status"] == OK) & runs[col].notna()]
        for key, vals in ok.groupby("group_key")[col]:
            out[key] = [float(v) for v in vals]
    return out


def compare_runs(runs_a: pd.DataFrame, runs_b: pd.DataFrame, metric: str = "test_score") -> pd.DataFrame:
    """One row per group of either frame (:func:`~bench_suite.report.aggregate.runs_frame`): ``found_in``
    (``both``, ``A`` or ``B``), n and mean of each side, ``diff`` = mean A − mean B and its Welch 95%
    interval (NaN when a side has no finished run; the interval also when a side has one)."""
    col = f"metric.{metric}"
    a, b = _values(runs_a, col), _values(runs_b, col)
    if not a and not b:
        return pd.DataFrame(columns=COMPARE_COLS)
    rows = []
    for key in set(a) | set(b):
        va, vb = a.get(key, []), b.get(key, [])
        diff, lo, hi = welch_interval(va, vb) if va and vb else (math.nan, math.nan, math.nan)
        rows.append({"group": short_hash(key), "found_in": "both" if key in a and key in b else ("A" if key in a else "B"),
                     "n_a": len(va), "mean_a": sum(va) / len(va) if va else math.nan,
                     "n_b": len(vb), "mean_b": sum(vb) / len(vb) if vb else math.nan,
                     "diff": diff, "ci95_low": lo, "ci95_high": hi})
    frame = pd.DataFrame(rows).merge(group_labels(set(a) | set(b)), on="group")
    frame["_order"] = frame["found_in"].map({"both": 0, "A": 1, "B": 2})
    frame = frame.sort_values(["_order"] + GROUP_COLS + ["group"])
    return frame[COMPARE_COLS].reset_index(drop=True)


def comparison_table(frame: pd.DataFrame, metric: str, name_a: str, name_b: str) -> Table:
    """``comparison``: per group, mean and n of A and of B, A − B and its Welch 95% interval (accuracies
    in percent points); groups of one store only say so in the difference column."""
    s = metric_scale(metric)

    def num(v: float, sign: str = "") -> str:
        return EMPTY if math.isnan(v) else f"{s * v:{sign}.2f}"

    rows = []
    for r in frame.itertuples(index=False):
        a = [num(r.mean_a), str(r.n_a)] if r.found_in != "B" else ["", ""]
        b = [num(r.mean_b), str(r.n_b)] if r.found_in != "A" else ["", ""]
        if r.found_in != "both":
            diff = [f"only in {r.found_in}", ""]
        else:
            diff = [num(r.diff, "+"),
                    EMPTY if math.isnan(r.ci95_low) else f"[{num(r.ci95_low, '+')}, {num(r.ci95_high, '+')}]"]
        rows.append([str(r.dataset), str(r.method), str(r.quantizer), str(r.depth)] + a + b + diff)
    unit = " (%)" if s != 1 else ""
    diff_unit = " (points)" if s != 1 else ""
    return Table("comparison",
                 f"{metric}{unit}: A = {name_a} against B = {name_b}; difference A − B{diff_unit} with its Welch 95% "
                 "interval over seeds",
                 ["dataset", "method", "quantizer", "depth", "mean A", "n A", "mean B", "n B", "A − B",
                  "95% interval"], rows, n_label_cols=4)


def compare_stores(runs_a: pd.DataFrame, runs_b: pd.DataFrame, roots_a: Sequence[str], roots_b: Sequence[str],
                   metric: str = "test_score") -> Comparison:
    frame = compare_runs(runs_a, runs_b, metric)
    table = comparison_table(frame, metric, ", ".join(map(str, roots_a)), ", ".join(map(str, roots_b)))
    return Comparison([str(r) for r in roots_a], [str(r) for r in roots_b], frame, table)
