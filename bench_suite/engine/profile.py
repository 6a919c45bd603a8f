"""Where an integer forward pass spends its time, and the floor it cannot go below.

Inside :func:`profiling`, every stage of :mod:`bench_suite.engine.intmodel` (input codes,
dense int8 products, range passes, packing, aggregation, epilogues, SMP's elementwise
steps) adds its wall time, the bytes it must move (every array it reads or writes, once)
and, for dense products, its multiply-accumulates to a :class:`StageTimes`.  Outside it,
:func:`stage` is a plain call.

The floor of a stage is ``max((bytes + gather bytes) / bandwidth, MACs / int8 peak)`` with both
rates measured on this machine (:func:`stream_bandwidth`, :func:`int8_gemm_peak`): an aggregation
reads each neighbour's code row once per edge (``gather_bytes``), and at the streaming bandwidth
at best (the rows are scattered).  Both rates are measured, so they are only right on an idle
machine: :func:`floor_withheld` says when the load average exceeds the cores, and then no floor
is given.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from numba import njit, prange

_ACTIVE: Optional["StageTimes"] = None


class StageTimes:
    """Accumulated wall time (ms), bytes, gathered bytes and MACs per stage name, in first-call order."""

    def __init__(self) -> None:
        self.ms: Dict[str, float] = defaultdict(float)
        self.bytes: Dict[str, int] = defaultdict(int)
        self.gather: Dict[str, int] = defaultdict(int)
        self.macs: Dict[str, int] = defaultdict(int)
        self.calls: Dict[str, int] = defaultdict(int)
        self.passes = 0

    def rows(self, bandwidth_gbs: float, peak_gmacs: float) -> List[dict]:
        """One dict per stage, per forward pass (totals divided by :attr:`passes`)."""
        n = max(1, self.passes)
        out = []
        for name in self.ms:
            b, m = self.bytes[name] / n, self.macs[name] / n
            moved = b + self.gather[name] / n
            floor = max(moved / (bandwidth_gbs * 1e9), m / (peak_gmacs * 1e9) if m else 0.0) * 1e3
            out.append({"stage": name, "ms": round(self.ms[name] / n, 3), "calls": self.calls[name] // n,
                        "bytes": int(b), "gather_bytes": int(self.gather[name] / n), "macs": int(m),
                        "floor_ms": round(floor, 3)})
        return out


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def floor_withheld() -> str | None:
    """Why no floor can be given now (the 1-minute load average exceeds the cores, so the measured
    bandwidth and int8 peak are a share of the machine, not its rates), or None."""
    load, n = os.getloadavg()[0], cores()
    if load > n:
        return f"load average {load:.2f} exceeds the {n} cores: the measured bandwidth and int8 peak would be wrong"
    return None


def _nbytes(obj, seen: set) -> int:
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o, seen) for o in obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)) and id(obj) not in seen:
        seen.add(id(obj))
        return int(obj.nbytes)
    return 0


def stage(name: str, fn, *args, macs: int = 0, gather: int = 0, **kw):
    """``fn(*args, **kw)``; inside :func:`profiling` also account it to stage ``name``."""
    prof = _ACTIVE
    if prof is None:
        return fn(*args, **kw)
    t = time.perf_counter()
    out = fn(*args, **kw)
    prof.ms[name] += (time.perf_counter() - t) * 1e3
    seen: set = set()
    prof.bytes[name] += _nbytes(args, seen) + _nbytes(tuple(kw.values()), seen) + _nbytes(out, seen)
    prof.gather[name] += int(gather)
    prof.macs[name] += int(macs)
    prof.calls[name] += 1
    return out


@contextmanager
def profiling() -> Iterator[StageTimes]:
    """Collect stage times of the forward passes run inside; count them with ``st.passes += 1``."""
    global _ACTIVE
    prev, _ACTIVE = _ACTIVE, StageTimes()
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = prev


@njit(parallel=True, cache=True)
def _copy(a, b):
    for i in prange(a.size):
        b[i] = a[i]


def stream_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """GB/s (read + write bytes counted) of a parallel copy of ``mb`` MiB, best of ``repeats``,
    with numba's current thread count -- the rate the engine's streaming stages can reach."""
    a = np.ones(mb * 2 ** 20 // 4, np.float32)
    b = np.zeros_like(a)
    _copy(a, b)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        _copy(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def int8_gemm_peak(rows: int = 4096, k: int = 256, n: int = 256, repeats: int = 20) -> float:
    """GMAC/s of oneDNN's uint8 × int8 product on a cache-resident ``rows × k × n`` problem
    (torch's current thread count), best of ``repeats`` -- the compute rate of the dense stages."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (rows, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-127, 127, (n, k), dtype=torch.int8, generator=g)
    packed = torch.ops.onednn.qlinear_prepack(w, None)
    ws, wz = torch.tensor([0.01]), torch.zeros(1, dtype=torch.int64)

    def run():
        return torch.ops.onednn.qlinear_pointwise(x, 0.1, 3, packed, ws, wz, None, 1.0, 0, torch.float32,
                                                  "none", [], "")

    run()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return rows * k * n / best / 1e9
