"""Numba kernels of the integer engine (METHOD.md §9), parallel over rows, one module per job:

* :mod:`.aggregation` — ``S = Ã·q`` over packed INT8/INT4/INT2 codes (SWAR, prefetch);
* :mod:`.fused` — a GCN layer's aggregation and epilogue in one pass (static ranges), ``S`` never stored;
* :mod:`.quantize` — quantize and pack messages, the epilogue after a product, input codes,
  per-row ranges, the dense product's rank-1 correction;
* :mod:`.smp` — SMP's fused elementwise half-steps, and whole steps as two fused aggregation passes (static ranges);
* :mod:`.sum_order` — the fake-quant model's float32 neighbour sums where they decide a code or a range;
* :mod:`.common` — the row split, the exact fast-math flags and the per-element quantization
  arithmetic the others share.

Process tuning (heap thresholds, thread count) is :mod:`bench_suite.engine.tuning`.  The names
below are the kernels' public interface (``from bench_suite.engine import kernels as K``).
"""
from __future__ import annotations

from bench_suite.engine.kernels.aggregation import aggregate
from bench_suite.engine.kernels.common import EXACT_FASTMATH, effective, grid
from bench_suite.engine.kernels.fused import aggregate_epilogue
from bench_suite.engine.kernels.quantize import finish_product, epilogue, fq_rows, quantize, quantize_pack, rows_minmax
from bench_suite.engine.kernels.smp import smp_fused_steps, smp_post, smp_pre
from bench_suite.engine.kernels.sum_order import NeighbourSums, fix_ties, reference_rows, row_bounds, whole_rows
from bench_suite.engine.kernels.sum_order import extremes as sum_extremes
from bench_suite.engine.tuning import retain_heap, set_threads

__all__ = ["aggregate", "aggregate_epilogue", "EXACT_FASTMATH", "effective", "grid", "finish_product", "epilogue", "fq_rows", "quantize",
           "quantize_pack", "rows_minmax", "smp_fused_steps", "smp_post", "smp_pre", "NeighbourSums", "fix_ties", "reference_rows",
           "row_bounds", "whole_rows", "sum_extremes", "retain_heap", "set_threads"]
