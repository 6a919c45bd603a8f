"""The fused SMP step (:func:`bench_suite.engine.kernels.smp_step_pre`, ``smp_step_post``) equals the
unfused one to the bit: every step's X̃, Δ, X, T(Δ) and every packed message code; the integer SMP model
takes it, when ``fuse`` is set (off by default: not faster yet), exactly when a step's ranges after its sums
are static and its sums exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bench_suite.engine.intmodel as IM
from bench_suite import smp
from bench_suite.engine.bench import build, calibrate, graph_inputs
from bench_suite.engine.convert import convert
from bench_suite.engine.intmodel import PACK, SMP, SMP_FUSED, EngineGraph
from bench_suite.engine.profile import profiling
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all
from test_engine_fused import hub_graph

load_all()
F32 = np.float32
STEPS = 3


def smp_model(g0, x, classes, quant: str, bits: int, truncation, form: str):
    """A decoupled SMP model (K = :data:`STEPS`, hidden 24) with λ0 = 0.5, so that the λ·L̃Δ (λ·ÂΔ) term
    moves X, its quantizers' ranges and QLR's α set by one training-mode pass (untrained)."""
    torch.manual_seed(bits)
    q = QuantFactory(quant, bits, {"truncation": truncation} if truncation else None)
    m = build("decoupled", STEPS, 24, x.shape[1], classes, q, "smp")
    m.prop = smp.SMPPropagation(STEPS, q, form=form, lambda0=0.5)
    calibrate(m, g0, x, 0)
    m.eval()
    return m


def step_values(monkeypatch, im, eg, x) -> dict:
    """Every step's X̃, Δ, X and T(Δ) and the packed message codes in the order the aggregations read
    them (X, Δ, X, Δ, …), from one pass, with the stages that ran."""
    seen = {"xt": [], "delta": [], "x": [], "t": [], "codes": []}
    real = IM.stage

    def recording(name, fn, *args, **kw):
        out = real(name, fn, *args, **kw)
        if name == PACK:
            seen["codes"].append(out)
        elif fn is IM.K.smp_pre or fn is IM.K.smp_step_pre:
            seen["xt"].append(out[0])
            seen["delta"].append(out[1])
            if fn is IM.K.smp_step_pre:
                seen["codes"].append(out[2])
        elif fn is IM.K.smp_post:
            seen["t"].append(out[3])
        elif fn is IM.K.fq_rows:
            seen["x"].append(out[0])
        elif fn is IM.K.smp_step_post:
            seen["x"].append(out[0])
            seen["t"].append(out[2])
            if out[1] is not None:
                seen["codes"].append(out[1])
        return out

    monkeypatch.setattr(IM, "stage", recording)
    with profiling() as st:
        out = im(eg, x)
    monkeypatch.setattr(IM, "stage", real)
    np.testing.assert_array_equal(out.view(np.uint8), seen["x"][-1].view(np.uint8))
    return {**seen, "calls": dict(st.calls)}


def assert_fused_equals_unfused(monkeypatch, im, eg, x, fused_steps: int) -> dict:
    """Fused and unfused passes of ``im`` give the same values, bit for bit; ``fused_steps`` steps fused."""
    im.fuse = True
    fused = step_values(monkeypatch, im, eg, x)
    im.fuse = False
    two = step_values(monkeypatch, im, eg, x)
    im.fuse = True
    assert im.fused_layers() == fused_steps
    assert fused["calls"].get(SMP_FUSED, 0) == 2 * fused_steps and SMP_FUSED not in two["calls"]
    assert fused["calls"].get(SMP, 0) == 3 * (STEPS - fused_steps)
    for key in ("xt", "delta", "x", "t", "codes"):
        assert len(fused[key]) == len(two[key]) == (2 * STEPS if key == "codes" else STEPS), key
        for k, (a, b) in enumerate(zip(fused[key], two[key])):
            if key == "t":
                assert a == b and a != 0, f"T(Δ) of step {k}: {a!r} != {b!r}"
            else:
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=f"{key} {k}")
    for codes in fused["codes"]:
        assert len(np.unique(codes)) > 1, "one packed byte value: nothing compared"
    return fused


QUANTS = [("qlr", 8, None), ("qlr", 4, None), ("qlr", 2, None), ("qlr", 2, "bt*")]


@pytest.fixture(scope="module", params=["cora", "small"])
def graph(request, data_dir):
    """Cora (7 classes: the INT8 register kernel and INT4/INT2 SWAR rows) and the generated power-law
    graph with 40 classes (uint16 vector rows at every bit width)."""
    g0, x, classes, _ = graph_inputs(request.param, 0, data_dir)
    return g0, EngineGraph.from_dgl(prepare_graph(g0)), x, (classes if request.param == "cora" else 40)


@pytest.mark.parametrize("form", ["exact", "released"])
@pytest.mark.parametrize("quant,bits,truncation", QUANTS)
def test_calibrated_smp_fused_equals_unfused(monkeypatch, graph, quant, bits, truncation, form) -> None:
    """QLR INT8/4/2 and INT2 BT*, both SMP forms, ranges calibrated on the graph: every step fuses and
    every intermediate, T(Δ) and code is the unfused pass's."""
    g0, eg, x, classes = graph
    m = smp_model(g0, x, classes, quant, bits, truncation, form)
    xn = x.numpy()
    im = convert(m, calibrate_on=(eg, xn))
    assert im.smp["form"] == form and not im.fuse and im.fused_layers() == 0  # off unless asked for
    assert_fused_equals_unfused(monkeypatch, im, eg, xn, fused_steps=STEPS)


@pytest.mark.parametrize("quant,bits,truncation", [("qat", 4, None), ("dq", 8, None), ("qlr", 2, "bt*")])
def test_fused_smp_on_rows_past_every_lane_limit(monkeypatch, quant, bits, truncation) -> None:
    """The hub graph of the GCN test (a row of 21949 neighbours: every row kernel's int32 flush, isolated
    nodes), widths 5 (SWAR, INT8 registers) and 33 (vector lanes); QAT and DQ fuse with their eval ranges."""
    g0, x = hub_graph()
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    xn = x.numpy()
    for classes in (5, 33):
        m = smp_model(g0, x, classes, quant, bits, truncation, "exact")
        im = convert(m, calibrate_on=(eg, xn) if quant == "qlr" else None)
        assert_fused_equals_unfused(monkeypatch, im, eg, xn, fused_steps=STEPS)


def test_dynamic_ranges_and_reference_sums_fall_back(monkeypatch) -> None:
    """Dynamic ranges (extremes of a whole tensor, known only after every row) and ``sums="reference"``
    run unfused; dynamic message ranges of X alone fuse (set before packing: each step packs X itself)."""
    g0, x, classes, _ = graph_inputs("small", 0)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    xn = x.numpy()
    m = smp_model(g0, x, classes, "qlr", 4, None, "exact")
    dyn, cal = convert(m), convert(m, calibrate_on=(eg, xn))
    assert_fused_equals_unfused(monkeypatch, dyn, eg, xn, fused_steps=0)
    assert_fused_equals_unfused(monkeypatch, convert(m, calibrate_on=(eg, xn), sums="reference"), eg, xn,
                                fused_steps=0)
    for a, c in zip(cal.aggs, dyn.aggs):
        a.message = c.message
    assert all(a.message.dynamic for a in cal.aggs)
    fused = assert_fused_equals_unfused(monkeypatch, cal, eg, xn, fused_steps=STEPS)
    assert fused["calls"][IM.RANGE] == STEPS  # one range pass over X per step, for its message range
