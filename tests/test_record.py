"""The record module: one validity rule for the runner and the report, the atomic writer, the group key
and labels shared by spec and report, and every committed record still read as before."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench_suite import record
from bench_suite.record import (CorruptRecord, failure_record, group_key, is_ok, new_record, read_record,
                                record_problem, run_label, write_json_atomic, write_record)
from bench_suite.registry import load_all
from bench_suite.report.aggregate import load_store, runs_frame
from bench_suite.runner.session import plan
from bench_suite.runner.store import ResultStore
from bench_suite.runner.worker import _finished
from bench_suite.spec import resolve_spec

load_all()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    return resolve_spec({"dataset": "csbm", "model": "gcn", "depth": 2, "quant": "qlr", "bits": 2,
                         "truncation": "bt*", "seed": 3})


def ok_record(spec, **extra):
    return new_record(spec, metrics={"test_acc": 0.75}, layers=[], env={}, **extra)


# -- one validity rule: the runner's done-check and the report's loader agree -----------------------

def runner_and_report(store: ResultStore, run_id: str):
    """(runner counts the run as done, its status in a plan, report counts it as an ok run)."""
    done = _finished(store, run_id, session="another-session") is not None
    runs = runs_frame(load_store([store.root]))
    reported_ok = bool(len(runs)) and bool(((runs["run_id"] == run_id) & (runs["status"] == "ok")).any())
    return done, reported_ok


STUBS = {
    "stub: status only": lambda good: {"run_id": good["run_id"], "status": "ok"},
    "ok without metrics": lambda good: {k: v for k, v in good.items() if k != "metrics"},
    "ok with a text accuracy": lambda good: dict(good, metrics={"test_acc": "0.75"}),
    "spec without train section": lambda good: dict(good, spec={k: v for k, v in good["spec"].items() if k != "train"}),
    "unknown status": lambda good: dict(good, status="done"),
    "unknown kind": lambda good: dict(good, kind="benchmark"),
    "failed without error": lambda good: dict(good, status="failed"),
    "a JSON list": lambda good: [good],
}


@pytest.mark.parametrize("name", sorted(STUBS))
def test_a_stub_record_is_invalid_for_the_runner_and_the_report_alike(tmp_path, spec, name):
    store = ResultStore(tmp_path / "m")
    store.root.mkdir()
    bad = STUBS[name](ok_record(spec))
    store.path(spec.run_id).write_text(json.dumps(bad))
    assert record_problem(bad, store.path(spec.run_id)) and not is_ok(bad)
    assert runner_and_report(store, spec.run_id) == (False, False)
    assert plan([spec], store).todo == [spec] and spec.run_id in store.scan().corrupt
    assert [p for p, _ in load_store([store.root]).skipped] == [str(store.path(spec.run_id))]


def test_a_partial_record_file_is_invalid_for_the_runner_and_the_report_alike(tmp_path, spec):
    store = ResultStore(tmp_path / "m")
    store.root.mkdir()
    text = json.dumps(ok_record(spec))
    store.path(spec.run_id).write_text(text[: len(text) // 2])  # a write cut short (not through write_record)
    with pytest.raises(CorruptRecord, match="unreadable record"):
        read_record(store.path(spec.run_id))
    assert runner_and_report(store, spec.run_id) == (False, False)
    assert plan([spec], store).todo == [spec]


def test_a_valid_ok_record_is_done_for_the_runner_and_counted_by_the_report(tmp_path, spec):
    store = ResultStore(tmp_path / "m")
    store.write(ok_record(spec))
    assert runner_and_report(store, spec.run_id) == (True, True)
    assert plan([spec], store).todo == [] and store.scan().of(spec.run_id) == "ok"


def test_a_record_without_status_counts_the_same_for_the_runner_and_the_report(tmp_path, spec):
    """An older ``bench-suite train`` output (no status) is ok for both, not done for one and not the other."""
    store = ResultStore(tmp_path / "m")
    store.root.mkdir()
    bare = {k: v for k, v in ok_record(spec).items() if k not in ("status", "kind")}
    store.path(spec.run_id).write_text(json.dumps(bare))
    assert is_ok(bare) and runner_and_report(store, spec.run_id) == (True, True)
    with pytest.raises(ValueError, match="without a status"):  # read in every form, written in the current one
        write_record(tmp_path / "again" / f"{spec.run_id}.json", bare)


def test_failed_records_are_valid_but_not_ok(tmp_path, spec):
    try:
        raise FloatingPointError("loss became nan at epoch 3")
    except FloatingPointError as exc:
        rec = failure_record(spec, "failed", exc, "Traceback ...", finished=record.utc_now())
    assert rec["error"] == {"type": "FloatingPointError", "message": "loss became nan at epoch 3",
                            "traceback": "Traceback ..."}
    assert record_problem(rec) == "" and not is_ok(rec)
    store = ResultStore(tmp_path / "m")
    store.write(rec)
    assert runner_and_report(store, spec.run_id) == (False, False)
    assert plan([spec], store).todo == [] and plan([spec], store, retry_failed=True).todo == [spec]


def test_new_record_names_its_kind_spec_label_and_status(spec):
    rec = ok_record(spec)
    assert (rec["kind"], rec["run_id"], rec["spec"], rec["label"], rec["status"]) == (
        "train", spec.run_id, spec.data, "csbm/gcn/L2/qlr-int2-bt*/s3", "ok")
    with pytest.raises(ValueError, match="status='done'"):
        new_record(spec, "done")


def test_speed_records_are_judged_by_the_same_rule(tmp_path):
    from bench_suite.spec import resolve_speed_spec

    older = {"kind": "speed", "impl": "int", "median_ms": 1.5, "run_id": "abc"}  # results/v1/speed: no spec
    assert record_problem(older) == "" and is_ok(older)
    assert "median_ms" in record_problem(dict(older, median_ms=None))
    failed = dict(older, status="failed")
    assert record_problem(failed) == "" and not is_ok(failed)

    speed = resolve_speed_spec({"graph": "tiny", "depth": 2, "hidden": 16, "seed": 3})
    rows = [{"impl": "dgl-fp32", "median_ms": 2.0}, {"impl": "int", "median_ms": 1.0}]
    rec = new_record(speed, measurements=rows, env={})
    assert (rec["kind"], rec["run_id"], rec["label"]) == ("speed", speed.run_id,
                                                          "speed:tiny/gcn/L2/h16/qlr-int2/dynamic/s3")
    assert is_ok(rec, tmp_path / f"{speed.run_id}.json")
    assert "its file name" in record_problem(rec, tmp_path / "speed-x.json")
    assert "measurements" in record_problem(dict(rec, measurements=[]))
    assert "median_ms" in record_problem(dict(rec, measurements=[{"impl": "int", "median_ms": "1.0"}]))
    # a speed record whose spec is not a speed spec is judged as the older form: it lacks an impl at the top
    assert "impl" in record_problem(dict(rec, spec=dict(rec["spec"], kind="train")))
    assert "error" in record_problem(dict(rec, status="failed"))
    assert [r["impl"] for r in record.speed_rows(rec)] == ["dgl-fp32", "int"]
    assert all(r["run_id"] == speed.run_id and r["kind"] == "speed" for r in record.speed_rows(rec))
    assert record.speed_rows(older) == [older]


# -- atomic write ---------------------------------------------------------------------------------

def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_write_that_fails_midway_leaves_the_old_record_and_no_partial_file(tmp_path, spec, monkeypatch):
    path = tmp_path / f"{spec.run_id}.json"
    write_record(path, ok_record(spec))
    before = path.read_bytes()

    def half_then_fail(obj, fh, **kw):
        fh.write(json.dumps(obj)[:20])
        raise TypeError("not JSON serializable")

    monkeypatch.setattr(record.json, "dump", half_then_fail)
    with pytest.raises(TypeError):
        write_record(path, ok_record(spec, extra={"x": 1}))
    assert path.read_bytes() == before and _no_temp_files(tmp_path)


def test_a_full_disk_leaves_no_record_and_no_temporary_file(tmp_path, spec, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record.os, "fsync", full)
    store = ResultStore(tmp_path / "m")
    with pytest.raises(OSError, match="No space left"):
        store.write(ok_record(spec))
    assert not store.path(spec.run_id).exists() and _no_temp_files(store.root)
    assert runner_and_report(store, spec.run_id) == (False, False)


def test_speed_records_of_the_older_form_are_read_but_never_written(tmp_path):
    """A speed record is written as the outcome of its spec (run id = file name), like a training record."""
    older = {"kind": "speed", "impl": "int", "median_ms": 2.0, "run_id": "abc", "status": "ok"}
    with pytest.raises(ValueError, match="without the spec of a speed measurement"):
        write_record(tmp_path / "abc.json", older)
    assert not list(tmp_path.iterdir())


def test_write_json_atomic_creates_the_folder(tmp_path):
    write_json_atomic(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": 1}


# -- group key and labels: one function for spec and report ---------------------------------------

def test_spec_and_report_use_the_same_group_key_and_labels(spec, tmp_path):
    from bench_suite.report import aggregate, render

    assert render.group_key is record.group_key and aggregate.group_key is record.group_key
    assert aggregate.method_label is record.method_label and aggregate.quantizer_label is record.quantizer_label
    assert spec.group_key() == group_key(spec.data) and spec.label() == run_label(spec.data)
    other_seed = resolve_spec({"dataset": "csbm", "model": "gcn", "depth": 2, "quant": "qlr", "bits": 2,
                               "truncation": "bt*", "seed": 4})
    assert other_seed.run_id != spec.run_id and other_seed.group_key() == spec.group_key()
    store = ResultStore(tmp_path / "m")
    store.write(ok_record(spec))
    store.write(ok_record(other_seed))
    runs = runs_frame(load_store([store.root]))
    assert set(runs["group_key"]) == {spec.group_key()}
    assert set(runs["quantizer"]) == {"QLR INT2 BT*"} and set(runs["method"]) == {"gcn"}


# -- every committed record reads and aggregates as before -----------------------------------------

COMMITTED = ["results/reproduce"] + sorted(f"results/v1/{p.name}" for p in (ROOT / "results" / "v1").iterdir()
                                           if p.is_dir() and list(p.glob("*.json")))


@pytest.mark.parametrize("root", COMMITTED)
def test_committed_records_read_and_count_as_stored(root):
    """Counts from the stored JSON itself (kind, status) against what the record module, the store and
    the report make of it."""
    files = sorted((ROOT / root).glob("*.json"))
    stored = [json.loads(p.read_text()) for p in files]
    train = [r for r in stored if r.get("kind", "train") == "train"]
    speed = [r for r in stored if r.get("kind") == "speed"]
    assert all(record_problem(r, p) == "" for r, p in zip(stored, files))
    assert sum(map(is_ok, stored)) == sum(r.get("status", "ok") == "ok" for r in stored)

    store = load_store([ROOT / root])
    assert (len(store.train), len(store.speed), store.skipped) == (len(train), len(speed), [])
    runs = runs_frame(store)
    assert runs["status"].value_counts().to_dict() == pd.Series([r["status"] for r in train]).value_counts().to_dict() \
        if train else runs.empty
    scan = ResultStore(ROOT / root).scan()
    assert not scan.corrupt and scan.status == {r["run_id"]: r["status"] for r in train}
    if train:
        seedless = {json.dumps({**r["spec"], "train": {k: v for k, v in r["spec"]["train"].items() if k != "seed"}},
                               sort_keys=True, separators=(",", ":")) for r in train}
        assert set(runs["group_key"]) == seedless


def test_committed_labels_and_aggregates_are_unchanged():
    """The labels stored in results/reproduce and the aggregates rendered from them
    (reports/reproduce/aggregates.csv) come out the same from today's code."""
    from bench_suite.report.aggregate import aggregate

    import re
    import shutil
    import tempfile

    recs = [json.loads(p.read_text()) for p in sorted((ROOT / "results/reproduce").glob("*.json"))]
    assert all(run_label(r["spec"]) == r["label"] for r in recs)
    expected = pd.read_csv(ROOT / "reports/reproduce/aggregates.csv")
    # the report was rendered from the records finished up to the time its README states; records
    # a runner has added since (in a working copy) are not in it
    newest = re.search(r"newest record finished: (\S+)", (ROOT / "reports/reproduce/README.md").read_text()).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        for p in sorted((ROOT / "results/reproduce").glob("*.json")):
            if json.loads(p.read_text()).get("finished", "") <= newest:
                shutil.copy(p, tmp)
        runs = runs_frame(load_store([Path(tmp)]))
    got = aggregate(runs)
    cols = ["group", "dataset", "method", "quantizer", "bits", "depth", "metric", "n"]
    key = lambda df: df[cols].astype(str).sort_values(cols).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(got), key(expected))
    merged = got.merge(expected, on=["group", "metric"], suffixes=("", "_csv"))
    assert len(merged) == len(expected)
    assert np.allclose(merged["mean"], merged["mean_csv"], rtol=1e-8, atol=1e-9, equal_nan=True)  # CSV: 10 digits
