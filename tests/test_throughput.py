"""``bench-suite throughput``: the basket's tokens, and one tiny run against a previous release."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench_suite.registry import load_all


@pytest.fixture(autouse=True)
def _plugins() -> None:
    load_all()


def test_basket_tokens_resolve_as_the_matrices_write_them() -> None:
    from bench_suite.throughput import BasketError, Config, dataset_flat, model_flat, quant_flat

    assert dataset_flat("cora") == {"dataset": "cora"}
    assert dataset_flat("coauthor-cs") == {"dataset": "coauthor-cs", "sparse_features": True}
    assert dataset_flat("amazon-photo:dense") == {"dataset": "amazon-photo"}
    assert dataset_flat("cora:sparse") == {"dataset": "cora", "sparse_features": True}
    assert model_flat("gcnii-64") == {"model": "gcnii", "depth": 64}
    assert model_flat("appnp-10") == {"model": "decoupled", "propagation": "appnp", "depth": 10}
    assert model_flat("smp-64") == {"model": "decoupled", "propagation": "smp", "depth": 64, "lambda_min": 0}
    assert quant_flat("fp32") == {"quant": "fp32"}
    assert quant_flat("qlr-2-bt*") == {"quant": "qlr", "bits": 2, "truncation": "bt*"}
    assert quant_flat("qlr-frozen-4") == {"quant": "qlr-frozen", "bits": 4}
    assert quant_flat("dq-4") == {"quant": "dq", "bits": 4}
    for bad, needle in ((lambda: model_flat("gcnii"), "NAME-DEPTH"), (lambda: model_flat("gnc-2"), "gcnii"),
                        (lambda: quant_flat("qlr4"), "qlr-4"), (lambda: dataset_flat("cora:csr"), "'csr'")):
        with pytest.raises(BasketError, match=needle):
            bad()
    # the basket's specs are the matrices' specs: tuned defaults applied as a matrix run applies them
    from bench_suite.defaults import apply_defaults
    from bench_suite.spec import resolve_spec

    spec = resolve_spec(apply_defaults(Config("coauthor-cs", "appnp-10", "qlr-2-bt*").flat()))
    d = spec.data
    assert d["dataset"]["sparse_features"] is True and d["propagation"]["name"] == "appnp"
    assert (d["quant"]["name"], d["quant"]["bits"], d["quant"]["truncation"]) == ("qlr", 2, "bt*")
    assert d["train"]["epochs"] == 1000  # APPNP's own protocol (bench_suite/defaults/models.yaml)


def test_throughput_measures_both_releases_and_writes_one_line_each(tmp_path, capsys, monkeypatch) -> None:
    import tempfile

    from bench_suite.cli import main
    from bench_suite.runner.estimate import CostTable

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "t.jsonl"
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the previous release is checked out
    assert main(["throughput", "--datasets", "csbm", "--models", "gcn-2", "--quants", "fp32", "--rounds", "2",
                 "--epochs", "3", "--warmup", "2", "--against", "HEAD", "--out", str(out), "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "csbm/gcn-2/fp32" in text and f"2 rows appended to {out}" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["release"] for r in rows] == ["current", "previous"]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert rows[1]["ref"] == f"HEAD ({head})" and rows[1]["env"]["git_commit"] == head
    for r in rows:
        # 2 rounds of 2 + 3 epochs: the first epoch of each call and the 2 warm-up epochs after it left out
        assert r["samples"] == 2 * 2 and r["warmup"] == 2
        assert r["env"]["torch_threads"] == 1 and r["env"]["cpu"] and r["env"]["host"]
        assert r["spec"]["dataset"]["name"] == "csbm" and r["spec"]["model"]["depth"] == 2
        assert r["epochs_per_s"] == pytest.approx(1 / r["epoch_s_median"])
        assert r["epochs_per_run"] == r["spec"]["train"]["epochs"]  # no finished runs under --results
        assert r["runs_per_hour"] == pytest.approx(3600 / (r["epochs_per_run"] * r["epoch_s_median"]))
    assert rows[0]["speedup_vs_previous"] == pytest.approx(rows[1]["epoch_s_median"] / rows[0]["epoch_s_median"])
    # the temporary worktree of the previous release is gone
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(tmp_path / "tmp") not in listed and not list((tmp_path / "tmp").iterdir())
    # the current release's line is a cost table entry; the previous release's is not
    table = CostTable.from_jsonl(out)
    assert [e.epoch_s for e in table.entries] == [rows[0]["epoch_s_median"]]


def test_a_benchmark_that_dies_keeps_the_rows_of_the_datasets_it_measured(tmp_path, monkeypatch) -> None:
    """Rows are appended dataset by dataset: an error on the second dataset (the kernel's OOM killer
    once ended an hour-long run) leaves the first one's rows in the file."""
    import bench_suite.throughput as tp
    from bench_suite.cli import main

    real = tp.measure
    calls = []

    def dies_on_the_second_dataset(configs, *a, **k):
        calls.append({c.dataset for c in configs})
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(configs, *a, **k)

    monkeypatch.setattr(tp, "measure", dies_on_the_second_dataset)
    out = tmp_path / "t.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        main(["throughput", "--datasets", "csbm", "cora", "--models", "gcn-2", "--quants", "fp32", "--rounds", "1",
              "--epochs", "2", "--against", "none", "--out", str(out), "--results", str(tmp_path)])
    assert calls == [{"csbm"}, {"cora"}]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["config"], r["release"]) for r in rows] == [("csbm/gcn-2/fp32", "current")]
    assert rows[0]["samples"] == 1 and rows[0]["measured"]


def test_warm_up_epochs_are_left_out_of_the_timed_ones() -> None:
    from bench_suite.throughput_worker import timed_epochs

    stamps = [10.0, 18.0, 22.5, 24.0, 25.2, 26.4]  # after epochs 1..6: 8.0, 4.5, 1.5, 1.2, 1.2 s
    assert timed_epochs(stamps, 0) == pytest.approx([8.0, 4.5, 1.5, 1.2, 1.2])
    assert timed_epochs(stamps, 2) == pytest.approx([1.5, 1.2, 1.2])
