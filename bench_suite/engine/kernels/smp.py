"""SMP's elementwise half-steps (METHOD.md §7), fused and parallel over rows; the order of the
float32 operations is :meth:`bench_suite.engine.intmodel.IntDecoupled._smp`'s."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.common import EXACT_FASTMATH, row_chunks, minmax


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


