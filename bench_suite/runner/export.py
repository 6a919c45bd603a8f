"""Flatten run records into one pandas table (``pandas.json_normalize``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

from bench_suite.record import TRAIN, iter_records, record_kind, record_status

#: list-valued fields kept as JSON text (one row per run)
JSON_COLUMNS = ("layers",)


def load_records(root: str | Path, statuses: Optional[Iterable[str]] = None, warn=sys.stderr) -> List[dict]:
    """The valid training records under ``root`` with a status in ``statuses`` (all when None); a file
    that is not a valid record, or a speed record, is skipped with a warning on ``warn``."""
    if not Path(root).exists():
        raise FileNotFoundError(f"results directory {str(root)!r} does not exist")
    wanted = set(statuses) if statuses else None
    out = []
    for path, rec, problem in iter_records(root):
        if rec is None:
            print(f"warning: skipping {path}: {problem}", file=warn)
        elif record_kind(rec) != TRAIN:
            print(f"warning: skipping {path}: a {record_kind(rec)} record (export writes training records)",
                  file=warn)
        elif wanted is None or record_status(rec) in wanted:
            out.append(rec)
    return out


def records_frame(root: str | Path, statuses: Optional[Iterable[str]] = None):
    """One row per record; nested dicts become dotted columns, ``layers`` stays JSON text."""
    import pandas as pd

    recs = load_records(root, statuses)
    rows = []
    for rec in recs:
        rec = dict(rec)
        for col in JSON_COLUMNS:
            if col in rec:
                rec[col] = json.dumps(rec[col])
        rows.append(rec)
    df = pd.json_normalize(rows, sep=".") if rows else pd.DataFrame({"run_id": [], "status": []})
    for col in df.columns:  # parquet needs one type per column
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and v != v)}
            if len(kinds) > 1 or kinds & {list, dict}:
                df[col] = df[col].map(lambda v: None if v is None else json.dumps(v) if isinstance(v, (list, dict))
                                      else str(v))
    return df.sort_values("run_id", kind="stable").reset_index(drop=True) if len(df) else df
