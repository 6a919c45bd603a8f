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

* :func:`quantize`, :func:`rows_minmax` — input codes and per-row ranges.

The elementwise kernels are specialised per flag combination (compile-time
constants, cached) so their row loops are branch-free and vectorise; min/max
reductions use independent chains (:func:`_minmax`).  :func:`retain_heap` stops
glibc from returning the large per-stage arrays to the OS between passes.
All quantization arithmetic is float32 in the order of
:func:`bench_suite.quant.base.fake_quant`: ``clamp(rint(x/s) + z, 0, Q)``, ``(q − z)·s``;
under bit truncation (BT/BT*, METHOD.md §6) as :func:`bench_suite.quant.fused.fake_quant_fused`:
``c = clamp(rint((q + κ)/step), 0, Qc)``, ``(c − z/step)·(s·step)`` (quantizer parameters: :func:`grid`).
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from bench_suite.bits import qmax
from bench_suite.engine.packing import check_bits

#: :func:`bench_suite.bits.qmax` compiled for the kernels (inlined, so no call in the row loops)
_qmax = njit(inline="always")(qmax)

MASK2 = np.uint64(0x0303030303030303)
MASK4 = np.uint64(0x0F0F0F0F0F0F0F0F)
CHUNKS_PER_THREAD = 16
#: neighbours ahead whose code rows the aggregation prefetches (measured on this machine's
#: arxiv-sized graph: 4 → 16 cut the INT2 aggregation from ≈45 to ≈30 ms; more did not help)
PREFETCH_DISTANCE = 16


@intrinsic
def _prefetch(typingctx, arr, row, offset):
    """``llvm.prefetch`` (read, high locality) of byte ``offset`` of row ``row`` of a
    C-contiguous 2-D array.  Aggregation gathers code rows in random order; without it
    every neighbour row is a cache miss the core waits for (numba has no prefetch)."""

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [builder.mul(args[1], builder.extract_value(ary.shape, 1))])
        byte = builder.gep(builder.bitcast(ptr, ir.IntType(8).as_pointer()), [args[2]])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [byte, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row, offset), codegen


def retain_heap() -> bool:
    """Keep freed large blocks in the process heap (glibc ``mallopt``) so the next
    forward pass reuses them instead of page-faulting fresh ``mmap`` pages.

    Every stage output of a full-graph forward is O(N·F) (≈170 MB at arxiv size); by
    default glibc maps and unmaps each one, and zero-filling fresh pages costs more than
    the kernels.  Process-wide: the DGL and torch baselines benefit equally.  Returns
    False where glibc is not available (nothing changes).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Both values are C ints: a larger Python int would be truncated (1 << 62 became 0, a trim
    # threshold of 0: every free returned memory to the OS, the opposite of the intent).
    biggest = 2 ** 31 - 1
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, biggest))


def set_threads(threads: int) -> int:
    """Use ``threads`` numba threads (clamped to what numba was started with)."""
    t = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(t)
    return t


def _chunks(n: int) -> int:
    return max(1, min(n, CHUNKS_PER_THREAD * numba.get_num_threads()))


@njit(inline="always")
def _store_row(acc, out, i, width, rmin, rmax):
    """Row ``i`` of the sums from the accumulator, with its min and max."""
    lo = acc[0]
    hi = acc[0]
    for f in range(width):
        v = acc[f]
        out[i, f] = v
        lo = min(lo, v)
        hi = max(hi, v)
    rmin[i] = lo
    rmax[i] = hi


@njit(parallel=True, cache=True)
def _aggregate_swar(indptr, indices, words, bits, width, mask, nchunks, out, rmin, rmax):
    n, nw = words.shape
    c = 8 // bits
    nb = nw * 8
    limit = 255 // _qmax(bits)
    chunk = (n + nchunks - 1) // nchunks
    nnz = indices.size
    for t in prange(nchunks):
        lanes = np.zeros(c * nw, np.uint64)
        lanes8 = lanes.view(np.uint8)
        acc = np.zeros(c * nb, np.int32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc[:] = 0
            cnt = 0
            for e in range(indptr[i], indptr[i + 1]):
                if e + PREFETCH_DISTANCE < nnz:
                    for line in range(0, nb, 64):
                        _prefetch(words, indices[e + PREFETCH_DISTANCE], line)
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
            _store_row(acc, out, i, width, rmin, rmax)
    return out, rmin, rmax


@njit(inline="always")
def _flush(acc, base, stride, l0, l1, l2, l3):
    """Add the eight byte lanes of each of ``l0..l3`` (shifts 0..3 of one word) into ``acc``."""
    for b in range(8):
        sh = np.uint64(8 * b)
        acc[base + b] += np.int32((l0 >> sh) & np.uint64(0xFF))
        acc[base + stride + b] += np.int32((l1 >> sh) & np.uint64(0xFF))
        acc[base + 2 * stride + b] += np.int32((l2 >> sh) & np.uint64(0xFF))
        acc[base + 3 * stride + b] += np.int32((l3 >> sh) & np.uint64(0xFF))


@njit(parallel=True, cache=True)
def _aggregate_swar_narrow(indptr, indices, words, bits, width, mask, nchunks, out, rmin, rmax):
    """:func:`_aggregate_swar` for rows of one or two 64-bit words (INT2 width ≤ 64, INT4 ≤ 32:
    a decoupled model's propagation over class scores), with the byte lanes in scalars
    (registers) instead of a lane array that every neighbour's adds store to and load from:
    2-2.6x faster on amazon-computers and arxiv-like rows of 10-64 codes.  (Walking a wider
    row's neighbours once per pair of words this way was 1.5-3.5x slower than the lane array.)"""
    n, nw = words.shape
    c = 8 // bits
    limit = 255 // _qmax(bits)
    chunk = (n + nchunks - 1) // nchunks
    nnz = indices.size
    two = nw == 2
    s1, s2, s3 = np.uint64(bits), np.uint64(2 * bits), np.uint64(3 * bits)
    zero = np.uint64(0)
    for t in prange(nchunks):
        acc = np.zeros(4 * 8 * nw, np.int32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc[:] = 0
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
            cnt = 0
            for e in range(indptr[i], indptr[i + 1]):
                if e + PREFETCH_DISTANCE < nnz:
                    _prefetch(words, indices[e + PREFETCH_DISTANCE], 0)
                j = indices[e]
                v = words[j, 0]
                a0 += v & mask
                a1 += (v >> s1) & mask
                if c == 4:
                    a2 += (v >> s2) & mask
                    a3 += (v >> s3) & mask
                if two:
                    v = words[j, 1]
                    b0 += v & mask
                    b1 += (v >> s1) & mask
                    if c == 4:
                        b2 += (v >> s2) & mask
                        b3 += (v >> s3) & mask
                cnt += 1
                if cnt == limit:
                    _flush(acc, 0, 8 * nw, a0, a1, a2, a3)
                    if two:
                        _flush(acc, 8, 16, b0, b1, b2, b3)
                    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
                    cnt = 0
            if cnt > 0:
                _flush(acc, 0, 8 * nw, a0, a1, a2, a3)
                if two:
                    _flush(acc, 8, 16, b0, b1, b2, b3)
            _store_row(acc, out, i, width, rmin, rmax)
    return out, rmin, rmax


@njit(parallel=True, cache=True)
def _aggregate_bytes(indptr, indices, codes, width, nchunks, out, rmin, rmax):
    n = codes.shape[0]
    chunk = (n + nchunks - 1) // nchunks
    nnz = indices.size
    for t in prange(nchunks):
        acc = np.zeros(width, np.int32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc[:] = 0
            for e in range(indptr[i], indptr[i + 1]):
                if e + PREFETCH_DISTANCE < nnz:
                    for line in range(0, width, 64):
                        _prefetch(codes, indices[e + PREFETCH_DISTANCE], line)
                j = indices[e]
                for f in range(width):
                    acc[f] += codes[j, f]
            _store_row(acc, out, i, width, rmin, rmax)
    return out, rmin, rmax


def aggregate(indptr: np.ndarray, indices: np.ndarray, packed: np.ndarray, bits: int, width: int):
    """``S[i, f] = Σ_{j ∈ N(i)} q[j, f]`` (int32) with per-row min and max of ``S``.

    ``indptr``/``indices`` are the CSR of Ã (in-neighbours of each row, self-loops
    included); ``packed`` is :func:`bench_suite.engine.packing.pack` output.
    """
    check_bits(bits, "aggregate")
    if packed.shape[1] % 8:
        raise ValueError(f"packed rows must be whole 64-bit words, got {packed.shape[1]} bytes")
    n = len(indptr) - 1
    nchunks = _chunks(n)
    # Outputs are allocated here, not inside the kernels: numba's allocator maps fresh
    # pages for every large array (one page fault per 4 KiB, ≈40k for an arxiv-sized
    # int32 S), while numpy's reuses the process heap (:func:`retain_heap`).
    out = np.empty((n, width), np.int32)
    rmin = np.empty(n, np.int32)
    rmax = np.empty(n, np.int32)
    if bits == 8:
        return _aggregate_bytes(indptr, indices, packed, width, nchunks, out, rmin, rmax)
    words = packed.view(np.uint64)
    kernel = _aggregate_swar_narrow if words.shape[1] <= 2 else _aggregate_swar
    return kernel(indptr, indices, words, bits, width, MASK2 if bits == 2 else MASK4, nchunks, out, rmin, rmax)


#: fast-math flags that leave every arithmetic result bit-exact (no reassociation, no
#: contraction) but let LLVM vectorise the min/max reductions.
EXACT_FASTMATH = {"nnan", "ninf", "nsz"}


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _minmax(r, width):
    """Min and max of ``r[:width]`` with four independent chains each (float min/max
    reductions do not vectorise without reassociation; short chains keep them fast)."""
    lo0 = lo1 = lo2 = lo3 = r[0]
    hi0 = hi1 = hi2 = hi3 = r[0]
    m = width - width % 4
    for f in range(0, m, 4):
        a, b, c, d = r[f], r[f + 1], r[f + 2], r[f + 3]
        lo0 = a if a < lo0 else lo0
        lo1 = b if b < lo1 else lo1
        lo2 = c if c < lo2 else lo2
        lo3 = d if d < lo3 else lo3
        hi0 = a if a > hi0 else hi0
        hi1 = b if b > hi1 else hi1
        hi2 = c if c > hi2 else hi2
        hi3 = d if d > hi3 else hi3
    for f in range(m, width):
        a = r[f]
        lo0 = a if a < lo0 else lo0
        hi0 = a if a > hi0 else hi0
    lo = min(min(lo0, lo1), min(lo2, lo3))
    hi = max(max(hi0, hi1), max(hi2, hi3))
    return lo, hi


def grid(p: tuple) -> tuple:
    """``(trunc, float32[8])`` for a quantizer's parameters ``p = (s, z, Q)`` or, under bit
    truncation (METHOD.md §6), ``(s, z, Q, step, κ, Qc)``: ``[s, z, Q, step, κ, Qc, z/step, s·step]``
    (the last two formed in float32 as the fake-quant kernel forms them)."""
    f32 = np.float32
    s, z, q = f32(p[0]), f32(p[1]), f32(p[2])
    step, kappa, qc = (f32(p[3]), f32(p[4]), f32(p[5])) if len(p) > 3 else (f32(1), f32(0), q)
    trunc = step != f32(1)
    zs, ss = (z / step, s * step) if trunc else (z, s)
    return bool(trunc), np.array([s, z, q, step, kappa, qc, zs, ss], np.float32)


def effective(p: tuple) -> tuple:
    """``(scale, zero)`` with which codes under ``p`` dequantize: ``(s, z)``, or ``(s·step, z/step)``
    under bit truncation (a zero point that need not be an integer)."""
    _, g = grid(p)
    return float(g[7]), float(g[6])


@njit(inline="always")
def _scalars(g):
    """The eight grid values of :func:`grid` as a tuple of locals (loads from the array inside a
    loop could alias the kernel's outputs and keep LLVM from hoisting them)."""
    return (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _code(v, g, trunc):
    """The (float-valued) code of ``v`` under grid ``g`` (see :func:`grid`): ``clamp(rint(v/s) + z, 0, Q)``,
    then under truncation ``clamp(rint((q + κ)/step), 0, Qc)``, as ``fake_quant_fused``."""
    zero = np.float32(0)
    c = min(max(np.rint(v / g[0]) + g[1], zero), g[2])
    if trunc:
        c = min(max(np.rint((c + g[4]) / g[3]), zero), g[5])
    return c


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _fq(v, g, trunc):
    """Fake-quantized ``v``: ``(c − z)·s``, under truncation ``(c − z/step)·(s·step)``."""
    c = _code(v, g, trunc)
    if trunc:
        return (c - g[6]) * g[7]
    return (c - g[1]) * g[0]


@functools.lru_cache(maxsize=None)
def _quantize_pack_kernel(has_feature: bool, bits: int, trunc_f: bool = False, trunc_m: bool = False):
    """Specialised (branch-free, vectorisable) packing kernel; flags are compile-time constants."""
    c = 8 // bits

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, norm, gf, gm, nb, out, nchunks):
        n, width = x.shape
        chunk = (n + nchunks - 1) // nchunks
        for t in prange(nchunks):
            lf, lm = _scalars(gf), _scalars(gm)
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
                        v = _fq(v, lf, trunc_f)
                    dst[f] = np.uint8(np.int32(_code(v * d, lm, trunc_m)))
                if c == 1:
                    for f in range(width, nb):
                        o[f] = 0
                else:
                    for j in range(nb):
                        b = tmp[j]
                        for k in range(1, c):
                            b |= tmp[k * nb + j] << np.uint8(k * bits)
                        o[j] = b
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
        out = np.empty((x.shape[0], nb), np.uint8)
    return _quantize_pack_kernel(feature is not None, int(bits), tf, tm)(
        x, norm, gf, gm, nb, out, _chunks(x.shape[0]))


@functools.lru_cache(maxsize=None)
def _epilogue_kernel(from_sums: bool, add_rows: bool, has_update: bool, relu: bool, mode: int,
                     trunc_a: bool = False, trunc_u: bool = False, trunc_2: bool = False):
    """Specialised epilogue; every flag is a compile-time constant so the row loop is
    branch-free and vectorises (mode 0: row ranges, 1: floats, 2: codes)."""

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(src, deg, norm, sm, zm, ga, coef, add, gu, g2, out_f, out_q, rmin, rmax, nchunks):
        n, width = src.shape
        zero = np.float32(0)
        chunk = (n + nchunks - 1) // nchunks
        for t in prange(nchunks):
            la = _scalars(ga)
            lu = _scalars(gu)
            l2 = _scalars(g2)
            tmp = np.empty(width if mode == 0 else 1, np.float32)
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                sr = src[i]
                ar = add[i] if add_rows else add[0]
                d = deg[i] if from_sums else zero
                nrm = norm[i] if from_sums else zero
                of = out_f[i if mode == 1 else 0]
                oq = out_q[i if mode == 2 else 0]
                for f in range(width):
                    if from_sums:
                        a = sm * (np.float32(sr[f]) - zm * d)
                        v = coef * _fq(a * nrm, la, trunc_a) + ar[f]
                    else:
                        v = _fq(np.float32(sr[f]), la, trunc_a) + ar[f]
                    if mode == 0:
                        tmp[f] = v
                    else:
                        if has_update:
                            v = _fq(v, lu, trunc_u)
                        if relu:
                            v = max(v, zero)
                        if mode == 1:
                            of[f] = v
                        else:
                            oq[f] = np.uint8(np.int32(_code(v, l2, trunc_2)))
                if mode == 0:
                    rmin[i], rmax[i] = _minmax(tmp, width)

    return kernel


def epilogue(src: np.ndarray, first: tuple, add: np.ndarray, *, sums: tuple | None = None,
             deg: np.ndarray | None = None, norm: np.ndarray | None = None, coef: float = 1.0,
             update: tuple | None = None, relu: bool = False, mode: str = "range",
             following: tuple | None = None, out: np.ndarray | None = None):
    """The fused elementwise stage after an aggregation or a dense product.

    With ``sums=(s_m, z_m)`` (``src`` int32 neighbour sums ``S``; the message codes' effective
    scale and zero, :func:`effective`):
    ``v = coef · q_first(d̃^{-1/2} · s_m·(S − z_m·d̃)) + add`` (the aggregate role quantizes
    the normalised sum); otherwise (``src`` float
    dense output) ``v = q_first(src) + add``.  ``add`` is ``[1, F]`` (bias) or
    ``[N, F]``.  ``mode="range"`` returns per-row min/max of ``v``; ``"float"``
    returns ``relu?(q_update(v))``; ``"codes"`` returns the uint8 codes of that under
    ``following``.  Quantizer arguments are parameters as :func:`grid` takes them.
    """
    f32 = np.float32
    n, width = src.shape
    from_sums = sums is not None
    sm, zm = sums if from_sums else (1.0, 0.0)
    ta, ga = grid(first)
    tu, gu = grid(update if update is not None else (1.0, 0.0, 1.0))
    t2, g2 = grid(following if following is not None else (1.0, 0.0, 1.0))
    m = {"range": 0, "float": 1, "codes": 2}[mode]
    if m == 2 and following is None:
        raise ValueError("epilogue mode='codes' needs following=(scale, zero, Q)")
    out_f = (out if out is not None else np.empty((n, width), np.float32)) if m == 1 else np.empty((1, 1), np.float32)
    out_q = (out if out is not None else np.empty((n, width), np.uint8)) if m == 2 else np.empty((1, 1), np.uint8)
    rmin = np.empty(n if m == 0 else 1, np.float32)
    rmax = np.empty(n if m == 0 else 1, np.float32)
    dummy = np.ones(1, np.float32)
    add = np.ascontiguousarray(add, dtype=np.float32)
    kernel = _epilogue_kernel(from_sums, add.shape[0] > 1, update is not None, bool(relu), m,
                              ta, tu, t2 and m == 2)
    kernel(src, deg if from_sums else dummy, norm if from_sums else dummy, f32(sm), f32(zm), ga, f32(coef), add,
           gu, g2, out_f, out_q, rmin, rmax, _chunks(n))
    if m == 0:
        return rmin, rmax
    return out_f if m == 1 else out_q


@functools.lru_cache(maxsize=None)
def _quantize_kernel(trunc: bool):
    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, g, out):
        n, width = x.shape
        for i in prange(n):
            lg = _scalars(g)
            xr = x[i]
            o = out[i]
            for f in range(width):
                o[f] = np.uint8(np.int32(_code(xr[f], lg, trunc)))
        return out

    return kernel


def quantize(x: np.ndarray, p: tuple) -> np.ndarray:
    """uint8 codes ``clamp(rint(x/s) + z, 0, Q)`` (truncated under BT, see :func:`grid`) of a float32 matrix."""
    trunc, g = grid(p)
    return _quantize_kernel(trunc)(x, g, np.empty(x.shape, np.uint8))


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
            dmin[i], dmax[i] = _minmax(dr, width)


def smp_pre(x, ax, h, c1, c2, c3):
    """SMP's first half-step, fused: ``X̃ = (c1·X + c2·ÂX) + c3·H``, ``Δ = X̃ − X`` and the
    per-row range of Δ (float32, the order of :meth:`IntDecoupled._smp`'s numpy form)."""
    n = x.shape[0]
    xt, delta = np.empty_like(x), np.empty_like(x)
    dmin, dmax = np.empty(n, np.float32), np.empty(n, np.float32)
    f32 = np.float32
    _smp_pre(x, ax, h, f32(c1), f32(c2), f32(c3), xt, delta, dmin, dmax, _chunks(n))
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
            vmin[i], vmax[i] = _minmax(vr, width)
        tpart[t] = acc


def smp_post(xt, delta, a_delta, k, exact: bool):
    """SMP's second half-step, fused: ``V = X̃ + k·L̃Δ`` (``exact``; ``L̃Δ = Δ − ÂΔ``) or
    ``X̃ + k·ÂΔ``, V's per-row range, and T(Δ) = Σ Δ·L̃Δ (float64 sum of float32 products,
    per chunk, chunks in order)."""
    n = xt.shape[0]
    nchunks = _chunks(n)
    v = np.empty_like(xt)
    vmin, vmax = np.empty(n, np.float32), np.empty(n, np.float32)
    tpart = np.zeros(nchunks)
    _smp_post(xt, delta, a_delta, np.float32(k), bool(exact), v, vmin, vmax, tpart, nchunks)
    return v, vmin, vmax, float(tpart.sum())


@functools.lru_cache(maxsize=None)
def _fq_rows_kernel(trunc: bool):
    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(x, g, out, rmin, rmax):
        n, width = x.shape
        for i in prange(n):
            lg = _scalars(g)
            xr, o = x[i], out[i]
            for f in range(width):
                o[f] = _fq(xr[f], lg, trunc)
            rmin[i], rmax[i] = _minmax(o, width)

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
def _add_row_sums(y, x, zk, c):
    n, k = x.shape
    for i in prange(n):
        r = np.int32(0)
        xr = x[i]
        for f in range(k):
            r += np.int32(xr[f])
        v = (np.float32(r) - zk) * c
        yr = y[i]
        for f in range(y.shape[1]):
            yr[f] = yr[f] + v


def add_row_sums(y: np.ndarray, x: np.ndarray, z: float, c: np.float32) -> np.ndarray:
    """In place: ``y[i, :] += (float32(Σ_k x[i, k]) − float32(z·K)) · c`` (the rank-1 correction of
    :class:`~bench_suite.engine.intmodel.IntLinear`; exact for an integer z while the sums stay
    below 2^24), int32 row sums as ``torch.sum(dtype=int32)``.  torch's uint8 row sum alone took
    ≈50 ms at arxiv size.  ``z`` need not be an integer (a bit-truncated input's zero point)."""
    if x.dtype != np.uint8 or y.dtype != np.float32 or x.shape[0] != y.shape[0]:
        raise ValueError(f"add_row_sums: need float32 y and uint8 x with equal rows, got {y.dtype}{y.shape}, "
                         f"{x.dtype}{x.shape}")
    _add_row_sums(y, x, np.float32(np.float32(z) * np.float32(x.shape[1])), np.float32(c))
    return y


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def rows_minmax(x):
    """Per-row min and max of a float32 matrix."""
    n, width = x.shape
    rmin = np.empty(n, np.float32)
    rmax = np.empty(n, np.float32)
    for i in prange(n):
        rmin[i], rmax[i] = _minmax(x[i], width)
    return rmin, rmax
