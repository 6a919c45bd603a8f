"""Run records: what one run leaves behind, defined once for the runner, the report, export,
``bench-suite train`` and ``bench-suite speed``.

A record is a JSON object.  Its ``kind`` says what produced it; a record without one is a
training record (every record written before the field existed).

* ``kind: "train"`` — one training run (:func:`new_record`, :func:`failure_record`):
  ``run_id`` (the spec's hash, also the file name ``<run_id>.json`` in a store), ``spec``
  (the resolved spec: ``dataset``, ``model`` and ``train`` sections at least, dataset and
  model with a ``name``), ``label`` (:func:`run_label`), ``status`` (one of
  :data:`FINISHED`); when ``ok``: ``metrics`` with a numeric ``test_acc``, ``layers``,
  ``extra``, ``data``, ``timings``, ``env``; otherwise ``error`` (type, message, traceback).
  The runner adds where and when it ran (:func:`runner_fields`) and ``finished``.
* ``kind: "speed"`` — one speed measurement (:func:`bench_suite.engine.bench.run`): the same
  fields as a training record, with the spec of a speed measurement (``kind: speed``,
  :func:`bench_suite.spec.resolve_speed_spec`); when ``ok``: ``measurements``, a list with one
  entry per timed implementation, each with ``impl`` and a numeric ``median_ms`` at least
  (:func:`bench_suite.engine.bench.measure`).  :func:`speed_rows` gives one flat row per
  implementation, what the report's speed tables read.  An older form, one implementation per
  file with ``impl`` and ``median_ms`` at the top and no speed spec (``results/v1/speed/``), is
  read too.

:func:`record_problem` is the one validity rule; a record counts as a finished ``ok`` result
exactly when :func:`is_ok` says so, for the runner's done-check and the report's loader
alike.  Records are read by :func:`read_record` (JSON only) and written by
:func:`write_record` through :func:`write_json_atomic` (temporary file, ``fsync`` of the file,
rename, ``fsync`` of the folder): a reader sees the old file or the new one, never a part.

Reading accepts every earlier form of a record: a training record without ``status`` (the
output of an older ``bench-suite train``) counts as ``ok`` and needs no ``run_id`` or
``train`` section.  Writing produces the current form only.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

from bench_suite.bits import FP32_BITS

if TYPE_CHECKING:  # pragma: no cover
    from bench_suite.spec import RunSpec

TRAIN = "train"
SPEED = "speed"
KINDS = (TRAIN, SPEED)
OK = "ok"
#: the section of each kind of spec that holds its seed
SEED_SECTION = {TRAIN: "train", SPEED: "measure"}
#: statuses a record can carry; a run without a readable record is "pending"
FINISHED = (OK, "failed", "timeout")


class CorruptRecord(ValueError):
    """A record file that is not JSON or not a valid record (:func:`record_problem`); ``problem``
    says why without the path."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable across process boundaries (executors)
        return (type(self), (self.path, self.problem))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- group key and labels

def spec_kind(spec: Mapping[str, Any]) -> str:
    """The kind of run a spec describes (a spec without ``kind`` is a training run's)."""
    return spec.get("kind") or TRAIN


def spec_seed(spec: Mapping[str, Any]) -> int:
    return int(spec[SEED_SECTION.get(spec_kind(spec), TRAIN)]["seed"])


def group_key(spec: Mapping[str, Any]) -> str:
    """Canonical JSON of a spec without its seed: the unit a report aggregates over."""
    d = json.loads(json.dumps(spec))
    part = d.get(SEED_SECTION.get(spec_kind(d), TRAIN))
    if isinstance(part, dict):
        part.pop("seed", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _section(spec: Mapping[str, Any], name: str) -> Dict[str, Any]:
    part = spec.get(name)
    return part if isinstance(part, dict) else {}


def _is_full_precision(quant: Mapping[str, Any]) -> bool:
    return quant.get("name", "fp32") == "fp32" or quant.get("bits", FP32_BITS) == FP32_BITS


def _truncation(quant: Mapping[str, Any]) -> Optional[str]:
    trunc = quant.get("truncation")
    return None if trunc in (None, "", "none") else str(trunc)


def _method(spec: Mapping[str, Any], decoration: str) -> str:
    """``model+propagation<decoration>+transform``."""
    prop, transform = _section(spec, "propagation"), _section(spec, "transform")
    return (str(_section(spec, "model").get("name", "?")) + (f"+{prop['name']}" if prop.get("name") else "")
            + decoration + (f"+{transform['name']}" if transform.get("name") else ""))


def method_label(spec: Mapping[str, Any]) -> str:
    """What a report calls the method: model (+propagation) (+form) (+transform), e.g. ``decoupled+smp(exact)``."""
    prop = _section(spec, "propagation")
    form = prop.get("form", _section(spec, "model").get("form"))
    return _method(spec, f"({form})" if form not in (None, "", "none") else "")


def quantizer_label(spec: Mapping[str, Any]) -> str:
    """What a report calls the quantizer: name + INT bits (+ truncation), e.g. ``QLR INT2 BT*``, or ``FP32``."""
    quant = _section(spec, "quant")
    if _is_full_precision(quant):
        return "FP32"
    trunc = _truncation(quant)
    return f"{str(quant['name']).upper()} INT{quant['bits']}" + (f" {trunc.upper()}" if trunc else "")


def run_label(spec: Mapping[str, Any]) -> str:
    """A short name of one run, e.g. ``cora/gcn+dropedge/L8/qlr-int2-bt*/s0``, or for a speed
    measurement ``speed:arxiv-like/gcn/L4/h256/qlr-int2/calibrated/s0``: the run id tells runs
    apart; the label names the choices a matrix usually varies (propagation, transform, bit
    truncation, SMP's multiplier floor, a measurement's width and ranges) so a listing of runs
    does not repeat one name."""
    prop, quant = _section(spec, "propagation"), _section(spec, "quant")
    floor = prop.get("lambda_min")
    method = _method(spec, f"[lambda_min={floor:g}]" if floor is not None else "")
    trunc = _truncation(quant)
    q = (str(quant.get("name", "fp32")) + ("" if _is_full_precision(quant) else f"-int{quant['bits']}")
         + (f"-{trunc}" if trunc else ""))
    model = _section(spec, "model")
    if spec_kind(spec) == SPEED:
        measure = _section(spec, "measure")
        trained = ("/trained-tuned" if measure.get("train_protocol") == "tuned" else
                   f"/trained{measure['train_epochs']}" if measure.get("train_epochs") else "")
        sums = f"/{measure['sums']}-sums" if measure.get("sums", "exact") != "exact" else ""
        return (f"speed:{_section(spec, 'graph').get('name', '?')}/{method}/L{model.get('depth', '?')}/"
                f"h{model.get('hidden', '?')}/{q}/{measure.get('ranges', '?')}{sums}{trained}/"
                f"s{measure.get('seed', '?')}")
    return (f"{_section(spec, 'dataset').get('name', '?')}/{method}/L{model.get('depth', '?')}/"
            f"{q}/s{_section(spec, 'train').get('seed', '?')}")


# --------------------------------------------------------------------------- construction

def new_record(spec: "RunSpec", status: str = OK, **fields: Any) -> Dict[str, Any]:
    """The record of ``spec`` (a training run or a speed measurement, its ``kind``): kind, run id, spec,
    label and ``status``, then ``fields``."""
    if status not in FINISHED:
        raise ValueError(f"status={status!r} is not a record status; valid: {', '.join(FINISHED)}")
    return {"kind": spec.kind, "run_id": spec.run_id, "spec": spec.data, "label": run_label(spec.data),
            "status": status, **fields}


def failure_record(spec: "RunSpec", status: str, exc: BaseException, traceback: str, **fields: Any) -> Dict[str, Any]:
    """The record of a run that raised, timed out or was lost with its worker: ``error`` names the
    exception's type and message and keeps the traceback."""
    error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback}
    return new_record(spec, status, error=error, **fields)


def runner_fields(*, matrix: str, session: str, started: str) -> Dict[str, Any]:
    """Where a runner ran a record's run: its matrix, session, start time, host and process."""
    return {"matrix": matrix, "session": session, "started": started, "host": platform.node(), "pid": os.getpid()}


# --------------------------------------------------------------------------- validity

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_kind(rec: Mapping[str, Any]) -> Any:
    """The ``kind`` of a record (a record without one is a training record)."""
    return rec.get("kind") or TRAIN


def record_status(rec: Mapping[str, Any]) -> str:
    """The status of a valid record (a record without one, an older ``train`` output, is ``ok``)."""
    return rec.get("status", OK)


def record_problem(rec: Any, path: Optional[Path | str] = None) -> str:
    """Why ``rec`` is not a valid record (read from ``path``, if given), or ``""`` when it is.

    The one validity rule of the suite: the store, ``run``, ``status``, ``export`` and ``report``
    all judge a record by it (the module docstring lists what a record holds)."""
    if not isinstance(rec, dict):
        return f"not a run record (a JSON {type(rec).__name__}, expected an object)"
    kind = record_kind(rec)
    if kind not in KINDS:
        return f"not a run record (kind {kind!r}, expected one of {', '.join(KINDS)})"
    status = record_status(rec)
    if status not in FINISHED:
        return f"not a run record (status {status!r}, expected one of {', '.join(FINISHED)})"
    if kind == SPEED and not _of_a_speed_spec(rec):  # the older form: one implementation per file
        if not isinstance(rec.get("impl"), str) or not _is_number(rec.get("median_ms")):
            return "a speed record without an impl and a numeric median_ms"
        return ""
    bare = kind == TRAIN and "status" not in rec  # an older `bench-suite train` output
    run_id = rec.get("run_id")
    if not bare or run_id is not None:
        if not isinstance(run_id, str) or not run_id:
            return f"not a run record (run_id {run_id!r} is not a non-empty string)"
        if path is not None and run_id != Path(path).stem:
            return f"holds run_id {run_id!r}, expected {Path(path).stem!r} (its file name)"
    spec = rec.get("spec")
    if kind == SPEED:
        return _speed_problem(rec, spec, status)
    sections = ("dataset", "model") if bare else ("dataset", "model", "train")
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k), dict) for k in sections):
        return f"not a run record (spec must be an object with {', '.join(sections)} sections)"
    for k in ("dataset", "model"):
        if not isinstance(spec[k].get("name"), str):
            return f"not a run record (spec.{k} has no name)"
    if status == OK:
        metrics = rec.get("metrics")
        if not isinstance(metrics, dict) or not _is_number(metrics.get("test_acc")):
            return "an ok record without a numeric metrics.test_acc"
    elif not rec.get("error"):
        return f"a {status} record without an error"
    return ""


def _of_a_speed_spec(rec: Mapping[str, Any]) -> bool:
    """A speed record of the current form: the outcome of a speed spec (its ``spec`` has kind speed)."""
    spec = rec.get("spec")
    return isinstance(spec, dict) and spec_kind(spec) == SPEED


def _speed_problem(rec: Mapping[str, Any], spec: Any, status: str) -> str:
    """:func:`record_problem` for a speed record of the current form."""
    if not all(isinstance(spec.get(k), dict) for k in ("graph", "model", "quant", "measure")):
        return "not a run record (a speed spec must have graph, model, quant and measure sections)"
    if status == OK:
        rows = rec.get("measurements")
        if not isinstance(rows, list) or not rows or not all(
                isinstance(r, dict) and isinstance(r.get("impl"), str) and _is_number(r.get("median_ms"))
                for r in rows):
            return "an ok speed record without measurements, each with an impl and a numeric median_ms"
    elif not rec.get("error"):
        return f"a {status} record without an error"
    return ""


def is_ok(rec: Any, path: Optional[Path | str] = None) -> bool:
    """``rec`` is a valid record of a finished, successful run: the runner does not repeat it and the
    report counts it."""
    return not record_problem(rec, path) and record_status(rec) == OK


def is_run_record(rec: Mapping[str, Any]) -> bool:
    """A valid record that is the outcome of a spec (every training record, a speed record with a spec),
    so a store counts it as a run; the older speed records without a spec are not."""
    return record_kind(rec) == TRAIN or _of_a_speed_spec(rec)


def speed_rows(rec: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One flat row per timed implementation of a valid speed record: the record's own fields with
    those of one measurement (``impl``, ``median_ms``, ...); a failed measurement is one row naming
    its configuration, without an ``impl``.  An older record is its own row."""
    if not _of_a_speed_spec(rec):
        return [dict(rec)]
    base = {k: v for k, v in rec.items() if k != "measurements"}
    if rec.get("measurements"):
        return [dict(base, **m) for m in rec["measurements"]]
    spec = rec["spec"]
    model, quant = spec.get("model") or {}, spec.get("quant") or {}
    prop = spec.get("propagation") or {}
    return [dict(base, model=model.get("name"), depth=model.get("depth"), hidden=model.get("hidden"),
                 graph=(spec.get("graph") or {}).get("name"), bits=quant.get("bits"), quant=quant.get("name"),
                 propagation=prop.get("name"), lambda_min=prop.get("lambda_min"))]


# --------------------------------------------------------------------------- reading and writing

def read_record(path: Path | str) -> Dict[str, Any]:
    """The valid record in ``path`` (parsed as JSON, nothing else); :class:`CorruptRecord` naming the
    file and the problem otherwise."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecord(path, f"unreadable record ({exc})") from None
    problem = record_problem(rec, path)
    if problem:
        raise CorruptRecord(path, problem)
    return rec


def record_files(root: Path | str) -> List[Path]:
    """``root`` itself when it is a file, else every ``*.json`` under it (recursively, sorted; hidden
    files, the temporary files of writes in progress, left out)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))


def iter_records(root: Path | str) -> Iterator[Tuple[Path, Optional[Dict[str, Any]], str]]:
    """``(path, record, "")`` for every valid record of :func:`record_files`, ``(path, None, problem)``
    for every other file."""
    for path in record_files(root):
        try:
            yield path, read_record(path), ""
        except CorruptRecord as exc:
            yield path, None, exc.problem


def write_json_atomic(path: Path | str, obj: Any) -> None:
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


def write_record(path: Path | str, rec: Mapping[str, Any]) -> Path:
    """Write ``rec`` to ``path`` atomically; a record that would not read back as valid, or one of an
    older form (a training record without a status, a speed record without a spec), is a ValueError
    and nothing is written."""
    rec = dict(rec)
    problem = record_problem(rec, path)
    if not problem and "status" not in rec:
        problem = f"a {record_kind(rec)} record without a status"
    if not problem and record_kind(rec) == SPEED and not _of_a_speed_spec(rec):
        problem = "a speed record without the spec of a speed measurement"
    if problem:
        raise ValueError(f"refusing to write record {rec.get('run_id')!r} to {path}: {problem}")
    write_json_atomic(path, rec)
    return Path(path)
