"""QAT baseline: quantization-aware training with a momentum min/max range (METHOD.md §3).

The "STE-MOM" configuration of the Degree-Quant repository (Tailor et al., ICLR
2021): straight-through gradient, range tracking the running min/max with momentum
0.01, initialised from the first batch and frozen at evaluation.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from bench_suite.quant.ranges import TrackedRangeQuantizer
from bench_suite.registry import QUANTIZERS


@QUANTIZERS.register("qat")
class QATQuantizer(TrackedRangeQuantizer):
    """Standard QAT: STE, running min/max range with momentum (METHOD.md §3)."""

    clip_grad = False

    def __init__(self, bits: int, role: str, momentum: float = 0.01) -> None:
        super().__init__(bits, role, momentum=momentum)

    def observe(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return torch.aminmax(x)
