"""Elementwise kernels around the integer products, parallel over rows.

* :func:`quantize_pack` — float rows → (feature quantizer →) ×d̃^{-1/2} → message codes, packed.
* :func:`epilogue` — int32 neighbour sums or float dense outputs → the float value of the next
  stage, its per-row range, float output or the next layer's codes, ReLU fused.
* :func:`quantize`, :func:`rows_minmax`, :func:`fq_rows` — input codes, per-row ranges, fake
  quantization of a float matrix; :func:`finish_product` — the zero-point corrections and scale of a dense product.

The kernels are specialised per flag combination (compile-time constants, cached) so their row
loops are branch-free and vectorise; min/max reductions use independent chains.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.common import EXACT_FASTMATH, row_chunks, code_of, fq_value, minmax, scalars, grid
from bench_suite.engine.kernels.sum_order import NeighbourSums
from bench_suite.engine.packing import aligned_empty, check_bits


@njit(inline="always")
def pack_row(codes, o, nb, c, bits):
    """Pack ``codes`` (``c·nb`` uint8, zero-padded) into the ``nb`` bytes of ``o``: code ``k·nb + j`` at bits
    ``k·bits`` of byte ``j`` (:mod:`bench_suite.engine.packing`'s layout)."""
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
def _quantize_pack_kernel(has_feature: bool, bits: int, trunc_f: bool = False, trunc_m: bool = False):
    """Specialised (branch-free, vectorisable) packing kernel; flags are compile-time constants."""
    c = 8 // bits

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, norm, gf, gm, nb, out, nchunks):
        n, width = x.shape
        chunk = (n + nchunks - 1) // nchunks
        for t in prange(nchunks):
            lf, lm = scalars(gf), scalars(gm)
            # codes of one row, zero-padded to c·nb; the packing loop below then has no
            # tail and no read-modify-write of ``out`` (both kept it from vectorising)
            tmp = np.zeros(c * nb, np.uint8)
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                xr = x[i]
                o = out[i]
                d = norm[i]
                dst = o if c == 1 else tmp
                for f in range(width):
                    v = xr[f]
                    if has_feature:
                        v = fq_value(v, lf, trunc_f)
                    dst[f] = np.uint8(np.int32(code_of(v * d, lm, trunc_m)))
                if c == 1:
                    for f in range(width, nb):
                        o[f] = 0
                else:
                    pack_row(tmp, o, nb, c, bits)
        return out

    return kernel


def quantize_pack(x: np.ndarray, norm: np.ndarray, message: tuple, bits: int, nb: int,
                  feature: tuple | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Packed message codes of ``d̃^{-1/2} · q_feature(x)`` (``feature=None``: of ``d̃^{-1/2}·x``).

    ``message`` and ``feature`` are quantizer parameters (see :func:`grid`).
    """
    tf, gf = grid(feature if feature is not None else (1.0, 0.0, 1.0))
    tm, gm = grid(message)
    check_bits(bits, "quantize_pack")
    if out is None:
        out = aligned_empty((x.shape[0], nb))  # rows on cache lines: see bench_suite.engine.packing
    return _quantize_pack_kernel(feature is not None, int(bits), tf, tm)(
        x, norm, gf, gm, nb, out, row_chunks(x.shape[0]))


@functools.lru_cache(maxsize=None)
def _epilogue_kernel(from_sums: bool, add_rows: bool, has_update: bool, relu: bool, mode: int,
                     trunc_a: bool = False, trunc_u: bool = False, trunc_2: bool = False, recomputed: bool = False):
    """Specialised epilogue; every flag is a compile-time constant so the row loop is
    branch-free and vectorises (mode 0: row ranges, 1: floats, 2: codes).  ``recomputed``: the
    neighbour sums carry sums recomputed in the fake-quant model's order (``sums="reference"``);
    without it the sums are the integer ones, computed inline as one expression per element."""

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(src, deg, norm, sm, zm, ga, coef, add, gu, g2, out_f, out_q, rmin, rmax, nchunks,
               whole_slot, whole_vals, fix_ptr, fix_idx, fix_val):
        n, width = src.shape
        zero = np.float32(0)
        chunk = (n + nchunks - 1) // nchunks
        for t in prange(nchunks):
            la = scalars(ga)
            lu = scalars(gu)
            l2 = scalars(g2)
            tmp = np.empty(width if mode == 0 else 1, np.float32)
            av = np.empty(width if recomputed else 1, np.float32)  # the row's normalised sums
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                sr = src[i]
                ar = add[i] if add_rows else add[0]
                d = deg[i] if from_sums else zero
                nrm = norm[i] if from_sums else zero
                of = out_f[i if mode == 1 else 0]
                oq = out_q[i if mode == 2 else 0]
                if recomputed:
                    if whole_slot[i] >= 0:  # recomputed whole in the fake-quant model's order
                        av[:] = whole_vals[whole_slot[i]]
                    else:
                        for f in range(width):
                            av[f] = (sm * (np.float32(sr[f]) - zm * d)) * nrm
                        # the sums the fake-quant model's float32 order decides (sum_order.fix_ties)
                        for k in range(fix_ptr[i], fix_ptr[i + 1]):
                            av[fix_idx[k]] = fix_val[k]
                for f in range(width):
                    if recomputed:
                        v = coef * fq_value(av[f], la, trunc_a) + ar[f]
                    elif from_sums:
                        a = sm * (np.float32(sr[f]) - zm * d)
                        v = coef * fq_value(a * nrm, la, trunc_a) + ar[f]
                    else:
                        v = fq_value(np.float32(sr[f]), la, trunc_a) + ar[f]
                    if mode == 0:
                        tmp[f] = v
                    else:
                        if has_update:
                            v = fq_value(v, lu, trunc_u)
                        if relu:
                            v = max(v, zero)
                        if mode == 1:
                            of[f] = v
                        else:
                            oq[f] = np.uint8(np.int32(code_of(v, l2, trunc_2)))
                if mode == 0:
                    rmin[i], rmax[i] = minmax(tmp, width)

    return kernel


def epilogue(src: np.ndarray, first: tuple, add: np.ndarray, *, sums: NeighbourSums | None = None,
             deg: np.ndarray | None = None, norm: np.ndarray | None = None, coef: float = 1.0,
             update: tuple | None = None, relu: bool = False, mode: str = "range",
             following: tuple | None = None, out: np.ndarray | None = None):
    """The fused elementwise stage after an aggregation or a dense product.

    With ``sums`` (:class:`~bench_suite.engine.kernels.sum_order.NeighbourSums`; ``src`` is its
    int32 ``S``, message codes with effective scale and zero ``s_m``, ``z_m``):
    ``v = coef · q_first(a) + add`` with ``a = d̃^{-1/2} · s_m·(S − z_m·d̃)`` (the aggregate role
    quantizes the normalised sum).  If they have been through
    :func:`~bench_suite.engine.kernels.sum_order.fix_ties` for the quantizer ``first`` (``sums="reference"``,
    ``sums.recomputed``), the sums recomputed in the fake-quant model's float32 order (``sums.whole_*``,
    ``sums.fix_*``) replace those ``a``; otherwise (``sums="exact"``) every ``a`` is the integer
    model's, with no per-row lookup.  Without ``sums`` (``src`` float dense output)
    ``v = q_first(src) + add``.  ``add`` is ``[1, F]`` (bias) or
    ``[N, F]``.  ``mode="range"`` returns per-row min/max of ``v``; ``"float"``
    returns ``relu?(q_update(v))``; ``"codes"`` returns the uint8 codes of that under
    ``following``.  Quantizer arguments are parameters as :func:`grid` takes them.
    """
    f32 = np.float32
    n, width = src.shape
    from_sums = sums is not None
    ta, ga = grid(first)
    tu, gu = grid(update if update is not None else (1.0, 0.0, 1.0))
    t2, g2 = grid(following if following is not None else (1.0, 0.0, 1.0))
    m = {"range": 0, "float": 1, "codes": 2}[mode]
    if m == 2 and following is None:
        raise ValueError("epilogue mode='codes' needs following=(scale, zero, Q)")
    recomputed = from_sums and sums.recomputed
    if recomputed and (sums.fix_ptr.size != n + 1 or sums.whole_slot.size != n):
        raise ValueError(f"epilogue: recomputed neighbour sums of {sums.fix_ptr.size - 1} rows for {n} rows")
    out_f = (out if out is not None else np.empty((n, width), np.float32)) if m == 1 else np.empty((1, 1), np.float32)
    out_q = (out if out is not None else np.empty((n, width), np.uint8)) if m == 2 else np.empty((1, 1), np.uint8)
    rmin = np.empty(n if m == 0 else 1, np.float32)
    rmax = np.empty(n if m == 0 else 1, np.float32)
    dummy = np.ones(1, np.float32)
    add = np.ascontiguousarray(add, dtype=np.float32)
    kernel = _epilogue_kernel(from_sums, add.shape[0] > 1, update is not None, bool(relu), m,
                              ta, tu, t2 and m == 2, recomputed)
    sm, zm = (f32(sums.scale), f32(sums.zero)) if from_sums else (f32(1.0), f32(0.0))
    if recomputed:
        fix = (sums.whole_slot, sums.whole_vals, sums.fix_ptr, sums.fix_idx, sums.fix_val)
    else:
        fix = (np.zeros(1, np.int64), np.zeros((1, 1), np.float32), np.zeros(1, np.int64), np.zeros(0, np.int32),
               np.zeros(0, np.float32))
    kernel(src, deg if from_sums else dummy, norm if from_sums else dummy, sm, zm, ga, f32(coef), add,
           gu, g2, out_f, out_q, rmin, rmax, row_chunks(n), *fix)
    if m == 0:
        return rmin, rmax
    return out_f if m == 1 else out_q


@functools.lru_cache(maxsize=None)
def _quantize_kernel(trunc: bool):
    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, g, out):
        n, width = x.shape
        for i in prange(n):
            lg = scalars(g)
            xr = x[i]
            o = out[i]
            for f in range(width):
                o[f] = np.uint8(np.int32(code_of(xr[f], lg, trunc)))
        return out

    return kernel


def quantize(x: np.ndarray, p: tuple) -> np.ndarray:
    """uint8 codes ``clamp(rint(x/s) + z, 0, Q)`` (truncated under BT, see :func:`grid`) of a float32 matrix."""
    trunc, g = grid(p)
    return _quantize_kernel(trunc)(x, g, np.empty(x.shape, np.uint8))


@functools.lru_cache(maxsize=None)
def _fq_rows_kernel(trunc: bool):
    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, g, out, rmin, rmax):
        n, width = x.shape
        for i in prange(n):
            lg = scalars(g)
            xr, o = x[i], out[i]
            for f in range(width):
                o[f] = fq_value(xr[f], lg, trunc)
            rmin[i], rmax[i] = minmax(o, width)

    return kernel


def fq_rows(x: np.ndarray, p: tuple):
    """Fake quantization of a float32 matrix under ``p`` (see :func:`grid`) and the per-row range
    of the result (as :func:`bench_suite.engine.intmodel.fq`)."""
    n = x.shape[0]
    out = np.empty_like(x)
    rmin, rmax = np.empty(n, np.float32), np.empty(n, np.float32)
    trunc, g = grid(p)
    _fq_rows_kernel(trunc)(x, g, out, rmin, rmax)
    return out, rmin, rmax


@njit(parallel=True, cache=True)
def _finish_product(y, x, zk, shift, col, scale):
    n, k = x.shape
    for i in prange(n):
        r = np.int32(0)
        xr = x[i]
        for f in range(k):
            r += np.int32(xr[f])
        v = (np.float32(r) - zk) * shift
        yr = y[i]
        for f in range(y.shape[1]):
            yr[f] = ((yr[f] + v) + col[f]) * scale


def finish_product(y: np.ndarray, x: np.ndarray, z: float, shift: float, col: np.ndarray, scale: float) -> np.ndarray:
    """In place: ``y[i, j] = ((y[i, j] + (Σ_k x[i, k] − z·K)·shift) + col[j]) · scale`` in float32, int32 row
    sums of the uint8 codes ``x`` (:class:`~bench_suite.engine.intmodel.IntLinear`: ``y`` holds the
    unscaled integer sums of a product with a centred weight, ``shift`` the weight's zero point left
    over, ``col`` the input's; every term is an integer, so the sum is exact below 2^24, and the
    result is the exact product scaled once).  torch's uint8 row sum alone took ≈50 ms at arxiv size."""
    if x.dtype != np.uint8 or y.dtype != np.float32 or x.shape[0] != y.shape[0] or col.shape != (y.shape[1],):
        raise ValueError(f"finish_product: need float32 y, uint8 x with equal rows and float32 col[{y.shape[1]}], got "
                         f"{y.dtype}{y.shape}, {x.dtype}{x.shape}, {col.dtype}{col.shape}")
    f32 = np.float32
    _finish_product(y, x, f32(f32(z) * f32(x.shape[1])), f32(shift), np.ascontiguousarray(col, dtype=f32), f32(scale))
    return y


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def rows_minmax(x):
    """Per-row min and max of a float32 matrix."""
    n, width = x.shape
    rmin = np.empty(n, np.float32)
    rmax = np.empty(n, np.float32)
    for i in prange(n):
        rmin[i], rmax[i] = minmax(x[i], width)
    return rmin, rmax
