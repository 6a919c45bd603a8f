"""The reproduction table: each method's result in its own paper's setting beside the published number.

The published numbers, their sources and the spec keys that select the matching runs live in
``references.yaml`` next to this module.  A row's verdict:

* ``reproduced`` — |Δ| ≤ tolerance, where tolerance = max(1.5 points, the published std; for a
  published single run or an unstated std, the suite's own std over seeds, since one run scatters
  by that much);
* ``MISS`` — outside it (a reference row may carry an ``explanation`` of a miss, with the run that
  shows it: the verdict is then ``miss, explained``; a ``note`` — what was checked, say — is shown
  as a footnote without changing the verdict);
* ``meets target`` / ``below target`` — no published number could be read, the row has ``at_least``;
* ``no published value`` — nothing to compare with (the source says why); ``not run`` — no record.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pandas as pd
from bench_suite.record import OK
from bench_suite.report.tables import EMPTY, Table
from bench_suite.yamlfile import load_yaml

REFERENCES = Path(__file__).with_name("references.yaml")
#: the smallest tolerance, in points
MIN_TOLERANCE = 1.5
#: spec sections whose plugin name is a match key; left out of a reference it means none / fp32
PLUGIN_KEYS = {"dataset": None, "model": None, "propagation": "none", "quant": "fp32", "transform": "none"}
REFERENCE_KEYS = {"method", "match", "value", "std", "runs", "source", "setting", "at_least", "explanation", "note"}


@dataclass(frozen=True)
class Reference:
    """One published number: the spec keys of its setting, value and std in percent, source."""

    method: str
    match: Dict[str, Any]
    source: str
    setting: str = ""
    value: Optional[float] = None
    std: Optional[float] = None
    runs: Optional[int] = None
    at_least: Optional[float] = None
    explanation: str = ""
    note: str = ""
    _order: int = field(default=0, compare=False)


def load_references(path: Optional[str | Path] = None) -> List[Reference]:
    """The rows of a references file (default: the shipped one; YAML, read with ``safe_load``),
    checked for their keys."""
    path = REFERENCES if path is None else path
    rows = load_yaml(Path(path).read_text(encoding="utf-8")) or []
    if not isinstance(rows, list):
        raise ValueError(f"references file {path} must hold a list of rows, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) - REFERENCE_KEYS or not {"method", "match", "source"} <= set(row):
            raise ValueError(f"references file {path}, row {i}: expected keys {sorted(REFERENCE_KEYS)} "
                             f"(method, match and source required), got {row!r}")
        out.append(Reference(**row, _order=i))
    return out


def flat_spec(spec: Mapping[str, Any]) -> Dict[str, str]:
    """A record's spec as flat ``key -> text``: each plugin section's name under the section's key
    (``none``/``fp32`` when absent) and every parameter under its own name."""
    flat: Dict[str, str] = {}
    for sec, absent in PLUGIN_KEYS.items():
        part = spec.get(sec) or {}
        flat[sec] = str(part.get("name", absent))
    for sec in ("dataset", "model", "propagation", "quant", "transform", "train"):
        for k, v in (spec.get(sec) or {}).items():
            if k != "name":
                flat.setdefault(k, _text(v))
    return flat


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v).lower() if isinstance(v, bool) else str(v)


def matches(ref: Reference, flat: Mapping[str, str]) -> bool:
    want = {**{k: v for k, v in PLUGIN_KEYS.items() if v is not None}, **ref.match}
    return all(flat.get(k) == _text(v) for k, v in want.items())


def reproduction_frame(runs: pd.DataFrame, refs: Sequence[Reference], metric: str = "test_score") -> pd.DataFrame:
    """One row per reference (and per matching group, should several match): suite statistics over the
    ok seeds, published value, Δ, tolerance and verdict.  ``runs``: :func:`~bench_suite.report.aggregate.runs_frame`."""
    col = f"metric.{metric}"
    groups = []
    if not runs.empty:
        for gk, sub in runs.groupby("group_key", sort=False):
            groups.append((flat_spec(json.loads(gk)), sub))
    rows = []
    for ref in refs:
        hits = [sub for flat, sub in groups if matches(ref, flat)] or [None]
        for sub in hits:
            rows.append(_row(ref, sub, col))
    return pd.DataFrame(rows)


def _row(ref: Reference, sub: Optional[pd.DataFrame], col: str) -> Dict[str, Any]:
    ok = sub[(sub["status"] == OK)] if sub is not None else None
    vals = 100.0 * ok[col].dropna().to_numpy(dtype=float) if ok is not None and col in ok else []
    train_col = col.replace("test_", "train_", 1)
    train = (100.0 * float(ok[train_col].mean()) if ok is not None and train_col in ok and ok[train_col].notna().any()
             else math.nan)
    n = len(vals)
    mean = float(vals.mean()) if n else math.nan
    std = float(vals.std(ddof=1)) if n > 1 else math.nan
    failed = int((sub["status"] != OK).sum()) if sub is not None else 0
    delta = mean - ref.value if ref.value is not None and n else math.nan
    spread = ref.std if ref.std is not None and ref.runs != 1 else (std if n > 1 else 0.0)
    tol = max(MIN_TOLERANCE, spread or 0.0)
    if not n:
        verdict = "not run"
    elif ref.value is None:
        verdict = ("no published value" if ref.at_least is None
                   else "meets target" if mean >= ref.at_least else "below target")
    elif abs(delta) <= tol:
        verdict = "reproduced"
    else:
        verdict = "miss, explained" if ref.explanation else "MISS"
    return {"method": ref.method, "dataset": ref.match.get("dataset", ""), "depth": ref.match.get("depth", ""),
            "setting": ref.setting, "n": n, "failed": failed, "mean": mean, "std": std, "train": train,
            "published": ref.value, "published_std": ref.std, "published_runs": ref.runs, "at_least": ref.at_least,
            "delta": delta, "tolerance": tol, "verdict": verdict, "source": ref.source,
            "explanation": ref.explanation, "note": ref.note}


def _num(v, fmt: str = ".1f") -> str:
    return EMPTY if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def reproduction_table(frame: pd.DataFrame) -> Table:
    header = ["method", "dataset", "depth", "suite (mean ± std, n)", "train", "published", "source", "Δ", "tol.",
              "verdict"]
    rows, notes = [], []
    for _, r in frame.iterrows():
        suite = EMPTY if not r["n"] else f"{_num(r['mean'])} ± {_num(r['std'])} (n={r['n']})"
        if r["failed"]:
            suite += f", {r['failed']} failed"
        if r["published"] is not None and not pd.isna(r["published"]):
            pub = _num(r["published"]) + (f" ± {_num(r['published_std'])}" if not pd.isna(r["published_std"]) else "")
            pub += " (1 run)" if r["published_runs"] == 1 else ""
        elif r["at_least"] is not None and not pd.isna(r["at_least"]):
            pub = f"target ≥ {_num(r['at_least'], 'g')}"
        else:
            pub = EMPTY
        delta = EMPTY if pd.isna(r["delta"]) else f"{r['delta']:+.1f}"
        rows.append([r["method"], str(r["dataset"]), str(r["depth"]), suite, _num(r["train"]), pub, r["source"], delta,
                     _num(r["tolerance"]), r["verdict"]])
        for text in (r["explanation"], r["note"]):
            if text:
                notes.append(f"{r['method']}, {r['dataset']}, depth {r['depth']}: {text}")
    counts = frame["verdict"].value_counts().to_dict() if len(frame) else {}
    title = ("Reproduction: the suite in each method's own setting against its published number "
             f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); train: the mean training score "
             "at the selected epoch (a model far below 100 there does not fit its training set)")
    return Table("reproduction", title, header, rows, footnotes=notes, n_label_cols=3)


def reproduction_tables(runs: pd.DataFrame, metric: str = "test_score",
                        refs: Optional[Sequence[Reference]] = None) -> List[Table]:
    """The reproduction table of the references some run matches (nothing when none does): every
    report shows how its runs compare with the published numbers of the same setting."""
    refs = load_references() if refs is None else refs
    frame = reproduction_frame(runs, refs, metric)
    if frame.empty or not (frame["n"] > 0).any():
        return []
    return [reproduction_table(frame[frame["n"] > 0])]
