"""Numba kernels of the integer engine (METHOD.md §9), parallel over rows.

* :func:`aggregate` — ``S = Ã·q`` over packed codes with int32 accumulation; INT2 and
  INT4 use SWAR: a 64-bit word masked with ``0x0303…03`` (``0x0F0F…0F``) after a shift
  of ``k·b`` holds eight codes in eight byte lanes; lane-wise adds of up to 85 (17)
  neighbours cannot overflow a lane, then the lanes flush into int32 accumulators.
* :func:`quantize_pack` — float rows → (feature quantizer →) ×d̃^{-1/2} → message
  codes, packed.
* :func:`epilogue` — int32 neighbour sums or float dense outputs → the float value
  of the next stage, its per-row range, float output or the next layer's codes,
  ReLU fused.

All quantization arithmetic is float32 in the order of
:func:`bench_suite.quant.base.fake_quant`: ``clamp(rint(x/s) + z, 0, Q)``, ``(q − z)·s``.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from bench_suite.engine.packing import check_bits

MASK2 = np.uint64(0x0303030303030303)
MASK4 = np.uint64(0x0F0F0F0F0F0F0F0F)
CHUNKS_PER_THREAD = 16


def set_threads(threads: int) -> int:
    """Use ``threads`` numba threads (clamped to what numba was started with)."""
    t = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(t)
    return t


def _chunks(n: int) -> int:
    return max(1, min(n, CHUNKS_PER_THREAD * numba.get_num_threads()))


@njit(inline="always")
def _q(x, s, z, qm):
    v = np.rint(x / s) + z
    if v < 0:
        v = np.float32(0)
    elif v > qm:
        v = qm
    return v


@njit(parallel=True, cache=True)
def _aggregate_swar(indptr, indices, words, bits, width, mask, nchunks):
    n, nw = words.shape
    c = 8 // bits
    nb = nw * 8
    limit = 255 // ((1 << bits) - 1)
    out = np.empty((n, width), np.int32)
    rmin = np.empty(n, np.int32)
    rmax = np.empty(n, np.int32)
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        lanes = np.zeros(c * nw, np.uint64)
        lanes8 = lanes.view(np.uint8)
        acc = np.zeros(c * nb, np.int32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc[:] = 0
            cnt = 0
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                for k in range(c):
                    sh = np.uint64(k * bits)
                    for w in range(nw):
                        lanes[k * nw + w] += (words[j, w] >> sh) & mask
                cnt += 1
                if cnt == limit:
                    for x in range(c * nb):
                        acc[x] += lanes8[x]
                    lanes[:] = 0
                    cnt = 0
            if cnt > 0:
                for x in range(c * nb):
                    acc[x] += lanes8[x]
                lanes[:] = 0
            lo = acc[0]
            hi = acc[0]
            for f in range(width):
                v = acc[f]
                out[i, f] = v
                lo = min(lo, v)
                hi = max(hi, v)
            rmin[i] = lo
            rmax[i] = hi
    return out, rmin, rmax


@njit(parallel=True, cache=True)
def _aggregate_bytes(indptr, indices, codes, width, nchunks):
    n = codes.shape[0]
    out = np.empty((n, width), np.int32)
    rmin = np.empty(n, np.int32)
    rmax = np.empty(n, np.int32)
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc = np.zeros(width, np.int32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc[:] = 0
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                for f in range(width):
                    acc[f] += codes[j, f]
            lo = acc[0]
            hi = acc[0]
            for f in range(width):
                v = acc[f]
                out[i, f] = v
                lo = min(lo, v)
                hi = max(hi, v)
            rmin[i] = lo
            rmax[i] = hi
    return out, rmin, rmax


def aggregate(indptr: np.ndarray, indices: np.ndarray, packed: np.ndarray, bits: int, width: int):
    """``S[i, f] = Σ_{j ∈ N(i)} q[j, f]`` (int32) with per-row min and max of ``S``.

    ``indptr``/``indices`` are the CSR of Ã (in-neighbours of each row, self-loops
    included); ``packed`` is :func:`bench_suite.engine.packing.pack` output.
    """
    check_bits(bits, "aggregate")
    if packed.shape[1] % 8:
        raise ValueError(f"packed rows must be whole 64-bit words, got {packed.shape[1]} bytes")
    nchunks = _chunks(len(indptr) - 1)
    if bits == 8:
        return _aggregate_bytes(indptr, indices, packed, width, nchunks)
    words = packed.view(np.uint64)
    return _aggregate_swar(indptr, indices, words, bits, width, MASK2 if bits == 2 else MASK4, nchunks)


@njit(parallel=True, cache=True)
def _quantize_pack(x, norm, has_feature, sf, zf, qf, sm, zm, qm, bits, nb, nchunks):
    n, width = x.shape
    c = 8 // bits
    out = np.zeros((n, nb), np.uint8)
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        codes = np.zeros(c * nb, np.uint8)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            d = norm[i]
            for f in range(width):
                v = x[i, f]
                if has_feature:
                    v = (_q(v, sf, zf, qf) - zf) * sf
                codes[f] = np.uint8(_q(v * d, sm, zm, qm))
            for j in range(nb):
                b = np.uint8(0)
                for k in range(c):
                    b |= codes[k * nb + j] << np.uint8(k * bits)
                out[i, j] = b
    return out


def quantize_pack(x: np.ndarray, norm: np.ndarray, message: tuple, bits: int, nb: int,
                  feature: tuple | None = None) -> np.ndarray:
    """Packed message codes of ``d̃^{-1/2} · q_feature(x)`` (``feature=None``: of ``d̃^{-1/2}·x``).

    ``message`` and ``feature`` are ``(scale, zero, Q)`` triples.
    """
    sf, zf, qf = feature if feature is not None else (1.0, 0.0, 1.0)
    sm, zm, qm = message
    f32 = np.float32
    return _quantize_pack(x, norm, feature is not None, f32(sf), f32(zf), f32(qf), f32(sm), f32(zm), f32(qm),
                          bits, nb, _chunks(x.shape[0]))


@njit(parallel=True, cache=True)
def _epilogue(src, from_sums, deg, norm, sm, zm, sa, za, qa, coef, add, add_rows,
              has_update, su, zu, qu, relu, mode, s2, z2, q2, out_f, out_q, nchunks):
    n, width = src.shape
    rmin = np.empty(n, np.float32)
    rmax = np.empty(n, np.float32)
    chunk = (n + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            r = i if add_rows else 0
            lo = np.float32(np.inf)
            hi = np.float32(-np.inf)
            if from_sums:
                d = deg[i]
                nrm = norm[i]
            for f in range(width):
                if from_sums:
                    a = sm * (np.float32(src[i, f]) - zm * d)
                    a = (_q(a, sa, za, qa) - za) * sa
                    v = coef * (a * nrm) + add[r, f]
                else:
                    v = (_q(np.float32(src[i, f]), sa, za, qa) - za) * sa + add[r, f]
                if mode == 0:
                    lo = min(lo, v)
                    hi = max(hi, v)
                    continue
                if has_update:
                    v = (_q(v, su, zu, qu) - zu) * su
                if relu:
                    v = max(v, np.float32(0))
                if mode == 1:
                    out_f[i, f] = v
                else:
                    out_q[i, f] = np.uint8(_q(v, s2, z2, q2))
            rmin[i] = lo
            rmax[i] = hi
    return rmin, rmax


def epilogue(src: np.ndarray, first: tuple, add: np.ndarray, *, sums: tuple | None = None,
             deg: np.ndarray | None = None, norm: np.ndarray | None = None, coef: float = 1.0,
             update: tuple | None = None, relu: bool = False, mode: str = "range",
             following: tuple | None = None):
    """The fused elementwise stage after an aggregation or a dense product.

    With ``sums=(s_m, z_m)`` (``src`` int32 neighbour sums ``S``):
    ``v = coef · d̃^{-1/2} · q_first(s_m·(S − z_m·d̃)) + add``; otherwise (``src`` float
    dense output) ``v = q_first(src) + add``.  ``add`` is ``[1, F]`` (bias) or
    ``[N, F]``.  ``mode="range"`` returns per-row min/max of ``v``; ``"float"``
    returns ``relu?(q_update(v))``; ``"codes"`` returns the uint8 codes of that under
    ``following=(s, z, Q)``.  Quantizer arguments are ``(scale, zero, Q)`` triples.
    """
    f32 = np.float32
    n, width = src.shape
    from_sums = sums is not None
    sm, zm = sums if from_sums else (1.0, 0.0)
    sa, za, qa = first
    su, zu, qu = update if update is not None else (1.0, 0.0, 1.0)
    s2, z2, q2 = following if following is not None else (1.0, 0.0, 1.0)
    m = {"range": 0, "float": 1, "codes": 2}[mode]
    if m == 2 and following is None:
        raise ValueError("epilogue mode='codes' needs following=(scale, zero, Q)")
    out_f = np.empty((n, width) if m == 1 else (1, 1), np.float32)
    out_q = np.empty((n, width) if m == 2 else (1, 1), np.uint8)
    dummy = np.ones(1, np.float32)
    rmin, rmax = _epilogue(src, from_sums, deg if deg is not None else dummy, norm if norm is not None else dummy,
                           f32(sm), f32(zm), f32(sa), f32(za), f32(qa), f32(coef),
                           np.ascontiguousarray(add, dtype=np.float32), add.shape[0] > 1,
                           update is not None, f32(su), f32(zu), f32(qu), bool(relu), m,
                           f32(s2), f32(z2), f32(q2), out_f, out_q, _chunks(n))
    if m == 0:
        return rmin, rmax
    return out_f if m == 1 else out_q


@njit(parallel=True, cache=True)
def rows_minmax(x):
    """Per-row min and max of a float32 matrix."""
    n, width = x.shape
    rmin = np.empty(n, np.float32)
    rmax = np.empty(n, np.float32)
    for i in prange(n):
        lo = x[i, 0]
        hi = x[i, 0]
        for f in range(1, width):
            lo = min(lo, x[i, f])
            hi = max(hi, x[i, f])
        rmin[i] = lo
        rmax[i] = hi
    return rmin, rmax
