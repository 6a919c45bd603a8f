"""What every engine kernel shares: the row split over threads, exact fast-math flags, the
min/max reduction and the quantization arithmetic of one element (METHOD.md §1, §6).

All quantization arithmetic is float32 in the order of :func:`bench_suite.quant.base.fake_quant`:
``clamp(rint(x/s) + z, 0, Q)``, ``(q − z)·s``; under bit truncation (BT/BT*, METHOD.md §6) as
:func:`bench_suite.quant.fused.fake_quant_fused`: ``c = clamp(rint((q + κ)/step), 0, Qc)``,
``(c − z/step)·(s·step)`` (quantizer parameters: :func:`grid`).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit

CHUNKS_PER_THREAD = 16


def row_chunks(n: int) -> int:
    return max(1, min(n, CHUNKS_PER_THREAD * numba.get_num_threads()))


#: fast-math flags that leave every arithmetic result bit-exact (no reassociation, no
#: contraction) but let LLVM vectorise the min/max reductions.
EXACT_FASTMATH = {"nnan", "ninf", "nsz"}


@njit(inline="always", fastmath=EXACT_FASTMATH)
def minmax(r, width):
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
def scalars(g):
    """The eight grid values of :func:`grid` as a tuple of locals (loads from the array inside a
    loop could alias the kernel's outputs and keep LLVM from hoisting them)."""
    return (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])


@njit(inline="always", fastmath=EXACT_FASTMATH)
def code_of(v, g, trunc):
    """The (float-valued) code of ``v`` under grid ``g`` (see :func:`grid`): ``clamp(rint(v/s) + z, 0, Q)``,
    then under truncation ``clamp(rint((q + κ)/step), 0, Qc)``, as ``fake_quant_fused``."""
    zero = np.float32(0)
    c = min(max(np.rint(v / g[0]) + g[1], zero), g[2])
    if trunc:
        c = min(max(np.rint((c + g[4]) / g[3]), zero), g[5])
    return c


@njit(inline="always", fastmath=EXACT_FASTMATH)
def fq_value(v, g, trunc):
    """Fake-quantized ``v``: ``(c − z)·s``, under truncation ``(c − z/step)·(s·step)``."""
    c = code_of(v, g, trunc)
    if trunc:
        return (c - g[6]) * g[7]
    return (c - g[1]) * g[0]


