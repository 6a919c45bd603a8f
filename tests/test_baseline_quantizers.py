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


def test_sample_quantiles_selects_what_sampling_and_kthvalue_select():
    """The numpy selection returns the same sample and order statistics as ``x[randint]`` + ``kthvalue``,
    bit for bit (ties, zeros, float64, tiny tensors; NaN falls back to kthvalue)."""
    g = torch.Generator().manual_seed(1)
    cases = [torch.randn(50000, generator=g), torch.relu(torch.randn(300, 64, generator=g)),
             torch.randint(-3, 4, (9000,), generator=g).float(), torch.randn(7, generator=g).double(),
             torch.tensor([2.0]), torch.randn(5000, generator=g).t()]
    nan = torch.randn(6000, generator=g)
    nan[::7] = float("nan")
    cases.append(nan)
    for x in cases:
        for p, size in ((0.01, 4096), (0.001, 4096), (0.05, 100), (0.3, 10 ** 6)):
            torch.manual_seed(5)
            lo, hi = sample_quantiles(x, p, size)
            torch.manual_seed(5)
            v = x.reshape(-1)
            if v.numel() > size:
                v = v[torch.randint(0, v.numel(), (size,))]
            n = v.numel()
            ref = [torch.kthvalue(v, min(max(int(round(q * (n - 1))) + 1, 1), n)).values for q in (p, 1 - p)]
            for got, want in zip((lo, hi), ref):
                assert got.dtype == x.dtype and got.dim() == 0
                assert torch.equal(got, want) or (torch.isnan(got) and torch.isnan(want)), (x.shape, p, size)


def test_dq_protective_mask_is_drawn_once_per_pass_and_per_graph():
    """The shared mask is reused by the quantizers of a pass, not across graphs with equal sizes."""
    g1, g2 = _graph_with_degrees(), _graph_with_degrees()
    n = g1.num_nodes()
    src, dst = g1.edges()
    g2 = dgl.graph(((src + 1) % n, (dst + 1) % n), num_nodes=n)  # the same graph, nodes relabelled: degrees move
    assert not torch.equal(g1.in_degrees(), g2.in_degrees()) and g1.num_edges() == g2.num_edges()
    torch.manual_seed(3)
    a, b = (QuantFactory("dq", 4, {"p_min": 0.0, "p_max": 1.0})("message") for _ in range(2))
    m1 = a.protective_mask(g1)
    assert b.protective_mask(g1) is m1  # the same pass: reused
    torch.manual_seed(3)
    c, d = (QuantFactory("dq", 4, {"p_min": 0.0, "p_max": 1.0})("message") for _ in range(2))
    m2 = c.protective_mask(g2)  # same seed and call count, another graph: drawn for that graph
    gen = torch.Generator().manual_seed(c._mask_seed * 1_000_003 % (1 << 63))
    assert torch.equal(m2, torch.bernoulli(c.mask_probability(g2), generator=gen).bool())
    assert not torch.equal(m1, m2)
    assert not torch.equal(d.protective_mask(g2), d.protective_mask(g2))  # next call count: a new mask


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
