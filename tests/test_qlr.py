"""QLR (learnable range scale α) and BT/BT* bit truncation (METHOD.md §5–§6)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bench_suite.quant.qlr import FrozenQLRQuantizer, QLRQuantizer, alpha_grid, skewness
from bench_suite.registry import load_all
from bench_suite.spec import SpecError, resolve_spec

load_all()


def _with_alpha(q: QLRQuantizer, alpha: float) -> QLRQuantizer:
    q.alpha.data.fill_(alpha)
    q.initialized.fill_(True)
    return q


def _analytic_dalpha(x: np.ndarray, w: np.ndarray, alpha: float, bits: int) -> float:
    """∂(Σ w·x̂)/∂α by hand: x̂ = (clamp(round(x/s)+z, 0, Q) − z)·s with s = α(M−m)/Q, z fixed."""
    Q = 2 ** bits - 1
    mn, mx = min(0.0, x.min()), max(0.0, x.max())
    s = alpha * (mx - mn) / Q
    z = min(max(round(-alpha * mn / s), 0), Q)
    ds = (mx - mn) / Q
    r = np.round(x / s)
    q = r + z
    g = np.where(q > Q, Q - z, np.where(q < 0, -z, r - x / s))
    return float((w * g).sum() * ds)


@pytest.mark.parametrize("bits,shift", [(4, 0.0), (2, 0.0), (8, 0.0), (4, 3.0)])
def test_alpha_gradient_is_the_analytic_lsq_gradient(bits, shift):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, generator=gen, dtype=torch.float64) + shift
    w = torch.randn(64, generator=gen, dtype=torch.float64)
    q = _with_alpha(QLRQuantizer(bits, "feature").double(), 0.63)
    (q(x) * w).sum().backward()
    expected = _analytic_dalpha(x.numpy(), w.numpy(), 0.63, bits)
    assert float(q.alpha.grad) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert abs(float(q.alpha.grad)) > 1e-3


def test_lsq_scale_divides_the_alpha_gradient():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    grads = []
    for lsq in (False, True):
        q = _with_alpha(QLRQuantizer(4, "input", lsq_scale=lsq), 0.5)
        (q(x) ** 2).sum().backward()
        grads.append(float(q.alpha.grad))
    assert grads[0] != 0 and grads[1] == pytest.approx(grads[0] / math.sqrt(x.numel() * 15), rel=1e-5)


def test_bt_alpha_gradient_uses_the_truncated_code():
    x = torch.randn(80, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = _with_alpha(QLRQuantizer(2, "feature", truncation="bt").double(), 0.6)
    q(x).sum().backward()
    mn, mx = float(x.min()), float(x.max())
    s8 = 0.6 * (mx - mn) / 255
    z8 = round(-0.6 * mn / s8)
    q8 = np.round(x.numpy() / s8) + z8
    c = np.round(np.clip(q8, 0, 255) / 85)
    g = np.where(q8 > 255, 255 - z8, np.where(q8 < 0, -z8, 85 * c - z8 - x.numpy() / s8))
    assert float(q.alpha.grad) == pytest.approx(float(g.sum() * (mx - mn) / 255), rel=1e-9)


def test_training_alpha_alone_from_a_poor_start_halves_the_error():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(4))
    q = _with_alpha(QLRQuantizer(4, "input"), 0.05)
    opt = torch.optim.Adam(q.parameters(), lr=0.01)
    start = float((q(x) - x).square().mean())
    for _ in range(200):
        opt.zero_grad()
        (q(x) - x).square().mean().backward()
        opt.step()
    end = float((q(x) - x).square().mean())
    assert end <= 0.5 * start, (start, end, float(q.alpha))


def test_grid_search_initialises_alpha_lazily_and_picks_the_best_candidate():
    x = torch.randn(3000, generator=torch.Generator().manual_seed(5))
    q = QLRQuantizer(4, "input")
    assert not bool(q.initialized)
    q(x)
    assert bool(q.initialized)
    errs = [float((QLRQuantizer(4, "input")._quantize(x, *q.range_for(x, a)) - x).abs().mean())
            for a in alpha_grid(4).float()]
    assert float(q.alpha) == pytest.approx(float(alpha_grid(4)[int(np.argmin(errs))]))
    assert 0.02 <= float(q.alpha) < 1.0  # Gaussian tails: clipping pays at 4 bits
    before = float(q.alpha)
    q(x * 10)  # no second grid search
    assert float(q.alpha) == before


def test_frozen_alpha_is_a_buffer_fixed_at_the_grid_value():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    q = FrozenQLRQuantizer(2, "input")
    assert list(q.parameters()) == []
    q(x).sum().backward()
    assert "alpha" in q.state_dict() and x.grad is not None
    assert float(q.alpha) == pytest.approx(QLRQuantizer(2, "input").grid_search(x))


def test_bt_stores_two_bit_codes_of_the_8bit_grid():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(7))
    q = QLRQuantizer(2, "input", truncation="bt").eval()
    y = q(x)
    codes, scale, zero = q.codes(x)
    lo, hi = q.range_for(x)
    s8 = (hi - lo) / 255
    assert float(scale) == pytest.approx(85 * float(s8), rel=1e-6)
    z8 = 85 * float(zero)
    assert z8 == pytest.approx(round(z8), abs=1e-3)  # 85·zero is the integer 8-bit zero point
    assert set(codes.unique().tolist()) <= {0, 1, 2, 3}
    levels = torch.unique(y)
    assert levels.numel() <= 4 and torch.allclose(levels.diff(), scale.expand(levels.numel() - 1), rtol=1e-5)


def _right_skewed(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.empty(20000).exponential_(generator=gen) * torch.randn(20000, generator=gen).exp()


def test_bt_star_shift_follows_skewness_and_cuts_the_bias_of_aggregates():
    """On right-skewed (post-ReLU-like) data BT* rounds up by κ = round(g1) > 0, which removes much of
    BT's negative bias, so the error of a sum over many values (an aggregate) is smaller.

    Per element BT is already the nearest of its four levels (85 is odd, so the 8-bit and 2-bit rounding
    boundaries coincide): BT* cannot lower the per-element error at the same α, only the bias.
    """
    x = _right_skewed(8)
    bt = QLRQuantizer(2, "message", truncation="bt").eval()
    bts = QLRQuantizer(2, "message", truncation="bt*").eval()
    yb, ys = bt(x), bts(x)
    assert float(bts.kappa) == round(skewness(x)) and float(bts.kappa) >= 1
    assert float(bt.alpha) == float(bts.alpha)
    bias_b, bias_s = float((yb - x).mean()), float((ys - x).mean())
    assert abs(bias_s) < 0.7 * abs(bias_b), (bias_b, bias_s)
    idx = torch.randint(0, x.numel(), (500, 64), generator=torch.Generator().manual_seed(9))
    agg_err = lambda y: float((y[idx].sum(1) - x[idx].sum(1)).abs().mean())  # noqa: E731
    assert agg_err(ys) < agg_err(yb)
    assert float((yb - x).abs().mean()) <= float((ys - x).abs().mean())  # per element, BT is nearest


def test_bt_star_kappa_in_state_dict_and_refresh():
    x = _right_skewed(10)
    q = QLRQuantizer(2, "input", truncation="bt*", skew_refresh=2)
    q.train()
    q(x)
    k0 = float(q.kappa)
    assert k0 >= 1 and "kappa" in q.state_dict()
    q(-x)  # step 1: no refresh
    assert float(q.kappa) == k0
    q(-x)  # step 2: refresh, left-skewed now
    assert float(q.kappa) == -k0
    q0 = QLRQuantizer(2, "input", truncation="bt*")
    q0.train()
    q0(x), q0(-x), q0(-x)
    assert float(q0.kappa) == k0  # skew_refresh=0: measured at initialisation only




def test_bt_star_moves_zero_off_the_grid_when_the_skewness_passes_half_a_level():
    """METHOD.md §6 (and the authors' ``round(scipy.stats.skew(x))``): the shift κ moves the 8-bit code
    before it is rounded to a multiple of 85, so once κ ≥ 43 a zero's code 0 rounds to 85, the first
    INT2 level.  A sparse non-negative input (bag-of-words with input dropout) is that skewed: the
    Coauthor-CS GCN-2 input quantizer measured κ = 122 (datasets pilot), and BT* then reads every
    absent word as a third of its range, where BT (κ = 0) keeps it 0."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(400, 500, generator=gen) < 3e-4).float() * 5.0  # 0.03% ones (skewness ~ 1/sqrt(p))
    assert skewness(x) > 42.5
    bt = QLRQuantizer(2, "input", truncation="bt").eval()
    bts = QLRQuantizer(2, "input", truncation="bt*").eval()
    yb, ys = bt(x), bts(x)
    assert float(bts.kappa) == round(skewness(x)) >= 43
    zeros = x == 0
    assert float(yb[zeros].abs().max()) == 0.0
    assert float(ys[zeros].min()) > 0.0 and torch.unique(ys[zeros]).numel() == 1
    # a mildly skewed input (Amazon's bag-of-words, κ = 3 in the same pilot) keeps its zeros
    y = (torch.rand(400, 500, generator=gen) < 0.3).float() * 5.0
    mild = QLRQuantizer(2, "input", truncation="bt*").eval()
    assert float(mild(y)[y == 0].abs().max()) == 0.0
@pytest.mark.parametrize("trunc", ["bt", "bt*"])
def test_truncation_is_int2_only_through_resolve_spec(trunc):
    with pytest.raises(SpecError, match="INT2-only"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "qlr", "bits": 4, "truncation": trunc})
    spec = resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "qlr", "bits": 2, "truncation": trunc})
    assert spec.data["quant"]["truncation"] == trunc


def test_unknown_truncation_names_the_valid_ones():
    with pytest.raises(SpecError, match=r"truncation='bt2'.*'none', 'bt', 'bt\*'"):
        resolve_spec({"dataset": "csbm", "model": "gcn", "quant": "qlr", "bits": 2, "truncation": "bt2"})
    with pytest.raises(ValueError, match="INT2-only"):
        QLRQuantizer(8, "input", truncation="bt*")


@pytest.mark.parametrize("bits,truncation,shift", [(4, "none", 0.0), (4, "none", 2.0), (2, "bt*", 0.5),
                                                   (8, "none", -3.0)])
def test_fused_alpha_path_equals_the_autograd_chain_bit_for_bit(bits, truncation, shift):
    """Training uses one _AlphaScale node for s(α); the value and both gradients must be those of the
    plain autograd chain through range_for/scale_zero (shift > 0: all-positive data, lo clamped at 0)."""
    from bench_suite.quant.fused import scale_grad

    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(700, 33, generator=gen).pow(3 if truncation == "bt*" else 1) + shift
    w = torch.randn(700, 33, generator=gen)
    res = []
    for fused in (True, False):
        q = _with_alpha(QLRQuantizer(bits, "message", truncation=truncation), 0.63)
        q.kappa.fill_(2.0 if truncation == "bt*" else 0.0)
        q.train()
        x = x0.clone().requires_grad_(True)
        y = q._quantize_learned(x) if fused else q._quantize(x, *q.range_for(x))
        (y * w).sum().backward()
        res.append((y.detach(), x.grad, q.alpha.grad))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
    assert torch.equal(res[0][2], res[1][2]) and float(res[0][2]) != 0.0
    # the forward pass takes the fused path when alpha is learned: one node for range, scale and quantization
    q = _with_alpha(QLRQuantizer(bits, "message", truncation=truncation), 0.63)
    q.kappa.fill_(2.0 if truncation == "bt*" else 0.0)
    q.train()
    y = q(x0.clone().requires_grad_(True))
    y.sum().backward()
    assert type(q(x0).grad_fn).__name__ == "_QLRFakeQuantBackward"
    assert torch.equal(y.detach(), res[0][0])
    # the kernel's interleaved float64 sum is the sequential sum up to float64 rounding
    g, t = np.random.default_rng(0).standard_normal((2, 100003)).astype(np.float32)
    seq = math.fsum((g * t).astype(np.float64))  # float32 products, as the kernel forms them
    acc = scale_grad(torch.from_numpy(g), torch.from_numpy(t))
    assert acc == pytest.approx(seq, rel=1e-12, abs=1e-12)


def _sparse_vs_dense(steps: int = 3, density: float = 0.02, bits: int = 4, seed: int = 0, truncation: str = "none",
                     signed: bool = True, width: int = 16):
    """Train two copies of q_input/q_weight on the same sparse input, one on QLR's sampled α-gradient
    (``matmul``), one on the dense product (``q(x) @ w``); returns both trajectories and the quantizer."""
    g = torch.Generator().manual_seed(seed)
    vals = torch.randn(300, 200, generator=g) if signed else torch.rand(300, 200, generator=g)
    x = (torch.rand(300, 200, generator=g) < density).float() * vals
    w0 = torch.randn(200, width, generator=g)
    target = torch.randn(300, width, generator=g)
    runs = []
    for sparse in (True, False):
        qi, qw = QLRQuantizer(bits, "input", truncation=truncation), QLRQuantizer(bits, "weight")
        w = torch.nn.Parameter(w0.clone())
        opt = torch.optim.Adam([w, qi.alpha, qw.alpha], lr=1e-2)
        traj = []
        for _ in range(steps):
            opt.zero_grad()
            h = qi.matmul(x, lambda: qw(w)) if sparse else qi(x) @ qw(w)
            ((h - target) ** 2).mean().backward()
            traj.append((h.detach().clone(), qi.alpha.grad.clone(), w.grad.clone(), qw.alpha.grad.clone()))
            opt.step()
        runs.append((traj, qi))
    return runs


@pytest.mark.parametrize("bits,truncation,signed", [(4, "none", True), (8, "none", False), (2, "none", True),
                                                    (2, "bt*", False), (2, "bt", False)])
def test_sparse_input_alpha_gradient_equals_the_dense_product_bit_for_bit(bits, truncation, signed):
    """QLR's sampled α-gradient of a constant sparse input: same output, same α and weight gradients
    as autograd's dense ∂ℒ/∂x̂, step after step (first step checked against the dense product)."""
    (sparse, qs), (dense, qd) = _sparse_vs_dense(bits=bits, truncation=truncation, signed=signed)
    assert qs._sparse_checked is True and qd._sparse_checked is None  # the sampled path ran, and passed its check
    for a, b in zip(sparse, dense):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    assert float(sparse[-1][1]) != 0.0


def test_dense_input_or_gradient_input_keeps_the_dense_product():
    (_, q), _ = _sparse_vs_dense(steps=1, density=0.9)
    assert q._sparse_checked is False
    # BT* on a signed input: 0 is not on the truncated grid (x̂(0) != 0), so t is dense although x is not
    (sparse, q), (dense, _) = _sparse_vs_dense(steps=2, bits=2, truncation="bt*", signed=True)
    assert q._sparse_checked is False
    for a, b in zip(sparse, dense):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    # a product wider than MKL's single FMA chain (k > 192): dense, no failed check, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (sparse, q), (dense, _) = _sparse_vs_dense(steps=2, width=256)
    assert q._sparse_checked is False
    for a, b in zip(sparse, dense):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    q2 = QLRQuantizer(4, "input")
    x = torch.randn(50, 20, requires_grad=True)
    assert not q2._sparse_input(x)  # a hidden layer's input: its dense gradient is needed anyway


def test_sparse_alpha_gradient_falls_back_when_its_check_fails(monkeypatch):
    """If the sampled product ever differs from the dense one (another BLAS or CPU), the quantizer
    warns, keeps the dense value for that step and uses the dense product from then on."""
    from bench_suite.quant import fused

    real = fused.sampled_scale_grad
    monkeypatch.setattr(fused, "sampled_scale_grad", lambda *a, **k: (real(*a, **k)[0] * (1 + 1e-6), real(*a, **k)[1]))
    with pytest.warns(RuntimeWarning, match="dense product"):
        (sparse, qs), (dense, _) = _sparse_vs_dense(steps=2)
    assert qs._sparse_checked is False
    for a, b in zip(sparse, dense):
        for u, v in zip(a, b):
            assert torch.equal(u, v)


@pytest.mark.parametrize("step,kappa,z", [(1, 0.0, 7.0), (85, 0.0, 0.0), (85, 1.0, 100.0)])
def test_sparse_kernel_equals_the_dense_kernel_on_zeros_of_either_sign(step, kappa, z):
    """The sparse forward kernel's shortcut for +0.0 gives the dense kernel's x̂ bit for bit, and its
    (index, factor) list is exactly the dense kernel's non-zero ∂x̂/∂s factors, in order — also when
    x̂(0) is off the grid (BT* with a shift: every zero has a factor) and for -0.0."""
    from bench_suite.quant.fused import scale_factors, sparse_scale_factors

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(5000) * (rng.random(5000) < 0.05)).astype(np.float32)  # +0.0 and -0.0
    x[:4] = [0.0, -0.0, 1e-30, -1e-30]
    assert (np.signbit(x) & (x == 0)).any() and (~np.signbit(x) & (x == 0)).any()
    Q, Qc = (255, 3) if step != 1 else (15, 15)
    s, z32, k = np.float32(0.02), np.float32(z), np.float32(kappa)
    out_d, t_d = (v.numpy() for v in scale_factors(torch.from_numpy(x), s, z32, Q, step, k, Qc))
    out_s, idx, tv = sparse_scale_factors(torch.from_numpy(x), s, z32, Q, step, k, Qc)
    out_s, n = out_s.numpy(), idx.size
    assert np.array_equal(out_s.view(np.int32), out_d.view(np.int32))
    nz = np.flatnonzero(t_d)
    assert np.array_equal(idx, nz) and np.array_equal(tv.view(np.int32), t_d[nz].view(np.int32))
    if step != 1 and kappa:
        assert n > 0.9 * x.size  # x̂(0) off the grid: the zeros carry factors


@pytest.mark.parametrize("K", [1, 7, 64, 128])
def test_sampled_scale_grad_equals_the_dense_product_term_for_term(K):
    """The sampled α-gradient (eight FMA chains side by side, a shared row loaded once) gives every term
    of the dense product G·Wᵀ and the dense interleaved sum, bit for bit: rows with many, few and one
    sampled entries (groups of eight on one row, across rows, and a tail)."""
    from bench_suite.quant.fused import sampled_scale_grad, scale_grad

    rng = np.random.default_rng(K)
    n, m = 90, 300
    dense_rows = rng.random((n, m)) < np.where(np.arange(n) % 3 == 0, 0.4, 0.01)[:, None]
    t = torch.from_numpy((rng.standard_normal((n, m)) * dense_rows).astype(np.float32))
    idx = np.flatnonzero(t.numpy())
    assert idx.size % 8 != 0 and idx.size > 64
    G = torch.from_numpy(rng.standard_normal((n, K)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((m, K)).astype(np.float32))
    dense = G.mm(W.t()).contiguous()
    acc, terms = sampled_scale_grad(G, W, idx, t.view(-1).numpy()[idx], terms=True)
    assert np.array_equal(terms.view(np.int32), dense.view(-1).numpy()[idx].view(np.int32))
    assert acc == scale_grad(dense, t)


def test_scale_chain_equals_the_torch_chain_bit_for_bit():
    """QLR's numpy scalar chain gives scale_zero's s and z (and α·mn, α·mx, (hi − lo)/Q) on torch's
    0-dim float32 tensors to the bit: random ranges, signed zeros, degenerate and tiny ranges (s at EPS)."""
    from bench_suite.quant.base import scale_zero
    from bench_suite.quant.qlr import scale_chain

    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.standard_normal(300) * 10.0 ** rng.integers(-12, 4, 300),
                           [0.0, -0.0, 1e-30, -1e-30, 3e-9, -3e-9, 1e-7, 7.0]]).astype(np.float32)
    alphas = np.concatenate([rng.uniform(0.05, 1.5, 40), [1.0, 0.1, 0.0]]).astype(np.float32)
    bits = lambda t: np.float32(float(t)).view(np.int32)  # noqa: E731
    checked = 0
    for a in alphas:
        for mn, mx in zip(vals, rng.permutation(vals)):
            mn, mx = min(mn, mx), max(mn, mx)
            for Q in (3, 15, 255):
                at, mnt, mxt = (torch.tensor(v, dtype=torch.float32) for v in (a, mn, mx))
                amn, amx = at * mnt, at * mxt
                lo, hi = torch.clamp(amn, max=0.0), torch.clamp(amx, min=0.0)
                s, z = scale_zero(lo, hi, {3: 2, 15: 4, 255: 8}[Q])
                got = scale_chain(float(a), float(mn), float(mx), Q)
                want = (s, z, (hi - lo) / Q, amn, amx)
                assert [np.float32(g).view(np.int32) for g in got] == [bits(w) for w in want], (a, mn, mx, Q)
                checked += 1
    assert checked > 30000


def test_bt_star_on_a_diverged_input_names_the_quantizer():
    q = QLRQuantizer(2, "message", truncation="bt*")
    q.train()
    x = torch.randn(50, 4)
    x[3, 1] = float("inf")
    with pytest.raises(FloatingPointError, match="'message' quantizer's input is nan"):
        q(x)
    assert float(q.kappa) == 0.0 and not bool(q.initialized)
