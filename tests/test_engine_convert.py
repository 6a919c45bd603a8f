"""Conversion: the integer model predicts the fake-quant model's classes (METHOD.md §9)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench_suite.engine.calibration import temporary_quantizer
from bench_suite.engine.convert import RangeRule, convert, fp32_bytes, rule_of
from bench_suite.engine.intmodel import EngineGraph, load
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS, load_all

load_all()


@pytest.fixture(scope="module")
def cora(data_dir):
    from bench_suite.data.datasets import load_dataset

    d = load_dataset("cora", seed=0, data_dir=str(data_dir))
    return d, prepare_graph(d.graph)


def trained(d, g, model: str, key: str, bits: int, epochs: int = 3, params: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"propagation": "appnp"} if model == "decoupled" else {}
    m = MODELS.create(model, in_dim=d.features.shape[1], num_classes=d.num_classes, depth=3,
                      quant=QuantFactory(key, bits, params), **extra)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(g, d.features)[d.train_mask], d.labels[d.train_mask])
        loss.backward()
        opt.step()
    return m.eval()


def agreement(m, d, g) -> tuple:
    with torch.no_grad():
        ref = m(g, d.features).argmax(1).numpy()
    out = convert(m)(EngineGraph.from_dgl(g), d.features.numpy()).argmax(1)
    return float((out == ref).mean()), len(np.unique(ref))


CASES = [("gcn", 8), ("gcn", 4), ("gcn", 2), ("decoupled", 4)]


@pytest.mark.parametrize("model,bits", CASES)
def test_agreement_static_quantizer(cora, model: str, bits: int) -> None:
    d, g = cora
    with temporary_quantizer() as key:
        m = trained(d, g, model, key, bits)
        agree, _ = agreement(m, d, g)
    assert agree >= 0.999, f"{model} at {bits} bits: integer model agrees on {agree:.4%} of nodes"


@pytest.mark.parametrize("model,bits", CASES[:3] + [("decoupled", 2)])
def test_agreement_qlr(cora, model: str, bits: int) -> None:
    d, g = cora
    m = trained(d, g, model, "qlr", bits)
    assert rule_of(m.layers[0].q["message"] if model == "gcn" else m.prop.q[0]["message"]).kind == "scaled_minmax"
    agree, classes = agreement(m, d, g)
    if bits > 2:  # 3 epochs of INT2 QLR on Cora still predict a single class
        assert classes > 1, "degenerate model: one predicted class"
    assert agree >= 0.999, f"{model} at {bits} bits (qlr): integer model agrees on {agree:.4%} of nodes"


def test_save_load_and_size(cora, tmp_path) -> None:
    d, g = cora
    with temporary_quantizer() as key:
        m = trained(d, g, "gcn", key, 2, epochs=2)
        im = convert(m)
    path = tmp_path / "int.pt"
    im.save(path)
    back = load(path)
    eg = EngineGraph.from_dgl(g)
    np.testing.assert_array_equal(back(eg, d.features.numpy()), im(eg, d.features.numpy()))
    stored = torch.load(path, weights_only=False)["state"]
    w0 = stored["linears"][0]["weight"]["data"]
    assert w0.dtype == np.uint8 and w0.size * 4 >= m.layers[0].weight.numel()  # 4 codes per byte
    assert w0.size * 4 < m.layers[0].weight.numel() + 4 * 8 * w0.shape[0]
    assert fp32_bytes(m) / im.nbytes > 14  # INT2, biases in float


def test_rule_probe_rejects_unknown_rule() -> None:
    from bench_suite.quant.base import Quantizer

    class Odd(Quantizer):
        def range_for(self, x):
            return x.min() * 0 - x.abs().mean(), x.max() * 0 + 1.0

    with pytest.raises(ValueError, match="range_rule"):
        rule_of(Odd(4, "message"))
    assert rule_of(type("S", (Odd,), {"range_rule": lambda self: {"kind": "static", "scale": 0.5, "zero": 1.0}})(
        4, "message")) == RangeRule("static", 4, 0.5, 1.0)


def test_speed_cli_prints_json_lines(tmp_path) -> None:
    cmd = [sys.executable, "-m", "bench_suite.cli", "speed", "model=gcn", "graph=tiny", "bits=2", "depth=2",
           "hidden=16", "--threads", "1", "--repeats", "5", "--warmup", "1", "--results", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                                                   "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    # the tuned FP32 path is timed beside the integer model without being listed (the spec's default impls)
    assert [r["impl"] for r in recs] == ["dgl-fp32", "suite-fp32", "fp32-tuned", "int"]
    med = {r["impl"]: r["median_ms"] for r in recs}
    for r in recs:
        assert r["kind"] == "speed" and r["median_ms"] > 0 and r["graph"] == "tiny"
        assert r["median_ms"] == pytest.approx(float(np.median(r["times_ms"])), abs=1e-3)
        # both speed-ups on every row, each the baseline's median over the row's
        # (of the medians before rounding to 3 decimals: the bound of that rounding)
        for key, baseline in (("speedup_vs_dgl", "dgl-fp32"), ("speedup_vs_fp32", "fp32-tuned")):
            ratio = med[baseline] / r["median_ms"]
            tol = ratio * (5e-4 / med[baseline] + 5e-4 / r["median_ms"]) * 1.01 + 5e-4
            assert abs(r[key] - ratio) <= tol, (key, r[key], ratio)
    assert recs[2]["speedup_vs_fp32"] == 1.0 and recs[0]["speedup_vs_dgl"] == 1.0
    assert recs[2]["bits"] == 32 and recs[2]["model_bytes"] == recs[2]["fp32_bytes"]
    assert recs[3]["bits"] == 2 and recs[3]["model_bytes"] < recs[3]["fp32_bytes"]
    # one record of the measurement, named by its run id, as a runner writes it
    (path,) = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    assert {r["run_id"] for r in recs} == {stored["run_id"]} == {path.stem} and {r["path"] for r in recs} == {str(path)}
    assert stored["kind"] == "speed" and [m["median_ms"] for m in stored["measurements"]] == [r["median_ms"] for r in recs]


def test_speed_cli_rejects_bad_key(capsys) -> None:
    from bench_suite.cli import main

    assert main(["speed", "modle=gcn", "graph=tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'modle'" in err and "command line" in err and "Did you mean 'model'" in err


@pytest.mark.parametrize("form,bits", [("exact", 4), ("released", 2), ("exact", 8)])
def test_agreement_smp(cora, form: str, bits: int) -> None:
    """SMP (both forms) converts; λ0 large enough that the λ·L̃Δ / λ·ÂΔ term matters."""
    from bench_suite import smp

    d, g = cora
    torch.manual_seed(0)
    q = QuantFactory("qlr", bits)
    m = MODELS.create("decoupled", in_dim=d.features.shape[1], num_classes=d.num_classes, depth=3, quant=q,
                      propagation="smp")
    m.prop = smp.SMPPropagation(3, q, form=form, lambda0=0.5)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(g, d.features)[d.train_mask], d.labels[d.train_mask]).backward()
        opt.step()
    m.eval()
    im = convert(m)
    assert im.smp["form"] == form and len(im.delta_aggs) == 3
    agree, _ = agreement(m, d, g)
    assert agree >= 0.999, f"smp {form} at {bits} bits: integer model agrees on {agree:.4%} of nodes"


@pytest.mark.parametrize("model,prop", [("gcn", "appnp"), ("decoupled", "appnp"), ("decoupled", "smp")])
def test_dgl_baselines_compute_the_suite_model(model: str, prop: str) -> None:
    """The DGL FP32 baselines are the same function as the suite's FP32 model (same weights)."""
    from bench_suite.engine.bench import DGLAPPNP, DGLGCN, DGLSMP, build, generated

    g0, x, classes = generated("tiny")
    g = prepare_graph(g0)
    torch.manual_seed(0)
    fp = build(model, 3, 16, x.shape[1], classes, QuantFactory(), prop).eval()
    base = (DGLGCN if model == "gcn" else DGLSMP if prop == "smp" else DGLAPPNP)(fp).eval()
    with torch.no_grad():
        torch.testing.assert_close(base(g, x), fp(g, x), rtol=1e-4, atol=1e-5)


def test_speed_on_a_trained_dataset_model_records_accuracy_and_agreement(data_dir, tmp_path, monkeypatch) -> None:
    from bench_suite.engine.bench import measure

    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path))  # trains: no model kept by an earlier run

    recs = measure(model="gcn", depth=2, hidden=16, graph="cora", bits=4, threads=1, repeats=5,
                   impls=("dgl-fp32", "int"), train_epochs=40, data_dir=data_dir)
    dgl_rec, tuned_rec, int_rec = recs
    assert tuned_rec["impl"] == "fp32-tuned" and tuned_rec["speedup_vs_fp32"] == 1.0
    assert int_rec["speedup_vs_fp32"] == pytest.approx(tuned_rec["median_ms"] / int_rec["median_ms"], rel=1e-2)
    assert int_rec["nodes"] == 2708 and int_rec["train_epochs"] == 40 and int_rec["generator"].startswith("dataset")
    assert int_rec["agreement"] >= 0.999
    assert int_rec["int_test_acc"] > 0.5 and abs(int_rec["int_test_acc"] - int_rec["fake_quant_test_acc"]) < 0.01
    assert dgl_rec["speedup_vs_dgl"] == 1.0 and int_rec["median_ms"] > 0


def test_speed_rejects_unknown_graph_and_training_on_generated_graphs(capsys) -> None:
    from bench_suite.cli import main

    assert main(["speed", "graph=arxiv-lik"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arxiv-lik" in err
    assert main(["speed", "graph=tiny", "train_epochs=5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_epochs" in err


def test_smp_lambda_min_is_applied_by_the_integer_model(cora) -> None:
    """With a tiny budget λ falls below 0 after the first step; lambda_min=0 stops it there.
    The integer model must apply the same projection."""
    from bench_suite import smp

    d, g = cora
    torch.manual_seed(0)
    q = QuantFactory("qlr", 8)
    m = MODELS.create("decoupled", in_dim=d.features.shape[1], num_classes=d.num_classes, depth=4, quant=q,
                      propagation="smp")
    m.prop = smp.SMPPropagation(4, q, c=1e-9, eta_lambda=1.0, lambda0=0.5, lambda_min=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m.train()
    for _ in range(3):  # untrained logits are near ties: agreement ~99.7% with or without SMP
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(g, d.features)[d.train_mask], d.labels[d.train_mask]).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        m(g, d.features)
    assert min(m.prop.extra_metrics()["smp_lambda"]) == 0.0  # the projection was active
    im = convert(m)
    assert im.smp["lambda_min"] == 0.0
    agree, _ = agreement(m, d, g)
    m.prop.lambda_min = None  # without the projection the model computes something else
    with torch.no_grad():
        unprojected = m(g, d.features).argmax(1).numpy()
    m.prop.lambda_min = 0.0
    with torch.no_grad():
        projected = m(g, d.features).argmax(1).numpy()
    assert agree >= 0.999, f"integer SMP with lambda_min agrees on {agree:.4%} of nodes"
    assert (unprojected != projected).mean() > 0.01  # so the agreement above tests the projection


@pytest.mark.parametrize("model,truncation", [("gcn", "bt*"), ("gcn", "bt"), ("decoupled", "bt*")])
def test_agreement_qlr_bit_truncation(cora, model: str, truncation: str) -> None:
    """QLR at INT2 with BT/BT* converts (2-bit codes of the 8-bit grid, zero point z/85) and the
    integer model predicts the fake-quant model's classes; trained long enough not to be constant."""
    d, g = cora
    m = trained(d, g, model, "qlr", 2, epochs=30, params={"truncation": truncation})
    q = m.layers[0].q["message"] if model == "gcn" else m.prop.q[0]["message"]
    rule = rule_of(q)
    assert (rule.kind, rule.bits, rule.grid_bits, rule.step) == ("scaled_minmax", 2, 8, 85)
    assert rule.kappa == float(q.kappa)
    agree, classes = agreement(m, d, g)
    assert classes > 1, "degenerate model: one predicted class"
    assert agree >= 0.999, f"{model} INT2 {truncation}: integer model agrees on {agree:.4%} of nodes"
    im = convert(m)
    w = (im.linears[0].weight)
    assert w.bits == 2 and not float(w.zero).is_integer() and w.codes().max() <= 3


def test_train_briefly_trains_alpha_at_the_suite_quant_lr(cora) -> None:
    """The speed benchmark's training uses the suite's optimiser: QLR's α moves by Adam's first step of
    lr 1e-4 from its grid value (multiples of 0.02 at INT4), not by the weights' 0.01."""
    from bench_suite.engine.bench import train_briefly

    d, _ = cora
    torch.manual_seed(0)
    m = MODELS.create("gcn", in_dim=d.features.shape[1], num_classes=d.num_classes, depth=2, hidden=16,
                      quant=QuantFactory("qlr", 4))
    w0 = m.layers[0].weight.detach().clone()
    train_briefly(m, d, 1)
    alphas = np.array([float(q.alpha) for q in m.modules() if hasattr(q, "alpha")])
    off_grid = np.abs(alphas - np.round(alphas / 0.02) * 0.02)
    assert len(alphas) == 12 and off_grid.max() <= 1.01e-4 and off_grid.max() > 5e-5
    assert float((m.layers[0].weight - w0).abs().max()) > 5e-3  # the weights at lr 0.01


def test_speed_dgl_smp_baseline_applies_lambda_min() -> None:
    """``speed lambda_min=0``: the DGL SMP baseline projects λ as the suite's SMP does."""
    from bench_suite.engine.bench import DGLSMP, build, generated

    g0, x, classes = generated("tiny")
    g = prepare_graph(g0)
    torch.manual_seed(0)
    fp = build("decoupled", 6, 16, x.shape[1], classes, QuantFactory(), "smp", lambda_min=0.0).eval()
    fp.prop.c, fp.prop.eta_lambda, fp.prop.lambda0 = 1e-9, 1.0, 0.5  # λ falls below 0 after one step
    base = DGLSMP(fp).eval()
    with torch.no_grad():
        ref = fp(g, x)
        torch.testing.assert_close(base(g, x), ref, rtol=1e-4, atol=1e-5)
        assert min(fp.prop.extra_metrics()["smp_lambda"]) == 0.0
        base.smp["lambda_min"] = None  # without the projection the baseline computes something else
        assert not torch.allclose(base(g, x), ref, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="lambda_min"):
        build("gcn", 2, 16, x.shape[1], classes, QuantFactory(), "appnp", lambda_min=0.0)


def test_tuned_protocol_speed_spec_holds_the_matrix_runs_training_and_its_errors() -> None:
    from bench_suite.defaults import apply_defaults
    from bench_suite.spec import SpecError, resolve_speed_spec, resolve_spec

    spec = resolve_speed_spec({"graph": "cora", "bits": 2, "truncation": "bt*", "train_protocol": "tuned",
                               "dropout": 0.5})
    run = resolve_spec(apply_defaults({"dataset": "cora", "model": "gcn", "depth": 4, "hidden": 256, "quant": "qlr",
                                       "bits": 2, "truncation": "bt*", "seed": 0, "dropout": 0.5})).data
    d = spec.data
    assert d["train"] == run["train"] and d["quant"] == run["quant"]
    assert d["model"] == run["model"] and d["model"]["dropout"] == 0.5  # the speed spec's own key wins
    assert d["model"]["init"] == run["model"]["init"] != "xavier"  # a tuned key the brief protocol leaves at default
    brief = resolve_speed_spec({"graph": "cora", "bits": 2, "truncation": "bt*", "train_epochs": 100})
    assert "train" not in brief.data and "train_protocol" not in brief.data["measure"]  # ids of old records kept
    assert spec.run_id != brief.run_id and spec.label().endswith("/trained-tuned/s0")
    for bad, needle in (({"graph": "arxiv-like", "train_protocol": "tuned"}, "generated"),
                        ({"graph": "cora", "train_protocol": "tuned", "train_epochs": 5}, "drop train_epochs"),
                        ({"graph": "cora", "train_protocol": "long"}, "brief, tuned")):
        with pytest.raises(SpecError, match=needle):
            resolve_speed_spec(bad)


def test_speed_trains_an_int2_model_that_works_in_the_tuned_protocol(data_dir, tmp_path, monkeypatch) -> None:
    """The speed matrix's INT2 BT* model (GCN-4, 256 hidden) trained briefly (100 epochs of the default
    TrainConfig) predicts few classes on Cora (16.2% test accuracy in results/speed); the suite's own
    protocol (400 epochs, its learning rate, weight decay, dropout and initialisation) trains it (75.0%;
    2026-12-07)."""
    from bench_suite.engine.bench import measure

    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path))  # trains: no model kept by an earlier run
    recs = measure(model="gcn", depth=4, hidden=256, graph="cora", bits=2, truncation="bt*", threads=1, repeats=5,
                   impls=("int",), train_protocol="tuned", ranges="calibrated", data_dir=data_dir)
    int_rec = recs[-1]
    assert int_rec["impl"] == "int" and int_rec["train_protocol"] == "tuned" and int_rec["train_epochs_run"] == 400
    assert int_rec["trained"] == "trained"
    assert int_rec["fake_quant_test_acc"] > 0.6 and int_rec["agreement"] >= 0.999


@pytest.mark.parametrize("bits", [4, 2])
def test_speed_keeps_the_trained_model_and_a_later_measurement_loads_the_same_one(data_dir, tmp_path,
                                                                                  monkeypatch, bits) -> None:
    from bench_suite.engine.bench import measure

    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path))
    keys = dict(model="gcn", depth=2, hidden=16, graph="cora", bits=bits, repeats=5, impls=("int",),
                train_epochs=30, data_dir=data_dir)
    first = measure(threads=2, ranges="dynamic", **keys)[-1]
    files = sorted(p.name for p in (tmp_path / "speed-trained").iterdir())
    assert first["trained"] == "trained" and len(files) == 2 and files[0].endswith(".json")
    # another measurement of that model (the other range mode, one thread) trains nothing: the weights load
    again = measure(threads=1, ranges="dynamic", **keys)[-1]
    assert again["trained"] == f"cache {files[0][:-5]}"
    for k in ("fake_quant_test_acc", "int_test_acc", "agreement"):
        assert again[k] == first[k]
    other = measure(threads=1, ranges="dynamic", **dict(keys, train_epochs=31))[-1]
    assert other["trained"] == "trained" and len(list((tmp_path / "speed-trained").iterdir())) == 4
