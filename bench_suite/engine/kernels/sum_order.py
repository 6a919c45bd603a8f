"""The fake-quant model's float32 neighbour sums, recomputed where they decide a code (METHOD.md §2, §9).

Used by an integer model converted with ``sums="reference"``
(:func:`bench_suite.engine.convert.convert`); with the default ``sums="exact"`` the integer model keeps
its exact integer sums and none of this runs (a :class:`NeighbourSums` without recomputed sums).

The fake-quant model computes the normalised aggregation as ``a = fl(T · d̃_i^{-1/2})`` with
``T = (…((0 + m̂_{j1}) + m̂_{j2}) + …)``: DGL's ``copy_u_sum`` adds the dequantized messages
``m̂_j = (q_j − z)·s`` of the in-neighbours one by one in float32, in the order of the graph's
CSC (in-edge) indices (checked bit for bit, 1 and 2 threads, by ``tests/test_engine_agreement.py``).
The integer model has the exact sum ``s·(S − z·d̃)`` of the same values instead.  The two differ
by float32 rounding only, but that is enough to change

* the code of an element whose value lies within the rounding error of a rounding boundary of
  the ``aggregate`` quantizer (a tie ``(k + ½)·s``; exact ties are common: with equal message and
  aggregate scales, every odd ``S − z·d̃`` of a row with ``d̃ = 4`` is one), and
* a dynamic range ``α·[min a, max a]`` whenever an extreme moves by one ulp — which changes the
  scale and with it the codes of every element near a tie of the new scale.

Few elements decide these, and their float32 sums are recomputed here in the fake-quant model's
order: :func:`row_bounds` bounds ``|fl-order sum − exact sum|`` per row (recursive summation of
``d̃`` terms, Higham 2002 §4.2, plus the rounding of each message value and of the integer
model's own float32 arithmetic; a row of one term has the same float32 value in both models).
The bound grows with d̃², so :func:`whole_rows` recomputes the rows whose bound is a sizeable
part of a quantization step (the high-degree rows, a neighbour's code row at a time);
:func:`extremes` recomputes the rows that could hold the global extremes (the most extreme first,
until no row left can reach the extreme found); :func:`fix_ties` recomputes, in one pass over a
row's neighbours, the elements of the other rows whose value lies within the bound of a tie; the
epilogue (:func:`bench_suite.engine.kernels.quantize.epilogue`) uses the recomputed sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.common import row_chunks

#: unit roundoff of float32
U32 = 2.0 ** -24
#: the bounds are widened by this factor (they are already worst-case bounds)
SAFETY = 2.0
#: a row whose bound is this many steps of the aggregate quantizer is recomputed whole (about
#: 2·0.05 of its elements would be near a tie: one pass over its neighbours' code rows then costs
#: less than gathering the codes element by element)
WHOLE_ROW = 0.05
#: rows recomputed at a time in the search for an extreme
EXTREME_BATCH = 64
#: rows of at most this many edges in all are recomputed on the calling thread
SERIAL_EDGES = 20_000


@dataclass(frozen=True)
class NeighbourSums:
    """``S = Ã·q`` (int32) of packed message codes ``q`` with the message's effective scale and
    zero point (:func:`bench_suite.engine.kernels.effective`), and what it takes to recompute one
    sum in the fake-quant model's float32 order: the CSR of Ã, the codes and per row the bound
    ``bound[i]`` on ``|fl(T)·d̃_i^{-1/2} − s·(S − z·d̃)·d̃_i^{-1/2}|`` (besides a relative part of
    ``8u·|a|``).  Then the sums recomputed in that order: whole rows (:func:`whole_rows`: row ``i`` is
    ``whole_vals[whole_slot[i]]`` if ``whole_slot[i] ≥ 0``), and of the other rows those that decide
    a code of the aggregate quantizer (:func:`fix_ties`: row ``i``'s are ``fix_val[k]`` for features
    ``fix_idx[k]``, ``fix_ptr[i] ≤ k < fix_ptr[i + 1]``).  Before :func:`fix_ties` (and with
    ``sums="exact"``, which never calls it) no sum counts as recomputed: the epilogue uses the integer
    sums ``S`` throughout, and ``bound`` may be None."""

    S: np.ndarray
    scale: np.float32
    zero: np.float32
    indptr: np.ndarray
    indices: np.ndarray
    packed: np.ndarray
    bits: int
    bound: np.ndarray | None = None
    whole_slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    whole_vals: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float32))
    fix_ptr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fix_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    fix_val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def recomputed(self) -> bool:
        """Whether the sums deciding a code have been recomputed in the fake-quant model's order
        (:func:`fix_ties` ran); if not, the epilogue takes every sum from ``S``."""
        return self.fix_ptr.size > 0

    def estimates(self, smin: np.ndarray, smax: np.ndarray, deg: np.ndarray, norm: np.ndarray) -> tuple:
        """The integer model's per-row extremes of the normalised sums, from those of ``S``."""
        sm, zm = np.float32(self.scale), np.float32(self.zero)
        return (sm * (smin.astype(np.float32) - zm * deg) * norm, sm * (smax.astype(np.float32) - zm * deg) * norm)


@njit(inline="always")
def code_at(packed, j, f, bits):
    """Code of feature ``f`` of row ``j`` in the layout of :func:`bench_suite.engine.packing.pack`."""
    if bits == 8:
        return np.int32(packed[j, f])
    nb = packed.shape[1]
    k = f // nb
    return np.int32((packed[j, f - k * nb] >> np.uint8(k * bits)) & np.uint8((1 << bits) - 1))


def row_bounds(deg: np.ndarray, norm: np.ndarray, scale: float, zero: float, spread: float) -> np.ndarray:
    """Per row ``i``, a bound on ``|a_ref − a_int|`` for every element of the row, where ``a_ref`` is the
    fake-quant model's ``fl(T)·d̃^{-1/2}`` and ``a_int`` the integer model's float32
    ``s·(S − z·d̃)·d̃^{-1/2}``, apart from ``8u·|a|``.  ``spread``: the largest ``|q − z|`` of any
    message code (``max(z, Q − z)`` when nothing more is known).

    With ``n = d̃`` terms of magnitude at most ``W·s`` (``W`` = ``spread``): each term is rounded
    once (``u·W·s``), recursive summation adds at most ``γ_{n−1}·Σ|term| ≤ (n−1)·u'·n·W·s``, and the
    integer model rounds ``z·d̃`` once (``u·|z|·d̃·s``)."""
    d = deg.astype(np.float64)
    w = abs(float(spread))
    gamma = (d + 1.0) * U32 / (1.0 - (d + 1.0) * U32)
    t = (gamma * d * w + U32 * d * w + U32 * abs(float(zero)) * d) * abs(float(scale))
    return (SAFETY * t * norm.astype(np.float64)).astype(np.float32)


@njit(inline="always")
def _ordered(indptr, indices, packed, bits, i, feats, k, sm, zm, nrm, acc):
    """``acc[h] = fl(Σ_j (q_j − z)·s)·d̃_i^{-1/2}`` for features ``feats[:k]`` of row ``i``: the terms
    added one at a time in float32, in CSC order (the fake-quant model's ``copy_u_sum`` of its
    dequantized messages), in one pass over the neighbours."""
    for h in range(k):
        acc[h] = np.float32(0)
    for e in range(indptr[i], indptr[i + 1]):
        j = indices[e]
        for h in range(k):
            acc[h] += (np.float32(code_at(packed, j, feats[h], bits)) - zm) * sm
    for h in range(k):
        acc[h] *= nrm


@njit(inline="always")
def _ordered_row(indptr, indices, packed, bits, i, width, sm, zm, nrm, acc):
    """:func:`_ordered` for every feature of row ``i``, a neighbour's codes at a time (vectorised)."""
    acc[:] = np.float32(0)
    nb = packed.shape[1]
    mask = np.uint8((1 << bits) - 1)
    for e in range(indptr[i], indptr[i + 1]):
        j = indices[e]
        row = packed[j]
        if bits == 8:
            for f in range(width):
                acc[f] += (np.float32(row[f]) - zm) * sm
        else:
            for k in range(8 // bits):
                sh = np.uint8(k * bits)
                for b in range(min(nb, width - k * nb)):
                    acc[k * nb + b] += (np.float32((row[b] >> sh) & mask) - zm) * sm
    for f in range(width):
        acc[f] *= nrm


@njit(parallel=True, cache=True)
def _reference_rows(indptr, indices, packed, bits, width, sm, zm, norm, rows, out):
    for r in prange(rows.size):
        _ordered_row(indptr, indices, packed, bits, rows[r], width, sm, zm, norm[rows[r]], out[r])
    return out


@njit(cache=True)
def _reference_rows_serial(indptr, indices, packed, bits, width, sm, zm, norm, rows, out):
    """:func:`_reference_rows` on the calling thread (a few rows: waking the pool costs more)."""
    for r in range(rows.size):
        _ordered_row(indptr, indices, packed, bits, rows[r], width, sm, zm, norm[rows[r]], out[r])
    return out


def reference_rows(ns: NeighbourSums, norm: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The fake-quant model's normalised aggregation ``fl(T)·d̃^{-1/2}`` of rows ``rows`` (float32)."""
    width = ns.S.shape[1]
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty((rows.size, width), np.float32)
    kernel = _reference_rows if np.diff(ns.indptr)[rows].sum() > SERIAL_EDGES else _reference_rows_serial
    return kernel(ns.indptr, ns.indices, ns.packed, ns.bits, width, np.float32(ns.scale), np.float32(ns.zero),
                  norm, rows, out)


def whole_rows(ns: NeighbourSums, norm: np.ndarray, deg: np.ndarray, scale: float) -> NeighbourSums:
    """``ns`` with the rows whose bound is at least :data:`WHOLE_ROW` steps ``scale`` of the aggregate
    quantizer recomputed whole in the fake-quant model's order (the high-degree rows: the bound grows
    with d̃²)."""
    rows = np.flatnonzero((ns.bound >= np.float32(WHOLE_ROW * scale)) & (deg > 1))
    slot = np.full(ns.S.shape[0], -1, np.int64)
    slot[rows] = np.arange(rows.size)
    return replace(ns, whole_slot=slot, whole_vals=reference_rows(ns, norm, rows))


def _extreme(ns: NeighbourSums, norm: np.ndarray, est: np.ndarray, bound: np.ndarray, sign: float) -> np.float32:
    """``max`` (``sign`` 1) or ``min`` (``sign`` −1) of the fake-quant model's sums over all rows, from
    per-row estimates ``est`` and their bounds: the rows that could beat the best value found so far
    are recomputed, those that could reach furthest first (1, 2, 4, … up to :data:`EXTREME_BATCH` at
    a time), until none is left."""
    best = (sign * est + bound).astype(np.float64)  # the most row i can reach (in sign·value)
    found, batch = -np.inf, 1
    while True:
        rows = np.flatnonzero(best > found)
        if rows.size == 0:
            return np.float32(sign * found)
        if rows.size > batch:
            rows = rows[np.argpartition(-best[rows], batch)[:batch]]
        found = max(found, float((sign * reference_rows(ns, norm, rows)).max()))
        best[rows] = -np.inf
        batch = min(2 * batch, EXTREME_BATCH)


def extremes(ns: NeighbourSums, smin: np.ndarray, smax: np.ndarray, deg: np.ndarray, norm: np.ndarray) -> tuple:
    """``(min, max)`` of the fake-quant model's normalised aggregation over all elements, from the
    per-row extremes of ``S``: a row can hold the fake-quant model's extreme only if its integer-model
    extreme lies within its bound of it, so rows are recomputed in its order, most extreme first,
    until the rest cannot reach the extreme found (rows already recomputed whole enter with their
    exact extremes)."""
    lo, hi = ns.estimates(smin, smax, deg, norm)
    rel = np.float32(8 * U32)
    b_lo, b_hi = ns.bound + rel * np.abs(lo), ns.bound + rel * np.abs(hi)
    one = deg <= 1  # one term: both models compute the same float32 product
    b_lo[one] = b_hi[one] = 0
    if ns.whole_slot.size:
        rows = np.flatnonzero(ns.whole_slot >= 0)
        if rows.size:
            vals = ns.whole_vals[ns.whole_slot[rows]]
            lo[rows], hi[rows] = vals.min(1), vals.max(1)
            b_lo[rows] = b_hi[rows] = 0
    return _extreme(ns, norm, lo, b_lo, -1.0), _extreme(ns, norm, hi, b_hi, 1.0)


@njit(inline="always")
def _near(S, deg, norm, bound, sm, zm, s_a, whole_slot, i, near):
    """How many elements of row ``i`` the fake-quant model's order must decide (``near[f]`` for each):
    none in a row recomputed whole or of one term (both models compute the same float32 product
    there), else those within the bound of a tie ``(k + ½)·s_a`` (all of them when the bound is a
    step or more)."""
    width = S.shape[1]
    d = deg[i]
    if d <= np.float32(1) or whole_slot[i] >= 0:
        return 0
    tol = bound[i] / s_a
    nrm = norm[i]
    half = np.float32(0.5)
    rel = np.float32(8 * U32)
    hits = 0
    for f in range(width):
        r = ((sm * (np.float32(S[i, f]) - zm * d)) * nrm) / s_a
        near[f] = abs((r - np.floor(r)) - half) <= tol + rel * (abs(r) + np.float32(1))
        hits += near[f]
    return hits


@njit(parallel=True, cache=True)
def _fix_ties(S, deg, norm, bound, sm, zm, s_a, whole_slot, indptr, indices, packed, bits, nchunks, ptr, idx, val,
              count):
    """``count``: ``ptr[i + 1]`` = how many sums of row ``i`` to recompute; else (``ptr`` the offsets)
    recompute them into ``idx``/``val``."""
    n, width = S.shape
    chunk = (n + nchunks - 1) // nchunks
    if count:
        for t in prange(nchunks):
            near = np.empty(width, np.bool_)
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                ptr[i + 1] = _near(S, deg, norm, bound, sm, zm, s_a, whole_slot, i, near)
        return
    for t in prange(nchunks):
        near = np.empty(width, np.bool_)
        feats = np.empty(width, np.int64)
        acc = np.empty(width, np.float32)
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            if ptr[i + 1] == ptr[i]:
                continue
            _near(S, deg, norm, bound, sm, zm, s_a, whole_slot, i, near)
            k = 0
            for f in range(width):
                if near[f]:
                    feats[k] = f
                    k += 1
            _ordered(indptr, indices, packed, bits, i, feats, k, sm, zm, norm[i], acc)
            for h in range(k):
                idx[ptr[i] + h] = feats[h]
                val[ptr[i] + h] = acc[h]


def fix_ties(ns: NeighbourSums, norm: np.ndarray, deg: np.ndarray, scale: float) -> NeighbourSums:
    """``ns`` with the sums that decide a code of the aggregate quantizer (step ``scale``) recomputed in
    the fake-quant model's order: in each row not recomputed whole, those within the bound of a tie."""
    n = ns.S.shape[0]
    if ns.whole_slot.size != n:
        ns = replace(ns, whole_slot=np.full(n, -1, np.int64))
    args = (ns.S, deg, norm, ns.bound, np.float32(ns.scale), np.float32(ns.zero), np.float32(scale),
            ns.whole_slot, ns.indptr, ns.indices, ns.packed, ns.bits, row_chunks(n))
    ptr = np.zeros(n + 1, np.int64)
    _fix_ties(*args, ptr, np.zeros(0, np.int32), np.zeros(0, np.float32), True)
    np.cumsum(ptr, out=ptr)
    idx, val = np.empty(ptr[-1], np.int32), np.empty(ptr[-1], np.float32)
    _fix_ties(*args, ptr, idx, val, False)
    return replace(ns, fix_ptr=ptr, fix_idx=idx, fix_val=val)
