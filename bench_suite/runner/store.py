"""The result store: one JSON record per run, ``<root>/<run_id>.json``, written atomically.

A record is written once, by whoever ran the spec (a local worker, a dask worker or a
Slurm job), through a temporary file in the same directory, ``fsync`` and
``os.replace`` — so a killed runner leaves either the whole record or none, and an
interrupted matrix resumes by skipping every run whose record says ``ok``.
A file that cannot be read as a record is reported and treated as pending.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

#: statuses a record can carry; anything without a readable record is "pending"
FINISHED = ("ok", "failed", "timeout")
STATUSES = FINISHED + ("pending",)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class CorruptRecord(ValueError):
    """A record file that is not valid JSON or lacks the record keys."""


def read_record(path: Path) -> Dict[str, Any]:
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecord(f"{path}: unreadable record ({exc})") from None
    if not isinstance(rec, dict) or rec.get("status") not in FINISHED or "run_id" not in rec:
        raise CorruptRecord(f"{path}: not a run record (needs run_id and status in {FINISHED})")
    if rec["run_id"] != Path(path).stem:
        raise CorruptRecord(f"{path}: holds run_id {rec['run_id']!r}, expected {Path(path).stem!r}")
    return rec


@dataclass
class StoreScan:
    """Status of every record file in a store directory."""

    status: Dict[str, str] = field(default_factory=dict)  # run_id -> ok/failed/timeout
    corrupt: Dict[str, str] = field(default_factory=dict)  # run_id -> reason

    def of(self, run_id: str) -> str:
        return self.status.get(run_id, "pending")


class ResultStore:
    """Run records of one matrix under ``root`` (``results/<matrix-name>/`` by default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def write(self, record: Mapping[str, Any]) -> Path:
        if record.get("status") not in FINISHED or not record.get("run_id"):
            raise ValueError(f"record must have run_id and status in {FINISHED}, got "
                             f"run_id={record.get('run_id')!r} status={record.get('status')!r}")
        path = self.path(record["run_id"])
        write_json_atomic(path, dict(record))
        return path

    def read(self, run_id: str) -> Optional[Dict[str, Any]]:
        """The record of ``run_id``; None when missing or corrupt (a warning names the file)."""
        path = self.path(run_id)
        if not path.exists():
            return None
        try:
            return read_record(path)
        except CorruptRecord as exc:
            warnings.warn(f"{exc}; treating the run as pending", stacklevel=2)
            return None

    def files(self) -> List[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*.json") if not p.name.startswith("."))

    def scan(self) -> StoreScan:
        out = StoreScan()
        for p in self.files():
            try:
                out.status[p.stem] = read_record(p)["status"]
            except CorruptRecord as exc:
                out.corrupt[p.stem] = str(exc)
        return out

    def records(self, statuses: Iterable[str] = FINISHED) -> Iterator[Dict[str, Any]]:
        wanted = set(statuses)
        for p in self.files():
            try:
                rec = read_record(p)
            except CorruptRecord as exc:
                warnings.warn(str(exc), stacklevel=2)
                continue
            if rec["status"] in wanted:
                yield rec


def iter_record_files(root: str | Path) -> Iterator[Tuple[Path, Optional[Dict[str, Any]], str]]:
    """Every ``*.json`` under ``root`` (recursively): ``(path, record or None, problem)``."""
    root = Path(root)
    if root.is_file():
        paths = [root]
    else:
        paths = sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
    for p in paths:
        try:
            yield p, read_record(p), ""
        except CorruptRecord as exc:
            yield p, None, str(exc)
