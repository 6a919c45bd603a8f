"""The integer model's ``sums`` mode (:data:`bench_suite.engine.intmodel.SUMS`): ``"exact"`` (the
default) computes every aggregate code and range from the exact integer neighbour sums, as a plain
numpy formula does; ``"reference"`` recomputes the sums that decide them in the fake-quant model's
float32 order (its agreement: ``tests/test_engine_agreement.py``)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from bench_suite.engine import kernels as K
from bench_suite.engine.bench import build, calibrate, graph_inputs
from bench_suite.engine.convert import convert
from bench_suite.engine.intmodel import SUMS, EngineGraph, IntGCN, check_sums, fq, load
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all
from bench_suite.spec import SUMS as SPEC_SUMS
from bench_suite.spec import SpecError, resolve_speed_spec

load_all()
F32 = np.float32


def _params(rule, lo, hi) -> tuple:
    return rule.params(lo, hi) if rule.dynamic else rule.params()


def integer_formula(im: IntGCN, g: EngineGraph, x: np.ndarray) -> np.ndarray:
    """The integer GCN's logits in plain numpy with the exact neighbour sums: ``S = Ã·q`` in int64,
    the aggregate role quantizing ``a = s_m·(S − z_m·d̃)·d̃^{-1/2}`` (float32, in that order) under the
    range of those ``a``; each dynamic range is the min/max of its whole tensor (the engine's per-row
    extremes give the same values).  Only the dense products are the engine's own (:class:`IntLinear`,
    tested against the integer product in ``test_engine_kernels.py``)."""
    n = g.num_nodes
    adj = scipy.sparse.csr_matrix((np.ones(g.indices.size, np.int64), g.indices, g.indptr), shape=(n, n))
    deg, norm = g.deg[:, None], g.norm[:, None]
    x = np.ascontiguousarray(x, F32)
    p = _params(im.linears[0].input_rule, x.min(), x.max())
    xq = K.quantize(x, p)
    for k, (lin, agg, b) in enumerate(zip(im.linears, im.aggs, im.biases)):
        y = lin(xq, p)
        m = fq(y, _params(lin.feature_rule, y.min(), y.max())) * norm
        msg = _params(agg.message, m.min(), m.max())
        q = K.quantize(np.ascontiguousarray(m), msg)
        sm, zm = (F32(v) for v in K.effective(msg))
        S = (adj @ q.astype(np.int64)).astype(np.int32)
        a = (sm * (S.astype(F32) - zm * deg)) * norm
        v = fq(a, _params(agg.aggregate, a.min(), a.max())) + b
        h = fq(v, _params(agg.update, v.min(), v.max()))
        if k == len(im.linears) - 1:
            return h
        h = np.maximum(h, F32(0))
        p = _params(im.linears[k + 1].input_rule, float(h.min()), float(h.max()))
        xq = K.quantize(h, p)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def small():
    g0, x, classes, _ = graph_inputs("small", 0)
    g = prepare_graph(g0)
    return g0, g, EngineGraph.from_dgl(g), x, classes


@pytest.mark.parametrize("bits", [8, 4])
def test_exact_sums_are_the_integer_formula_dynamic_and_calibrated(small, bits: int) -> None:
    """With ``sums="exact"`` (and by default) the logits are bit for bit those of the plain integer
    formula, with dynamic ranges and with ranges calibrated on the graph; on this model (an untrained
    deep QLR GCN whose INT8 message quantizer has exact ties) ``sums="reference"`` gives other logits,
    so the comparison would catch exact mode recomputing any sum."""
    g0, g, eg, x, classes = small
    torch.manual_seed(0)
    m = build("gcn", 4, 64, x.shape[1], classes, QuantFactory("qlr", bits, None), "appnp")
    calibrate(m, g0, x, 0)  # QLR's α from its grid search
    m.eval()
    xn = x.numpy()
    default, exact = convert(m), convert(m, sums="exact")
    assert default.sums == exact.sums == "exact" and {a.sum_mode for a in exact.aggs} == {"exact"}
    want = integer_formula(exact, eg, xn)
    for im in (default, exact):
        np.testing.assert_array_equal(im(eg, xn).view(np.int32), want.view(np.int32))
    cal = convert(m, calibrate_on=(eg, xn), sums="exact")
    assert cal.ranges == "calibrated" and not any(r.dynamic for a in cal.aggs for r in (a.message, a.aggregate))
    np.testing.assert_array_equal(integer_formula(cal, eg, xn).view(np.int32), want.view(np.int32))
    np.testing.assert_array_equal(cal(eg, xn).view(np.int32), want.view(np.int32))
    ref = convert(m, sums="reference")
    assert {a.sum_mode for a in ref.aggs} == {"reference"}
    assert not np.array_equal(ref(eg, xn).view(np.int32), want.view(np.int32)), "no sum decided by the order"


def test_the_sums_mode_is_saved_and_switched(small, tmp_path) -> None:
    """A saved model keeps its mode (a file without one loads as ``exact``); setting ``sums`` switches
    every aggregation."""
    g0, g, eg, x, classes = small
    torch.manual_seed(0)
    m = build("decoupled", 2, 32, x.shape[1], classes, QuantFactory("qlr", 8, None), "smp")
    calibrate(m, g0, x, 0)
    m.eval()
    im = convert(m, sums="reference")
    im.save(tmp_path / "m.pt")
    back = load(tmp_path / "m.pt")
    assert back.sums == "reference" and {a.sum_mode for a in back.aggs + back.delta_aggs} == {"reference"}
    xn = x.numpy()
    np.testing.assert_array_equal(back(eg, xn).view(np.int32), im(eg, xn).view(np.int32))
    back.sums = "exact"
    assert {a.sum_mode for a in back.aggs + back.delta_aggs} == {"exact"}
    np.testing.assert_array_equal(back(eg, xn).view(np.int32), convert(m)(eg, xn).view(np.int32))
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    del state["sums"]
    torch.save(state, tmp_path / "old.pt")
    assert load(tmp_path / "old.pt").sums == "exact"


@pytest.mark.parametrize("bad", ["float", "Exact", "", None, 1])
def test_an_invalid_sums_mode_is_a_value_error_naming_it_and_the_valid_ones(small, bad) -> None:
    g0, g, eg, x, classes = small
    torch.manual_seed(0)
    m = build("gcn", 2, 16, x.shape[1], classes, QuantFactory("qlr", 8, None), "appnp")
    for attempt in (lambda: convert(m, sums=bad), lambda: check_sums(bad)):
        with pytest.raises(ValueError) as err:
            attempt()
        assert repr(bad) in str(err.value) and all(repr(s) in str(err.value) for s in SUMS)
    im = convert(m)
    with pytest.raises(ValueError, match="'exact'"):
        im.sums = bad
    assert im.sums == "exact"


def test_speed_spec_sums_key_leaves_existing_ids_alone() -> None:
    """``sums`` is a measure key of a speed spec; at its default the canonical spec (and the run id) is
    the one without it, ``reference`` is a different run, anything else a SpecError naming the valid
    values."""
    assert SPEC_SUMS == SUMS
    base = resolve_speed_spec({"graph": "tiny", "bits": 8})
    exact = resolve_speed_spec({"graph": "tiny", "bits": 8, "sums": "exact"})
    ref = resolve_speed_spec({"graph": "tiny", "bits": 8, "sums": "reference"})
    assert exact.run_id == base.run_id and "sums" not in base.data["measure"]
    assert base.measure.sums == "exact" and ref.measure.sums == "reference" and ref.run_id != base.run_id
    with pytest.raises(SpecError, match="sums='float'.*exact, reference"):
        resolve_speed_spec({"graph": "tiny", "sums": "float"})
