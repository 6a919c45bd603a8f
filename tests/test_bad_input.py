"""Bad values on the command line: one line naming the value, exit 2, before any work, nothing written."""
from __future__ import annotations

import json
from typing import Annotated

import pytest

from bench_suite.cli import main
from bench_suite.data import datasets as D
from bench_suite.registry import MODELS, Range, RegistryError, load_all
from bench_suite.spec import SpecError, resolve_spec

load_all()

TRAIN = ["train", "dataset=csbm", "dataset.nodes=200", "model=gcn"]
MATRIX = "name: bad\nseeds: [0]\nfixed: {dataset: csbm, dataset.nodes: 200, model: gcn, depth: 2, epochs: 2}\n"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)`` run in ``tmp_path`` with a private dataset cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    (tmp_path / "bad.yaml").write_text(MATRIX)
    D.clear_memory_cache()

    def run(*argv: str):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    D.clear_memory_cache()


def assert_refused(result, *needles: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    assert out == ""


@pytest.mark.parametrize("arg,needles", [
    ("hidden=0", ("hidden=0", ">= 1", "model 'gcn'")),
    ("epochs=0", ("epochs=0", ">= 1", "training")),
    ("epochs=-3", ("epochs=-3", ">= 1")),
    ("lr=-0.01", ("lr=-0.01", ">= 0")),
    ("weight_decay=-1e-4", ("weight_decay=-0.0001", ">= 0")),
    ("patience=-1", ("patience=-1", ">= 0")),
    ("dropout=1.5", ("dropout=1.5", "in 0..1")),
    ("lr=nan", ("lr=nan",)),
])
def test_train_rejects_out_of_range_values(cli, arg, needles):
    assert_refused(cli(*TRAIN, arg), *needles)


def test_train_rejects_a_key_given_twice(cli):
    assert_refused(cli(*TRAIN, "depth=2", "depth=3"), "'depth'", "twice", "depth=2", "depth=3")


@pytest.mark.parametrize("argv,needles", [
    (["--timeout", "-5"], ("--timeout -5", "positive")),
    (["--timeout", "0"], ("--timeout 0", "positive")),
    (["--workers", "-1"], ("--workers=-1", ">= 0", "executor 'local'")),
    (["--threads", "-1"], ("--threads=-1", ">= 0")),
    (["depth=2", "depth=3"], ("'depth'", "twice")),
    (["hidden=0"], ("hidden=0", ">= 1")),
    (["epochs=0"], ("epochs=0",)),
    (["patience=-1"], ("patience=-1",)),
])
def test_run_rejects_bad_values_before_writing_anything(cli, tmp_path, argv, needles):
    assert_refused(cli("run", "bad.yaml", "--results", "res", "--no-progress", *argv), *needles)
    assert not (tmp_path / "res").exists()


def test_run_stops_before_the_first_run_on_a_truncated_dataset_file(cli, tmp_path, data_dir):
    data = tmp_path / "data" / "cora"
    data.mkdir(parents=True)
    for f in (data_dir / "cora").iterdir():
        (data / f.name).symlink_to(f)
    (data / "ind.cora.allx").unlink()
    (data / "ind.cora.allx").write_bytes((data_dir / "cora" / "ind.cora.allx").read_bytes()[:5000])
    (tmp_path / "cora.yaml").write_text(MATRIX.replace("csbm, dataset.nodes: 200", "cora"))
    assert_refused(cli("run", "cora.yaml", "--results", "res", "--no-progress", "--data-dir", str(tmp_path / "data")),
                   "'cora'", "could not be read", "ind.cora.allx")
    assert not (tmp_path / "res").exists()


def test_range_declared_in_a_plugin_signature_is_checked(tmp_path):
    """A plugin declares a range with ``Annotated[…, Range]``; a conventional name (hidden) needs none."""

    class Ranged:
        def __init__(self, in_dim, num_classes, depth, quant, hidden: int = 8,
                     temperature: Annotated[float, Range(0.5, 2.0)] = 1.0, hops: int = -1):
            pass

    MODELS.register("_ranged", Ranged)
    try:
        assert {p.name: p.range for p in MODELS.params("_ranged")} == {
            "hidden": Range(1), "temperature": Range(0.5, 2.0), "hops": None}
        with pytest.raises(SpecError, match=r"temperature=3\.0 .*out of range for model '_ranged': use a value in 0.5..2"):
            resolve_spec({"dataset": "csbm", "model": "_ranged", "temperature": 3})
        with pytest.raises(SpecError, match="hidden=0"):
            resolve_spec({"dataset": "csbm", "model": "_ranged", "hidden": 0})
        assert resolve_spec({"dataset": "csbm", "model": "_ranged", "temperature": 2, "hops": -5}).data[
            "model"]["temperature"] == 2.0
        with pytest.raises(RegistryError, match="temperature=0.1"):
            MODELS.create("_ranged", in_dim=1, num_classes=2, depth=2, quant=None, temperature=0.1)
    finally:
        MODELS.unregister("_ranged")


def test_values_at_the_bounds_are_accepted():
    spec = resolve_spec({"dataset": "csbm", "model": "gcn", "hidden": 1, "epochs": 1, "lr": 0, "weight_decay": 0,
                         "patience": 0, "dropout": 0})
    assert spec.data["model"]["hidden"] == 1 and spec.data["train"]["patience"] == 0
    assert json.loads(spec.canonical)["train"]["lr"] == 0.0
