"""Integer inference engine: packed INT8/INT4/INT2 codes, numba kernels, conversion
of trained fake-quant models, and speed benchmarks against DGL (METHOD.md §9).

Heavy imports (numba) happen in the submodules, not here.
"""
from __future__ import annotations

__all__ = ["packing", "ranges", "kernels", "tuning", "intmodel", "convert", "profile", "bench", "cli"]
