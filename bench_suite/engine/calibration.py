"""A static-range quantizer for developing and timing the engine without trained ranges.

:class:`StaticMinMaxQuantizer` fixes ``[min(0, min x), max(0, max x)]`` of the first
tensor it sees (METHOD.md §1 arithmetic).  It is not registered on import;
:func:`temporary_quantizer` registers it under a key for the duration of a block.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor

from bench_suite.quant.base import Quantizer, fake_quant
from bench_suite.registry import QUANTIZERS

KEY = "engine-static"
HEADROOM = 1.0 + 2 ** -0.5 / 10


class StaticMinMaxQuantizer(Quantizer):
    """Range frozen at the min/max of the first tensor seen, widened to contain 0 and by
    ``HEADROOM`` (so values of a dense product — a lattice ``s_x·s_w·ℤ`` — do not sit
    exactly on rounding ties of a range taken from the same lattice)."""

    def __init__(self, bits: int, role: str) -> None:
        super().__init__(bits, role)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def range_for(self, x: Tensor):
        return self.lo, self.hi

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        if not bool(self.ready):
            with torch.no_grad():
                self.lo.fill_(min(0.0, float(x.min())) * HEADROOM)
                self.hi.fill_(max(0.0, float(x.max())) * HEADROOM)
                self.ready.fill_(True)
        return fake_quant(x, self.lo, self.hi, self.bits)


@contextlib.contextmanager
def temporary_quantizer(key: str = KEY) -> Iterator[str]:
    """Register :class:`StaticMinMaxQuantizer` under ``key`` inside the block."""
    already = key in QUANTIZERS
    if not already:
        QUANTIZERS.register(key, StaticMinMaxQuantizer)
    try:
        yield key
    finally:
        if not already:
            QUANTIZERS.unregister(key)
