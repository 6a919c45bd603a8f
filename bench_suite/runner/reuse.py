"""``bench-suite run --reuse DIR``: take finished runs of the same spec from another matrix's results.

Run ids are a hash of the whole resolved spec, so two matrices that share a configuration
(e.g. ``depth``'s and ``depth-quant``'s FP32 GCNII runs) share run ids.  Records live per
matrix directory, so without this the second matrix trains those runs again and gets the
same numbers (fixed seeds give identical CPU results).  With it, an ``ok`` record found in
DIR under the same run id, whose stored spec is the same spec, is copied into the matrix's
store instead of running.  The copy keeps everything the original run recorded (metrics,
timings, versions, environment, session) and adds ``reused``: where it came from and when.
Failed and timed-out records are never reused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bench_suite.record import CorruptRecord, is_ok, read_record, run_label, utc_now
from bench_suite.runner.store import ResultStore
from bench_suite.spec import RunSpec


def check_sources(dirs: Sequence[str | Path], target: ResultStore, where: str = "--reuse") -> List[Path]:
    """The source directories, each an existing directory other than ``target`` (else a ValueError naming it)."""
    out = []
    for d in dirs:
        p = Path(d)
        if p.resolve() == target.root.resolve():
            raise ValueError(f"{where} {d!r} is the matrix's own results directory {str(target.root)!r}; "
                             f"give another matrix's results directory")
        if not p.is_dir():
            raise ValueError(f"{where} {d!r}: no such results directory (give a matrix's results directory, "
                             f"e.g. results/depth)")
        out.append(p)
    return out


def _same_spec(record: Dict, spec: RunSpec) -> bool:
    """The record stores exactly ``spec`` (not only a file of the same name)."""
    stored = record.get("spec")
    return isinstance(stored, dict) and RunSpec.from_dict(stored).canonical == spec.canonical


def find_reusable(specs: Sequence[RunSpec], sources: Sequence[Path]) -> Dict[str, Tuple[Path, Dict]]:
    """``run_id -> (path, record)`` for every spec that some source holds as an ``ok`` record of the same
    spec (the first source that has it wins)."""
    found: Dict[str, Tuple[Path, Dict]] = {}
    for spec in specs:
        for src in sources:
            path = src / f"{spec.run_id}.json"
            if not path.is_file():
                continue
            try:
                rec = read_record(path)
            except CorruptRecord:
                continue
            if is_ok(rec) and _same_spec(rec, spec):
                found[spec.run_id] = (path, rec)
                break
    return found


def reuse_records(specs: Sequence[RunSpec], store: ResultStore, sources: Sequence[Path], matrix: str) -> List[str]:
    """Copy into ``store`` the reusable record of every spec in ``specs``; returns the run ids copied.

    Call it with the pending specs only: a record the store already has is never replaced.
    """
    by_id = {s.run_id: s for s in specs}
    copied = []
    for run_id, (path, rec) in find_reusable(specs, sources).items():
        if store.path(run_id).exists():
            continue
        copy = dict(rec)
        copy["reused"] = {"from": str(path), "matrix": rec.get("matrix", ""), "session": rec.get("session", ""),
                          "copied": utc_now()}
        copy["matrix"] = matrix
        copy["label"] = run_label(by_id[run_id].data)
        store.write(copy)
        copied.append(run_id)
    return copied
