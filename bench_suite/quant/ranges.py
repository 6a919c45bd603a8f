"""Quantizers whose range is a running statistic of the tensor (the QAT and DQ baselines).

:class:`TrackedRangeQuantizer` keeps ``[lo, hi]`` as buffers, initialised from the
first training batch and then smoothed with momentum (``m ← m + μ·(obs − m)``),
frozen in eval mode.  Subclasses choose the observed statistic (min/max,
percentiles) and the gradient (plain STE or clipped STE).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from bench_suite.quant.base import Quantizer, qmax, quantize_codes, scale_zero
from bench_suite.quant.fused import fake_quant_const, fake_quant_fused
from bench_suite.sparse import is_sparse, quantized_product


class TrackedRangeQuantizer(Quantizer):
    """Fake quantization with a momentum-tracked range (buffers ``lo``, ``hi``, ``initialized``).

    ``clip_grad=False``: straight-through gradient everywhere; ``True``: zero gradient
    where ``x`` falls outside ``[lo, hi]`` (Degree-Quant's gradient clipping).
    """

    clip_grad = False

    def __init__(self, bits: int, role: str, momentum: float = 0.01) -> None:
        super().__init__(bits, role)
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum={momentum!r} for quantizer role {role!r} is not valid; use 0 < momentum <= 1")
        self.momentum = float(momentum)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def observe(self, x: Tensor) -> Tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """The (low, high) statistic of this batch (of the whole tensor, implicit zeros included,
        for a sparse CSR ``x``: see :meth:`matmul`)."""
        raise NotImplementedError

    @torch.no_grad()
    def update_range(self, x: Tensor) -> None:
        mn, mx = self.observe(x.detach())
        if not bool(self.initialized):
            self.lo.copy_(mn)
            self.hi.copy_(mx)
            self.initialized.fill_(True)
        else:
            self.lo.add_(self.momentum * (mn - self.lo))
            self.hi.add_(self.momentum * (mx - self.hi))

    def range_for(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The tracked range widened to contain 0; before any training batch, this batch's statistic."""
        if bool(self.initialized):
            lo, hi = self.lo, self.hi
        else:
            with torch.no_grad():
                lo, hi = self.observe(x.detach())
        return torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)

    def codes(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Integer codes in ``0..2^bits−1`` with (scale, zero): ``(codes − zero)·scale`` is the eval output."""
        with torch.no_grad():
            s, z = scale_zero(*self.range_for(x), self.bits)
            return quantize_codes(x, s, z, self.bits).to(torch.int32), s, z

    def dequant(self, codes: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        return (codes.to(scale.dtype) - zero) * scale

    def quantize(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """Fake-quantized ``x`` with this quantizer's gradient rule; rows with ``keep`` stay full precision."""
        if (x.dtype == torch.float32 and x.device.type == "cpu" and x.layout == torch.strided
                and self.lo.dtype == torch.float32 and (keep is None or self.clip_grad)):
            return self._quantize_lean(x, keep)
        return self._quantizer_for(x)(x, keep)

    def _quantize_lean(self, x: Tensor, keep: Optional[Tensor]) -> Tensor:
        """:meth:`quantize` with the scale chain of :func:`bench_suite.quant.qlr.scale_chain` (α = 1) on
        float32 scalars instead of 0-dim tensors: the same float32 operations, so the same values."""
        from bench_suite.quant.qlr import _clamp_max, _clamp_min, scale_chain

        if bool(self.initialized):
            lo, hi = float(self.lo), float(self.hi)
        else:
            with torch.no_grad():
                lo, hi = (float(v) for v in self.observe(x.detach()))
        s, z = scale_chain(1.0, lo, hi, qmax(self.bits))[:2]
        if not self.clip_grad:
            return fake_quant_const(x, s, z, self.bits, keep=keep)
        zero = np.float32(0.0)
        return fake_quant_const(x, s, z, self.bits, _clamp_max(np.float32(lo), zero), _clamp_min(np.float32(hi), zero),
                                keep)

    def _quantizer_for(self, x: Tensor) -> Callable[..., Tensor]:
        """Fake quantization with the range :meth:`range_for` gives ``x``, applicable to any tensor."""
        lo, hi = self.range_for(x)
        s, z = scale_zero(lo, hi, self.bits)
        grad_x = "range" if self.clip_grad else "ste"
        return lambda t, keep=None: fake_quant_fused(t, s, z, self.bits, grad_x=grad_x, lo=lo, hi=hi, keep=keep)

    def matmul(self, x: Tensor, weight: Callable[[], Tensor]) -> Tensor:
        """``self(x) @ weight()``; for a CSR ``x`` the range statistic is observed on the whole tensor and
        the stored values are quantized with it (an input role: no node is kept in full precision)."""
        if not is_sparse(x):
            return super().matmul(x, weight)
        if self.training:
            self.update_range(x)
        return quantized_product(x, self._quantizer_for(x), weight())

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        if self.training:
            self.update_range(x)
        return self.quantize(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"
