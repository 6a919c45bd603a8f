"""Process tuning for timed full-graph passes: glibc's heap thresholds and the thread count.

Importable without numba or torch, so that any process (the runner's worker too) can share
:func:`set_malloc_thresholds`; numba is imported only by :func:`set_threads`.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: the largest value ``mallopt`` takes: its argument is a C int
C_INT_MAX = 2 ** 31 - 1


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, mmap_threshold)`` and ``mallopt(M_TRIM_THRESHOLD, trim_threshold)``
    for this process (bytes).  Blocks below the mmap threshold come from the heap, and freed heap
    memory is returned to the OS only above the trim threshold.  Setting either turns off glibc's
    dynamic mmap threshold.  Returns False where glibc is not available (nothing changes).

    Both values are C ints: a larger Python int would be truncated (1 << 62 became 0, a trim
    threshold of 0: every free returned memory to the OS), so they are checked here.
    """
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 <= int(v) <= C_INT_MAX:
            raise ValueError(f"set_malloc_thresholds: {name}={v} is outside 0..{C_INT_MAX} (a C int)")
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


def retain_heap() -> bool:
    """Keep freed large blocks in the process heap so the next forward pass reuses them instead
    of page-faulting fresh ``mmap`` pages.

    Every stage output of a full-graph forward is O(N·F) (≈170 MB at arxiv size); by default
    glibc maps and unmaps each one, and zero-filling fresh pages costs more than the kernels.
    Process-wide: the DGL and torch baselines benefit equally.  Returns False where glibc is
    not available (nothing changes).
    """
    return set_malloc_thresholds(1 << 30, C_INT_MAX)


def set_threads(threads: int) -> int:
    """Use ``threads`` numba threads (clamped to what numba was started with)."""
    import numba

    t = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(t)
    return t
