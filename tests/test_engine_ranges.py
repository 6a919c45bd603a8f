"""Static ranges calibrated at conversion (bench_suite.engine.convert.calibrate, ``speed ranges=calibrated``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench_suite.engine import intmodel
from bench_suite.engine.bench import build, calibrate as set_ranges, graph_inputs, measure
from bench_suite.engine.convert import calibrate, convert
from bench_suite.engine.intmodel import EngineGraph, load
from bench_suite.engine.profile import profiling
from bench_suite.engine.ranges import RangeRule, recording
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all

load_all()

CASES = [("gcn", "appnp", 8, None), ("gcn", "appnp", 4, None), ("gcn", "appnp", 2, None), ("gcn", "appnp", 2, "bt*"),
         ("decoupled", "appnp", 4, None), ("decoupled", "smp", 2, None), ("decoupled", "smp", 8, None)]


@pytest.fixture(scope="module")
def small():
    g0, x, classes, _ = graph_inputs("small", 0)
    return g0, x, classes, EngineGraph.from_dgl(prepare_graph(g0))


def _qlr_model(small, model: str, prop: str, bits: int, truncation=None):
    g0, x, classes, _ = small
    torch.manual_seed(0)
    m = build(model, 3, 32, x.shape[1], classes, QuantFactory("qlr", bits, {"truncation": truncation} if truncation
                                                                else None), prop)
    set_ranges(m, g0, x, 0)  # QLR's α from its grid search
    return m.eval()


def _rules(im) -> list:
    out = []
    im.map_rules(lambda r: out.append(r) or r)
    return out


@pytest.mark.parametrize("model,prop,bits,truncation", CASES)
def test_calibrated_on_the_deployed_graph_equals_the_dynamic_model_bit_for_bit(small, model, prop, bits,
                                                                                truncation, tmp_path) -> None:
    _, x, _, eg = small
    m = _qlr_model(small, model, prop, bits, truncation)
    dyn = convert(m)
    cal = convert(m, calibrate_on=(eg, x.numpy()), calibration_graph="small seed 0 (deployed graph)")
    assert dyn.ranges == "dynamic" and all(r.dynamic for r in _rules(dyn))
    assert cal.ranges == "calibrated" and not any(r.dynamic for r in _rules(cal))
    assert cal.calibration == {"graph": "small seed 0 (deployed graph)", "nodes": eg.num_nodes,
                               "edges": eg.undirected_edges}
    want = dyn(eg, x.numpy())
    with profiling() as st:
        got = cal(eg, x.numpy())
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    # the ranges were the only use of the min/max passes: none runs; a GCN layer's sums and epilogue
    # run as one pass (kernels.aggregate_epilogue), SMP's steps as fused passes in one call
    # (kernels.smp_fused_steps), APPNP's sums and epilogues as two passes
    assert intmodel.RANGE not in st.ms and intmodel.EPI_RANGE not in st.ms
    summed, calls = ((intmodel.FUSED, len(cal.aggs)) if model == "gcn" else
                     (intmodel.FUSED, 1) if prop == "smp" else (intmodel.AGGREGATE, len(cal.aggs)))
    assert st.calls[summed] >= calls and (intmodel.AGGREGATE in st.ms) == (summed == intmodel.AGGREGATE)
    path = tmp_path / "cal.pt"
    cal.save(path)
    back = load(path)
    assert back.calibration == cal.calibration and back.ranges == "calibrated"
    np.testing.assert_array_equal(back(eg, x.numpy()), want)


def test_calibrated_ranges_are_frozen(small) -> None:
    """Calibrated on one graph, the model keeps those ranges on another (the dynamic one follows the tensor)."""
    g0, x, _, eg = small
    m = _qlr_model(small, "gcn", "appnp", 4)
    cal = convert(m, calibrate_on=(eg, x.numpy()))
    dyn = convert(m)
    x2 = 3 * x.numpy()  # wider input range: dynamic ranges widen, frozen ones clamp
    assert not np.array_equal(cal(eg, x2), dyn(eg, x2))
    with pytest.raises(ValueError, match="already calibrated"):
        calibrate(cal, eg, x.numpy())


def test_recording_keeps_the_params_of_dynamic_rules_only() -> None:
    dyn = RangeRule("scaled_minmax", 4, alpha=0.5)
    static = RangeRule("static", 4, scale=0.1, zero=3.0)
    with recording() as seen:
        p = dyn.params(-2.0, 6.0)
        static.params()
    assert seen == {id(dyn): p} and p == (np.float32(8 * 0.5 / 15), 4.0, 15.0)
    frozen = dyn.frozen(p)
    assert not frozen.dynamic and frozen.params(-100.0, 100.0) == p and frozen.bits == 4
    assert dyn.params(-2.0, 6.0) == p  # outside recording: nothing kept, nothing raised


def test_speed_records_ranges_and_calibration_graph() -> None:
    kw = dict(model="gcn", depth=2, hidden=16, graph="tiny", bits=4, threads=1, repeats=5, impls=("dgl-fp32", "int"))
    dyn = measure(**kw)
    cal = measure(**kw, ranges="calibrated")
    other = measure(**kw, ranges="calibrated", calibration_seed=1)
    assert [r["impl"] for r in dyn] == ["dgl-fp32", "fp32-tuned", "int"]  # the tuned FP32 path joins int
    assert [r["ranges"] for r in dyn] == ["dynamic"] * 3 and dyn[-1]["calibration_graph"] is None
    assert cal[-1]["ranges"] == "calibrated" and cal[-1]["calibration_graph"] == "tiny seed 0 (deployed graph)"
    assert other[-1]["calibration_graph"] == "tiny seed 1"
    with pytest.raises(ValueError, match="ranges='static'"):
        measure(**kw, ranges="static")
    with pytest.raises(ValueError, match="ranges=calibrated only"):
        measure(**kw, calibration_seed=1)


def test_speed_table_keeps_calibrated_and_dynamic_apart() -> None:
    from bench_suite.report.speed import _quant_label

    rec = {"quant": "qlr", "truncation": "none"}
    assert _quant_label(dict(rec, ranges="dynamic")) == "qlr" and _quant_label(rec) == "qlr"
    assert _quant_label(dict(rec, ranges="calibrated")) == "qlr calibrated"
