"""Speed measurements as a kind of spec: a matrix of ``kind: speed`` expands into speed specs, runs
through the runner's worker into the store, resumes, and reports; ``bench-suite speed`` is its
one-off form through the same worker code."""
from __future__ import annotations

import json
from pathlib import Path

from bench_suite.cli import main
from bench_suite.record import is_ok, read_record, speed_rows
from bench_suite.registry import load_all
from bench_suite.runner import worker
from bench_suite.runner.matrix import expand_matrix, load_matrix
from bench_suite.spec import RunSpec, resolve_run, resolve_spec, resolve_speed_spec

load_all()

#: one tiny measurement: the 300-node generated graph, GCN-2 with 16 hidden units
TINY = {"graph": "tiny", "model": "gcn", "depth": 2, "hidden": 16, "repeats": 5, "warmup": 0}
#: fields of a row that the report's speed tables read (bench_suite.report.speed)
REPORTED = {"cpu", "threads", "model", "depth", "hidden", "graph", "bits", "quant", "impl", "median_ms",
            "speedup_vs_dgl", "speedup_vs_fp32", "model_bytes", "fp32_bytes", "compression", "env", "status",
            "finished"}


def write_matrix(folder: Path, name: str = "tiny-speed", **extra) -> Path:
    body = {"name": name, "kind": "speed", "seeds": [0], "fixed": dict(TINY), "axes": {"bits": [4, 2]}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def test_a_speed_matrix_expands_into_speed_specs_with_stable_ids_apart_from_training_ids():
    specs = expand_matrix("speed")
    assert len(specs) == 27 and {s.kind for s in specs} == {"speed"}
    assert [s.run_id for s in expand_matrix("speed")] == [s.run_id for s in specs]  # stable
    assert len({s.run_id for s in specs}) == 27
    # the same keys in another order, or with the defaults spelled out, are the same spec
    first = specs[0].data
    flat = {"ranges": first["measure"]["ranges"], "bits": first["quant"]["bits"], "graph": first["graph"]["name"],
            "repeats": 7, "hidden": 256, "depth": 4, "model": "gcn", "quant": "qlr", "seed": 0, "warmup": 1}
    assert resolve_speed_spec(flat).run_id == specs[0].run_id
    assert resolve_run(dict(flat, kind="speed")).run_id == specs[0].run_id
    # its kind is in the canonical form: without it, the same content hashes to another id, and a
    # training spec (no kind field: the ids of existing records) never has one
    assert json.loads(specs[0].canonical)["kind"] == "speed"
    assert RunSpec.from_dict({k: v for k, v in first.items() if k != "kind"}).run_id != specs[0].run_id
    train = resolve_spec({"dataset": "cora", "model": "gcn", "depth": 4, "hidden": 256, "quant": "qlr", "bits": 2})
    assert "kind" not in train.data and train.kind == "train"
    assert resolve_run({"dataset": "cora", "model": "gcn", "depth": 4, "hidden": 256, "quant": "qlr", "bits": 2,
                        "kind": "train"}).run_id == train.run_id
    assert train.run_id not in {s.run_id for s in specs}
    # a speed matrix takes no tuned training defaults: its specs have no training section, but those whose
    # fake-quant model trains in the tuned protocol (train_protocol: tuned), and no dataset section
    assert all(("train" in s.data) == (s.measure.train_protocol == "tuned") and "dataset" not in s.data for s in specs)
    assert sum("train" in s.data for s in specs) == 3 * 7


def test_timing_the_tuned_fp32_path_leaves_the_ids_of_speed_specs_as_they_were():
    """The tuned FP32 path joins ``int`` without being listed: the default ``impls`` in the canonical
    spec is what it was, and so are the ids (computed before the path was added)."""
    from bench_suite.engine.bench import timed_impls

    assert resolve_speed_spec({}).run_id == "5c81657eb560b83d"
    tiny = resolve_speed_spec(dict(TINY, bits=4))
    assert tiny.run_id == "48c28446146e6993" and tiny.data["measure"]["impls"] == ["dgl-fp32", "suite-fp32", "int"]
    assert resolve_speed_spec({"model": "decoupled", "propagation": "smp", "depth": 10, "hidden": 64}).run_id == \
        "61ba8d1c9ec8bb2f"
    assert timed_impls(["dgl-fp32", "suite-fp32", "int"]) == ["dgl-fp32", "suite-fp32", "fp32-tuned", "int"]
    assert timed_impls(["int", "dgl-fp32"]) == ["fp32-tuned", "int", "dgl-fp32"]
    assert timed_impls(["dgl-fp32"]) == ["dgl-fp32"]  # no integer timing: nothing added
    assert timed_impls(["int", "fp32-tuned"]) == ["int", "fp32-tuned"]  # listed: where it is listed
    listed = resolve_speed_spec(dict(TINY, impls="fp32-tuned,int"))
    assert listed.data["measure"]["impls"] == ["fp32-tuned", "int"] and listed.run_id != tiny.run_id


def test_bad_speed_input_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["speed", "graph=tiny", "modle=gcn"], "'modle'"),  # unknown key
        (["speed", "graph=tiny", "ranges=static"], "ranges='static'"),  # bad value
        (["speed", "graph=tiny", "repeats=2"], "repeats=2"),  # out of range
        (["speed", "graph=tiny", "model=gat"], "model='gat'"),  # a model the engine does not convert
        (["speed", "graph=tiny", "repeats=7", "--repeats", "7"], "given twice"),
    ]
    for argv, named in cases:
        assert main(argv + ["--results", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err and "command line" in err, err
    path = write_matrix(tmp_path, fixed=dict(TINY, impls="int,cuda"))
    assert main(["run", str(path), "--results", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'cuda'" in err and "tiny-speed.yaml" in err and "dgl-fp32" in err
    assert not out.exists()


def test_the_runner_and_the_one_off_command_measure_through_the_same_worker_function(tmp_path, monkeypatch, capsys):
    calls = []
    real = worker.perform

    def spy(spec, **kw):
        calls.append(spec.run_id)
        return real(spec, **kw)

    monkeypatch.setattr(worker, "perform", spy)
    (spec, _) = expand_matrix(load_matrix(write_matrix(tmp_path)))
    store = tmp_path / "results" / "tiny-speed"
    cfg = worker.WorkerConfig(store_root=str(store), session="s1", matrix="tiny-speed", threads=1)
    assert worker.execute_spec(spec.canonical, cfg)["status"] == "ok"
    assert calls == [spec.run_id]
    stored = read_record(store / f"{spec.run_id}.json")
    assert is_ok(stored) and stored["kind"] == "speed" and stored["spec"] == spec.data
    assert stored["matrix"] == "tiny-speed" and stored["label"] == spec.label()
    rows = speed_rows(stored)
    assert [r["impl"] for r in rows] == ["dgl-fp32", "suite-fp32", "fp32-tuned", "int"]
    assert all(REPORTED <= set(r) and r["median_ms"] > 0 and r["run_id"] == spec.run_id for r in rows)
    assert abs(rows[3]["speedup_vs_fp32"] - rows[2]["median_ms"] / rows[3]["median_ms"]) < 0.02
    assert rows[3]["bits"] == 4 and rows[3]["model_bytes"] < rows[3]["fp32_bytes"] and rows[0]["threads"] == 1

    # the one-off form: the same spec from key=value, the same function, the same record form
    one_off = tmp_path / "one-off"
    argv = ["speed"] + [f"{k}={v}" for k, v in TINY.items()] + ["bits=4", "--threads", "1", "--results", str(one_off)]
    assert main(argv) == 0
    assert calls == [spec.run_id, spec.run_id]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in lines] == ["dgl-fp32", "suite-fp32", "fp32-tuned", "int"]
    assert {r["run_id"] for r in lines} == {spec.run_id}
    again = read_record(one_off / f"{spec.run_id}.json")
    assert is_ok(again) and again["spec"] == stored["spec"]
    runner_only = {"matrix", "session", "host", "pid"}
    assert set(stored) - runner_only == set(again) - runner_only


def test_a_speed_matrix_runs_resumes_and_reports_end_to_end(tmp_path, capsys):
    from bench_suite.report.render import render_report

    path = write_matrix(tmp_path)
    results = tmp_path / "results"
    run = ["run", str(path), "--results", str(results), "--workers", "1", "--threads", "1", "--no-progress"]
    assert main(run) == 0
    store = results / "tiny-speed"
    files = sorted(store.glob("*.json"))
    specs = expand_matrix(load_matrix(path))
    assert [p.stem for p in files] == sorted(s.run_id for s in specs)
    assert all(is_ok(read_record(p)) and read_record(p)["kind"] == "speed" for p in files)
    capsys.readouterr()

    assert main(["status", str(path), "--results", str(results), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["total"], counts["done"], counts["pending"]) == (2, 2, 0)

    before = {p: p.read_bytes() for p in files}
    assert main(run) == 0  # resume: nothing left to measure
    assert "2 of 2 runs already finished" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in files} == before

    res = render_report([store], tmp_path / "report", matrices=[path], figures=False)
    assert res.n_speed == 2 and res.not_run == 0
    (table,) = [f for f in res.files if f.startswith("tables/speed_") and f.endswith(".md")]
    text = (tmp_path / "report" / table).read_text()
    assert "| INT4 | qlr | int | 1 |" in text and "| INT2 | qlr | int | 1 |" in text and "tiny" in text
    assert "| speed-up vs DGL | speed-up vs tuned FP32 |" in text and "| fp32-tuned | 2 |" in text
