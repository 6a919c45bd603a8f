"""The result store: one JSON record per run, ``<root>/<run_id>.json``, written atomically.

A record is written once, by whoever ran the spec (a local worker, a dask worker or a
Slurm job), through a temporary file in the same directory, ``fsync`` and
``os.replace`` — so a killed runner leaves either the whole record or none, and an
interrupted matrix resumes by skipping every run whose record says ``ok``.
What a record holds, when it is valid and how it is read and written is defined in
:mod:`bench_suite.record`, for ``run``, ``status`` and ``report`` alike.  A file that is not a
valid record is corrupt: reported, treated as pending, and moved aside to
``<run_id>.json.corrupt`` by the worker that re-runs it.

Several runners may work on one store at once (two terminals, Slurm jobs on a shared file
system): a worker first *claims* its run, ``<root>/.claims/<run_id>``, created exclusively
and touched every :data:`HEARTBEAT_S` seconds while the run lasts, and removes it once the
record is written.  Another runner skips a run with a live claim.  A claim is stale, and taken
over, when its process is gone (same host) or it has not been touched for :data:`CLAIM_STALE_S`
seconds (any host), so a killed runner never blocks a run.  Two runners judging one stale claim
at the same instant may both run it; the record is still written whole, once per run.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from bench_suite.record import (FINISHED, TRAIN, CorruptRecord, is_run_record, read_record, record_kind,
                                record_status, utc_now, write_record)

#: a running worker touches its claim this often
HEARTBEAT_S = 30.0
#: a claim not touched for this long belongs to a runner that is gone
CLAIM_STALE_S = 120.0


class StoreWriteError(OSError):
    """The store's folder cannot be created or written (read-only, full, ``--results`` naming a file)."""

    def __init__(self, root: Path, exc: OSError) -> None:
        self.root = Path(root)
        self.cause = exc
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
        super().__init__(exc.errno, f"cannot write records to {root}: {exc.strerror or exc}{where}")

    def __str__(self) -> str:  # OSError would prefix "[Errno n]"
        return str(self.args[1])

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.root, self.cause))


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
        """Write ``record`` as ``<run_id>.json`` (:func:`bench_suite.record.write_record`); a record that
        would read back as corrupt is a ValueError naming the store."""
        run_id = record.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"refusing to write record {run_id!r} to {self.root}: "
                             f"not a run record (run_id {run_id!r} is not a non-empty string)")
        return write_record(self.path(run_id), record)

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

    def set_aside(self, run_id: str) -> Optional[Path]:
        """Move the record file of ``run_id`` to ``<run_id>.json.corrupt`` when it is corrupt (the run is
        about to be repeated; the file stays for inspection, outside every ``*.json`` listing).
        Returns the new path, or None when the file is missing or a valid record."""
        path = self.path(run_id)
        try:
            read_record(path)
            return None
        except CorruptRecord:
            if not path.exists():
                return None
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        return aside

    def check_writable(self) -> None:
        """Create the store's folder and a temporary file in it now: an unwritable ``--results`` is one
        :class:`StoreWriteError` before any run instead of a lost record per run."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=self.root)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise StoreWriteError(self.root, exc) from None

    def sweep_temp_files(self, older_than_s: float = CLAIM_STALE_S) -> int:
        """Remove the ``.*.tmp`` files a killed writer left (untouched for ``older_than_s`` seconds, so a
        write in progress by another runner is never cut short); returns how many."""
        if not self.root.is_dir():
            return 0
        n, now = 0, time.time()
        for p in self.root.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def files(self) -> List[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*.json") if not p.name.startswith("."))

    def scan(self) -> StoreScan:
        """The status of every run record: training runs and speed measurements (speed records of the
        older form, without a spec, are no runs of a matrix)."""
        out = StoreScan()
        for p in self.files():
            try:
                rec = read_record(p)
            except CorruptRecord as exc:
                out.corrupt[p.stem] = str(exc)
                continue
            if is_run_record(rec):
                out.status[p.stem] = record_status(rec)
        return out

    def records(self, statuses: Iterable[str] = FINISHED) -> Iterator[Dict[str, Any]]:
        """The valid training records whose status is one of ``statuses`` (a corrupt file is a warning)."""
        wanted = set(statuses)
        for p in self.files():
            try:
                rec = read_record(p)
            except CorruptRecord as exc:
                warnings.warn(str(exc), stacklevel=2)
                continue
            if record_kind(rec) == TRAIN and record_status(rec) in wanted:
                yield rec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def claim_is_live(info: Mapping[str, Any], age_s: float) -> bool:
    """A claim (its JSON and seconds since it was last touched) whose runner is still at work."""
    if age_s > CLAIM_STALE_S:
        return False
    if info.get("host") == platform.node() and isinstance(info.get("pid"), int):
        return _pid_alive(info["pid"])
    return True


class Claim:
    """This process runs ``run_id``: the claim file exists until :meth:`release`; :meth:`heartbeat`
    keeps touching it from a daemon thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()

    def heartbeat(self, every: float = HEARTBEAT_S) -> "Claim":
        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, name=f"claim-{self.path.name}", daemon=True).start()
        return self

    def release(self) -> None:
        self._stop.set()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _claims_dir(root: str | Path) -> Path:
    return Path(root) / ".claims"


def read_claim(root: str | Path, run_id: str) -> Optional[Tuple[Dict[str, Any], float]]:
    """``(claim JSON, seconds since touched)`` of ``run_id``, or None when it has no claim."""
    path = _claims_dir(root) / run_id
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        info = {}  # being written, or garbage: judged by its age alone
    return (info if isinstance(info, dict) else {}), age


def try_claim(root: str | Path, run_id: str, session: str,
              take_over_own: bool = False) -> Tuple[Optional[Claim], Dict[str, Any]]:
    """Claim ``run_id`` for this process: ``(claim, {})``, or ``(None, holder)`` when a live claim of
    another runner holds it (``holder``: its host, pid, session, since).  A stale claim is removed
    and replaced; so is one of the same ``session`` with ``take_over_own`` (a re-submitted run
    whose lost worker, possibly on another host, could not release its claim)."""
    path = _claims_dir(root) / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": platform.node(), "pid": os.getpid(), "session": session, "since": utc_now()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_claim(root, run_id)
            if held is None:
                continue  # released meanwhile: try again
            if claim_is_live(*held) and not (take_over_own and held[0].get("session") == session):
                return None, held[0]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # another runner removed it first
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(mine, fh)
        return Claim(path), {}
    held = read_claim(root, run_id)
    return None, (held[0] if held else {})


def _claims(root: str | Path) -> Iterator[Tuple[Path, Dict[str, Any], bool]]:
    """``(path, claim JSON, live)`` of every claim in the store."""
    d = _claims_dir(root)
    if not d.is_dir():
        return
    for p in d.iterdir():
        held = read_claim(root, p.name)
        if held is not None:
            yield p, held[0], claim_is_live(*held)


def live_claims(root: str | Path) -> Dict[str, Dict[str, Any]]:
    """``run_id -> claim JSON`` of every run some runner is working on now."""
    return {p.name: info for p, info, live in _claims(root) if live}


def sweep_stale_claims(root: str | Path) -> int:
    """Remove the claims left by runners that are gone (e.g. killed after writing their record,
    before removing their claim); returns how many."""
    n = 0
    for p, _, live in _claims(root):
        if not live:
            try:
                os.unlink(p)
                n += 1
            except FileNotFoundError:
                pass
    return n
