"""SMP's elementwise half-steps (METHOD.md §7), fused and parallel over rows; the order of the
float32 operations is :meth:`bench_suite.engine.intmodel.IntDecoupled._smp`'s.

:func:`smp_pre`, :func:`smp_post` (with :func:`~.quantize.fq_rows`) follow an aggregation that has
written its float output.  When every range of a step is static (calibrated, QAT/DQ) and the sums
exact, :func:`smp_step_pre` and :func:`smp_step_post` each take one aggregation and its half-step
through one pass, as :mod:`.fused` does for a GCN layer: a row's neighbour sums go straight into the
aggregate epilogue, the half-step, and the quantization and packing of the next aggregation's
messages (Δ's, then the next step's X), so ``ÂX``, ``ÂΔ``, V and the int32 sums are never stored.
Two passes, not one: every row of ÂΔ needs Δ of its neighbours, so all of Δ must exist first.  The
values are the unfused path's to the bit (same float32 expressions in the same order, the same T(Δ)).

They are not faster yet: one thread, under load (load average 4-6 on 2 cores), CPU time on arxiv-like
INT8 (width 40), the first pass took 0.9-1.3x and the second 1.6-2.1x as long as the unfused kernels it
replaces; whole calibrated SMP K=10 passes ran 0.59x as fast on arxiv-like and 0.92-1.06x on Cora
(results/cost/fused.jsonl).  So :class:`~bench_suite.engine.intmodel.IntDecoupled` leaves them off
unless ``fuse`` is set."""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.aggregation import MASK2, MASK4, PREFETCH_MIN_BYTES, chunk_bounds
from bench_suite.engine.kernels.common import (EXACT_FASTMATH, code_of, effective, fq_value, grid, minmax, row_chunks,
                                               scalars)
from bench_suite.engine.kernels.fused import row_buffers, row_kind, row_sums_then
from bench_suite.engine.kernels.quantize import pack_row
from bench_suite.engine.packing import check_bits, row_bytes


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _smp_pre(x, ax, h, c1, c2, c3, xt, delta, dmin, dmax, nchunks):
    n, width = x.shape
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            xr, ar, hr, xtr, dr = x[i], ax[i], h[i], xt[i], delta[i]
            for f in range(width):
                v = (c1 * xr[f] + c2 * ar[f]) + c3 * hr[f]
                xtr[f] = v
                dr[f] = v - xr[f]
            dmin[i], dmax[i] = minmax(dr, width)


def smp_pre(x, ax, h, c1, c2, c3):
    """SMP's first half-step, fused: ``X̃ = (c1·X + c2·ÂX) + c3·H``, ``Δ = X̃ − X`` and the
    per-row range of Δ (float32, the order of :meth:`IntDecoupled._smp`'s numpy form)."""
    n = x.shape[0]
    xt, delta = np.empty_like(x), np.empty_like(x)
    dmin, dmax = np.empty(n, np.float32), np.empty(n, np.float32)
    f32 = np.float32
    _smp_pre(x, ax, h, f32(c1), f32(c2), f32(c3), xt, delta, dmin, dmax, row_chunks(n))
    return xt, delta, dmin, dmax


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _smp_post(xt, delta, a_delta, k, exact, v, vmin, vmax, tpart, nchunks):
    n, width = xt.shape
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc = 0.0
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            xr, dr, ar, vr = xt[i], delta[i], a_delta[i], v[i]
            for f in range(width):
                lap = dr[f] - ar[f]
                vr[f] = xr[f] + k * (lap if exact else ar[f])
                acc += np.float64(dr[f] * lap)
            vmin[i], vmax[i] = minmax(vr, width)
        tpart[t] = acc


def smp_post(xt, delta, a_delta, k, exact: bool):
    """SMP's second half-step, fused: ``V = X̃ + k·L̃Δ`` (``exact``; ``L̃Δ = Δ − ÂΔ``) or
    ``X̃ + k·ÂΔ``, V's per-row range, and T(Δ) = Σ Δ·L̃Δ (float64 sum of float32 products,
    per chunk, chunks in order)."""
    n = xt.shape[0]
    nchunks = row_chunks(n)
    v = np.empty_like(xt)
    vmin, vmax = np.empty(n, np.float32), np.empty(n, np.float32)
    tpart = np.zeros(nchunks)
    _smp_post(xt, delta, a_delta, np.float32(k), bool(exact), v, vmin, vmax, tpart, nchunks)
    return v, vmin, vmax, float(tpart.sum())


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _aggregate_value(sums, f, d, nrm, sm, zm, la, ta, coef, ar):
    """Element ``f`` of :func:`~.quantize.epilogue`'s ``"float"`` row (``sums="exact"``, no update): the
    normalised sum ``d̃^{-1/2}·s_m·(S − z_m·d̃)`` quantized by the aggregate role, ``·coef + add``."""
    a = sm * (np.float32(sums[f]) - zm * d)
    return coef * fq_value(a * nrm, la, ta) + ar[f]


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _pre_row(sums, ctx):
    """One row of :func:`smp_pre` from the row's sums of X's message codes, and that row of Δ's message
    codes packed at ``bits`` bits; returns ``acc`` (as :func:`_post_row`, which the kernel shares)."""
    (width, d, nrm, sm, zm, ga, ta, coef, ar, c1, c2, c3, xr, hr, xtr, dr, gm, tm, tmp, o, bits, acc) = ctx
    la, lm = scalars(ga), scalars(gm)
    dst = o if bits == 8 else tmp
    for f in range(width):
        v = (c1 * xr[f] + c2 * _aggregate_value(sums, f, d, nrm, sm, zm, la, ta, coef, ar)) + c3 * hr[f]
        xtr[f] = v
        dv = v - xr[f]
        dr[f] = dv
        dst[f] = np.uint8(np.int32(code_of(dv * nrm, lm, tm)))
    pack_row(tmp, o, width, bits)
    return acc


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _post_row(sums, ctx):
    """One row of :func:`smp_post` and :func:`~.quantize.fq_rows` from the row's sums of Δ's message codes,
    and that row of the next step's message codes packed at ``bits`` bits (0: none); returns ``acc``
    (float64) plus the row's terms of T(Δ), added one by one in :func:`smp_post`'s order."""
    (width, d, nrm, sm, zm, ga, ta, coef, ar, xtr, dr, k, exact, gu, tu, xo, gm, tm, tmp, o, bits, acc) = ctx
    la, lu, lm = scalars(ga), scalars(gu), scalars(gm)
    dst = o if bits == 8 else tmp
    for f in range(width):
        ad = _aggregate_value(sums, f, d, nrm, sm, zm, la, ta, coef, ar)
        lap = dr[f] - ad
        v = fq_value(xtr[f] + k * (lap if exact else ad), lu, tu)
        acc += np.float64(dr[f] * lap)
        xo[f] = v
        if bits:
            dst[f] = np.uint8(np.int32(code_of(v * nrm, lm, tm)))
    if bits:
        pack_row(tmp, o, width, bits)
    return acc


@functools.lru_cache(maxsize=None)
def _step_kernel(post: bool, kind: int, bits: int, out_bits: int, ta: bool, tm: bool, tu: bool, exact: bool):
    """A fused half of an SMP step (:func:`smp_step_pre`, :func:`smp_step_post`) for one row kernel, bit
    width of the summed codes (``bits``) and of the codes written (``out_bits``, 0: none); every flag is a
    compile-time constant."""
    oc = 8 // max(out_bits, 1)

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(indptr, indices, packed, words, mask, width, bounds, pf, deg, norm, sm, zm, ga, coef, add,
               x, h, c1, c2, c3, k, gu, gm, out_x, out_d, out_q, tpart):
        nb, onb = packed.shape[1], out_q.shape[1]
        for t in prange(bounds.size - 1):
            acc, acc16, lanes, lanes8 = row_buffers(bits, nb)
            tmp = np.zeros(oc * onb, np.uint8)  # codes of one row, zero-padded (pack_row)
            ar = add[0]
            part = 0.0
            for i in range(bounds[t], bounds[t + 1]):
                d, nrm = deg[i], norm[i]
                o = out_q[i if out_bits else 0]
                if post:  # x: X̃, h: Δ
                    part = row_sums_then(kind, bits, indptr, indices, packed, words, mask, width, pf, i, acc, acc16,
                                         lanes, lanes8, _post_row, (width, d, nrm, sm, zm, ga, ta, coef, ar, x[i], h[i], k, exact,
                                                      gu, tu, out_x[i], gm, tm, tmp, o, out_bits, part))
                else:
                    part = row_sums_then(kind, bits, indptr, indices, packed, words, mask, width, pf, i, acc, acc16,
                                         lanes, lanes8, _pre_row, (width, d, nrm, sm, zm, ga, ta, coef, ar, c1, c2, c3, x[i], h[i],
                                                     out_x[i], out_d[i], gm, tm, tmp, o, out_bits, part))
            tpart[t] = part

    return kernel


def _step_common(indptr, packed, bits: int, width: int, message: tuple, first: tuple, name: str) -> tuple:
    """Checks and arguments both halves share: ``(n, kind, words, mask, prefetch, s_m, z_m, (trunc, grid) of first)``."""
    f32 = np.float32
    check_bits(bits, name)
    n = len(indptr) - 1
    if packed.shape != (n, row_bytes(width, bits)):
        raise ValueError(f"{name}: packed codes of shape {packed.shape}; {n} rows of width {width} at {bits} bits "
                         f"need ({n}, {row_bytes(width, bits)})")
    sm, zm = (f32(v) for v in effective(message))
    return (n, row_kind(bits, packed.shape[1]), packed.view(np.uint64), MASK2 if bits == 2 else MASK4,
            packed.nbytes > PREFETCH_MIN_BYTES, sm, zm, grid(first))


def smp_step_pre(indptr, indices, packed, bits: int, deg, norm, message: tuple, first: tuple, x, h, c1, c2, c3,
                 delta_message: tuple, delta_bits: int):
    """:func:`smp_pre` of ``ÂX = epilogue(aggregate(packed), first, 0, sums=…, mode="float")``, in one pass
    over the rows and without ``ÂX`` (:func:`~.fused.aggregate_epilogue`'s sums), then Δ's packed message
    codes as :func:`~.quantize.quantize_pack` gives them under ``delta_message`` (a static range: Δ's range
    is not needed).  ``packed``: X's message codes (``message``); returns ``(X̃, Δ, Δ's packed codes)``."""
    n, kind, words, mask, pf, sm, zm, (ta, ga) = _step_common(indptr, packed, bits, x.shape[1], message, first,
                                                             "smp_step_pre")
    f32 = np.float32
    width = x.shape[1]
    tm, gm = grid(delta_message)
    xt, delta = np.empty_like(x), np.empty_like(x)
    out_q = np.empty((n, row_bytes(width, delta_bits)), np.uint8)
    bounds = chunk_bounds(indptr, row_chunks(n))
    _step_kernel(False, kind, int(bits), int(delta_bits), ta, tm, False, False)(
        indptr, indices, packed, words, mask, width, bounds, pf, deg, norm, sm, zm, ga, f32(1), np.zeros((1, width), f32),
        x, h, f32(c1), f32(c2), f32(c3), f32(0), ga, gm, xt, delta, out_q, np.zeros(bounds.size - 1))
    return xt, delta, out_q


def smp_step_post(indptr, indices, packed, bits: int, deg, norm, message: tuple, first: tuple, xt, delta, k,
                  exact: bool, update: tuple, next_message: tuple | None = None, next_bits: int = 0):
    """:func:`smp_post` of ``ÂΔ = epilogue(aggregate(packed), first, 0, sums=…, mode="float")`` then
    :func:`~.quantize.fq_rows` under ``update``, in one pass and without ``ÂΔ`` or V, then (``next_message``)
    the next step's packed message codes of the new X as :func:`~.quantize.quantize_pack` gives them.
    ``packed``: Δ's message codes (``message``).  T(Δ) is summed as :func:`smp_post` sums it: the rows in
    the same equal-row chunks, each chunk's float64 sum in row order, the chunks' sums by numpy (so the
    rows are not split into chunks of equal edges, as the sums alone would be).  Returns
    ``(X, the next codes or None, T(Δ))``."""
    n, kind, words, mask, pf, sm, zm, (ta, ga) = _step_common(indptr, packed, bits, xt.shape[1], message, first,
                                                             "smp_step_post")
    f32 = np.float32
    width = xt.shape[1]
    tu, gu = grid(update)
    tm, gm = grid(next_message if next_message is not None else (1.0, 0.0, 1.0))
    nb_next = int(next_bits) if next_message is not None else 0
    x = np.empty_like(xt)
    out_q = np.empty((n, row_bytes(width, nb_next)) if nb_next else (1, 1), np.uint8)
    nchunks = row_chunks(n)
    chunk = (n + nchunks - 1) // nchunks
    bounds = np.minimum(np.arange(nchunks + 1, dtype=np.int64) * chunk, n)
    tpart = np.zeros(nchunks)
    _step_kernel(True, kind, int(bits), nb_next, ta, tm, tu, bool(exact))(
        indptr, indices, packed, words, mask, width, bounds, pf, deg, norm, sm, zm, ga, f32(1), np.zeros((1, width), f32),
        xt, delta, f32(0), f32(0), f32(0), f32(k), gu, gm, x, x, out_q, tpart)
    return x, (out_q if nb_next else None), float(tpart.sum())
