from __future__ import annotations

import pytest

from bench_suite.registry import RegistryError, load_all
from bench_suite.spec import SPEC_VERSION, SpecError, resolve_spec, spec_from_cli

load_all()


def test_cli_values_are_typed_and_defaults_filled():
    s = spec_from_cli(["dataset=csbm", "model=gcn", "depth=3", "seed=4", "lr=0.05", "hidden=16"])
    d = s.data
    assert d["model"] == {"name": "gcn", "depth": 3, "hidden": 16, "dropout": 0.5, "input_dropout": True, "init": "xavier",
                          "norm": "sym"}
    assert d["train"]["lr"] == 0.05 and d["train"]["seed"] == 4 and d["train"]["epochs"] == 200
    assert d["quant"] == {"name": "fp32", "bits": 32} and d["version"] == SPEC_VERSION


def test_run_id_is_a_content_hash():
    a = resolve_spec({"dataset": "csbm", "model": "gcn", "seed": 0})
    b = resolve_spec({"seed": "0", "model": "gcn", "dataset": "csbm", "hidden": 64})  # same after defaults
    c = resolve_spec({"dataset": "csbm", "model": "gcn", "seed": 1})
    assert a.run_id == b.run_id and a.canonical == b.canonical
    assert a.run_id != c.run_id
    assert a.group_key() == c.group_key()


def test_propagation_params_routed():
    s = resolve_spec({"dataset": "csbm", "model": "decoupled", "depth": 10, "alpha": 0.2})
    assert s.data["propagation"] == {"name": "appnp", "alpha": 0.2}


def test_unknown_key_rejected_with_suggestion():
    with pytest.raises(SpecError, match=r"unknown spec key 'hiden'.*Did you mean 'hidden'"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "hiden": 3}, where="test")


def test_unknown_model_rejected():
    with pytest.raises(RegistryError, match="unknown model 'gnc'.*Did you mean 'gcn'"):
        resolve_spec({"dataset": "csbm", "model": "gnc"})


@pytest.mark.parametrize("bad", [{"depth": 0}, {"depth": 129}, {"depth": "deep"}, {"lr": "fast"}, {"bits": 4}])
def test_bad_values_rejected(bad):
    with pytest.raises(SpecError):
        resolve_spec({"dataset": "csbm", "model": "gcn", **bad})


def test_wrong_type_names_the_key():
    with pytest.raises(SpecError, match="hidden='wide'.*expected int"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "hidden": "wide"})


def test_scientific_notation_parses_as_float():
    s = spec_from_cli(["dataset=csbm", "model=gcn", "weight_decay=5e-3", "lr=1e-2"])
    assert s.data["train"]["weight_decay"] == 0.005 and s.data["train"]["lr"] == 0.01


def test_cli_spec_applies_the_tuned_defaults_like_a_matrix_run():
    from bench_suite.registry import load_all

    load_all()
    args = ["dataset=csbm", "model=gcn", "quant=qat", "bits=8"]
    assert spec_from_cli(args, defaults=True).data["quant"]["momentum"] == 0.1  # baselines/defaults.yaml
    assert spec_from_cli(args).data["quant"]["momentum"] == 0.01  # the constructor's (METHOD.md §3)
    assert spec_from_cli(args + ["momentum=0.5"], defaults=True).data["quant"]["momentum"] == 0.5
    from bench_suite.defaults import apply_defaults  # what a matrix run applies: same keys, same run id

    flat = {"dataset": "csbm", "model": "gcn", "quant": "dq", "bits": 4}
    assert spec_from_cli([f"{k}={v}" for k, v in flat.items()], defaults=True).run_id == \
        resolve_spec(apply_defaults(flat)).run_id
