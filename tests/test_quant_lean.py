"""The quantizers' fused paths against plain-PyTorch references, bit for bit.

Each reference below writes out what a quantizer computes (METHOD.md §1, §3–§6) in torch
operations on float32 tensors, with the gradients the fused kernels define written out too:
∂x̂/∂x as a mask, ∂x̂/∂s as the LSQ factor summed in float64 over eight interleaved partial
sums (element i into sum i mod 8, each sum sequential), and α's gradient through the scale
chain.  The quantizer modules (one autograd node forward, one backward) must give the same
x̂, ∂ℒ/∂x and ∂ℒ/∂α to the bit, signed zeros included.
"""
from __future__ import annotations

import dgl
import dgl.function as fn
import numpy as np
import pytest
import torch

from bench_suite.quant.base import EPS
from bench_suite.quant.qlr import BT_STEP, FrozenQLRQuantizer, QLRQuantizer
from bench_suite.registry import QUANTIZERS, load_all

load_all()


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, shapes and dtypes, and equal sign bits (``torch.equal`` treats -0.0 == 0.0)."""
    return (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            and torch.equal(torch.signbit(a), torch.signbit(b)))


def _interleaved_sum(prod: torch.Tensor) -> float:
    """Σ prod in float64: element i into partial sum i mod 8 (each sequential), then
    ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))."""
    v = prod.reshape(-1).double().numpy()
    n = v.size
    m = n - n % 8
    p = [float(np.cumsum(v[k:m:8])[-1]) if m > k else 0.0 for k in range(8)]
    for i in range(m, n):  # the tail: element m + j into sum j
        p[i - m] += float(v[i])
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))


def _scale_zero(lo: torch.Tensor, hi: torch.Tensor, Q: int):
    """s = max((hi − lo)/Q, ε), z = clamp(round(−lo/s), 0, Q) on 0-dim float32 tensors; also (hi − lo)/Q."""
    pre = (hi - lo) / Q
    s = torch.clamp(pre, min=EPS)
    v = -lo / s
    z = torch.clamp(v + (torch.round(v) - v), 0, Q)  # round_ste's value
    return s, z, pre


def _codes(x: torch.Tensor, s, z, Q: int, step: int = 1, kappa: float = 0.0, Qc: int = 0):
    """(x̂, ∂x̂/∂s factor, inside): q = clamp(round(x/s) + z, 0, Q), x̂ = (q − z)·s; under truncation
    c = clamp(round((q + κ)/step), 0, Qc), x̂ = (c − z/step)·(s·step)."""
    v = x / s
    qr = torch.round(v) + z
    q = torch.clamp(qr, 0, Q)
    inside = q == qr
    if step == 1:
        a = q - z
        out = a * s
    else:
        cr = torch.round((q + kappa) / step)
        c = torch.clamp(cr, 0, Qc)
        inside = inside & (c == cr)
        a = c * step - z
        out = (c - z / step) * (s * step)
    t = torch.where(inside, a - v, a)
    return out, t, inside


def qlr_reference(x: torch.Tensor, alpha: float, bits: int, g: torch.Tensor, truncation: str = "none",
                  kappa: float = 0.0, learn_alpha: bool = True):
    """(x̂, ∂ℒ/∂x, ∂ℒ/∂α) of QLR for upstream gradient ``g`` (METHOD.md §5–§6)."""
    step, Q = (BT_STEP, 255) if truncation != "none" else (1, (1 << bits) - 1)
    a = torch.tensor(alpha, dtype=torch.float32)
    mn, mx = torch.aminmax(x)
    amn, amx = a * mn, a * mx
    lo, hi = torch.clamp(amn, max=0.0), torch.clamp(amx, min=0.0)
    s, z, pre = _scale_zero(lo, hi, Q)
    out, t, inside = _codes(x, s, z, Q, step, kappa, (1 << bits) - 1)
    gx = torch.where(inside, g, torch.zeros((), dtype=g.dtype))
    if not learn_alpha:
        return out, gx, None
    gs = torch.tensor(_interleaved_sum(g * t), dtype=torch.float32)
    gs = gs if bool(pre >= EPS) else torch.zeros(())  # through clamp(min=EPS)
    g_hi = gs / Q  # through (hi − lo)/Q
    g_lo = -g_hi
    ga = torch.where(amx >= 0, g_hi, torch.zeros(())) * mx + torch.where(amn <= 0, g_lo, torch.zeros(())) * mn
    return out, gx, ga


def tracked_reference(x: torch.Tensor, lo: float, hi: float, bits: int, g: torch.Tensor, clip: bool,
                      keep: torch.Tensor | None = None):
    """(x̂, ∂ℒ/∂x) of a tracked-range quantizer (QAT: plain STE; DQ: clipped STE, kept rows in full precision)."""
    Q = (1 << bits) - 1
    lo_t = torch.clamp(torch.tensor(lo, dtype=torch.float32), max=0.0)
    hi_t = torch.clamp(torch.tensor(hi, dtype=torch.float32), min=0.0)
    s, z, _ = _scale_zero(lo_t, hi_t, Q)
    out = _codes(x, s, z, Q)[0]
    gx = g.clone()
    if clip:
        gx = torch.where((x >= lo_t) & (x <= hi_t), g, torch.zeros(()))
    if keep is not None:
        rows = keep.view(-1, *([1] * (x.dim() - 1)))
        out = torch.where(rows, x, out)
        gx = torch.where(rows, g, gx)
    return out, gx


def _inputs(kind: str, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(97, 31, generator=gen)
    if kind == "positive":
        return x.abs() + 0.5
    if kind == "negative":
        return -x.abs() - 0.01
    if kind == "zeros":  # exact zeros of either sign, ties on the grid (x/s = k + 0.5 for s = 0.25·…)
        x[::3] = 0.0
        x[1::7] = -0.0
        x[2::5] = torch.round(x[2::5] * 8) / 8 + 1 / 16
        return x
    if kind == "constant":
        return torch.full((40, 3), 0.0)
    if kind == "tiny":  # a range below ε·Q: the scale clamps at ε
        return x * 1e-10
    return x.pow(3)  # skewed


KINDS = ["normal", "positive", "negative", "zeros", "constant", "tiny", "skewed"]
QLR_CASES = [(4, "none"), (8, "none"), (2, "none"), (2, "bt"), (2, "bt*")]


@pytest.mark.parametrize("bits,truncation", QLR_CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_qlr_training_step_equals_the_reference_bit_for_bit(bits, truncation, kind):
    gen = torch.Generator().manual_seed(hash((bits, truncation, kind)) % 1000)
    x0 = _inputs(kind, gen)
    g = torch.randn(x0.shape, generator=gen)
    q = QLRQuantizer(bits, "aggregate", truncation=truncation)
    q.train()
    q(x0)  # initialisation: grid search (and κ for BT*)
    alpha, kappa = float(q.alpha), float(q.kappa)
    for xin in (x0.clone(), x0.t().contiguous().t()):  # contiguous and transposed (non-contiguous) input
        x = xin.clone().requires_grad_(True)
        q.alpha.grad = None
        y = q(x)
        y.backward(g)
        ref = qlr_reference(x0, alpha, bits, g, truncation, kappa)
        assert _bits_equal(y.detach(), ref[0]), (bits, truncation, kind)
        assert _bits_equal(x.grad, ref[1])
        assert _bits_equal(q.alpha.grad, ref[2]), (float(q.alpha.grad), float(ref[2]))
    # without an input gradient (a constant input): α's gradient alone
    q.alpha.grad = None
    q(x0).backward(g)
    assert _bits_equal(q.alpha.grad, qlr_reference(x0, alpha, bits, g, truncation, kappa)[2])
    # evaluation: the same x̂, no autograd node
    q.eval()
    with torch.no_grad():
        assert _bits_equal(q(x0), qlr_reference(x0, alpha, bits, g, truncation, kappa)[0])


@pytest.mark.parametrize("bits", [4, 2])
def test_frozen_qlr_equals_the_reference_bit_for_bit(bits):
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 9, generator=gen)
    g = torch.randn(64, 9, generator=gen)
    q = FrozenQLRQuantizer(bits, "message")
    q.train()
    q(x0)
    x = x0.clone().requires_grad_(True)
    y = q(x)
    y.backward(g)
    ref = qlr_reference(x0, float(q.alpha), bits, g, learn_alpha=False)
    assert _bits_equal(y.detach(), ref[0]) and _bits_equal(x.grad, ref[1])


def test_qlr_training_forward_is_one_autograd_node():
    """Range, scale chain, quantization and STE: one node whose inputs are x and α themselves."""
    q = QLRQuantizer(4, "feature")
    q.train()
    x = torch.randn(30, 5, requires_grad=True)
    y = q(x)
    assert type(y.grad_fn).__name__ == "_QLRFakeQuantBackward"
    leaves = {type(f).__name__ for f, _ in y.grad_fn.next_functions if f is not None}
    assert leaves == {"AccumulateGrad"}
    assert len([f for f, _ in y.grad_fn.next_functions if f is not None]) == 2


@pytest.mark.parametrize("n", [5, 8, 1031, 2048 + 6, 3 * 1024, 3 * 1024 + 5, 2708 * 7 + 3])
@pytest.mark.parametrize("grid", [(15, 1, 0.0, 15), (3, 1, 0.0, 3), (255, BT_STEP, 1.0, 3), (255, BT_STEP, -1.0, 3)])
def test_recomputed_gradient_equals_the_stored_factors_bit_for_bit(n, grid):
    """:func:`fused.fake_quant_grad` (t and the mask recomputed from x, in blocks) against the kernels that
    store them in the forward pass: ∂ℒ/∂x, Σ g·t and x̂ to the bit, for sizes across the block and the
    eight sums, zeros of either sign and clamped elements, with and without either gradient."""
    from bench_suite.quant import fused
    from bench_suite.quant.qlr import scale_chain

    Q, step, kappa, Qc = grid
    gen = torch.Generator().manual_seed(n + Q + int(kappa))
    x = torch.randn(n, generator=gen).pow(3)
    x[::5] = 0.0
    x[1::9] = -0.0
    x[2::13] = 1e6  # clamped at the top after the range is shrunk by α
    g = torch.randn(n, generator=gen) * 2.0 ** torch.randint(-12, 13, (n,), generator=gen)  # float64 sums that round
    g[3::7] = -0.0
    mn, mx = (float(v) for v in torch.aminmax(x))
    s, z = scale_chain(0.5, mn, mx, Q)[:2]
    k32 = np.float32(kappa)
    out, t, mask = fused._fused_forward(x, torch.tensor(s), torch.tensor(z), Q, step, kappa, Qc, "quant", None,
                                        None, True)
    assert bool(mask.any()) and not bool(mask.all())
    want_gx = fused.fake_quant_backward(g, mask)
    want_acc = fused.scale_grad(g, t)
    assert _bits_equal(fused.fake_quant_forward(x, s, z, Q, step, k32, Qc), out)
    gx, acc = fused.fake_quant_grad(x, g, s, z, Q, step, k32, Qc, True, True)
    assert _bits_equal(gx, want_gx) and acc == want_acc
    assert fused.fake_quant_grad(x, g, s, z, Q, step, k32, Qc, True, False) == (None, want_acc)
    gx, acc = fused.fake_quant_grad(x, g, s, z, Q, step, k32, Qc, False, True)
    assert _bits_equal(gx, want_gx) and acc is None


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_qat_equals_the_reference_bit_for_bit(bits, kind):
    gen = torch.Generator().manual_seed(bits * 7 + KINDS.index(kind))
    x0 = _inputs(kind, gen)
    g = torch.randn(x0.shape, generator=gen)
    q = QUANTIZERS.create("qat", bits=bits, role="update")
    q.train()
    q(x0 * 1.5)  # a first batch sets the range, the next ones move it with momentum
    for step in range(2):
        x = x0.clone().requires_grad_(True)
        y = q(x)
        y.backward(g)
        ref = tracked_reference(x0, float(q.lo), float(q.hi), bits, g, clip=False)
        assert _bits_equal(y.detach(), ref[0]) and _bits_equal(x.grad, ref[1]), (bits, kind, step)
    q.eval()
    with torch.no_grad():
        assert _bits_equal(q(x0 * 2), tracked_reference(x0 * 2, float(q.lo), float(q.hi), bits, g, clip=False)[0])


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_dq_equals_the_reference_bit_for_bit(bits, kind):
    """Degree-Quant: clipped STE and the protective mask (kept rows: x̂ = x, gradient 1)."""
    gen = torch.Generator().manual_seed(bits * 11 + KINDS.index(kind))
    x0 = _inputs(kind, gen)
    g = torch.randn(x0.shape, generator=gen)
    n = x0.shape[0]
    graph = dgl.graph((torch.arange(n), torch.roll(torch.arange(n), 1)), num_nodes=n)
    q = QUANTIZERS.create("dq", bits=bits, role="message", p_min=0.2, p_max=0.6)
    q.train()
    q(x0 * 0.5)
    x = x0.clone().requires_grad_(True)
    y = q(x, graph)
    y.backward(g)
    q._mask_calls -= 1  # draw again the mask this call drew
    keep = q.protective_mask(graph)
    ref = tracked_reference(x0, float(q.lo), float(q.hi), bits, g, clip=True, keep=keep)
    assert bool(keep.any()) and not bool(keep.all())
    assert _bits_equal(y.detach(), ref[0]) and _bits_equal(x.grad, ref[1]), (bits, kind)
    # a role without masking (weight) and evaluation
    qw = QUANTIZERS.create("dq", bits=bits, role="weight")
    qw.train()
    x = x0.clone().requires_grad_(True)
    y = qw(x)
    y.backward(g)
    ref = tracked_reference(x0, float(qw.lo), float(qw.hi), bits, g, clip=True)
    assert _bits_equal(y.detach(), ref[0]) and _bits_equal(x.grad, ref[1])
    qw.eval()
    with torch.no_grad():
        assert _bits_equal(qw(x0), tracked_reference(x0, float(qw.lo), float(qw.hi), bits, g, clip=True)[0])


def test_sum_neighbours_equals_update_all_in_value_and_gradient():
    from bench_suite.nn.graph import prepare_graph, sum_neighbours

    gen = torch.Generator().manual_seed(2)
    src, dst = torch.randint(0, 300, (2, 2000), generator=gen)
    g = prepare_graph(dgl.to_bidirected(dgl.graph((src, dst), num_nodes=300)))
    x0 = torch.randn(300, 17, generator=gen)
    up = torch.randn(300, 17, generator=gen)
    res = []
    for ours in (True, False):
        x = x0.clone().requires_grad_(True)
        if ours:
            y = sum_neighbours(g, x)
        else:
            with g.local_scope():
                g.srcdata["h"] = x
                g.update_all(fn.copy_u("h", "m"), fn.sum("m", "h"))
                y = g.dstdata["h"]
        y.backward(up)
        res.append((y.detach(), x.grad))
    assert _bits_equal(res[0][0], res[1][0]) and _bits_equal(res[0][1], res[1][1])


def test_a_float64_quantizer_keeps_the_composed_path():
    """A quantizer cast to float64 (α float64) computes its range in float64, not on float32 scalars
    (the two differ for some inputs: the test finds such inputs and checks the forward pass on them)."""
    q = QLRQuantizer(4, "input").double()
    q.eval()
    gen = torch.Generator().manual_seed(0)
    q(torch.randn(50, 7, generator=gen, dtype=torch.float64))
    q.alpha.data.fill_(0.7)
    differ = 0
    with torch.no_grad():
        for _ in range(300):
            x = torch.randn(20, 3, generator=gen) * 10.0 ** float(torch.randint(-3, 3, (), generator=gen))
            want = q._quantize(x, *q.range_for(x))
            assert _bits_equal(q(x), want)
            differ += not _bits_equal(q._quantize_lean(x), want)
    assert differ > 0
