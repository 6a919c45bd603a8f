"""The QAT (STE-MOM) and Degree-Quant baselines (METHOD.md §3–§4)."""
from __future__ import annotations

import dgl
import pytest
import torch

from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all
from bench_suite.spec import SpecError, resolve_spec
from bench_suite.testing import tiny_graph

load_all()

from baselines.dq import degree_cdf, sample_quantiles  # noqa: E402  (after plugin loading)


def _graph_with_degrees(n: int = 60) -> dgl.DGLGraph:
    """A random graph plus a hub: in-degrees spread from 1 to n."""
    return prepare_graph(tiny_graph(n=n)[0])


def test_qat_range_is_momentum_min_max_from_the_first_batch():
    q = QuantFactory("qat", 8)("input")
    q.train()
    a = torch.tensor([-1.0, 0.5, 2.0])
    b = torch.tensor([-3.0, 0.0, 6.0])
    q(a)
    assert float(q.lo) == -1.0 and float(q.hi) == 2.0
    q(b)
    assert float(q.lo) == pytest.approx(-1.0 + 0.01 * (-3.0 + 1.0))
    assert float(q.hi) == pytest.approx(2.0 + 0.01 * (6.0 - 2.0))
    q.eval()
    lo = float(q.lo)
    q(b * 100)
    assert float(q.lo) == lo  # frozen at evaluation


def test_qat_is_plain_ste_and_dq_clips_the_gradient_outside_the_range():
    x0 = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    for key, clipped in (("qat", False), ("dq", True)):
        q = QuantFactory(key, 4)("input")
        q.train()
        q(x0)
        x = (x0 * 3).requires_grad_(True)  # many values beyond the tracked range
        q(x).sum().backward()
        outside = (x.detach() < q.lo) | (x.detach() > q.hi)
        assert outside.sum() > 10
        assert torch.all(x.grad[~outside] == 1)
        assert torch.all(x.grad[outside] == (0 if clipped else 1)), key


def test_percentile_range_ignores_planted_outliers():
    torch.manual_seed(0)
    x = torch.randn(20000)
    x[torch.randperm(20000)[:8]] = 1000.0
    dq, qat = QuantFactory("dq", 8)("input"), QuantFactory("qat", 8)("input")
    dq.train(), qat.train()
    dq(x), qat(x)
    assert float(qat.hi) == 1000.0
    assert 2.0 < float(dq.hi) < 5.0 and -5.0 < float(dq.lo) < -2.0
    lo, hi = sample_quantiles(torch.arange(1001.0), 0.01, sample_size=10 ** 6)
    assert (float(lo), float(hi)) == (10.0, 990.0)


def test_dq_percentile_defaults_and_override():
    assert QuantFactory("dq", 2)("input").percentile == 0.05
    assert QuantFactory("dq", 4)("input").percentile == 0.01
    assert QuantFactory("dq", 4, {"percentile": 0.2})("input").percentile == 0.2
    with pytest.raises(SpecError, match="percentile=0.7"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "dq", "bits": 4, "percentile": 0.7})


def test_masking_probability_rises_with_in_degree():
    g = _graph_with_degrees()
    q = QuantFactory("dq", 4)("message")
    p = q.mask_probability(g)
    deg = g.in_degrees().float()
    order = torch.argsort(deg)
    assert torch.all(p[order].diff() >= 0)
    assert float(p.max()) == pytest.approx(0.2) and float(p.min()) > 0.1 - 1e-6
    assert torch.equal(degree_cdf(torch.tensor([1, 3, 3, 7])), torch.tensor([0.25, 0.75, 0.75, 1.0]))
    assert float(p.max() - p.min()) > 0.05
    # empirical: each node keeps full precision with probability p_i (here p_min=0, p_max=1: p_i = F(d_i))
    q = QuantFactory("dq", 4, {"p_min": 0.0, "p_max": 1.0})("message")
    q.train()
    torch.manual_seed(1)
    x = torch.randn(g.num_nodes(), 16) * 3 + 0.1
    kept = torch.zeros(g.num_nodes())
    draws = 400
    for _ in range(draws):
        kept += (q(x, g) == x).all(1).float()
    p = q.mask_probability(g)
    assert float((kept / draws - p).abs().max()) < 0.1
    assert kept[deg >= deg.quantile(0.75)].mean() > kept[deg <= deg.quantile(0.25)].mean() + 0.2 * draws


def test_no_mask_at_eval_and_none_for_edge_or_weight_roles():
    g = _graph_with_degrees()
    x = torch.randn(g.num_nodes(), 8) * 2
    q = QuantFactory("dq", 4, {"p_min": 1.0, "p_max": 1.0})("aggregate")
    q.train()
    assert torch.equal(q(x, g), x)  # every node protected in training
    q.eval()
    y = q(x, g)
    codes, s, z = q.codes(x)
    assert torch.equal(y, (codes - z) * s) and not torch.equal(y, x)
    w = QuantFactory("dq", 4, {"p_min": 1.0, "p_max": 1.0})("weight")
    w.train()
    assert not torch.equal(w(x, g), x)  # weights are never masked


def test_dq_training_is_reproducible_under_the_global_seed():
    g = _graph_with_degrees()
    x = torch.randn(g.num_nodes(), 8)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        q = QuantFactory("dq", 2)("update")
        q.train()
        outs.append(torch.stack([q(x, g) for _ in range(3)]))
    assert torch.equal(outs[0], outs[1])


def test_dq_empty_percentile_range_falls_back_to_min_max():
    """Sparse inputs (Cora-like: 99.5% zeros) have an empty percentile range; 'minmax' replaces it."""
    torch.manual_seed(0)
    x = torch.zeros(2000, 100)
    nz = torch.randperm(x.numel())[: x.numel() // 200]
    x.view(-1)[nz] = torch.rand(nz.numel()) * 0.5 + 0.05
    ranges = {}
    for fb in ("minmax", "none"):
        q = QuantFactory("dq", 4, {"fallback": fb})("input")
        q.train()
        y = q(x)
        ranges[fb] = (float(q.lo), float(q.hi), int((y.abs() > 1e-3).sum()))
    assert ranges["none"] == (0.0, 0.0, 0)  # every value mapped to (about) 0
    assert ranges["minmax"][0] == 0.0 and ranges["minmax"][1] == pytest.approx(float(x.max()))
    assert ranges["minmax"][2] > 0.9 * nz.numel()  # the non-zeros survive quantization
    # a dense tensor keeps its percentile range (outliers ignored) under either setting
    d = torch.randn(10000)
    d[:5] = 1000.0
    q = QuantFactory("dq", 4)("input")
    q.train()
    q(d)
    assert float(q.hi) < 10.0
    with pytest.raises(SpecError, match="fallback"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "dq", "bits": 4, "fallback": "scale1"})


def test_dq_protective_mask_is_shared_by_the_quantizers_of_one_forward_pass():
    """METHOD.md §4: one mask per node, shared by message, aggregate and update (and every layer)."""
    g = _graph_with_degrees()
    torch.manual_seed(3)
    qs = [QuantFactory("dq", 4, {"p_min": 0.5, "p_max": 0.5})(role) for role in ("message", "aggregate", "update")]
    x = torch.randn(g.num_nodes(), 16) * 3 + 0.1  # never exactly on the grid: kept rows equal x
    passes = []
    for _ in range(4):
        kept = []
        for q in qs:
            q.train()
            kept.append((q(x, g) == x).all(1))
        assert torch.equal(kept[0], kept[1]) and torch.equal(kept[0], kept[2])
        assert 0 < int(kept[0].sum()) < g.num_nodes()
        passes.append(kept[0])
    assert not torch.equal(passes[0], passes[1])  # a fresh mask every pass
