"""A fused fake-quantization autograd function (speed), equal in value and gradient to ``fake_quant``.

:func:`bench_suite.quant.base.fake_quant` composed from autograd primitives records
about ten element-wise operations per call; a deep GNN has six quantizers per layer,
so training was several times slower than FP32.  :class:`FakeQuant` computes the
same forward value and the same STE/LSQ gradients (METHOD.md §1) in a few passes:

* ``x̂ = (q − z)·s`` with ``q = clamp(round(x/s) + z, 0, Q)``; optionally
  bit-truncated (METHOD.md §6): ``c = clamp(round((q + κ)/step), 0, Qc)``,
  ``x̂ = (c − z/step)·(s·step)``;
* ∂x̂/∂s = ``step·c − z − x/s`` where nothing is clamped, ``step·c − z`` where
  clamped (the LSQ form); z is treated as a constant (for QLR it is independent of
  α: both ends of the range scale with α);
* ∂x̂/∂x: ``"quant"`` 1 where nothing is clamped (the STE of ``fake_quant``),
  ``"ste"`` 1 everywhere (plain STE), ``"range"`` 1 inside ``[lo, hi]`` (clipped STE).

The training forward pass runs as one numba loop over the tensor (:func:`_fq_kernel`)
producing x̂, the ∂x̂/∂s factor and the ∂x̂/∂x mask together; the torch expression in
:func:`_codes` is the reference (and the path without gradients).

``tests/test_quant.py`` checks value and gradients against ``fake_quant``.

The kernels are private; other modules use them through these functions, on contiguous float32
CPU tensors and float32 scalars (:func:`f32`):

* :func:`fake_quant_forward` — x̂ in one pass;
* :func:`fake_quant_backward` — ∂ℒ/∂x = g·mask for a mask a forward kernel wrote;
* :func:`fake_quant_grad` — ∂ℒ/∂x of :func:`fake_quant_forward` and the scale's gradient Σ g·∂x̂/∂s,
  in one pass over x and g that recomputes the factors;
* :func:`scale_grad` — that sum for given factors t, Σ g·t in float64 over eight interleaved partial sums;
* :func:`scale_factors` / :func:`sparse_scale_factors` — x̂ with its ∂x̂/∂s factors in full, or
  only the non-zero ones as (flat index, value) pairs (a constant sparse input);
* :func:`sampled_scale_grad` — Σ (G·Wᵀ)∘t over such pairs without forming G·Wᵀ, equal to
  :func:`scale_grad` of the dense product.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numba
import numpy as np
from numba.extending import intrinsic
import torch
from torch import Tensor

from bench_suite.bits import qmax

GRAD_X_MODES = ("quant", "ste", "range")


def _codes(x: Tensor, s: Tensor, z: Tensor, Q: int, step: int, kappa: float, Qc: int):
    """(v = x/s, codes, inside): ``inside`` is where no clamp is active."""
    v = x / s
    qr = torch.round(v).add_(z)
    q = torch.clamp(qr, 0, Q)
    inside = q == qr
    if step == 1:
        return v, q, inside
    cr = torch.round((q + kappa) / step)
    c = torch.clamp(cr, 0, Qc)
    return v, c, inside & (c == cr)


def dequantize(c: Tensor, s: Tensor, z: Tensor, step: int = 1) -> Tensor:
    """``(c − z)·s`` (or ``(c − z/step)·(s·step)`` under truncation), the one formula every path uses."""
    if step == 1:
        return (c - z) * s
    return (c - z / step) * (s * step)


_GRAD_X_CODE = {"ste": 0, "quant": 1, "range": 2}


@numba.njit(cache=True, nogil=True)
def _fq_kernel(x, s, z, Q, step, kappa, Qc, zs, ss, mode, lo, hi, need_t, out, t, mask, keep, row):  # pragma: no cover
    """One pass: x̂ (``out``), ∂x̂/∂s (``t``, if ``need_t``) and the ∂x̂/∂x mask (``mask``, modes 1/2).

    Rows ``r`` with ``keep[r]`` (if ``keep`` is non-empty; ``row`` elements per row) pass
    through unquantized: x̂ = x, ∂x̂/∂x = 1, ∂x̂/∂s = 0 (Degree-Quant's protective mask).

    Every arithmetic step is float32 in the same order as :func:`_codes`/:func:`dequantize`
    (round half to even, as ``torch.round``), so values match the torch path bit for bit.
    """
    has_keep = keep.size > 0
    for i in range(x.size):
        xi = x[i]
        if has_keep and keep[i // row]:
            out[i] = xi
            if need_t:
                t[i] = np.float32(0.0)
            if mode != 0:
                mask[i] = True
            continue
        v = xi / s
        qr = np.float32(np.rint(v)) + z
        q = min(max(qr, np.float32(0.0)), np.float32(Q))
        inside = q == qr
        if step == 1:
            c = q
            out[i] = (c - z) * s
            a = c - z
        else:
            cr = np.float32(np.rint((q + kappa) / np.float32(step)))
            c = min(max(cr, np.float32(0.0)), np.float32(Qc))
            inside = inside and (c == cr)
            out[i] = (c - zs) * ss
            a = c * np.float32(step) - z
        if need_t:
            t[i] = a - v if inside else a
        if mode == 1:
            mask[i] = inside
        elif mode == 2:
            mask[i] = (xi >= lo) and (xi <= hi)


@numba.njit(cache=True, nogil=True)
def _fq_plain_kernel(x, s, z, Q, out, t, mask):  # pragma: no cover
    """:func:`_fq_kernel` for the common case (no truncation, no kept rows, mask = "inside"),
    writing x̂, ∂x̂/∂s and the mask.  Without the per-element branches of the general kernel
    LLVM vectorizes the loop: 5-15x faster, the same float32 operations in the same order."""
    Qf = np.float32(Q)
    zero = np.float32(0.0)
    for i in range(x.size):
        v = x[i] / s
        qr = np.float32(np.rint(v)) + z
        q = min(max(qr, zero), Qf)
        a = q - z
        out[i] = a * s
        inside = q == qr
        t[i] = a - v if inside else a
        mask[i] = inside


@numba.njit(cache=True, nogil=True)
def _fq_plain_kernel_no_t(x, s, z, Q, out, mask):  # pragma: no cover
    """:func:`_fq_plain_kernel` without ∂x̂/∂s (the scale is not learned)."""
    Qf = np.float32(Q)
    zero = np.float32(0.0)
    for i in range(x.size):
        qr = np.float32(np.rint(x[i] / s)) + z
        q = min(max(qr, zero), Qf)
        out[i] = (q - z) * s
        mask[i] = q == qr


@numba.njit(cache=True, nogil=True)
def _fq_value_kernel(x, s, z, Q, out):  # pragma: no cover
    """:func:`_fq_plain_kernel` writing x̂ only (evaluation: no gradient, no mask)."""
    Qf = np.float32(Q)
    zero = np.float32(0.0)
    for i in range(x.size):
        q = min(max(np.float32(np.rint(x[i] / s)) + z, zero), Qf)
        out[i] = (q - z) * s


@numba.njit(cache=True, nogil=True, inline="always")
def _trunc_element(xi, s, z, Qf, stepf, kappa, Qcf, zs, ss):  # pragma: no cover
    """One element under bit truncation: (x̂, ∂x̂/∂s factor, inside), float32 throughout."""
    zero = np.float32(0.0)
    v = xi / s
    qr = np.float32(np.rint(v)) + z
    q = min(max(qr, zero), Qf)
    cr = np.float32(np.rint((q + kappa) / stepf))
    c = min(max(cr, zero), Qcf)
    inside = (q == qr) and (c == cr)
    a = c * stepf - z
    return (c - zs) * ss, (a - v if inside else a), inside


@numba.njit(cache=True, nogil=True)
def _fq_trunc_kernel(x, s, z, Q, step, kappa, Qc, zs, ss, out, t, mask):  # pragma: no cover
    """:func:`_fq_plain_kernel` for bit truncation (BT/BT*: ``step`` > 1), branch-free."""
    Qf, Qcf, stepf = np.float32(Q), np.float32(Qc), np.float32(step)
    for i in range(x.size):
        out[i], t[i], mask[i] = _trunc_element(x[i], s, z, Qf, stepf, kappa, Qcf, zs, ss)


@numba.njit(cache=True, nogil=True)
def _fq_trunc_value_kernel(x, s, z, Q, step, kappa, Qc, zs, ss, out):  # pragma: no cover
    """:func:`_fq_trunc_kernel` writing x̂ only (no gradient needed, or one recomputed later)."""
    Qf, Qcf, stepf = np.float32(Q), np.float32(Qc), np.float32(step)
    for i in range(x.size):
        out[i] = _trunc_element(x[i], s, z, Qf, stepf, kappa, Qcf, zs, ss)[0]


@numba.njit(cache=True, nogil=True)
def _fq_range_kernel(x, s, z, Q, lo, hi, out, mask, keep, row):  # pragma: no cover
    """:func:`_fq_kernel` for Degree-Quant's case (no truncation, ∂x̂/∂s not needed, clipped-STE
    mask ``lo <= x <= hi``, optional kept rows of ``row`` elements): one branch-free pass over
    every element, which LLVM vectorizes, then the kept rows copied over (x̂ = x, mask 1).
    5-10x faster than the general kernel; the same float32 operations in the same order."""
    Qf = np.float32(Q)
    zero = np.float32(0.0)
    for j in range(x.size):
        xi = x[j]
        qr = np.float32(np.rint(xi / s)) + z
        q = min(max(qr, zero), Qf)
        out[j] = (q - z) * s
        mask[j] = (xi >= lo) & (xi <= hi)
    for r in range(keep.size):
        if keep[r]:
            b = r * row
            out[b:b + row] = x[b:b + row]
            mask[b:b + row] = True


@numba.njit(cache=True, nogil=True)
def _fq_backward_kernel(g, t, mask, need_t, use_mask, gx):  # pragma: no cover
    """``gx = g·mask`` (if ``use_mask``; a branch-free loop that vectorizes) and returns
    Σ g·t (if ``need_t``): float32 products summed in float64 over eight interleaved partial
    sums (element i goes to sum i mod 8), which the CPU runs in parallel; one sequential float64
    sum was a chain of dependent adds, ~0.25 ms per 2708x64 tensor."""
    if use_mask:
        for i in range(g.size):
            gx[i] = g[i] if mask[i] else np.float32(0.0)
    if not need_t:
        return 0.0
    n = g.size
    acc = np.zeros(8, dtype=np.float64)
    m = n - n % 8
    for i in range(0, m, 8):
        for k in range(8):
            acc[k] += g[i + k] * t[i + k]
    for i in range(m, n):
        acc[i - m] += g[i] * t[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


#: elements per block of :func:`_fq_grad_kernel` (a multiple of 8, so a block starts at sum 0)
_GRAD_BLOCK = 1024


@numba.njit(cache=True, nogil=True, inline="always")
def _plain_grad_block(x, g, s, z, Qf, gx, gt):  # pragma: no cover
    """``gx = g·inside`` and ``gt = g·t`` over one block, t and inside as :func:`_fq_plain_kernel` forms them."""
    zero = np.float32(0.0)
    for j in range(x.size):
        v = x[j] / s
        qr = np.float32(np.rint(v)) + z
        q = min(max(qr, zero), Qf)
        a = q - z
        inside = q == qr
        gj = g[j]
        gx[j] = gj if inside else zero
        gt[j] = gj * (a - v if inside else a)


@numba.njit(cache=True, nogil=True, inline="always")
def _trunc_grad_block(x, g, s, z, Qf, stepf, kappa, Qcf, zs, ss, gx, gt):  # pragma: no cover
    """:func:`_plain_grad_block` under bit truncation (t and inside of :func:`_trunc_element`)."""
    zero = np.float32(0.0)
    for j in range(x.size):
        _, t, inside = _trunc_element(x[j], s, z, Qf, stepf, kappa, Qcf, zs, ss)
        gj = g[j]
        gx[j] = gj if inside else zero
        gt[j] = gj * t


@numba.njit(cache=True, nogil=True)
def _fq_grad_kernel(x, g, s, z, Q, step, kappa, Qc, zs, ss, need_t, need_x, gx):  # pragma: no cover
    """The backward pass of :func:`_fq_plain_kernel` (``step`` 1) or :func:`_fq_trunc_kernel` from ``x``
    itself: the ∂x̂/∂s factors t and the "inside" mask recomputed with the same float32 operations,
    ``gx = g·inside`` written (if ``need_x``) and Σ g·t returned (if ``need_t``, else 0) as
    :func:`_fq_backward_kernel` sums it: float32 products, element i into float64 sum i mod 8, in order.

    Recomputing costs less than the forward pass writing t and the mask for the backward pass to
    read (two more tensors, beyond the cache for a 2708x64 one).  Blocks of :data:`_GRAD_BLOCK`
    elements: a branch-free loop that vectorizes writes gx and the products g·t to a small buffer,
    which the eight sums (kept in registers) then read."""
    Qf, Qcf, stepf = np.float32(Q), np.float32(Qc), np.float32(step)
    n = x.size
    gt = np.empty(_GRAD_BLOCK, dtype=np.float32)
    scratch = np.empty(0 if need_x else _GRAD_BLOCK, dtype=np.float32)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for b in range(0, n, _GRAD_BLOCK):
        L = min(_GRAD_BLOCK, n - b)
        gxb = gx[b:b + L] if need_x else scratch[:L]
        if step == 1:
            _plain_grad_block(x[b:b + L], g[b:b + L], s, z, Qf, gxb, gt)
        else:
            _trunc_grad_block(x[b:b + L], g[b:b + L], s, z, Qf, stepf, kappa, Qcf, zs, ss, gxb, gt)
        if not need_t:
            continue
        m = L - L % 8
        for j in range(0, m, 8):
            a0 += gt[j]
            a1 += gt[j + 1]
            a2 += gt[j + 2]
            a3 += gt[j + 3]
            a4 += gt[j + 4]
            a5 += gt[j + 5]
            a6 += gt[j + 6]
            a7 += gt[j + 7]
        r = L - m  # the last block's tail: element m + k into sum k
        if r > 0:
            a0 += gt[m]
        if r > 1:
            a1 += gt[m + 1]
        if r > 2:
            a2 += gt[m + 2]
        if r > 3:
            a3 += gt[m + 3]
        if r > 4:
            a4 += gt[m + 4]
        if r > 5:
            a5 += gt[m + 5]
        if r > 6:
            a6 += gt[m + 6]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@numba.njit(cache=True, nogil=True)
def _fq_sparse_kernel(x, xbits, s, z, Q, step, kappa, Qc, zs, ss, out, idx, tv):  # pragma: no cover
    """:func:`_fq_trunc_kernel` (or, with ``step`` 1, ``kappa`` 0, ``Qc`` = Q, ``zs`` = z, ``ss`` = s,
    :func:`_fq_plain_kernel`: the same values) for a constant input, which needs no ∂x̂/∂x mask:
    writes x̂ in full and the non-zero ∂x̂/∂s factors compacted as (flat index, value),
    ascending; returns their count.  Where x̂ = 0 is on the grid (any grid without truncation;
    bit truncation of a non-negative input) the factor at x = 0 is exactly 0, so a sparse
    input gives few.  ``xbits`` is ``x`` viewed as int32: elements that are exactly +0.0 take
    the values computed once for +0.0 (a compare and a store instead of the element function,
    5x faster on Cora's 98.7%-zero features; -0.0 and everything else go through it)."""
    Qf, Qcf, stepf = np.float32(Q), np.float32(Qc), np.float32(step)
    o0, t0, _ = _trunc_element(np.float32(0.0), s, z, Qf, stepf, kappa, Qcf, zs, ss)
    n = 0
    for i in range(x.size):
        if xbits[i] == 0:
            out[i] = o0
            if t0 != np.float32(0.0):
                idx[n] = i
                tv[n] = t0
                n += 1
            continue
        out[i], ti, _ = _trunc_element(x[i], s, z, Qf, stepf, kappa, Qcf, zs, ss)
        if ti != np.float32(0.0):
            idx[n] = i
            tv[n] = ti
            n += 1
    return n


@intrinsic
def _fma32(typingctx, a, b, c):  # pragma: no cover - compiled
    """fma(a, b, c) in float32 with a single rounding (LLVM's llvm.fma.f32)."""
    sig = numba.types.float32(numba.types.float32, numba.types.float32, numba.types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _product_element(G, W, i, j, K):  # pragma: no cover
    """(G·Wᵀ)[i, j] as one float32 FMA chain over k = 0..K−1."""
    c = np.float32(0.0)
    for k in range(K):
        c = _fma32(G[i, k], W[j, k], c)
    return c


@numba.njit(cache=True, nogil=True)
def _sampled_grad_kernel(G, W, idx, tv, n_cols, gout):  # pragma: no cover
    """Σ_p g_p·t_p with g_p = (G·Wᵀ)[i, j] for flat index ``idx[p] = i·n_cols + j``, each g_p a
    float32 FMA chain over k = 0..K−1 (how MKL's sgemm computes an element of this product;
    :class:`bench_suite.quant.qlr.QLRQuantizer` checks that on its first call), and the sum
    over the eight interleaved float64 partial sums of :func:`_fq_backward_kernel` (element f
    to sum f mod 8): equal, term for term, to that kernel over the dense G·Wᵀ, whose other
    terms are products with t = 0.  ``gout`` (if non-empty) receives every g_p.

    Eight products at a time: their chains are independent, so running them side by side hides
    the FMA latency one chain would wait for (and eight on one row of G, the common case for a
    sparse input's sorted indices, load its elements once); each chain still runs over k in order,
    and the terms are added in the order of ``p``: the same values, 2-3x faster."""
    K = G.shape[1]
    acc = np.zeros(8, dtype=np.float64)
    keep = gout.size > 0
    P = idx.size
    c = np.empty(8, dtype=np.float32)
    rows = np.empty(8, dtype=np.int64)
    cols = np.empty(8, dtype=np.int64)
    for p0 in range(0, P - P % 8, 8):
        for r in range(8):
            rows[r] = idx[p0 + r] // n_cols
            cols[r] = idx[p0 + r] - rows[r] * n_cols
        j0, j1, j2, j3, j4, j5, j6, j7 = cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.float32(0.0)
        if rows[0] == rows[7]:  # sorted indices: all eight on one row
            i = rows[0]
            for k in range(K):
                gk = G[i, k]
                c0 = _fma32(gk, W[j0, k], c0)
                c1 = _fma32(gk, W[j1, k], c1)
                c2 = _fma32(gk, W[j2, k], c2)
                c3 = _fma32(gk, W[j3, k], c3)
                c4 = _fma32(gk, W[j4, k], c4)
                c5 = _fma32(gk, W[j5, k], c5)
                c6 = _fma32(gk, W[j6, k], c6)
                c7 = _fma32(gk, W[j7, k], c7)
        else:
            i0, i1, i2, i3, i4, i5, i6, i7 = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6], rows[7]
            for k in range(K):
                c0 = _fma32(G[i0, k], W[j0, k], c0)
                c1 = _fma32(G[i1, k], W[j1, k], c1)
                c2 = _fma32(G[i2, k], W[j2, k], c2)
                c3 = _fma32(G[i3, k], W[j3, k], c3)
                c4 = _fma32(G[i4, k], W[j4, k], c4)
                c5 = _fma32(G[i5, k], W[j5, k], c5)
                c6 = _fma32(G[i6, k], W[j6, k], c6)
                c7 = _fma32(G[i7, k], W[j7, k], c7)
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7] = c0, c1, c2, c3, c4, c5, c6, c7
        for r in range(8):
            if keep:
                gout[p0 + r] = c[r]
            acc[idx[p0 + r] & 7] += c[r] * tv[p0 + r]
    for p in range(P - P % 8, P):
        f = idx[p]
        i = f // n_cols
        g = _product_element(G, W, i, f - i * n_cols, K)
        if keep:
            gout[p] = g
        acc[f & 7] += g * tv[p]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def _kernel_applies(x: Tensor, s: Tensor) -> bool:
    """The numba kernels serve float32 CPU tensors with one (per-tensor) scale."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and s.numel() == 1


def f32(v) -> np.float32:
    """``v`` (a Python number, numpy scalar or one-element tensor) as a float32 scalar, the kernels' scalar type."""
    return np.float32(float(v))


class FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, z: Tensor, Q: int, step: int, kappa: float, Qc: int,
                grad_x: str, lo: Optional[Tensor], hi: Optional[Tensor], keep: Optional[Tensor] = None) -> Tensor:
        if keep is not None or _kernel_applies(x, s):
            out, t, mask = _fused_forward(x, s, z, Q, step, kappa, Qc, grad_x, lo, hi, ctx.needs_input_grad[1], keep)
        else:
            v, c, inside = _codes(x, s, z, Q, step, kappa, Qc)
            out = dequantize(c, s, z, step)
            # ∂x̂/∂s = (step·c − z) − (x/s)·inside  (LSQ form), kept for the backward pass
            t = torch.addcmul(c * step - z if step != 1 else c - z, v, inside.to(v.dtype), value=-1.0) \
                if ctx.needs_input_grad[1] else None
            if grad_x == "range":
                mask = (x >= lo) & (x <= hi)
            elif grad_x == "quant":
                mask = inside
            else:
                mask = None
        ctx.save_for_backward(t, mask)
        ctx.shape = s.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        t, mask = ctx.saved_tensors
        if g.dtype == torch.float32 and g.device.type == "cpu" and (t is None or t.dtype == torch.float32):
            gc = g.contiguous()
            use_mask = mask is not None and ctx.needs_input_grad[0]
            gx = torch.empty_like(gc) if use_mask else None
            acc = _fq_backward_kernel(gc.view(-1).numpy(), (t if t is not None else gc).reshape(-1).numpy(),
                                      (mask if use_mask else torch.empty(1, dtype=torch.bool)).reshape(-1).numpy(),
                                      t is not None, use_mask, (gx if use_mask else gc).view(-1).numpy())
            gs = torch.full(ctx.shape, acc, dtype=g.dtype) if t is not None else None
            if ctx.needs_input_grad[0] and not use_mask:
                gx = g
            return gx, gs, None, None, None, None, None, None, None, None, None
        gs = torch.dot(g.reshape(-1), t.reshape(-1)).reshape(ctx.shape) if t is not None else None
        gx = None
        if ctx.needs_input_grad[0]:
            gx = g if mask is None else g * mask
        return gx, gs, None, None, None, None, None, None, None, None, None


def _fused_forward(x: Tensor, s: Tensor, z: Tensor, Q: int, step: int, kappa: float, Qc: int, grad_x: str,
                   lo: Optional[Tensor], hi: Optional[Tensor], need_t: bool, keep: Optional[Tensor] = None):
    """(x̂, ∂x̂/∂s factor or None, ∂x̂/∂x mask or None) from one :func:`_fq_kernel` pass."""
    xc = x.detach().contiguous()
    out = torch.empty_like(xc)
    t = torch.empty_like(xc) if need_t else torch.empty(0, dtype=xc.dtype)
    mode = _GRAD_X_CODE[grad_x]
    mask = torch.empty(xc.shape, dtype=torch.bool) if mode else torch.empty(0, dtype=torch.bool)
    s32, z32 = f32(s), f32(z)
    zs = f32(z / step) if step != 1 else z32  # the same float32 scalars dequantize() forms
    ss = f32(s * step) if step != 1 else s32
    if keep is None and mode != 2:  # the common cases: the vectorized kernels
        mask = mask if mode else torch.empty(xc.shape, dtype=torch.bool)
        if step != 1:
            tt = t if need_t else torch.empty_like(xc)
            _fq_trunc_kernel(xc.view(-1).numpy(), s32, z32, Q, step, np.float32(kappa), Qc, zs, ss,
                             out.view(-1).numpy(), tt.view(-1).numpy(), mask.view(-1).numpy())
        elif need_t:
            _fq_plain_kernel(xc.view(-1).numpy(), s32, z32, Q, out.view(-1).numpy(), t.view(-1).numpy(),
                             mask.view(-1).numpy())
        else:
            _fq_plain_kernel_no_t(xc.view(-1).numpy(), s32, z32, Q, out.view(-1).numpy(), mask.view(-1).numpy())
        return out, (t if need_t else None), (mask if mode else None)
    row = max(xc[0].numel(), 1) if xc.dim() > 0 and xc.shape[0] > 0 else 1
    keep_np = keep.contiguous().numpy() if keep is not None else np.empty(0, dtype=np.bool_)
    if mode == 2 and step == 1 and not need_t:  # Degree-Quant: clipped STE, kept rows
        _fq_range_kernel(xc.view(-1).numpy(), s32, z32, Q, f32(lo), f32(hi), out.view(-1).numpy(),
                         mask.view(-1).numpy(), keep_np, row)
        return out, None, mask
    _fq_kernel(xc.view(-1).numpy(), s32, z32, Q, step, np.float32(kappa), Qc, zs, ss, mode,
               f32(lo) if mode == 2 else np.float32(0), f32(hi) if mode == 2 else np.float32(0), need_t,
               out.view(-1).numpy(), t.view(-1).numpy(), mask.view(-1).numpy(), keep_np, row)
    return out, (t if need_t else None), (mask if mode else None)


def _trunc_scalars(s: np.float32, z: np.float32, step: int) -> Tuple[np.float32, np.float32]:
    """``(z/step, s·step)`` in float32, the scalars :func:`dequantize` forms under truncation
    (``(z, s)`` for step 1)."""
    if step == 1:
        return z, s
    return np.float32(z / np.float32(step)), np.float32(s * np.float32(step))


def fake_quant_forward(xc: Tensor, s: np.float32, z: np.float32, Q: int, step: int, kappa: np.float32,
                       Qc: int) -> Tensor:
    """x̂ of a contiguous float32 CPU tensor from one kernel pass, for scalar float32 ``s``, ``z`` (the value
    :func:`_fused_forward` computes with no kept rows); :func:`fake_quant_grad` gives its gradients."""
    out = torch.empty_like(xc)
    if step != 1:
        _fq_trunc_value_kernel(xc.view(-1).numpy(), s, z, Q, step, kappa, Qc, *_trunc_scalars(s, z, step),
                               out.view(-1).numpy())
    else:
        _fq_value_kernel(xc.view(-1).numpy(), s, z, Q, out.view(-1).numpy())
    return out


def fake_quant_grad(xc: Tensor, g: Tensor, s: np.float32, z: np.float32, Q: int, step: int, kappa: np.float32,
                    Qc: int, need_t: bool, need_x: bool) -> Tuple[Optional[Tensor], Optional[float]]:
    """(∂ℒ/∂x or None, Σ g·∂x̂/∂s as a Python float or None) of :func:`fake_quant_forward` on ``xc`` for the
    float32 CPU upstream gradient ``g``: ∂ℒ/∂x = g where no clamp is active, else 0 (the STE of
    ``fake_quant``), and the scale's gradient as the float64 sum of :func:`_fq_backward_kernel`, the
    factors recomputed from ``xc`` (:func:`_fq_grad_kernel`); the values :class:`FakeQuant` gives with
    ``grad_x="quant"``."""
    gc = g.contiguous()
    gx = torch.empty_like(gc) if need_x else _NO_GRAD
    acc = _fq_grad_kernel(xc.view(-1).numpy(), gc.view(-1).numpy(), s, z, Q, step, kappa, Qc,
                          *_trunc_scalars(s, z, step), need_t, need_x, gx.view(-1).numpy())
    return (gx if need_x else None), (acc if need_t else None)


_NO_GRAD = torch.empty(0)


def fake_quant_backward(g: Tensor, mask: Tensor) -> Tensor:
    """∂ℒ/∂x = g·mask for the ∂x̂/∂x mask a forward kernel wrote."""
    if not (g.dtype == torch.float32 and g.device.type == "cpu"):
        return g * mask
    gc = g.contiguous()
    gx = torch.empty_like(gc)
    gflat = gc.view(-1).numpy()
    _fq_backward_kernel(gflat, gflat, mask.view(-1).numpy(), False, True, gx.view(-1).numpy())
    return gx


_NO_MASK = np.empty(1, dtype=np.bool_)


def scale_grad(g: Tensor, t: Tensor) -> float:
    """Σ g·t of two float32 CPU tensors of one shape: float32 products summed in float64 over eight
    interleaved partial sums (:func:`fake_quant_grad`'s sum for the scale's gradient)."""
    gflat, tflat = g.contiguous().view(-1).numpy(), t.contiguous().view(-1).numpy()
    return _fq_backward_kernel(gflat, tflat, _NO_MASK, True, False, gflat)


def scale_factors(xc: Tensor, s: np.float32, z: np.float32, Q: int, step: int = 1, kappa: np.float32 = np.float32(0.0),
                  Qc: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """(x̂, ∂x̂/∂s factors) of a contiguous float32 CPU tensor, the values :func:`fake_quant_forward` and
    :func:`fake_quant_grad` compute (step 1: ``kappa`` 0 and ``Qc`` = Q, the plain grid; else bit
    truncation to ``Qc`` codes)."""
    Qc = Q if Qc is None else Qc
    zs, ss = _trunc_scalars(s, z, step)
    out, t = torch.empty_like(xc), torch.empty_like(xc)
    _fq_trunc_kernel(xc.view(-1).numpy(), s, z, Q, step, np.float32(kappa), Qc, zs, ss, out.view(-1).numpy(),
                     t.view(-1).numpy(), np.empty(xc.numel(), dtype=np.bool_))
    return out, t


def sparse_scale_factors(xc: Tensor, s: np.float32, z: np.float32, Q: int, step: int = 1,
                         kappa: np.float32 = np.float32(0.0), Qc: Optional[int] = None
                         ) -> Tuple[Tensor, np.ndarray, np.ndarray]:
    """(x̂, flat indices, values) of :func:`scale_factors`' non-zero ∂x̂/∂s factors, ascending: few for a
    mostly-zero input, since the factor at x = 0 is 0 wherever x̂ = 0 lies on the grid."""
    Qc = Q if Qc is None else Qc
    zs, ss = _trunc_scalars(s, z, step)
    flat = xc.view(-1).numpy()
    out = torch.empty_like(xc)
    idx, tv = np.empty(flat.size, dtype=np.int64), np.empty(flat.size, dtype=np.float32)
    n = _fq_sparse_kernel(flat, flat.view(np.int32), s, z, Q, step, np.float32(kappa), Qc, zs, ss,
                          out.view(-1).numpy(), idx, tv)
    return out, idx[:n], tv[:n]


def sampled_scale_grad(G: Tensor, W: Tensor, idx: np.ndarray, tv: np.ndarray, terms: bool = False
                       ) -> Tuple[float, Optional[np.ndarray]]:
    """Σ_p (G·Wᵀ)[idx_p]·tv_p for float32 CPU ``G`` [n, K] and contiguous ``W`` [m, K], flat indices into
    the [n, m] product: :func:`scale_grad` of the dense product and the dense factors, term for term,
    without forming it (each (G·Wᵀ) element as MKL's sgemm forms it, a float32 FMA chain, up to K = 192
    here).  With ``terms`` also the sampled elements of G·Wᵀ, to compare with a dense product."""
    g = np.empty(idx.size if terms else 0, dtype=np.float32)
    acc = _sampled_grad_kernel(G.contiguous().numpy(), W.numpy(), idx, tv, W.shape[0], g)
    return acc, (g if terms else None)


class _ConstScaleFakeQuant(torch.autograd.Function):
    """:class:`FakeQuant` for a scale that carries no gradient (a tracked range: QAT, DQ), on float32
    scalars: ∂x̂/∂x is 1 everywhere (``lo`` None: plain STE) or inside ``[lo, hi]`` (clipped STE, with
    optional kept rows); the same kernels, so the same values and gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, s: np.float32, z: np.float32, Q: int, lo, hi, keep: Optional[Tensor]) -> Tensor:
        xc = x.detach().contiguous()
        out = torch.empty_like(xc)
        if lo is None:
            _fq_value_kernel(xc.view(-1).numpy(), s, z, Q, out.view(-1).numpy())
            ctx.mask = None
            return out
        mask = torch.empty(xc.shape, dtype=torch.bool)
        row = max(xc[0].numel(), 1) if xc.dim() > 0 and xc.shape[0] > 0 else 1
        _fq_range_kernel(xc.view(-1).numpy(), s, z, Q, lo, hi, out.view(-1).numpy(), mask.view(-1).numpy(),
                         keep.contiguous().numpy() if keep is not None else _NO_KEEP, row)
        ctx.mask = mask
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.mask is None:
            return g, None, None, None, None, None, None
        return fake_quant_backward(g, ctx.mask), None, None, None, None, None, None


_NO_KEEP = np.empty(0, dtype=np.bool_)


def fake_quant_const(x: Tensor, s: np.float32, z: np.float32, bits: int, lo: Optional[np.float32] = None,
                     hi: Optional[np.float32] = None, keep: Optional[Tensor] = None) -> Tensor:
    """:func:`fake_quant_fused` of a float32 CPU ``x`` for a scale and zero point given as float32 scalars
    that carry no gradient, with ``grad_x="range"`` (``lo``, ``hi`` given) or ``"ste"`` (``keep`` needs the
    range): the same values and ∂x̂/∂x without the 0-dim tensor bookkeeping."""
    Q = qmax(bits)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ConstScaleFakeQuant.apply(x, s, z, Q, lo, hi, keep)
    if keep is not None:
        return _fused_forward(x, torch.tensor(s), torch.tensor(z), Q, 1, 0.0, Q, "ste", None, None, False, keep)[0]
    xc = x.detach().contiguous()
    out = torch.empty_like(xc)
    _fq_value_kernel(xc.view(-1).numpy(), s, z, Q, out.view(-1).numpy())
    return out


def fake_quant_fused(x: Tensor, s: Tensor, z: Tensor, bits: int, step: int = 1, kappa: float = 0.0,
                     code_bits: Optional[int] = None, grad_x: str = "quant",
                     lo: Optional[Tensor] = None, hi: Optional[Tensor] = None,
                     keep: Optional[Tensor] = None) -> Tensor:
    """Fake quantization with scale ``s`` and zero point ``z`` (see module docstring).

    ``keep``: optional bool tensor over the rows (dim 0) of a float32 CPU ``x``; kept rows
    stay in full precision with gradient 1 (Degree-Quant's protective masking).
    """
    if grad_x not in GRAD_X_MODES:
        raise ValueError(f"grad_x={grad_x!r} is not valid; valid: {', '.join(GRAD_X_MODES)}")
    Q = qmax(bits)
    Qc = qmax(code_bits if code_bits is not None else bits)
    z = z.detach()
    if not torch.is_grad_enabled() or not (x.requires_grad or s.requires_grad):
        if keep is not None or _kernel_applies(x, s):  # evaluation, grid search: one kernel pass
            return _fused_forward(x, s, z, Q, step, kappa, Qc, "ste", lo, hi, False, keep)[0]
        return dequantize(_codes(x, s, z, Q, step, kappa, Qc)[1], s, z, step)
    return FakeQuant.apply(x, s, z, Q, step, float(kappa), Qc, grad_x, lo, hi, keep)

