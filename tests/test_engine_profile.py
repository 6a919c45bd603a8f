"""Stage breakdown of the integer engine (bench_suite.engine.profile, ``speed --breakdown``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench_suite.engine import intmodel
from bench_suite.engine.bench import build, calibrate, graph_inputs
from bench_suite.engine.calibration import temporary_quantizer
from bench_suite.engine.convert import convert
from bench_suite.engine.intmodel import EngineGraph
from bench_suite.engine.profile import StageTimes, profiling, stage
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all


def _int_model(model: str, depth: int, hidden: int, bits: int, prop: str = "appnp"):
    load_all()
    g0, x, classes, _ = graph_inputs("small", 0)
    torch.manual_seed(0)
    with temporary_quantizer():
        m = build(model, depth, hidden, x.shape[1], classes, QuantFactory("qlr", bits), prop)
        calibrate(m, g0, x, 0)
        m.eval()
        im = convert(m)
    return im, EngineGraph.from_dgl(prepare_graph(g0)), x.numpy()


def test_profiling_accounts_every_gcn_stage_and_leaves_the_output_unchanged() -> None:
    im, eg, x = _int_model("gcn", 3, 32, 4)
    ref = im(eg, x)
    with profiling() as st:
        out = im(eg, x)
        out2 = im(eg, x)
        st.passes += 2
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out2, ref)
    rows = {r["stage"]: r for r in st.rows(bandwidth_gbs=10.0, peak_gmacs=100.0)}
    n, f = x.shape
    assert rows[intmodel.GEMM]["calls"] == 3 and rows[intmodel.AGGREGATE]["calls"] == 3
    assert rows[intmodel.INPUT]["calls"] == 1 and intmodel.SMP not in rows
    # MACs of the three products, per pass: n·f·32 + n·32·32 + n·32·classes
    classes = im.linears[-1].out_dim
    assert rows[intmodel.GEMM]["macs"] == n * (f * 32 + 32 * 32 + 32 * classes)
    # the aggregation writes int32 sums (n x width) and gathers one packed row per edge
    widths = [32, 32, classes]
    assert rows[intmodel.AGGREGATE]["bytes"] >= sum(4 * n * w for w in widths)
    nnz = eg.indices.size
    assert rows[intmodel.AGGREGATE]["gather_bytes"] == sum(nnz * ((w * 4 + 63) // 64 * 8) for w in widths)
    # floor = max((bytes + gathered bytes) / bandwidth, MACs / peak), in ms
    for r in rows.values():
        expect = max((r["bytes"] + r["gather_bytes"]) / 10e9, r["macs"] / 100e9) * 1e3
        assert r["floor_ms"] == pytest.approx(expect, abs=1e-3)
        assert r["ms"] > 0


def test_stage_is_a_plain_call_outside_profiling() -> None:
    from bench_suite.engine import profile

    assert profile._ACTIVE is None and stage("x", lambda a, b=0: a + b, 2, b=3) == 5
    with profiling() as st:
        with profiling() as inner:
            stage("y", np.negative, np.ones(2, np.float32))
        stage("x", np.add, np.ones(4, np.float32), np.ones(4, np.float32), macs=7)
    assert profile._ACTIVE is None and isinstance(st, StageTimes)
    assert st.calls == {"x": 1} and inner.calls == {"y": 1}
    assert st.macs["x"] == 7 and st.bytes["x"] == 3 * 16  # two inputs and the output, 16 bytes each


def test_profiling_decoupled_smp_counts_its_steps() -> None:
    im, eg, x = _int_model("decoupled", 3, 16, 8, prop="smp")
    with profiling() as st:
        im(eg, x)
        st.passes += 1
    rows = {r["stage"]: r for r in st.rows(10.0, 100.0)}
    # K = 3 steps, each: Â·x and Â·Δ (two aggregations) and three fused elementwise kernels
    assert rows[intmodel.AGGREGATE]["calls"] == 6 and rows[intmodel.SMP]["calls"] == 9


def _stored(rec, folder):
    """The report's store of ``rec`` written as a runner writes it."""
    from bench_suite.report.aggregate import load_store
    from bench_suite.runner.store import ResultStore

    ResultStore(folder).write(rec)
    return load_store([folder])


def test_speed_breakdown_record(tmp_path, monkeypatch) -> None:
    from bench_suite.engine.bench import measure, run
    from bench_suite.report.speed import breakdown_tables
    from bench_suite.spec import resolve_speed_spec

    monkeypatch.setattr("os.getloadavg", lambda: (0.5, 0.5, 0.5))  # an idle machine: the floor is given
    with pytest.raises(ValueError, match="breakdown"):
        measure(model="gcn", depth=2, hidden=16, graph="tiny", bits=2, threads=1, impls=("dgl-fp32",),
                breakdown=True)
    torch.set_num_threads(1)
    rec = run(resolve_speed_spec(dict(model="gcn", depth=2, hidden=16, graph="tiny", bits=2, repeats=5,
                                      breakdown=True)))
    recs = rec["measurements"]
    b = recs[-1]["breakdown"]
    assert "breakdown" not in recs[0] and b["bandwidth_gbs"] > 0 and b["int8_peak_gmacs"] > 0
    assert b["floor_ms"] == pytest.approx(sum(s["floor_ms"] for s in b["stages"]), abs=1e-2)
    assert b["ceiling_vs_dgl"] == pytest.approx(recs[0]["median_ms"] / b["floor_ms"], rel=1e-2)
    assert b["floor_withheld"] is None
    (table,) = breakdown_tables(_stored(rec, tmp_path))
    assert [r[0] for r in table.rows][:2] == [intmodel.INPUT, intmodel.GEMM] and table.rows[-1][0] == "all stages"


@pytest.mark.parametrize("model", ["gcn", "decoupled"])
def test_static_ranges_skip_the_range_passes(model: str) -> None:
    """With static quantizer ranges (a calibrated min/max, QAT's and DQ's running ranges) no
    range pass runs, and the output is the one computed with them (the range only feeds
    ``params``, which a static rule ignores)."""
    load_all()
    g0, x, classes, _ = graph_inputs("small", 0)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    torch.manual_seed(0)
    with temporary_quantizer() as key:
        m = build(model, 3, 32, x.shape[1], classes, QuantFactory(key, 4), "appnp")
        calibrate(m, g0, x, 0)
        m.eval()
        im = convert(m)
        with torch.no_grad():
            ref = m(prepare_graph(g0), x).numpy()
    with profiling() as st:
        out = im(eg, x.numpy())
    assert intmodel.RANGE not in st.ms and intmodel.EPI_RANGE not in st.ms
    # a GCN layer with static ranges sums and applies its epilogue in one pass (kernels.aggregate_epilogue)
    summed = intmodel.FUSED if model == "gcn" else intmodel.AGGREGATE
    assert st.calls[summed] == len(im.aggs) and st.gather[summed] > 0
    # float32 logits of the fake-quant model, up to accumulation order
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    # a dynamic (QLR) model of the same shape does run them
    qim, _, _ = _int_model(model, 3, 32, 4)
    with profiling() as st:
        qim(eg, x.numpy())
    assert intmodel.RANGE in st.ms and intmodel.EPI_RANGE in st.ms


def test_no_floor_on_a_loaded_machine(tmp_path, monkeypatch) -> None:
    """With the load average above the cores the measured bandwidth and int8 peak are a share of the
    machine: a warning, no floor (stages, total, ceiling), and the report says why."""
    from bench_suite.engine.bench import run
    from bench_suite.engine.profile import cores
    from bench_suite.report.speed import breakdown_tables
    from bench_suite.spec import resolve_speed_spec
    from bench_suite.report.tables import EMPTY

    load_all()
    monkeypatch.setattr("os.getloadavg", lambda: (cores() + 0.5, 1.0, 1.0))
    torch.set_num_threads(1)
    with pytest.warns(RuntimeWarning, match="no floor: load average"):
        rec = run(resolve_speed_spec(dict(model="gcn", depth=2, hidden=16, graph="tiny", bits=4, repeats=5,
                                          breakdown=True)))
    b = rec["measurements"][-1]["breakdown"]
    assert b["floor_ms"] is None and b["ceiling_vs_dgl"] is None and b["bandwidth_gbs"] is None
    assert "exceeds the" in b["floor_withheld"] and all(s["floor_ms"] is None for s in b["stages"])
    assert b["profiled_ms"] > 0 and {intmodel.GEMM, intmodel.AGGREGATE} <= {s["stage"] for s in b["stages"]}
    (table,) = breakdown_tables(_stored(rec, tmp_path))
    assert table.rows[-1][0] == "all stages" and table.rows[-1][7] == EMPTY
    assert any("no floor: load average" in f for f in table.footnotes)
