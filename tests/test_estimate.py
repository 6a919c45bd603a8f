"""``bench-suite status --estimate``: finished runs of every store and the throughput cost table."""
from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path

import pytest

from bench_suite.registry import load_all


@pytest.fixture(autouse=True)
def _plugins() -> None:
    load_all()


def _spec(**kw):
    from bench_suite.spec import resolve_spec

    return resolve_spec({"dataset": "cora", "model": "gcn", "depth": 2, "hidden": 64, "seed": 0, **kw})


def _cost_row(spec, epoch_s: float, release: str = "current", measured: str = "2026-12-06T10:00:00") -> dict:
    return {"kind": "throughput", "release": release, "measured": measured, "spec": spec.data,
            "epoch_s_median": epoch_s, "env": {"git_commit": "abc123", "host": "vm"}}


def _record(spec, total_s: float, epochs_run: int, status: str = "ok") -> dict:
    return {"run_id": spec.run_id, "spec": spec.data, "status": status, "label": spec.label(),
            "metrics": {"epochs_run": epochs_run, "test_acc": 0.8}, "timings": {"total_s": total_s},
            **({"error": "planted"} if status != "ok" else {})}


def _cost_rows() -> list:
    return [
        _cost_row(_spec(), 0.010),                                            # A: GCN-2 FP32
        _cost_row(_spec(quant="qlr", bits=4), 0.5, measured="2026-12-01T10:00:00"),  # superseded by B
        _cost_row(_spec(quant="qlr", bits=4), 0.030),                          # B: GCN-2 QLR INT4
        _cost_row(_spec(quant="qlr", bits=4, depth=8), 0.090),                 # B8: GCN-8 QLR INT4
        _cost_row(_spec(model="decoupled", propagation="appnp", depth=10), 0.020),  # C: APPNP-10 FP32
        _cost_row(_spec(sparse_features=True), 0.002),                         # D: GCN-2 FP32, sparse input
        _cost_row(_spec(), 99.0, release="previous"),                          # another release's time: unused
    ]


def _stores(root: Path) -> None:
    """One store with a finished QLR INT2 GCN-2 run (120 epochs); one run of spec version 1 and a
    failed run, which must not count."""
    from bench_suite.runner.store import ResultStore

    qlr2 = _spec(quant="qlr", bits=2)
    ResultStore(root / "a").write(_record(qlr2, 7.0, 120))
    old = _record(qlr2, 1000.0, 5)
    old["spec"] = dict(old["spec"], version=1)
    old["run_id"] = "0" * 16
    ResultStore(root / "v1").write(old)
    ResultStore(root / "b").write(_record(_spec(quant="qlr", bits=2, seed=3), 5000.0, 9, status="failed"))


def test_finished_records_reads_every_store_of_this_spec_version_only(tmp_path) -> None:
    from bench_suite.runner.estimate import finished_records

    _stores(tmp_path)
    recs = list(finished_records(tmp_path))
    assert [(r["timings"]["total_s"], r["metrics"]["epochs_run"]) for r in recs] == [(7.0, 120)]


def test_estimate_from_cost_table_and_finished_runs_gives_hand_computed_seconds(tmp_path) -> None:
    from bench_suite.runner.estimate import CostTable, estimate, finished_records

    _stores(tmp_path)
    costs = CostTable(_cost_rows(), "fake.jsonl")
    pending = [
        _spec(),                                   # cost A x 120 epochs (the finished QLR INT2 run's protocol): 1.2
        _spec(quant="qlr", bits=4),                # cost B (the newer row) x 120: 3.6
        _spec(quant="qlr", bits=4, depth=16, hidden=128),  # B8 x (38/22: the finished runs' depth shape)
                                                   # x (128/64) x 200 (spec maximum): 0.09 x 38/22 x 400
        _spec(quant="qlr", bits=4, depth=4),       # between B and B8: 0.030 + 0.060 x (4-2)/(8-2) = 0.05, x 200: 10
        _spec(quant="qlr", bits=2, seed=1),        # same spec finished: 7
        _spec(quant="qlr", bits=8),                # B (same quantizer, other bits) x 120: 3.6
        _spec(sparse_features=True),               # D, not A: 0.002 x 200 x 0.8 = 0.32 (no finished run of its
                                                   # protocol: the GCN-2 runs of two other protocols trained
                                                   # 120/200 and 200/200 of their budgets, a mean share of 0.8)
        _spec(model="decoupled", propagation="dagnn", depth=20),  # proxy APPNP: 0.020 x 20/10 x 200 = 8
        _spec(model="jknet", depth=4, quant="qat", bits=4),  # proxy GCN, QAT as QLR INT4: 0.05 x 200 = 10
        _spec(dataset="citeseer"),                 # nothing measured or finished on CiteSeer
    ]
    # finished FP32 runs of the 128-wide GCN at depths 2 and 32: 10 and 70 s, so 22 s at depth 8
    # and 38 s at depth 16 (linear between them)
    shape = [_record(_spec(depth=2, hidden=128), 10.0, 200), _record(_spec(depth=32, hidden=128), 70.0, 200)]
    est = estimate(pending, list(finished_records(tmp_path)) + shape, costs)
    assert est.seconds == pytest.approx(1.2 + 3.6 + 0.09 * 38 / 22 * 400 + 10 + 7 + 3.6 + 0.32 + 8 + 10)
    assert est.estimated == 9 and est.records == 3
    assert est.by_level == {"group": 1, "cost": 3, "cost-scaled": 3, "depth": 0, "scaled": 0, "proxy": 2,
                            "dataset": 0, "dense": 0}
    assert est.epochs_from == {"finished": 3, "share": 1, "maximum": 4}
    assert est.unknown == [pending[-1].label()]
    text = est.summary(2)
    assert "at least" in text and "with 2 workers" in text
    assert ("3 cost table, depth/width-scaled (depth: linear between measured depths, beyond them as finished "
            "runs of the architecture scale, else ∝ depth; ∝ hidden)") in text
    assert "1 pending runs not estimated" in text and "not in the total" in text


def test_estimate_without_cost_table_keeps_the_finished_run_levels(tmp_path) -> None:
    from bench_suite.runner.estimate import estimate, finished_records

    _stores(tmp_path)
    est = estimate([_spec(quant="qlr", bits=2, seed=4), _spec(depth=4)], finished_records(tmp_path))
    # the same spec: 7; GCN-4 from the finished GCN-2 (any quantizer), proportional to depth: 14
    assert est.seconds == pytest.approx(7 + 14)
    assert est.by_level["group"] == 1 and est.by_level["scaled"] == 1


def test_a_sparse_feature_run_without_history_is_estimated_as_its_dense_twin(tmp_path) -> None:
    """A dataset stored sparse for the first time (no finished run, no cost row of it): the same run
    with dense features, an upper bound, named as such; nothing dense either: not estimated."""
    from bench_suite.runner.estimate import estimate, finished_records

    _stores(tmp_path)
    est = estimate([_spec(quant="qlr", bits=2, seed=4, sparse_features=True),
                    _spec(dataset="citeseer", sparse_features=True)], finished_records(tmp_path))
    assert est.seconds == pytest.approx(7) and est.by_level["dense"] == 1
    assert est.unknown == [_spec(dataset="citeseer", sparse_features=True).label()]


def test_another_dataset_lends_its_epoch_time_scaled_by_the_dataset_ratio(tmp_path) -> None:
    """Nothing of the architecture on CiteSeer: the per-epoch time of Cora's runs of the same plugins
    (the median over its architectures when CiteSeer's tuned one is not among them), times the epochs
    the pending run trains, times how much slower CiteSeer has been on the configurations both have."""
    from bench_suite.runner.estimate import estimate

    appnp = dict(model="decoupled", propagation="appnp", depth=8)
    finished = [
        _record(_spec(), 10.0, 100), _record(_spec(dataset="citeseer"), 20.0, 100),  # ratio CiteSeer/Cora: 2
        _record(_spec(**appnp, hidden=32), 10.0, 100),   # 0.1 s an epoch
        _record(_spec(**appnp, hidden=16), 60.0, 200),   # 0.3 s an epoch
    ]
    pending = _spec(**appnp, hidden=64, dataset="citeseer", epochs=300)  # an architecture Cora has not run
    est = estimate([pending], finished)
    assert est.by_level["dataset"] == 1
    # epochs: no finished run of its protocol; APPNP-8's two other protocols trained 100 and 200 of
    # their 200 epochs, a mean share of 0.75 of the pending run's 300
    assert est.seconds == pytest.approx(statistics.median([0.1, 0.3]) * 300 * 0.75 * 2)
    assert est.epochs_from == {"finished": 0, "share": 1, "maximum": 0}
    # the same architecture on Cora is preferred to the median of the others
    est = estimate([pending], finished + [_record(_spec(**appnp, hidden=64, epochs=300), 5.0, 50)])
    assert est.seconds == pytest.approx(0.1 * 300 * statistics.mean([0.5, 1.0, 50 / 300]) * 2)
    # a source whose features are stored like the pending run's (sparse) wins over one with more shared
    # configurations and the same architecture, stored dense
    sparse = [_record(_spec(sparse_features=True), 2.0, 100),
              _record(_spec(dataset="citeseer", sparse_features=True), 3.0, 100),  # ratio 1.5
              _record(_spec(**appnp, hidden=32, sparse_features=True), 1.0, 100)]  # 0.01 s an epoch
    est = estimate([_spec(**appnp, hidden=64, dataset="citeseer", epochs=300, sparse_features=True)],
                   finished + [_record(_spec(**appnp, hidden=64, epochs=300), 5.0, 50)] + sparse)
    assert est.by_level["dataset"] == 1
    assert est.seconds == pytest.approx(0.01 * 300 * statistics.mean([0.5, 1.0, 50 / 300, 0.5]) * 1.5)


def test_duration_names_days_beyond_two_days() -> None:
    from bench_suite.runner.estimate import _duration

    assert _duration(0.5) == "30 min" and _duration(0.005) == "18 s"
    assert _duration(10) == "10.0 h"
    assert _duration(60) == "60.0 h (2.5 days)"


def test_status_estimate_prints_the_sources_and_the_runs_not_estimated(tmp_path, capsys) -> None:
    from bench_suite.cli import main

    _stores(tmp_path / "results")
    costs = tmp_path / "results" / "cost" / "throughput.jsonl"
    costs.parent.mkdir()
    costs.write_text("".join(json.dumps(r) + "\n" for r in _cost_rows()))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(textwrap.dedent("""\
        name: est
        seeds: [0, 1]
        fixed: {dataset: cora, model: gcn, depth: 2, hidden: 64, lr: 0.01, weight_decay: 5.0e-4, dropout: 0.5,
                epochs: 200, patience: 100}
        axes:
          quant:
            - {quant: fp32}
            - {quant: qlr, bits: 4}
        include:
          - {dataset: citeseer, model: gcn, depth: 2, seed: 0}
        """))
    assert main(["status", str(matrix), "--results", str(tmp_path / "results"), "--estimate", "2"]) == 0
    out = capsys.readouterr().out
    assert "pending 5" in out
    # 2 seeds x (GCN-2 FP32 0.010 + QLR INT4 0.030) x 120 epochs (no finished run of this protocol; the
    # finished GCN-2 run of another one trained 120 of its 200: a share of 0.6 of these runs' 200)
    assert "at least 10 s of single-worker time for 4 pending runs" in out
    assert "4 cost table, same configuration" in out
    assert "finished runs: 1 ok records of spec version 2" in out
    assert f"cost table {costs}: 5 configurations, measured 2026-12-06, code abc123" in out
    assert "1 pending runs not estimated" in out and "citeseer/gcn/L2/fp32/s0" in out
    assert main(["status", str(matrix), "--results", str(tmp_path / "results"), "--estimate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["estimated_runs"] == 4 and data["not_estimated"] == 1
    assert data["estimated_hours"] == pytest.approx(round(2 * (0.010 + 0.030) * 120 / 3600, 2))
    assert data["estimated_from"]["cost"] == 4 and data["epochs_from"] == {"finished": 0, "share": 4, "maximum": 0}


def test_status_estimate_names_a_missing_cost_table(tmp_path, capsys) -> None:
    from bench_suite.cli import main

    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: est\nseeds: [0]\nfixed: {dataset: cora, model: gcn, depth: 2}\n")
    assert main(["status", str(matrix), "--results", str(tmp_path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "cost table: none" in out and "bench-suite throughput" in out and "1 pending runs not estimated" in out
    assert main(["status", str(matrix), "--results", str(tmp_path), "--estimate", "--costs",
                 str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
