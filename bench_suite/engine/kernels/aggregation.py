"""Sparse aggregation ``S = Ã·q`` over packed codes, exact int32 sums (METHOD.md §9).

Rows of two or more words (INT2/INT4) or of three or more (INT8) widen their codes into uint16
lanes with explicit vector instructions (:func:`_aggregate_vec`); the lanes flush into int32
before they can overflow.  INT2/INT4 rows of 16, 32 or 64 bytes (widths 64/128/256 at INT2,
32/64/128 at INT4) first sum blocks of 85 (17) neighbours in byte lanes held in vector registers
(:func:`_make_lane_sum`: per neighbour one broadcast load, a shift, a mask and a byte add per 16
bytes), which widen into the uint16 lanes once per block.  Against the uint16 lanes alone
(``benchmarks/aggregation.py --ref 3142f31``, one thread, CPU time, interleaved medians of 9 rounds,
loaded machine, 2026-12-07, results/cost/aggregation.jsonl): 1.48-2.43x faster at width 64 on
arxiv-like, amazon-computers, coauthor-physics and cora; INT2 width 256 1.35x, 2.17x, 1.74x, 0.96x
(the INT4 width-256 rows, whose kernel did not change, read 0.80-1.30x: the noise of that run).  Rows of one word (two at INT8) keep SWAR lanes in scalar registers:
a 64-bit word masked with ``0x0303…03`` (``0x0F0F…0F``) after a shift of ``k·b`` holds eight
codes in eight byte lanes, which take up to 85 (17) neighbours before they flush; INT8 splits
a word into even and odd bytes, four 16-bit lanes each (257 neighbours).

Each kernel's work on one row is an inline row helper (:func:`vec_row`, :func:`swar_row`,
:func:`bytes_row`), which :mod:`.fused` shares: there a row's sums go straight into the epilogue.

Every kernel prefetches the code rows :data:`PREFETCH_DISTANCE` neighbours ahead when the code
matrix is larger than :data:`PREFETCH_MIN_BYTES`, and the rows are split into chunks of equal
edges (:func:`chunk_bounds`), not equal rows.

Node reordering (reverse Cuthill–McKee, degree sort) was measured with ``benchmarks/aggregation.py``
on cora, amazon-computers, coauthor-physics and arxiv-like and is not used: under RCM these
kernels ran 0.74-1.36x as fast (median 1.01; degree order 0.98), while DGL's float
``copy_u_sum`` ran 0.99-1.53x as fast (median 1.16), so compare against the float baseline on
the same order (results/cost/aggregation.jsonl).  Measured again with every code matrix on a cache
line (:mod:`bench_suite.engine.packing`; the permuted copies had been as unaligned as the natural
one), width 256, quiet machine: RCM 0.72-1.02x, degree order 0.65-1.03x as fast; DGL 1.05-1.26x and
0.93-1.21x (2026-12-07).  Still not used.
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
#: arxiv-sized graph: 4 → 16 cut the INT2 aggregation from ≈45 to ≈30 ms; with the uint16-lane
#: kernels 24 is 1.1-1.2x faster than 16 on rows of 32-64 bytes and equal elsewhere, while 32 and
#: 48 made INT2 rows of 64 bytes (width 256) 2x slower)
PREFETCH_DISTANCE = 24
#: the same for the register byte-lane rows (:func:`_make_lane_sum`), whose neighbours cost fewer
#: instructions: on arxiv-like, one thread, CPU time, INT2 rows of 64 bytes took 25-27 ms at 24, 18-20 at
#: 64-192 (one process per distance, 2026-12-07); rows of 16 and 32 bytes were within noise of 8-192.
#: 96 against 24 in one run (``benchmarks/aggregation.py --ref 6ccc851``): INT2 width 256 1.39x on
#: arxiv-like, width 64 1.10-1.16x; coauthor-physics 0.94-1.02x (results/cost/aggregation.jsonl)
LANE_PREFETCH_DISTANCE = 96
#: code matrices up to this size (a Zen 4 core's L2) are not prefetched: the rows are in cache
#: and the prefetches only cost instructions (tuned on cora, amazon-computers, coauthor-physics)
PREFETCH_MIN_BYTES = 1 << 20
#: a row's fixed cost (zeroing, storing and reducing its sums) in units of one neighbour's, for
#: the split of the rows into chunks of equal cost
ROW_COST = 1
#: neighbours an INT8 row sums in uint16 lanes before they flush into int32: 257·255 = 65535
LIMIT8 = 257
MASK8 = np.uint64(0x00FF00FF00FF00FF)


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


def _make_block_add(bits, block):
    """An intrinsic ``add(acc, packed, row, off)``: the ``block`` packed bytes ``off … off+block−1``
    of row ``row`` hold ``c = 8/bits`` codes each; code ``k`` of byte ``off+b`` (feature
    ``k·B + off + b`` in :mod:`bench_suite.engine.packing`'s layout, ``B`` bytes a row) is
    added to ``acc[k·B + off + b]`` (uint16).  One vector load, then per ``k`` a shift, a mask,
    a widening to 16 bits and one vector add.  (numba's loop ``acc16[f] += codes[j, f]`` over a
    row is vectorised only behind run-time alias checks, for long rows: INT8 rows of 40-64 bytes
    in uint16 lanes were no faster than in int32, and fixed-length blocks stayed scalar.)"""
    c = 8 // bits
    mask = (1 << bits) - 1
    i8, i16, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(64)
    v8, v16 = ir.VectorType(i8, block), ir.VectorType(i16, block)

    @intrinsic
    def block_add(typingctx, acc, packed, row, off):
        def codegen(context, builder, sig, args):
            a = context.make_array(sig.args[0])(context, builder, args[0])
            p = context.make_array(sig.args[1])(context, builder, args[1])
            r = context.cast(builder, args[2], sig.args[2], types.int64)
            o = context.cast(builder, args[3], sig.args[3], types.int64)
            nb = builder.extract_value(p.shape, 1)
            src = builder.gep(builder.bitcast(p.data, i8.as_pointer()), [builder.add(builder.mul(r, nb), o)])
            x = builder.load(builder.bitcast(src, v8.as_pointer()), align=1)
            base = builder.bitcast(a.data, i16.as_pointer())
            for k in range(c):
                v = x
                if k:
                    v = builder.lshr(v, ir.Constant(v8, [k * bits] * block))
                if bits < 8:
                    v = builder.and_(v, ir.Constant(v8, [mask] * block))
                dst = builder.bitcast(builder.gep(base, [builder.add(builder.mul(ir.Constant(i64, k), nb), o)]),
                                      v16.as_pointer())
                builder.store(builder.add(builder.load(dst, align=2), builder.zext(v, v16)), dst, align=2)
            return context.get_dummy_value()

        return types.void(acc, packed, row, off), codegen

    return block_add


def _make_lane_sum(bits, chunks):
    """An intrinsic ``lane_sum(acc16, indices, packed, e0, e1, pf)``: add the codes of rows
    ``indices[e0:e1]`` of ``packed`` (rows of ``16·chunks`` bytes; at most ``255 / (2^bits − 1)``
    rows, so no byte lane overflows) into ``acc16`` (uint16, ``c·nb``, feature order), with the
    byte-lane accumulators in registers for the whole loop.  Per neighbour and 16-byte chunk: one
    load, a broadcast of the chunk to ``c`` lanes of 16 bytes, one 16-bit shift by ``bits·k`` in lane
    ``k`` (the low ``bits`` of every byte of lane ``k`` are then code ``k`` of that byte: the bits a
    16-bit shift carries into a byte's top are masked off), a mask and one byte add; the lanes widen
    into ``acc16`` once per call.  ``pf``: prefetch the row :data:`LANE_PREFETCH_DISTANCE` neighbours ahead."""
    c = 8 // bits
    mask = (1 << bits) - 1
    lanes = 16 * c
    i1, i8, i16, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    v8, w16, x8, x16 = ir.VectorType(i8, lanes), ir.VectorType(i16, lanes // 2), ir.VectorType(i8, 16), \
        ir.VectorType(i16, 16)
    spread = ir.Constant(ir.VectorType(i32, lanes), [b for _ in range(c) for b in range(16)])
    shifts = ir.Constant(w16, [bits * k for k in range(c) for _ in range(8)])
    masks = ir.Constant(v8, [mask] * lanes)
    zero = ir.Constant(v8, None)

    @intrinsic
    def lane_sum(typingctx, acc, indices, packed, e0, e1, pf):
        def codegen(context, builder, sig, args):
            a = context.make_array(sig.args[0])(context, builder, args[0])
            ind = context.make_array(sig.args[1])(context, builder, args[1])
            p = context.make_array(sig.args[2])(context, builder, args[2])
            start = context.cast(builder, args[3], sig.args[3], types.int64)
            stop = context.cast(builder, args[4], sig.args[4], types.int64)
            pf = context.cast(builder, args[5], sig.args[5], types.boolean)
            nb = builder.extract_value(p.shape, 1)
            nnz = builder.extract_value(ind.shape, 0)
            base = builder.bitcast(p.data, i8.as_pointer())
            signed = sig.args[1].dtype.signed

            def row_of(e):
                j = builder.load(builder.gep(ind.data, [e]))
                j = builder.sext(j, i64) if signed and j.type.width < 64 else (
                    builder.zext(j, i64) if j.type.width < 64 else j)
                return builder.gep(base, [builder.mul(j, nb)])

            entry = builder.block
            loop = builder.append_basic_block("lane_sum.loop")
            done = builder.append_basic_block("lane_sum.done")
            builder.cbranch(builder.icmp_signed("<", start, stop), loop, done)
            builder.position_at_end(loop)
            e = builder.phi(i64)
            e.add_incoming(start, entry)
            accs = []
            for _ in range(chunks):
                phi = builder.phi(v8)
                phi.add_incoming(zero, entry)
                accs.append(phi)
            ahead = builder.add(e, ir.Constant(i64, LANE_PREFETCH_DISTANCE))
            with builder.if_then(builder.and_(pf, builder.icmp_signed("<", ahead, nnz))):
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i32, i32, i32]),
                    "llvm.prefetch.p0i8")
                builder.call(fn, [row_of(ahead), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            row = row_of(e)
            out = []
            for q in range(chunks):
                x = builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, 16 * q)]), x8.as_pointer()),
                                 align=1)
                v = builder.shuffle_vector(x, x, spread)
                v = builder.bitcast(builder.lshr(builder.bitcast(v, w16), shifts), v8)
                out.append(builder.add(accs[q], builder.and_(v, masks)))
            nxt = builder.add(e, ir.Constant(i64, 1))
            tail = builder.block
            e.add_incoming(nxt, tail)
            for phi, v in zip(accs, out):
                phi.add_incoming(v, tail)
            builder.cbranch(builder.icmp_signed("<", nxt, stop), loop, done)
            builder.position_at_end(done)
            fins = []
            for q in range(chunks):  # every phi first: they head the block
                fin = builder.phi(v8)
                fin.add_incoming(zero, entry)
                fin.add_incoming(out[q], tail)
                fins.append(fin)
            dst16 = builder.bitcast(a.data, i16.as_pointer())
            for q, fin in enumerate(fins):
                for k in range(c):
                    part = builder.shuffle_vector(fin, fin, ir.Constant(ir.VectorType(i32, 16),
                                                                       list(range(16 * k, 16 * k + 16))))
                    off = builder.add(builder.mul(ir.Constant(i64, k), nb), ir.Constant(i64, 16 * q))
                    ptr = builder.bitcast(builder.gep(dst16, [off]), x16.as_pointer())
                    builder.store(builder.add(builder.load(ptr, align=2), builder.zext(part, x16)), ptr, align=2)
            return context.get_dummy_value()

        return types.void(acc, indices, packed, e0, e1, pf), codegen

    return lane_sum


#: rows of 16, 32 and 64 bytes at INT2 and INT4 (widths 64/128/256 and 32/64/128) sum in register byte lanes
_lane2_1, _lane2_2, _lane2_4 = _make_lane_sum(2, 1), _make_lane_sum(2, 2), _make_lane_sum(2, 4)
_lane4_1, _lane4_2, _lane4_4 = _make_lane_sum(4, 1), _make_lane_sum(4, 2), _make_lane_sum(4, 4)


@njit(inline="always")
def lane_row(indptr, indices, packed, bits, i, pf, acc, acc16, width):
    """:func:`vec_row` for INT2/INT4 rows of 16, 32 or 64 bytes (:func:`_make_lane_sum`): blocks of as
    many neighbours as a byte lane holds (85, 17), widened into ``acc16``, which flushes into int32
    before it can overflow.  Returns whether the row flushed (then its sums are ``acc[:width]``)."""
    nb = packed.shape[1]
    block = 255 // ((1 << bits) - 1)
    limit = 65535 // ((1 << bits) - 1)
    start, stop = indptr[i], indptr[i + 1]
    acc16[:] = 0
    flushed = False
    cnt = 0
    for e0 in range(start, stop, block):
        e1 = min(e0 + block, stop)
        if cnt + (e1 - e0) > limit:
            if not flushed:
                acc[:] = 0
                flushed = True
            for f in range(width):
                acc[f] += np.int32(acc16[f])
            acc16[:] = 0
            cnt = 0
        if bits == 2:
            if nb == 16:
                _lane2_1(acc16, indices, packed, e0, e1, pf)
            elif nb == 32:
                _lane2_2(acc16, indices, packed, e0, e1, pf)
            else:
                _lane2_4(acc16, indices, packed, e0, e1, pf)
        else:
            if nb == 16:
                _lane4_1(acc16, indices, packed, e0, e1, pf)
            elif nb == 32:
                _lane4_2(acc16, indices, packed, e0, e1, pf)
            else:
                _lane4_4(acc16, indices, packed, e0, e1, pf)
        cnt += e1 - e0
    if flushed:
        for f in range(width):
            acc[f] += np.int32(acc16[f])
    return flushed


_add2_32, _add2_16, _add2_8 = _make_block_add(2, 32), _make_block_add(2, 16), _make_block_add(2, 8)
_add4_32, _add4_16, _add4_8 = _make_block_add(4, 32), _make_block_add(4, 16), _make_block_add(4, 8)
_add8_32, _add8_16, _add8_8 = _make_block_add(8, 32), _make_block_add(8, 16), _make_block_add(8, 8)


@njit(cache=True)
def chunk_bounds(indptr, nchunks):
    """Row bounds ``b[0] = 0 ≤ b[1] ≤ … ≤ b[nchunks] = n`` of chunks of about equal cost
    ``edges + ROW_COST·rows``: rows ``b[t] … b[t+1]−1`` form chunk ``t``.  Equal-row chunks
    leave one thread with the hubs of a power-law graph; numba's prange hands each thread a
    contiguous run of chunks, so equal-cost chunks are also an equal-cost split between threads."""
    n = indptr.size - 1
    total = indptr[n] - indptr[0] + ROW_COST * n
    b = np.empty(nchunks + 1, np.int64)
    b[0] = 0
    b[nchunks] = n
    for t in range(1, nchunks):
        target = (total * t) // nchunks
        lo, hi = b[t - 1], n  # first row whose cumulative cost reaches the target
        while lo < hi:
            mid = (lo + hi) // 2
            if indptr[mid] - indptr[0] + ROW_COST * mid < target:
                lo = mid + 1
            else:
                hi = mid
        b[t] = lo
    return b


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


@njit(inline="always")
def vec_row(indptr, indices, packed, bits, i, pf, acc, acc16, width):
    """The sums of row ``i`` in uint16 lanes (:func:`_make_block_add`, 32 bytes of a row per step,
    then 16 and 8), flushed into int32 before they can overflow (every 257, 4369, 21845 neighbours
    at INT8, INT4, INT2).  Returns whether the row reached a flush (a hub): then its sums are
    ``acc[:width]`` (int32), else ``acc16[:width]`` (all but hubs, no int32 pass)."""
    nb = packed.shape[1]
    if bits != 8 and (nb == 16 or nb == 32 or nb == 64):
        return lane_row(indptr, indices, packed, bits, i, pf, acc, acc16, width)
    nb32 = nb - nb % 32
    has16 = nb % 32 >= 16
    has8 = nb % 16 == 8
    limit = 65535 // ((1 << bits) - 1)
    nnz = indices.size
    start, stop = indptr[i], indptr[i + 1]
    acc16[:] = 0
    hub = stop - start >= limit  # reaches a flush
    if hub:
        acc[:] = 0
    cnt = 0
    for e in range(start, stop):
        if pf and e + PREFETCH_DISTANCE < nnz:
            for line in range(0, nb, 64):
                _prefetch(packed, indices[e + PREFETCH_DISTANCE], line)
        j = indices[e]
        if bits == 2:
            for o in range(0, nb32, 32):
                _add2_32(acc16, packed, j, o)
            if has16:
                _add2_16(acc16, packed, j, nb32)
            if has8:
                _add2_8(acc16, packed, j, nb - 8)
        elif bits == 4:
            for o in range(0, nb32, 32):
                _add4_32(acc16, packed, j, o)
            if has16:
                _add4_16(acc16, packed, j, nb32)
            if has8:
                _add4_8(acc16, packed, j, nb - 8)
        else:
            for o in range(0, nb32, 32):
                _add8_32(acc16, packed, j, o)
            if has16:
                _add8_16(acc16, packed, j, nb32)
            if has8:
                _add8_8(acc16, packed, j, nb - 8)
        cnt += 1
        if cnt == limit:
            for f in range(width):
                acc[f] += np.int32(acc16[f])
            acc16[:] = 0
            cnt = 0
    if hub:
        for f in range(width):
            acc[f] += np.int32(acc16[f])
    return hub


@njit(parallel=True, cache=True)
def _aggregate_vec(indptr, indices, packed, bits, width, bounds, pf, out, rmin, rmax):
    """All widths and bit widths: each row's sums in uint16 lanes (:func:`vec_row`); a row with
    fewer neighbours than a flush (all but hubs) is stored straight from its uint16 lanes."""
    c = 8 // bits
    nb = packed.shape[1]
    for t in prange(bounds.size - 1):
        acc = np.zeros(c * nb, np.int32)
        acc16 = np.zeros(c * nb, np.uint16)
        for i in range(bounds[t], bounds[t + 1]):
            if vec_row(indptr, indices, packed, bits, i, pf, acc, acc16, width):
                _store_row(acc, out, i, width, rmin, rmax)
            else:
                _store_row(acc16, out, i, width, rmin, rmax)
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


@njit(inline="always")
def swar_row(indptr, indices, words, bits, mask, i, pf, acc, lanes):
    """The sums of row ``i`` of one 64-bit word (INT2 width ≤ 32, INT4 ≤ 16) in SWAR byte lanes held
    in scalars (registers), the neighbours walked in blocks of as many as a lane holds (85, 17; no
    count in the inner loop).  Returns whether the row needs more than one block (a hub): then its
    sums are ``acc[:width]`` (int32), else the bytes of ``lanes`` (uint64[4]; byte ``b`` of lane ``k``
    is feature ``8k + b``)."""
    c = 8 // bits
    limit = 255 // ((1 << bits) - 1)
    nnz = indices.size
    s1, s2, s3 = np.uint64(bits), np.uint64(2 * bits), np.uint64(3 * bits)
    zero = np.uint64(0)
    start, stop = indptr[i], indptr[i + 1]
    hub = stop - start > limit  # needs more than one block of neighbours
    if hub:
        acc[:] = 0
    a0 = a1 = a2 = a3 = zero
    for e0 in range(start, stop, limit):  # blocks of as many neighbours as a lane holds
        a0 = a1 = a2 = a3 = zero
        for e in range(e0, min(e0 + limit, stop)):
            if pf and e + PREFETCH_DISTANCE < nnz:
                _prefetch(words, indices[e + PREFETCH_DISTANCE], 0)
            v = words[indices[e], 0]
            a0 += v & mask
            a1 += (v >> s1) & mask
            if c == 4:
                a2 += (v >> s2) & mask
                a3 += (v >> s3) & mask
        if hub:
            _flush(acc, 0, 8, a0, a1, a2, a3)
    if not hub:
        lanes[0], lanes[1], lanes[2], lanes[3] = a0, a1, a2, a3
    return hub


@njit(parallel=True, cache=True)
def _aggregate_swar_narrow(indptr, indices, words, bits, width, mask, bounds, pf, out, rmin, rmax):
    """SWAR over rows of one 64-bit word (:func:`swar_row`: a decoupled model's class scores), 1.2-1.4x
    faster there than :func:`_aggregate_vec` (at two words the vector kernel is as fast or faster); a
    row of one block (all but hubs) is stored straight from the lanes."""
    for t in prange(bounds.size - 1):
        acc = np.zeros(32, np.int32)
        lanes = np.zeros(4, np.uint64)
        lanes8 = lanes.view(np.uint8)  # byte b of lane k: feature 8k + b (little-endian)
        for i in range(bounds[t], bounds[t + 1]):
            if swar_row(indptr, indices, words, bits, mask, i, pf, acc, lanes):
                _store_row(acc, out, i, width, rmin, rmax)
            else:
                _store_row(lanes8, out, i, width, rmin, rmax)
    return out, rmin, rmax


@njit(inline="always")
def _flush16(acc, base, ev, od):
    """Add the four 16-bit lanes of ``ev`` (bytes 0, 2, 4, 6 of a word) and ``od`` (1, 3, 5, 7)
    into ``acc[base … base+7]``."""
    for b in range(4):
        sh = np.uint64(16 * b)
        acc[base + 2 * b] += np.int32((ev >> sh) & np.uint64(0xFFFF))
        acc[base + 2 * b + 1] += np.int32((od >> sh) & np.uint64(0xFFFF))


@njit(inline="always")
def bytes_row(indptr, indices, words, i, pf, acc):
    """The sums of an INT8 row of one or two 64-bit words (≤ 16 codes): even and odd bytes of each
    word add into four 16-bit lanes of a scalar (a register), which flush into int32 every
    :data:`LIMIT8` neighbours.  Returns ``(hub, a0, a1, b0, b1)``: a row that reached a flush has
    its sums in ``acc[:width]`` (int32), any other in the lanes (:func:`bytes_lane`)."""
    nw = words.shape[1]
    nnz = indices.size
    two = nw == 2
    s8 = np.uint64(8)
    zero = np.uint64(0)
    start, stop = indptr[i], indptr[i + 1]
    hub = stop - start >= LIMIT8  # reaches a flush
    if hub:
        acc[:] = 0
    a0 = a1 = b0 = b1 = zero
    cnt = 0
    for e in range(start, stop):
        if pf and e + PREFETCH_DISTANCE < nnz:
            _prefetch(words, indices[e + PREFETCH_DISTANCE], 0)
        j = indices[e]
        v = words[j, 0]
        a0 += v & MASK8
        a1 += (v >> s8) & MASK8
        if two:
            v = words[j, 1]
            b0 += v & MASK8
            b1 += (v >> s8) & MASK8
        cnt += 1
        if cnt == LIMIT8:
            _flush16(acc, 0, a0, a1)
            if two:
                _flush16(acc, 8, b0, b1)
            a0 = a1 = b0 = b1 = zero
            cnt = 0
    if hub:
        _flush16(acc, 0, a0, a1)
        if two:
            _flush16(acc, 8, b0, b1)
    return hub, a0, a1, b0, b1


@njit(inline="always")
def bytes_lane(a0, a1, b0, b1, f):
    """Feature ``f`` of :func:`bytes_row`'s lanes: byte ``f % 8`` of word ``f // 8``, even or odd lane."""
    ev, od = (a0, a1) if f < 8 else (b0, b1)
    lane = od if f & 1 else ev
    return np.int32((lane >> np.uint64(16 * ((f & 7) >> 1))) & np.uint64(0xFFFF))


@njit(parallel=True, cache=True)
def _aggregate_bytes_narrow(indptr, indices, words, width, bounds, pf, out, rmin, rmax):
    """INT8 rows of one or two 64-bit words (:func:`bytes_row`: a decoupled model's class scores); a
    row of fewer neighbours than a flush (all but hubs) is stored straight from the lanes."""
    nw = words.shape[1]
    for t in prange(bounds.size - 1):
        acc = np.zeros(8 * nw, np.int32)
        for i in range(bounds[t], bounds[t + 1]):
            hub, a0, a1, b0, b1 = bytes_row(indptr, indices, words, i, pf, acc)
            if hub:
                _store_row(acc, out, i, width, rmin, rmax)
                continue
            lo = np.int32(65535)
            hi = np.int32(0)
            for f in range(width):
                x = bytes_lane(a0, a1, b0, b1, f)
                out[i, f] = x
                lo = min(lo, x)
                hi = max(hi, x)
            rmin[i] = lo
            rmax[i] = hi
    return out, rmin, rmax


def aggregate(indptr: np.ndarray, indices: np.ndarray, packed: np.ndarray, bits: int, width: int, bounds=None):
    """``S[i, f] = Σ_{j ∈ N(i)} q[j, f]`` (int32) with per-row min and max of ``S``.

    ``indptr``/``indices`` are the CSR of Ã (in-neighbours of each row, self-loops
    included); ``packed`` is :func:`bench_suite.engine.packing.pack` output.  ``bounds``: the
    row chunks (:func:`chunk_bounds`, the default); rows outside them are left unwritten (a
    benchmark times one thread's share this way).
    """
    check_bits(bits, "aggregate")
    if packed.shape[1] % 8:
        raise ValueError(f"packed rows must be whole 64-bit words, got {packed.shape[1]} bytes")
    n = len(indptr) - 1
    if bounds is None:
        bounds = chunk_bounds(indptr, row_chunks(n))
    # Outputs are allocated here, not inside the kernels: numba's allocator maps fresh
    # pages for every large array (one page fault per 4 KiB, ≈40k for an arxiv-sized
    # int32 S), while numpy's reuses the process heap (:func:`retain_heap`).
    out = np.empty((n, width), np.int32)
    rmin = np.empty(n, np.int32)
    rmax = np.empty(n, np.int32)
    words = packed.view(np.uint64)
    pf = packed.nbytes > PREFETCH_MIN_BYTES
    if bits == 8 and words.shape[1] <= 2:
        return _aggregate_bytes_narrow(indptr, indices, words, width, bounds, pf, out, rmin, rmax)
    if bits != 8 and words.shape[1] == 1:
        return _aggregate_swar_narrow(indptr, indices, words, bits, width, MASK2 if bits == 2 else MASK4, bounds,
                                      pf, out, rmin, rmax)
    return _aggregate_vec(indptr, indices, packed, bits, width, bounds, pf, out, rmin, rmax)
