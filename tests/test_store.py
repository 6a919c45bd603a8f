"""The result store: atomic records, corrupt files treated as pending, export round trip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from bench_suite.record import write_json_atomic
from bench_suite.registry import load_all
from bench_suite.runner.export import records_frame
from bench_suite.runner.session import plan
from bench_suite.runner.store import ResultStore
from bench_suite.runner.worker import WorkerConfig, execute_spec
from bench_suite.spec import resolve_spec

load_all()


def tiny_spec(**kw):
    flat = {"dataset": "csbm", "dataset.nodes": 200, "model": "gcn", "depth": 2, "epochs": 3, **kw}
    return resolve_spec(flat)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store with three real ok records (two models, two seeds)."""
    root = tmp_path_factory.mktemp("store") / "m"
    cfg = WorkerConfig(store_root=str(root), session=uuid.uuid4().hex, matrix="m", threads=1)
    specs = [tiny_spec(seed=0), tiny_spec(seed=1), tiny_spec(model="decoupled", depth=3)]
    outs = [execute_spec(s.canonical, cfg) for s in specs]
    return root, specs, outs, cfg


def test_worker_writes_complete_ok_records_and_skips_finished(filled):
    root, specs, outs, cfg = filled
    store = ResultStore(root)
    assert [o["status"] for o in outs] == ["ok"] * 3
    rec = store.read(specs[2].run_id)
    assert rec["spec"] == specs[2].data and rec["label"] == specs[2].label() and rec["matrix"] == "m"
    assert len(rec["layers"]) == 3 and 0 <= rec["metrics"]["test_acc"] <= 1
    assert rec["started"] <= rec["finished"] and rec["env"]["git_commit"]
    mtime = store.path(specs[0].run_id).stat().st_mtime_ns
    again = execute_spec(specs[0].canonical, WorkerConfig(store_root=str(root), session="other"))
    assert again["skipped"] and store.path(specs[0].run_id).stat().st_mtime_ns == mtime
    assert not list(root.glob(".*.tmp"))


def test_corrupt_and_foreign_files_count_as_pending_and_never_crash(filled, tmp_path):
    root, specs, _, _ = filled
    store = ResultStore(tmp_path / "copy")
    store.root.mkdir()
    for s in specs:
        (store.root / f"{s.run_id}.json").write_bytes(store_path_bytes(root, s.run_id))
    store.path(specs[0].run_id).write_text('{"run_id": "' + specs[0].run_id + '", "status": "o')  # truncated
    other = json.loads(store.path(specs[2].run_id).read_text())
    store.path(specs[1].run_id).write_text(json.dumps(other))  # a record under the wrong name
    (store.root / ".x.json.123.tmp").write_text("{")  # a leftover temp file
    scan = store.scan()
    assert set(scan.corrupt) == {specs[0].run_id, specs[1].run_id}
    assert scan.of(specs[0].run_id) == "pending" and scan.of(specs[2].run_id) == "ok"
    p = plan(specs, store)
    assert p.counts == {"ok": 1, "failed": 0, "timeout": 0, "pending": 2}
    assert [s.run_id for s in p.todo] == [specs[0].run_id, specs[1].run_id]
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.read(specs[0].run_id) is None


def store_path_bytes(root: Path, run_id: str) -> bytes:
    return (root / f"{run_id}.json").read_bytes()


def test_atomic_write_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"a": 2, "b": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(ValueError, match="status"):
        ResultStore(tmp_path).write({"run_id": "x", "status": "done"})


def test_export_csv_and_parquet_round_trip(filled, tmp_path):
    root, specs, _, _ = filled
    failed = dict(json.loads((root / f"{specs[0].run_id}.json").read_text()))
    (root.parent / "junk.json").write_text("not json")  # reported, skipped
    df = records_frame(root.parent)
    assert len(df) == 3 and {"metrics.test_acc", "spec.model.depth", "env.versions.torch"} <= set(df.columns)
    out = subprocess.run([sys.executable, "-m", "bench_suite.cli", "export", str(root.parent), "--csv",
                          str(tmp_path / "o.csv"), "--parquet", str(tmp_path / "o.parquet")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "junk.json" in out.stderr
    csv, pq = pd.read_csv(tmp_path / "o.csv"), pd.read_parquet(tmp_path / "o.parquet")
    assert list(pq.columns) == list(df.columns) == list(csv.columns)
    key = ["run_id", "metrics.test_acc", "metrics.val_loss", "spec.model.depth", "spec.train.seed", "label"]
    pd.testing.assert_frame_equal(pq[key], df[key])
    pd.testing.assert_frame_equal(csv[key], df[key], check_dtype=False)
    assert json.loads(pq.loc[pq.run_id == failed["run_id"], "layers"].iloc[0]) == failed["layers"]
    (root.parent / "junk.json").unlink()


def test_git_state_is_dirty_for_code_changes_not_for_records(tmp_path):
    import subprocess

    from bench_suite.env import git_state

    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = git_state(tmp_path)
    assert len(head) == 40 and not head.endswith("-dirty")
    (tmp_path / "results" / "r.json").unlink()  # a record removed: still clean
    (tmp_path / "results" / "new.json").write_text("{}\n")
    assert git_state(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")  # code changed: dirty
    assert git_state(tmp_path) == head + "-dirty"


def test_a_claim_keeps_other_runners_off_until_released_or_stale(tmp_path, monkeypatch):
    """A live claim turns others away with its holder; released, or left by a process that is gone
    (same host), or untouched for CLAIM_STALE_S (any host), it is taken over."""
    import platform
    import time

    from bench_suite.runner import store as st

    mine, holder = st.try_claim(tmp_path, "r1", "s-a")
    assert mine is not None and holder == {}
    other, holder = st.try_claim(tmp_path, "r1", "s-b")
    assert other is None and holder["session"] == "s-a" and holder["pid"] == os.getpid()
    assert set(st.live_claims(tmp_path)) == {"r1"}
    mine.release()
    again, _ = st.try_claim(tmp_path, "r1", "s-b")
    assert again is not None
    again.release()
    assert st.live_claims(tmp_path) == {}

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    path = tmp_path / ".claims" / "r2"
    path.write_text(json.dumps({"host": platform.node(), "pid": gone.pid, "session": "dead"}))
    taken, _ = st.try_claim(tmp_path, "r2", "s-c")
    assert taken is not None and json.loads(path.read_text())["session"] == "s-c"
    taken.release()

    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "session": "far"}))
    assert st.try_claim(tmp_path, "r2", "s-d")[0] is None  # another host's fresh claim: live
    old = time.time() - st.CLAIM_STALE_S - 5
    os.utime(path, (old, old))
    taken, _ = st.try_claim(tmp_path, "r2", "s-d")  # not touched for too long: its runner is gone
    assert taken is not None
    # the heartbeat keeps a claim fresh while its run lasts
    os.utime(path, (old, old))
    taken.heartbeat(every=0.05)
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5
    taken.release()
    assert not path.exists()


# -- one definition of a valid record ------------------------------------------------------


STUB_MATRIX = """
name: stub
seeds: [0, 1]
fixed: {dataset: csbm, dataset.nodes: 200, model: gcn, depth: 2, epochs: 3}
"""


class InProcess:
    """An executor running each spec in this process (no pool: fast)."""

    def run(self, canonicals, cfg):
        for c in canonicals:
            yield c, execute_spec(c, cfg)


def test_stub_record_is_corrupt_for_status_rerun_by_run_and_skipped_by_report(tmp_path, capsys):
    import io

    from bench_suite.cli import main
    from bench_suite.report.aggregate import load_store
    from bench_suite.runner.matrix import expand_matrix
    from bench_suite.runner.session import run_specs

    mfile = tmp_path / "stub.yaml"
    mfile.write_text(STUB_MATRIX)
    specs = expand_matrix(mfile)
    store = ResultStore(tmp_path / "res" / "stub")
    stub = {"run_id": specs[0].run_id, "status": "ok"}
    store.root.mkdir(parents=True)
    store.path(specs[0].run_id).write_text(json.dumps(stub))

    assert main(["status", str(mfile), "--results", str(tmp_path / "res"), "--json"]) == 0
    out = capsys.readouterr()
    counts = json.loads(out.out)
    assert counts["done"] == 0 and counts["corrupt"] == 1 and counts["pending"] == 2
    assert "spec must be an object" in out.err and specs[0].run_id in out.err

    report = load_store([store.root])
    assert not report.train and [(p, why) for p, why in report.skipped] == [
        (str(store.path(specs[0].run_id)), "not a run record (spec must be an object with dataset, model, train sections)")]

    log = io.StringIO()
    summary = run_specs(specs, store, InProcess(), matrix="stub", progress=False, log=log)
    assert summary.counts["ok"] == 2 and "kept as" in log.getvalue()
    rec = store.read(specs[0].run_id)
    assert rec["status"] == "ok" and 0 <= rec["metrics"]["test_acc"] <= 1 and rec["spec"] == specs[0].data
    aside = store.root / f"{specs[0].run_id}.json.corrupt"
    assert json.loads(aside.read_text()) == stub  # the corrupt file is kept, outside the *.json listing
    assert [p.name for p in store.files()] == sorted(f"{s.run_id}.json" for s in specs)
    assert len(load_store([store.root]).train) == 2


@pytest.mark.parametrize("change,problem", [
    (lambda r: r.pop("spec"), "spec must be an object"),
    (lambda r: r["spec"].pop("train"), "spec must be an object"),
    (lambda r: r["spec"]["model"].pop("name"), "spec.model has no name"),
    (lambda r: r["metrics"].pop("test_acc"), "metrics.test_acc"),
    (lambda r: r["metrics"].update(test_acc="0.8"), "metrics.test_acc"),
    (lambda r: r.update(status="done"), "status 'done'"),
    (lambda r: r.update(run_id=7), "run_id 7"),
    (lambda r: r.update(status="failed"), "a failed record without an error"),
    (lambda r: r.update(run_id="0" * 16), "expected"),
])
def test_record_problem_names_what_is_missing_for_store_status_and_report(filled, tmp_path, change, problem):
    from bench_suite.report.aggregate import load_store
    from bench_suite.record import record_problem

    root, specs, _, _ = filled
    good = json.loads((root / f"{specs[0].run_id}.json").read_text())
    path = tmp_path / f"{specs[0].run_id}.json"
    assert record_problem(good, path) == ""
    bad = json.loads(json.dumps(good))
    change(bad)
    assert problem in record_problem(bad, path)
    if bad.get("run_id") == good["run_id"] or not isinstance(bad.get("run_id"), str):  # write names the file itself
        with pytest.raises(ValueError, match="refusing to write"):
            ResultStore(tmp_path).write(bad)
    path.write_text(json.dumps(bad))
    assert ResultStore(tmp_path).scan().corrupt and not load_store([tmp_path]).train


# -- write errors and leftover temporary files -----------------------------------------------


def _run_cli(tmp_path, monkeypatch, capsys, *argv):
    from bench_suite.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    (tmp_path / "stub.yaml").write_text(STUB_MATRIX)
    code = main(["run", "stub.yaml", "--no-progress", *argv])
    return code, capsys.readouterr().err


def test_results_naming_a_file_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("mine")
    code, err = _run_cli(tmp_path, monkeypatch, capsys, "--results", "afile")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "afile/stub" in err and "Not a directory" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_read_only_results_directory_is_one_line_before_any_run(tmp_path, monkeypatch, capsys):
    import tempfile

    res = tmp_path / "res"
    (res / "stub").mkdir(parents=True)
    (res / "stub").chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode bits: fail the way the kernel does for anyone else
        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(13, "Permission denied", str(Path(dir) / ".write-check.tmp"))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        code, err = _run_cli(tmp_path, monkeypatch, capsys, "--results", "res")
    finally:
        (res / "stub").chmod(0o755)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "cannot write records to res/stub: Permission denied" in err
    assert not list((res / "stub").iterdir())  # no run started, no record


def test_leftover_temp_files_are_swept_on_the_next_run_but_not_fresh_ones(tmp_path):
    import time

    from bench_suite.runner.matrix import expand_matrix
    from bench_suite.runner.session import run_specs

    (tmp_path / "stub.yaml").write_text(STUB_MATRIX)
    specs = expand_matrix(tmp_path / "stub.yaml")[:1]
    store = ResultStore(tmp_path / "res")
    store.root.mkdir()
    old = store.root / f".{specs[0].run_id}.json.k1lled.tmp"
    fresh = store.root / ".other.json.wr1ting.tmp"  # another runner's write in progress
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    run_specs(specs, store, InProcess(), matrix="stub", progress=False, log=open(os.devnull, "w"))
    assert not old.exists() and fresh.exists()
    assert store.read(specs[0].run_id)["status"] == "ok"
