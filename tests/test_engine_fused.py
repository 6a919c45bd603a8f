"""The fused aggregation + epilogue of a GCN layer (:func:`bench_suite.engine.kernels.aggregate_epilogue`)
equals the two passes it replaces and a dense integer reference, to the bit; the integer GCN takes it
exactly when every range after the sums is static."""
from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch

import bench_suite.engine.intmodel as IM
from bench_suite.engine import kernels as K
from bench_suite.engine.bench import build, calibrate, graph_inputs
from bench_suite.engine.convert import convert
from bench_suite.engine.intmodel import FUSED, OUTPUT, EngineGraph, fq
from bench_suite.engine.kernels import aggregation as A
from bench_suite.engine.kernels import fused as FK
from bench_suite.engine.packing import pack
from bench_suite.engine.profile import profiling
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all
from test_engine_kernels import counts_csr
from test_engine_sums import integer_formula

load_all()
F32 = np.float32


def lane_limit_csr(bits: int, rng, m: int = 40):
    """Edge multiplicities whose rows have as many neighbours as every lane of every row kernel holds,
    one fewer, one more, twice as many and more (SWAR bytes 85/17, INT8 registers 257, uint16 vector lanes
    21845/4369/257), rows with no neighbour, and random rows; the neighbours are rows ``0 … m−1``."""
    qm = 2 ** bits - 1
    degrees = [0, 1, 0]
    for lim in sorted({255 // qm, 257, 65535 // qm}):
        degrees += [lim - 1, lim, lim + 1, 2 * lim, 2 * lim + 3]
    counts = np.zeros((len(degrees) + 3 * m, len(degrees) + 3 * m), np.int64)
    for r, d in enumerate(degrees):
        counts[r, :m] = np.bincount(rng.integers(0, m, d), minlength=m)
    counts[len(degrees):, :m] = rng.integers(0, 3, (3 * m, m))
    counts[-5:] = 0  # isolated nodes at the end of the last chunk
    return counts


def reference(counts, q, deg, norm, msg, agg, bias, upd, relu, following):
    """The layer in numpy: ``S = counts·q`` in int64, then the epilogue's float32 formula."""
    S = (counts @ q.astype(np.int64)).astype(F32)
    sm, zm = (F32(v) for v in K.effective(msg))
    a = (sm * (S - zm * deg[:, None])) * norm[:, None]
    v = fq(np.ascontiguousarray(a), agg) + bias
    v = fq(v, upd)
    if relu:
        v = np.maximum(v, F32(0))
    return K.quantize(np.ascontiguousarray(v), following) if following is not None else v


# widths through every row kernel and vector tail: INT8 ≤ 16 the register kernel, INT4 ≤ 16 and INT2 ≤ 32
# SWAR, the rest uint16 vector lanes in blocks of 32, 16 and 8 bytes
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("width", [5, 16, 17, 33, 40, 130])
def test_fused_kernel_equals_the_two_passes_and_the_dense_reference(bits: int, width: int) -> None:
    rng = np.random.default_rng(bits * 1000 + width)
    qm = 2 ** bits - 1
    counts = lane_limit_csr(bits, rng)
    n = counts.shape[0]
    indptr, indices = counts_csr(counts)
    q = rng.integers(0, qm + 1, (n, width)).astype(np.uint8)
    q[:20] = qm  # half the neighbours saturated: a late flush overflows a lane
    deg = counts.sum(1).astype(F32)
    norm = np.where(deg > 0, np.maximum(deg, 1) ** -0.5, 1).astype(F32)
    bias = rng.standard_normal((1, width)).astype(F32)
    msg = (0.1, float((qm + 1) // 2), float(qm))
    agg, upd = (0.05, 128.0, 255.0), (0.04, 60.0, 255.0)
    cases = [("float", None, False), ("codes", (2.0 / qm, 0.0, float(qm)), True)]
    if bits == 2:  # bit-truncated aggregate, update and next codes (BT*, METHOD.md §6)
        agg, upd = (0.012, 128.0, 255.0, 85.0, 1.0, 3.0), (0.012, 128.0, 255.0, 85.0, -1.0, 3.0)
        cases.append(("codes", (0.005, 3.0, 255.0, 85.0, 2.0, 3.0), True))
        bias *= F32(0.3)
    packed = pack(q, bits)
    S = K.aggregate(indptr, indices, packed, bits, width)[0]
    sums = K.NeighbourSums(S, *(F32(v) for v in K.effective(msg)), indptr, indices, packed, bits)
    for mode, following, relu in cases:
        want = reference(counts, q, deg, norm, msg, agg, bias, upd, relu, following)
        assert len(np.unique(want)) > 2, "degenerate layer: every output on one value"
        two = K.epilogue(S, agg, bias, sums=sums, deg=deg, norm=norm, update=upd, relu=relu, mode=mode,
                         following=following)
        np.testing.assert_array_equal(two.view(np.uint8), want.view(np.uint8))
        for nchunks in (None, 1, 3, 1000):  # chunks of one row, empty chunks, more chunks than rows
            bounds = None if nchunks is None else A.chunk_bounds(indptr, nchunks)
            out = np.full((n, width), 77 if mode == "codes" else np.nan, np.uint8 if mode == "codes" else F32)
            got = K.aggregate_epilogue(indptr, indices, packed, bits, width, deg, norm, msg, agg, bias,
                                       update=upd, relu=relu, mode=mode, following=following, bounds=bounds, out=out)
            assert got is out
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8),
                                          err_msg=f"{mode} {following} chunks {nchunks}")


def test_fused_kernel_refuses_what_it_cannot_compute() -> None:
    counts = np.ones((4, 4), np.int64)
    indptr, indices = counts_csr(counts)
    packed = pack(np.zeros((4, 9), np.uint8), 4)
    deg = norm = np.ones(4, F32)
    p = (0.1, 0.0, 15.0)
    args = (indptr, indices, packed, 4, 9, deg, norm, p, p)
    with pytest.raises(ValueError, match="range pass cannot fuse"):
        K.aggregate_epilogue(*args, np.zeros((1, 9), F32), mode="range")
    with pytest.raises(ValueError, match="following"):
        K.aggregate_epilogue(*args, np.zeros((1, 9), F32), mode="codes")
    with pytest.raises(ValueError, match=r"a bias of shape \(1, 9\)"):
        K.aggregate_epilogue(*args, np.zeros((4, 9), F32))
    with pytest.raises(ValueError, match="width 17"):
        K.aggregate_epilogue(indptr, indices, packed, 4, 17, deg, norm, p, p, np.zeros((1, 17), F32))
    with pytest.raises(ValueError, match="writes C-contiguous uint8"):
        K.aggregate_epilogue(*args, np.zeros((1, 9), F32), mode="codes", following=p, out=np.zeros((4, 9), F32))
    assert (FK.row_kind(8, 16), FK.row_kind(8, 24), FK.row_kind(4, 8), FK.row_kind(2, 16)) == (
        FK.BYTES, FK.VEC, FK.SWAR, FK.VEC)


def layer_outputs(monkeypatch, im, eg, x) -> tuple:
    """``(outputs, stage calls)``: each layer's next codes and the logits, from a fused and an unfused pass."""
    seen: list = []
    real = IM.stage

    def recording(name, fn, *args, **kw):
        out = real(name, fn, *args, **kw)
        if name in (FUSED, OUTPUT):
            seen.append(out)
        return out

    monkeypatch.setattr(IM, "stage", recording)
    with profiling() as st:
        im(eg, x)
    monkeypatch.setattr(IM, "stage", real)
    return seen, dict(st.calls)


def assert_fused_equals_unfused(monkeypatch, im, eg, x, fused_layers: int) -> np.ndarray:
    """The fused pass's codes and logits equal the two-pass ones; ``fused_layers`` layers were fused."""
    im.fuse = True
    fused, calls = layer_outputs(monkeypatch, im, eg, x)
    im.fuse = False
    two, calls2 = layer_outputs(monkeypatch, im, eg, x)
    im.fuse = True
    assert calls.get(FUSED, 0) == fused_layers and FUSED not in calls2 and im.fused_layers() == fused_layers
    assert len(fused) == len(two) == len(im.linears)
    for k, (a, b) in enumerate(zip(fused, two)):
        assert a.dtype == b.dtype == (np.float32 if k == len(two) - 1 else np.uint8)
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=f"layer {k}")
    for codes in fused[:-1]:
        assert len(np.unique(codes)) > 1, "a layer with one code: nothing compared"
    return fused[-1]


def hub_graph(n: int = 22_000, seed: int = 0):
    """A graph whose node 0 has an in-neighbour in every node but the last 50 (more than any lane holds:
    21845 at INT2), node 1 300, the last 50 nodes no edge at all (only their self-loop after
    :func:`prepare_graph`), the rest sparse random symmetric edges."""
    rng = np.random.default_rng(seed)
    u, v = rng.integers(2, n - 50, 20_000), rng.integers(2, n - 50, 20_000)
    src = np.concatenate([np.arange(1, n - 50), rng.choice(np.arange(2, n - 50), 300, replace=False), u, v])
    dst = np.concatenate([np.zeros(n - 51, np.int64), np.ones(300, np.int64), v, u])
    keep = src != dst
    g = dgl.graph((src[keep], dst[keep]), num_nodes=n)
    x = torch.from_numpy(rng.standard_normal((n, 12)).astype(F32))
    return g, x


QUANTS = [("qlr", 8, None), ("qlr", 4, None), ("qlr", 2, None), ("qlr", 2, "bt*")]


@pytest.fixture(scope="module", params=["cora", "citeseer", "small"])
def graph(request, data_dir):
    g0, x, classes, _ = graph_inputs(request.param, 0, data_dir)
    return request.param, g0, EngineGraph.from_dgl(prepare_graph(g0)), x, classes


@pytest.mark.parametrize("quant,bits,truncation", QUANTS)
def test_calibrated_gcn_fused_equals_unfused_and_the_integer_formula(monkeypatch, graph, quant, bits,
                                                                     truncation) -> None:
    """Cora, CiteSeer and a generated power-law graph, QLR INT8/4/2 and INT2 BT*, ranges calibrated on
    the graph: every layer fuses, and its codes and the logits are the two-pass ones and the plain
    integer formula's (hidden 40 and the class counts: no width a multiple of 32 bytes)."""
    name, g0, eg, x, classes = graph
    torch.manual_seed(bits)
    m = build("gcn", 3, 40, x.shape[1], classes, QuantFactory(quant, bits, {"truncation": truncation}
                                                               if truncation else None))
    calibrate(m, g0, x, 0)
    m.eval()
    xn = x.numpy()
    im = convert(m, calibrate_on=(eg, xn))
    logits = assert_fused_equals_unfused(monkeypatch, im, eg, xn, fused_layers=3)
    np.testing.assert_array_equal(logits.view(np.int32), integer_formula(im, eg, xn).view(np.int32))


@pytest.mark.parametrize("quant,bits,truncation", [("qat", 4, None), ("dq", 8, None), ("qlr", 2, None),
                                                    ("qlr", 2, "bt*")])
def test_fused_rows_of_every_lane_limit_and_isolated_nodes(monkeypatch, quant, bits, truncation) -> None:
    """A hub with 21949 in-neighbours (past every lane's flush at every bit width), one of 300, isolated
    nodes; widths 33 and 5.  QAT and DQ have static eval ranges (they fuse without calibration), QLR
    calibrated."""
    g0, x = hub_graph()
    assert g0.in_degrees(0) == g0.num_nodes() - 51 > 21845 and (g0.in_degrees() == 0).sum() >= 50
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    torch.manual_seed(0)
    m = build("gcn", 3, 33, x.shape[1], 5, QuantFactory(quant, bits, {"truncation": truncation}
                                                         if truncation else None))
    calibrate(m, g0, x, 0)
    m.eval()
    xn = x.numpy()
    im = convert(m, calibrate_on=(eg, xn) if quant == "qlr" else None)
    assert not any(r.dynamic for a in im.aggs for r in (a.aggregate, a.update))
    logits = assert_fused_equals_unfused(monkeypatch, im, eg, xn, fused_layers=3)
    np.testing.assert_array_equal(logits.view(np.int32), integer_formula(im, eg, xn).view(np.int32))


def test_dynamic_ranges_and_reference_sums_fall_back_and_a_dynamic_message_range_fuses(monkeypatch) -> None:
    """QLR's dynamic ranges need the layer's extremes before the epilogue and ``sums="reference"``
    recomputes sums between the passes: both run two passes.  A dynamic message range alone is set
    before packing, so such layers fuse, with the two-pass values."""
    g0, x, classes, _ = graph_inputs("small", 0)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    torch.manual_seed(0)
    m = build("gcn", 3, 40, x.shape[1], classes, QuantFactory("qlr", 4))
    calibrate(m, g0, x, 0)
    m.eval()
    xn = x.numpy()
    assert_fused_equals_unfused(monkeypatch, convert(m), eg, xn, fused_layers=0)
    assert_fused_equals_unfused(monkeypatch, convert(m, calibrate_on=(eg, xn), sums="reference"), eg, xn,
                                fused_layers=0)
    im, cal = convert(m), convert(m, calibrate_on=(eg, xn))
    for a, c in zip(im.aggs, cal.aggs):  # every rule static but the messages'
        a.aggregate, a.update = c.aggregate, c.update
    for a, c in zip(im.linears, cal.linears):
        a.input_rule, a.feature_rule = c.input_rule, c.feature_rule
    assert all(a.message.dynamic for a in im.aggs)
    logits = assert_fused_equals_unfused(monkeypatch, im, eg, xn, fused_layers=3)
    np.testing.assert_array_equal(logits.view(np.int32), cal(eg, xn).view(np.int32))


def smp_outputs(monkeypatch, im, eg, x) -> tuple:
    """``(output, stage calls, the T(Δ) of every step)`` of one forward pass of an integer SMP model."""
    import bench_suite.smp as S

    ts: list = []
    real = S.multiplier_step

    def recording(lam, s, t, *args, **kw):
        ts.append(t)
        return real(lam, s, t, *args, **kw)

    monkeypatch.setattr(S, "multiplier_step", recording)
    with profiling() as st:
        out = im(eg, x)
    monkeypatch.setattr(S, "multiplier_step", real)
    return out, dict(st.calls), ts


@pytest.mark.parametrize("quant,bits,truncation,form", [q + (f,) for q, f in zip(QUANTS, ["exact", "released"] * 2)])
@pytest.mark.parametrize("name", ["cora", "small"])
def test_calibrated_smp_steps_fused_equal_unfused(monkeypatch, data_dir, name, quant, bits, truncation, form) -> None:
    """Decoupled SMP (K = 6, widths 40 and the class count) on Cora and a generated power-law graph,
    ranges calibrated on the graph: every step runs as two fused passes, and the output and every step's
    T(Δ) (so λ) equal the unfused steps' to the bit."""
    g0, x, classes, _ = graph_inputs(name, 0, data_dir)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    torch.manual_seed(bits)
    m = build("decoupled", 6, 40, x.shape[1], classes,
              QuantFactory(quant, bits, {"truncation": truncation} if truncation else None), propagation="smp")
    calibrate(m, g0, x, 0)
    m.eval()
    xn = x.numpy()
    im = convert(m, calibrate_on=(eg, xn))
    assert im.smp is not None and im.smp_fusable() and im.fused_layers() == 6
    im.smp["form"] = form
    im.fuse = True
    fused, calls, t_fused = smp_outputs(monkeypatch, im, eg, xn)
    im.fuse = False
    two, calls2, t_two = smp_outputs(monkeypatch, im, eg, xn)
    im.fuse = True
    assert calls.get(FUSED) == 1 and FUSED not in calls2 and calls2.get(IM.SMP) == 3 * 6
    assert len(t_fused) == len(t_two) == 6 and t_fused == t_two and all(t > 0 for t in t_two)
    assert fused.dtype == np.float32 and len(np.unique(fused)) > 1  # (at most 2^bits values: a static update grid)
    np.testing.assert_array_equal(fused.view(np.int32), two.view(np.int32))


def test_smp_with_dynamic_ranges_does_not_fuse() -> None:
    """QLR's dynamic ranges need each tensor's extremes before its codes: the steps stay unfused."""
    g0, x, classes, _ = graph_inputs("small", 0)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    torch.manual_seed(0)
    m = build("decoupled", 3, 40, x.shape[1], classes, QuantFactory("qlr", 4), propagation="smp")
    calibrate(m, g0, x, 0)
    m.eval()
    im = convert(m)
    assert not im.smp_fusable() and im.fused_layers() == 0
    with profiling() as st:
        im(eg, x.numpy())
    assert FUSED not in st.calls and st.calls[IM.SMP] == 9
