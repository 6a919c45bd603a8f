"""QLR, quantization with learnable ranges, and BT/BT* bit truncation for INT2.

Proposed in "Low-bit Quantization for Deep Graph Neural Networks with
Smoothness-aware Message Propagation" (CIKM 2023, arXiv 2308.14949); see
METHOD.md §5–§6.

* ``qlr``: one learnable scalar α per quantizer scales the observed range of the
  current tensor, ``[min(0, α·min x), max(0, α·max x)]``.  α is initialised on the
  first forward by a grid search minimising mean |x̂ − x| and then trained with the
  true STE/LSQ gradient of :func:`bench_suite.quant.base.fake_quant` (optionally
  scaled by 1/√(numel·Q) as in LSQ, Esser et al., ICLR 2020).
* ``qlr-frozen``: the released code's behaviour (its α gradient is ≈ 0): α stays
  at its grid-search value.  An ablation.
* ``truncation="bt"`` / ``"bt*"`` (INT2 only): quantize at 8 bits with the QLR
  range, keep ``c = round(q8/85)`` (BT) or ``clamp(round((q8 + κ)/85), 0, 3)`` with
  κ the rounded Fisher–Pearson skewness of the tensor (BT*), and dequantize with the
  8-bit parameters.

Every quantizer here offers ``codes(x) -> (codes, scale, zero)`` with
``(codes − zero)·scale == forward(x)`` bit for bit in eval mode.  For BT/BT* the
stored codes are ``c ∈ {0..3}``, ``scale = 85·s8`` and ``zero = z8/85`` is a float
(in general not an integer); ``85·zero`` is the integer 8-bit zero point ``z8``, so an
integer engine can stay exact by computing ``s8·(85·Σc − z8·d)``.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from bench_suite.quant.base import EPS, Quantizer, qmax, quantize_codes, scale_zero
from bench_suite.quant.fused import fake_quant_fused
from bench_suite.registry import QUANTIZERS

TRUNCATIONS: Tuple[str, ...] = ("none", "bt", "bt*")
#: 8-bit codes kept by bit truncation: 0, 85, 170, 255 (= 255/3 apart).
BT_STEP = 85
TRUNCATION_BITS = 8


def alpha_grid(bits: int) -> Tensor:
    """Grid-search candidates for α: INT2 0.1..1.0 step 0.1; INT4/INT8 0.02..1.0 step 0.02."""
    if bits == 2:
        return torch.arange(1, 11, dtype=torch.float64) / 10
    return torch.arange(1, 51, dtype=torch.float64) / 50


def skewness(x: Tensor) -> float:
    """Fisher–Pearson sample skewness g1 = m3 / m2^{3/2} (0 for a constant tensor)."""
    v = x.detach().reshape(-1).double()
    d = v - v.mean()
    m2 = d.square().mean()
    if float(m2) <= 0.0:
        return 0.0
    return float(d.pow(3).mean() / m2.pow(1.5))


def grad_scale(x: Tensor, g: float) -> Tensor:
    """Value ``x``, gradient multiplied by ``g`` (LSQ's gradient-scale trick)."""
    return (x - x * g).detach() + x * g


class _AlphaScale(torch.autograd.Function):
    """The scale ``s(α) = clamp((clamp(α·mx, min=0) − clamp(α·mn, max=0)) / Q, min=EPS)`` as one
    autograd node (speed: a deep GNN has six quantizers a layer, and the ten scalar nodes autograd
    records for this chain cost more than the fake quantization of a 2708x64 tensor).

    ``forward`` returns the scale computed by :func:`scale_zero` without gradient; ``backward``
    applies the chain rule autograd applies to that chain (clamp, div, sub, clamp, mul, and the
    sum of α's two uses), each step in float32 as torch computes it, so α's gradient is
    bit-identical to the unfused path's (``tests/test_qlr.py``).
    """

    @staticmethod
    def forward(ctx, alpha: Tensor, s: Tensor, pre: Tensor, amn: Tensor, amx: Tensor, mn: Tensor, mx: Tensor,
                Q: int) -> Tensor:
        ctx.vals = tuple(np.float32(float(v)) for v in (pre, amn, amx, mn, mx)) + (np.float32(Q),)
        ctx.shape = alpha.shape
        return s.clone()

    @staticmethod
    def backward(ctx, gs: Tensor):
        pre, amn, amx, mn, mx, Q = ctx.vals
        zero = np.float32(0.0)
        g = np.float32(float(gs)) if pre >= np.float32(EPS) else zero  # clamp(min=EPS)
        g_hi = g / Q  # (hi − lo) / Q
        g_lo = -g_hi
        ga_hi = (g_hi if amx >= zero else zero) * mx  # clamp(α·mx, min=0), then α·mx
        ga_lo = (g_lo if amn <= zero else zero) * mn  # clamp(α·mn, max=0), then α·mn
        return torch.full(ctx.shape, ga_hi + ga_lo, dtype=torch.float32), None, None, None, None, None, None, None


@QUANTIZERS.register("qlr")
class QLRQuantizer(Quantizer):
    """Quantization with a learnable range scale α (QLR, arXiv 2308.14949, §5–§6 of METHOD.md).

    ``truncation``: ``"none"``, or ``"bt"`` / ``"bt*"`` (bit truncation, INT2 only).
    ``lsq_scale``: scale α's gradient by 1/√(numel·Q).  ``skew_refresh``: for BT*,
    re-measure the skewness κ every that many training steps (0 = only at init).
    """

    #: ``qlr-frozen`` sets this to False: α becomes a buffer fixed at its grid-search value.
    learn_alpha = True

    def __init__(self, bits: int, role: str, truncation: str = "none", lsq_scale: bool = False,
                 skew_refresh: int = 0) -> None:
        self.validate_params(bits=bits, truncation=truncation, lsq_scale=lsq_scale, skew_refresh=skew_refresh)
        super().__init__(bits, role)
        self.truncation = truncation
        self.lsq_scale = bool(lsq_scale)
        self.skew_refresh = int(skew_refresh)
        alpha = torch.ones(())
        if self.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("kappa", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def validate_params(bits: int = 8, truncation: str = "none", lsq_scale: bool = False,
                        skew_refresh: int = 0) -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation={truncation!r} is not valid; valid: {', '.join(map(repr, TRUNCATIONS))}")
        if truncation != "none" and bits != 2:
            raise ValueError(f"truncation={truncation!r} is INT2-only (bits=2); got bits={bits}")
        if bits not in (2, 4, 8):
            raise ValueError(f"bits={bits!r} is not valid for qlr; valid: 2, 4, 8")
        if not isinstance(skew_refresh, int) or isinstance(skew_refresh, bool) or skew_refresh < 0:
            raise ValueError(f"skew_refresh={skew_refresh!r} is not valid; use an integer >= 0 (0 = never)")

    # -- range ---------------------------------------------------------------
    @property
    def range_bits(self) -> int:
        """Bit width of the uniform grid: 8 under bit truncation, else ``bits``."""
        return TRUNCATION_BITS if self.truncation != "none" else self.bits

    def _alpha(self, x: Tensor) -> Tensor:
        if self.lsq_scale and self.learn_alpha:
            return grad_scale(self.alpha, 1.0 / math.sqrt(x.numel() * qmax(self.range_bits)))
        return self.alpha

    def range_for(self, x: Tensor, alpha: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """``[min(0, α·min x), max(0, α·max x)]``; differentiable in α, not in x."""
        mn, mx = torch.aminmax(x.detach())
        a = self._alpha(x) if alpha is None else alpha
        return torch.clamp(a * mn, max=0.0), torch.clamp(a * mx, min=0.0)

    def qparams(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(scale, zero) such that ``x̂ = (codes − zero)·scale`` (see :meth:`codes`)."""
        _, s, z = self.codes(x)
        return s, z

    # -- quantization --------------------------------------------------------
    def _quantize(self, x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Fake-quantized ``x`` for the range ``[lo, hi]`` (STE; LSQ gradient to lo/hi)."""
        return self._quantize_sz(x, *scale_zero(lo, hi, self.range_bits))

    def _quantize_learned(self, x: Tensor) -> Tensor:
        """:meth:`_quantize` on :meth:`range_for` with α's gradient through one :class:`_AlphaScale` node."""
        Q = qmax(self.range_bits)
        with torch.no_grad():
            mn, mx = torch.aminmax(x.detach())
            amn, amx = self.alpha * mn, self.alpha * mx
            lo, hi = torch.clamp(amn, max=0.0), torch.clamp(amx, min=0.0)
            s, z = scale_zero(lo, hi, self.range_bits)
            pre = (hi - lo) / Q
        return self._quantize_sz(x, _AlphaScale.apply(self.alpha, s, pre, amn, amx, mn, mx, Q), z)

    def _quantize_sz(self, x: Tensor, s: Tensor, z: Tensor) -> Tensor:
        if self.truncation == "none":
            return fake_quant_fused(x, s, z, self.bits)
        return fake_quant_fused(x, s, z, TRUNCATION_BITS, step=BT_STEP, kappa=float(self.kappa), code_bits=self.bits)

    def codes(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Integer codes in ``0..2^bits−1`` with (scale, zero): ``(codes − zero)·scale`` is the eval output."""
        with torch.no_grad():
            self._ensure_initialized(x)
            lo, hi = self.range_for(x)
            s, z = scale_zero(lo, hi, self.range_bits)
            q = quantize_codes(x, s, z, self.range_bits)
            if self.truncation == "none":
                return q.to(torch.int32), s, z
            c = torch.clamp(torch.round((q + float(self.kappa)) / BT_STEP), 0, qmax(self.bits))
            return c.to(torch.int32), s * BT_STEP, z / BT_STEP

    def dequant(self, codes: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        """``(codes − zero)·scale`` computed exactly as the forward pass does."""
        return (codes.to(scale.dtype) - zero) * scale

    # -- initialisation ------------------------------------------------------
    def _ensure_initialized(self, x: Tensor) -> None:
        if bool(self.initialized):
            return
        with torch.no_grad():
            if self.truncation == "bt*":
                self.kappa.fill_(round(skewness(x)))
            self.alpha.data.fill_(self.grid_search(x))
            self.initialized.fill_(True)

    def grid_search(self, x: Tensor) -> float:
        """The α of :func:`alpha_grid` minimising mean |x̂ − x| for this quantizer on ``x``."""
        x = x.detach()
        best, best_err = 1.0, math.inf
        with torch.no_grad():
            for a in alpha_grid(self.bits).tolist():
                at = torch.tensor(a, dtype=x.dtype)
                err = float((self._quantize(x, *self.range_for(x, at)) - x).abs().mean())
                if err < best_err:
                    best, best_err = a, err
        return best

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        self._ensure_initialized(x)
        if self.training:
            if self.truncation == "bt*" and self.skew_refresh and int(self.steps) % self.skew_refresh == 0 \
                    and int(self.steps) > 0:
                self.kappa.fill_(round(skewness(x)))
            self.steps += 1
        if (self.learn_alpha and not self.lsq_scale and torch.is_grad_enabled() and self.alpha.requires_grad
                and x.dtype == torch.float32):
            return self._quantize_learned(x)
        return self._quantize(x, *self.range_for(x))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, truncation={self.truncation!r}, alpha={float(self.alpha):.4f}, "
                f"learn_alpha={self.learn_alpha}")


@QUANTIZERS.register("qlr-frozen")
class FrozenQLRQuantizer(QLRQuantizer):
    """QLR with α fixed at its grid-search value (the released code's behaviour; ablation)."""

    learn_alpha = False
