"""QAT baseline: quantization-aware training with a momentum min/max range (METHOD.md §3).

The "STE-MOM" configuration of the Degree-Quant repository (Tailor et al., ICLR
2021): straight-through gradient, range tracking the running min/max with momentum
0.01, initialised from the first batch and frozen at evaluation.

Known behaviour (not a bug): with full-batch training (one range update per epoch)
the momentum-0.01 range is an EMA with a time constant of ~100 steps, while the
weights and activations grow 10–30× from their initial scale during 200 epochs; the
ranges (logits included, via the last ``update`` quantizer) lag 2–4× behind and
clamp, so a 2-layer GCN on Cora reaches only ~62% at INT8 in 200 epochs.  Each role
quantized alone is within a point of FP32; ``momentum=0.1`` or ``1.0``, or 1000
epochs at 0.01, give 81.7–82.0 (FP32 82.3).  See the issue-3 report.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor

from bench_suite.quant.ranges import TrackedRangeQuantizer
from bench_suite.registry import QUANTIZERS
from bench_suite.sparse import aminmax


@QUANTIZERS.register("qat")
class QATQuantizer(TrackedRangeQuantizer):
    """Standard QAT: STE, running min/max range with momentum (METHOD.md §3)."""

    clip_grad = False

    def __init__(self, bits: int, role: str, momentum: float = 0.01) -> None:
        super().__init__(bits, role, momentum=momentum)

    def observe(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return aminmax(x)
