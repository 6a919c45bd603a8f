"""Sparse aggregation ``S = Ã·q`` over packed codes with int32 accumulation (METHOD.md §9).

INT2 and INT4 use SWAR: a 64-bit word masked with ``0x0303…03`` (``0x0F0F…0F``) after a shift
of ``k·b`` holds eight codes in eight byte lanes; lane-wise adds of up to 85 (17) neighbours
cannot overflow a lane, then the lanes flush into int32 accumulators.  INT8 adds bytes.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from bench_suite.engine.kernels.common import row_chunks
from bench_suite.engine.packing import check_bits

MASK2 = np.uint64(0x0303030303030303)
MASK4 = np.uint64(0x0F0F0F0F0F0F0F0F)
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
    limit = 255 // ((1 << bits) - 1)
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
    limit = 255 // ((1 << bits) - 1)
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
    nchunks = row_chunks(n)
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


