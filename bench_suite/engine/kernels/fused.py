"""A GCN layer's aggregation and epilogue in one pass, for ranges known before the sums exist
(METHOD.md §9).

:func:`aggregate_epilogue` sums each row's neighbour codes in the thread's lanes (the row helpers of
:mod:`.aggregation`: uint16 vector lanes, SWAR byte lanes, INT8 register lanes, int32 for hubs) and
takes that row straight through the epilogue: ``a = d̃^{-1/2}·s_m·(S − z_m·d̃)`` quantized by the
aggregate role, the bias, the update quantizer, ReLU and the next layer's input codes (or the float
output of the last layer).  The int32 sums are never written as a matrix, nor read back.

The quantizer ranges of the aggregate, the update and the next input must be static (calibrated
ranges, QAT's and DQ's eval ranges): a dynamic one is the extreme of the whole layer, known only
after every row is summed (then :func:`~.aggregation.aggregate` and :func:`~.quantize.epilogue` run
as two passes).  The values are those two passes' with exact sums (``sums="exact"``), to the bit:
the same float32 expressions in the same order, from the same integer sums.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from bench_suite.engine.kernels.aggregation import (MASK2, MASK4, PREFETCH_MIN_BYTES, bytes_lane, bytes_row,
                                                    chunk_bounds, swar_row, vec_row)
from bench_suite.engine.kernels.common import EXACT_FASTMATH, code_of, effective, fq_value, grid, row_chunks, scalars
from bench_suite.engine.packing import check_bits, row_bytes

#: the row kernels of :mod:`.aggregation` a fused kernel is built on (the same dispatch as :func:`~.aggregation.aggregate`)
VEC, SWAR, BYTES = 0, 1, 2


def row_kind(bits: int, nb: int) -> int:
    """Which row kernel sums packed rows of ``nb`` bytes at ``bits`` bits (as :func:`~.aggregation.aggregate` picks)."""
    words = nb // 8
    if bits == 8 and words <= 2:
        return BYTES
    if bits != 8 and words == 1:
        return SWAR
    return VEC


@njit(inline="always", fastmath=EXACT_FASTMATH)
def _row_out(src, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu, as_codes, l2, t2, of, oq):
    """One row of :func:`~.quantize.epilogue` (``sums="exact"``, mode ``"float"`` or ``"codes"``) from its
    integer sums ``src[:width]``."""
    zero = np.float32(0)
    for f in range(width):
        a = sm * (np.float32(src[f]) - zm * d)
        v = coef * fq_value(a * nrm, la, ta) + ar[f]
        if has_update:
            v = fq_value(v, lu, tu)
        if relu:
            v = max(v, zero)
        if as_codes:
            oq[f] = np.uint8(np.int32(code_of(v, l2, t2)))
        else:
            of[f] = v


@functools.lru_cache(maxsize=None)
def _fused_kernel(kind: int, bits: int, has_update: bool, relu: bool, as_codes: bool, ta: bool, tu: bool, t2: bool):
    """The fused kernel for one row kernel, bit width and epilogue; every flag is a compile-time constant."""
    c = 8 // bits

    @njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
    def kernel(indptr, indices, packed, words, mask, width, bounds, pf, deg, norm, sm, zm, ga, coef, add, gu, g2,
               out_f, out_q):
        nb = packed.shape[1]
        for t in prange(bounds.size - 1):
            la, lu, l2 = scalars(ga), scalars(gu), scalars(g2)
            acc = np.zeros(max(c * nb, 32), np.int32)
            acc16 = np.zeros(c * nb, np.uint16)
            lanes = np.zeros(4, np.uint64)
            lanes8 = lanes.view(np.uint8)  # byte b of lane k: feature 8k + b (little-endian)
            ar = add[0]
            for i in range(bounds[t], bounds[t + 1]):
                d, nrm = deg[i], norm[i]
                of = out_f[0 if as_codes else i]
                oq = out_q[i if as_codes else 0]
                if kind == VEC:
                    if vec_row(indptr, indices, packed, bits, i, pf, acc, acc16, width):
                        _row_out(acc, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu, as_codes,
                                 l2, t2, of, oq)
                    else:
                        _row_out(acc16, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu, as_codes,
                                 l2, t2, of, oq)
                elif kind == SWAR:
                    if swar_row(indptr, indices, words, bits, mask, i, pf, acc, lanes):
                        _row_out(acc, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu, as_codes,
                                 l2, t2, of, oq)
                    else:
                        _row_out(lanes8, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu,
                                 as_codes, l2, t2, of, oq)
                else:
                    hub, a0, a1, b0, b1 = bytes_row(indptr, indices, words, i, pf, acc)
                    if not hub:
                        for f in range(width):
                            acc[f] = bytes_lane(a0, a1, b0, b1, f)
                    _row_out(acc, width, d, nrm, sm, zm, la, ta, coef, ar, lu, has_update, tu, relu, as_codes,
                             l2, t2, of, oq)

    return kernel


def aggregate_epilogue(indptr: np.ndarray, indices: np.ndarray, packed: np.ndarray, bits: int, width: int,
                       deg: np.ndarray, norm: np.ndarray, message: tuple, first: tuple, add: np.ndarray, *,
                       coef: float = 1.0, update: tuple | None = None, relu: bool = False, mode: str = "float",
                       following: tuple | None = None, bounds=None, out: np.ndarray | None = None) -> np.ndarray:
    """``epilogue(S, first, add, sums=NeighbourSums(S, s_m, z_m, …), deg=deg, norm=norm, coef=coef,
    update=update, relu=relu, mode=mode, following=following)`` with ``S = aggregate(indptr, indices,
    packed, bits, width)[0]``, in one pass and without ``S`` (:func:`~.aggregation.aggregate`,
    :func:`~.quantize.epilogue`): ``mode="float"`` the float32 rows, ``"codes"`` the uint8 codes under
    ``following``.  ``message``: the parameters of the packed codes (``s_m``, ``z_m`` as
    :func:`~.common.effective` gives them); ``add``: ``[1, width]`` (a bias); ``bounds``: the row
    chunks (:func:`~.aggregation.chunk_bounds`, the default; rows outside them are left unwritten);
    ``out``: the array to write (float32 or uint8 ``[n, width]``, C-contiguous), else a new one."""
    f32 = np.float32
    check_bits(bits, "aggregate_epilogue")
    n = len(indptr) - 1
    if packed.shape != (n, row_bytes(width, bits)):
        raise ValueError(f"aggregate_epilogue: packed codes of shape {packed.shape}; {n} rows of width {width} at "
                         f"{bits} bits need ({n}, {row_bytes(width, bits)})")
    if mode not in ("float", "codes"):
        raise ValueError(f"aggregate_epilogue: mode={mode!r}; valid: 'float', 'codes' (a range pass cannot fuse)")
    as_codes = mode == "codes"
    if as_codes and following is None:
        raise ValueError("aggregate_epilogue mode='codes' needs following=(scale, zero, Q)")
    add = np.ascontiguousarray(add, dtype=f32)
    if add.shape != (1, width):
        raise ValueError(f"aggregate_epilogue: add of shape {add.shape}; a bias of shape (1, {width})")
    ta, ga = grid(first)
    tu, gu = grid(update if update is not None else (1.0, 0.0, 1.0))
    t2, g2 = grid(following if following is not None else (1.0, 0.0, 1.0))
    sm, zm = (f32(v) for v in effective(message))
    if bounds is None:
        bounds = chunk_bounds(indptr, row_chunks(n))
    want = np.dtype(np.uint8 if as_codes else f32)
    if out is None:
        out = np.empty((n, width), want)
    elif out.shape != (n, width) or out.dtype != want or not out.flags.c_contiguous:
        raise ValueError(f"aggregate_epilogue: out is {out.dtype}{out.shape}; mode={mode!r} writes C-contiguous "
                         f"{want}({n}, {width})")
    out_f = np.empty((1, 1), f32) if as_codes else out
    out_q = out if as_codes else np.empty((1, 1), np.uint8)
    words = packed.view(np.uint64)
    kind = row_kind(bits, packed.shape[1])
    kernel = _fused_kernel(kind, int(bits), update is not None, bool(relu), as_codes, ta, tu, t2 and as_codes)
    kernel(indptr, indices, packed, words, MASK2 if bits == 2 else MASK4, width, bounds,
           packed.nbytes > PREFETCH_MIN_BYTES, deg, norm, sm, zm, ga, f32(coef), add, gu, g2, out_f, out_q)
    return out
