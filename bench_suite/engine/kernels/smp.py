"""SMP's elementwise half-steps (METHOD.md §7), fused and parallel over rows; the order of the
float32 operations is :meth:`bench_suite.engine.intmodel.IntDecoupled._smp`'s.  With static ranges a
whole step runs as two aggregation passes that carry the elementwise work (:func:`smp_fused_steps`)."""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.aggregation import (MASK2, MASK4, PREFETCH_MIN_BYTES, bytes_lane, bytes_row,
                                                    chunk_bounds, swar_row, vec_row)
from bench_suite.engine.kernels.common import (EXACT_FASTMATH, code_of, effective, fq_value, grid, minmax, row_chunks,
                                               scalars)
from bench_suite.engine.kernels.fused import SWAR, VEC, _row_out, row_kind
from bench_suite.engine.kernels.quantize import quantize_pack
from bench_suite.engine.packing import aligned_empty, row_bytes


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
def _smp_post(xt, delta, a_delta, k, exact, v, vmin, vmax, trow, nchunks):
    n, width = xt.shape
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            xr, dr, ar, vr = xt[i], delta[i], a_delta[i], v[i]
            acc = 0.0
            for f in range(width):
                lap = dr[f] - ar[f]
                vr[f] = xr[f] + k * (lap if exact else ar[f])
                acc += np.float64(dr[f] * lap)
            vmin[i], vmax[i] = minmax(vr, width)
            trow[i] = acc


def smp_post(xt, delta, a_delta, k, exact: bool):
    """SMP's second half-step, fused: ``V = X̃ + k·L̃Δ`` (``exact``; ``L̃Δ = Δ − ÂΔ``) or
    ``X̃ + k·ÂΔ``, V's per-row range, and T(Δ) = Σ Δ·L̃Δ (float64 sums of float32 products per
    row, the rows summed by numpy: the same value whatever the thread count)."""
    n = xt.shape[0]
    v = np.empty_like(xt)
    vmin, vmax = np.empty(n, np.float32), np.empty(n, np.float32)
    trow = np.empty(n)
    _smp_post(xt, delta, a_delta, np.float32(k), bool(exact), v, vmin, vmax, trow, row_chunks(n))
    return v, vmin, vmax, float(trow.sum())


# --- a whole SMP step in two passes (static ranges) ---------------------------------------------
#
# With the message, aggregate and update ranges of both aggregations static (calibrated, QAT's and
# DQ's eval ranges) a step needs no range pass, so each aggregation's epilogue can carry the step's
# elementwise work and write the next aggregation's packed codes:
#
#   pass A, row i:  ÂX_i from the neighbours' codes of d̃^{-1/2}·X, X̃_i = (c1·X_i + c2·ÂX_i) + c3·H_i,
#                   the codes of d̃_i^{-1/2}·Δ_i (Δ = X̃ − X) packed;
#   pass B, row i:  ÂΔ_i from the neighbours' Δ codes, Δ_i = X̃_i − X_i again (the same float32
#                   expression), V_i = X̃_i + k·L̃Δ_i (or k·ÂΔ_i), T's row term, X_i ← q_u(V_i) in
#                   place, and the codes of d̃_i^{-1/2}·X_i packed for the next step's pass A.
#
# Every value is the unfused step's (aggregate → epilogue → smp_pre → quantize_pack → aggregate →
# epilogue → smp_post → fq_rows → quantize_pack) to the bit: the same float32 expressions in the
# same order from the same integer sums; T is the same per-row float64 terms summed the same way.



@njit(inline="always", fastmath=EXACT_FASTMATH)
def _agg_row(kind, bits, indptr, indices, packed, words, mask, i, pf, acc, acc16, lanes, lanes8, width, d, nrm, sm,
             zm, la, ta, zrow, out):
    """``out[:width]`` ← row ``i`` of the quantized ``Â·x`` (the float output of
    :meth:`bench_suite.engine.intmodel.Aggregation.apply`) from the packed codes' neighbour sums."""
    one = np.float32(1)
    if kind == VEC:
        if vec_row(indptr, indices, packed, bits, i, pf, acc, acc16, width):
            _row_out(acc, width, d, nrm, sm, zm, la, ta, one, zrow, la, False, False, False, False, la, False, out,
                     acc16)
        else:
            _row_out(acc16, width, d, nrm, sm, zm, la, ta, one, zrow, la, False, False, False, False, la, False, out,
                     acc16)
    elif kind == SWAR:
        if swar_row(indptr, indices, words, bits, mask, i, pf, acc, lanes):
            _row_out(acc, width, d, nrm, sm, zm, la, ta, one, zrow, la, False, False, False, False, la, False, out,
                     acc16)
        else:
            _row_out(lanes8, width, d, nrm, sm, zm, la, ta, one, zrow, la, False, False, False, False, la, False,
                     out, acc16)
    else:
        hub, a0, a1, b0, b1 = bytes_row(indptr, indices, words, i, pf, acc)
        if not hub:
            for f in range(width):
                acc[f] = bytes_lane(a0, a1, b0, b1, f)
        _row_out(acc, width, d, nrm, sm, zm, la, ta, one, zrow, la, False, False, False, False, la, False, out, acc16)


@njit(inline="always")
def _pack_row(codes, o, nb, c, bits):
    """Pack ``codes`` (``c·nb`` uint8, zero-padded) into the ``nb`` bytes of ``o`` as :func:`~.quantize.quantize_pack`."""
    if c == 1:
        for j in range(nb):
            o[j] = codes[j]
    else:
        for j in range(nb):
            b = codes[j]
            for k in range(1, c):
                b |= codes[k * nb + j] << np.uint8(k * bits)
            o[j] = b


@functools.lru_cache(maxsize=None)
def _step_kernels(kind: int, bits: int, ta: bool, tm: bool, tu: bool, tn: bool, exact: bool, has_next: bool):
    """The two passes of a fused SMP step for one row kernel and bit width; the flags (bit
    truncation of the aggregate, Δ-message, update and next-message grids; the exact form; whether
    pass B packs the next step's codes) are compile-time constants."""
    c = 8 // bits

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def pass_a(indptr, indices, packed, words, mask, bounds, pf, deg, norm, sm, zm, ga, x, h, c1, c2, c3, gm,
               xt, out_packed):
        n, width = x.shape
        nb = packed.shape[1]
        for t in prange(bounds.size - 1):
            la, lm = scalars(ga), scalars(gm)
            acc = np.zeros(max(c * nb, 32), np.int32)
            acc16 = np.zeros(c * nb, np.uint16)
            lanes = np.zeros(4, np.uint64)
            lanes8 = lanes.view(np.uint8)
            zrow = np.zeros(width, np.float32)
            ax = np.empty(width, np.float32)
            codes = np.zeros(c * nb, np.uint8)
            for i in range(bounds[t], bounds[t + 1]):
                d, nrm = deg[i], norm[i]
                _agg_row(kind, bits, indptr, indices, packed, words, mask, i, pf, acc, acc16, lanes, lanes8, width,
                         d, nrm, sm, zm, la, ta, zrow, ax)
                xr, hr, xtr = x[i], h[i], xt[i]
                for f in range(width):
                    v = (c1 * xr[f] + c2 * ax[f]) + c3 * hr[f]
                    xtr[f] = v
                    codes[f] = np.uint8(np.int32(code_of((v - xr[f]) * nrm, lm, tm)))
                _pack_row(codes, out_packed[i], nb, c, bits)

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def pass_b(indptr, indices, packed, words, mask, bounds, pf, deg, norm, sm, zm, ga, xt, x, k, gu, gn,
               out_packed, trow):
        n, width = x.shape
        nb = packed.shape[1]
        for t in prange(bounds.size - 1):
            la, lu, ln = scalars(ga), scalars(gu), scalars(gn)
            acc = np.zeros(max(c * nb, 32), np.int32)
            acc16 = np.zeros(c * nb, np.uint16)
            lanes = np.zeros(4, np.uint64)
            lanes8 = lanes.view(np.uint8)
            zrow = np.zeros(width, np.float32)
            ad = np.empty(width, np.float32)
            codes = np.zeros(c * nb, np.uint8)
            for i in range(bounds[t], bounds[t + 1]):
                d, nrm = deg[i], norm[i]
                _agg_row(kind, bits, indptr, indices, packed, words, mask, i, pf, acc, acc16, lanes, lanes8, width,
                         d, nrm, sm, zm, la, ta, zrow, ad)
                xr, xtr = x[i], xt[i]
                acc64 = 0.0  # T's row term: a serial float64 sum, in a loop of its own
                for f in range(width):
                    dr = xtr[f] - xr[f]
                    acc64 += np.float64(dr * (dr - ad[f]))
                trow[i] = acc64
                for f in range(width):
                    dr = xtr[f] - xr[f]
                    xr[f] = fq_value(xtr[f] + k * ((dr - ad[f]) if exact else ad[f]), lu, tu)
                if has_next:
                    for f in range(width):
                        codes[f] = np.uint8(np.int32(code_of(xr[f] * nrm, ln, tn)))
                    _pack_row(codes, out_packed[i], nb, c, bits)

    return pass_a, pass_b


def smp_fused_steps(indptr, indices, deg, norm, h, bits, width, steps, c1, c2, c3, exact, multiplier, bounds=None):
    """Run SMP's steps two passes each (module note above) and return X after the last one.

    ``steps``: per step ``(message, aggregate, update, delta_message, delta_aggregate)`` quantizer
    parameters (:func:`~.common.grid`), all static; ``multiplier(t)`` takes the step's T(Δ) and returns
    the next step's ``k = 2ηλ`` as float32 (the first step's ``k`` is ``multiplier(None)``).
    """
    f32 = np.float32
    n = len(indptr) - 1
    nb = row_bytes(width, bits)
    if bounds is None:
        bounds = chunk_bounds(indptr, row_chunks(n))
    x = np.array(h, dtype=f32, order="C", copy=True)
    xt = np.empty_like(x)
    px = quantize_pack(x, norm, steps[0][0], bits, nb) if steps else None
    pd = aligned_empty((n, nb))
    trow = np.empty(n, np.float64)
    kind = row_kind(bits, nb)
    mask = MASK2 if bits == 2 else MASK4
    k = multiplier(None)
    for s, (msg, agg, upd, dmsg, dagg) in enumerate(steps):
        last = s == len(steps) - 1
        ta, ga = grid(agg)
        tm, gm = grid(dmsg)
        tda, gda = grid(dagg)
        tu, gu = grid(upd)
        tn, gn = grid(steps[s + 1][0] if not last else (1.0, 0.0, 1.0))
        a_kernel = _step_kernels(kind, int(bits), ta, tm, False, False, False, False)[0]
        b_kernel = _step_kernels(kind, int(bits), tda, False, tu, tn, bool(exact), not last)[1]
        sm, zm = (f32(v) for v in effective(msg))
        a_kernel(indptr, indices, px, px.view(np.uint64), mask, bounds, px.nbytes > PREFETCH_MIN_BYTES, deg, norm,
                 sm, zm, ga, x, h, f32(c1), f32(c2), f32(c3), gm, xt, pd)
        sd, zd = (f32(v) for v in effective(dmsg))
        b_kernel(indptr, indices, pd, pd.view(np.uint64), mask, bounds, pd.nbytes > PREFETCH_MIN_BYTES, deg, norm,
                 sd, zd, gda, xt, x, f32(k), gu, gn, px, trow)
        k = multiplier(float(trow.sum()))
    return x
