"""A fused fake-quantization autograd function (speed), equal in value and gradient to ``fake_quant``.

:func:`bench_suite.quant.base.fake_quant` composed from autograd primitives records
about ten element-wise operations per call; a deep GNN has six quantizers per layer,
so training was several times slower than FP32.  :class:`FakeQuant` computes the
same forward value and the same STE/LSQ gradients (METHOD.md §1) in a few passes:

* ``x̂ = (q − z)·s`` with ``q = clamp(round(x/s) + z, 0, Q)``; optionally
  bit-truncated (METHOD.md §6): ``c = clamp(round((q + κ)/step), 0, Qc)``,
  ``x̂ = (c − z/step)·(s·step)``;
* ∂x̂/∂s = ``step·c − z − x/s`` where nothing is clamped, ``step·c − z`` where
  clamped (the LSQ form); z is treated as a constant (for QLR it is independent of
  α: both ends of the range scale with α);
* ∂x̂/∂x: ``"quant"`` 1 where nothing is clamped (the STE of ``fake_quant``),
  ``"ste"`` 1 everywhere (plain STE), ``"range"`` 1 inside ``[lo, hi]`` (clipped STE).

``tests/test_quant.py`` checks value and gradients against ``fake_quant``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

GRAD_X_MODES = ("quant", "ste", "range")


def _codes(x: Tensor, s: Tensor, z: Tensor, Q: int, step: int, kappa: float, Qc: int):
    """(v = x/s, codes, inside): ``inside`` is where no clamp is active."""
    v = x / s
    qr = torch.round(v).add_(z)
    q = torch.clamp(qr, 0, Q)
    inside = q == qr
    if step == 1:
        return v, q, inside
    cr = torch.round((q + kappa) / step)
    c = torch.clamp(cr, 0, Qc)
    return v, c, inside & (c == cr)


def dequantize(c: Tensor, s: Tensor, z: Tensor, step: int = 1) -> Tensor:
    """``(c − z)·s`` (or ``(c − z/step)·(s·step)`` under truncation), the one formula every path uses."""
    if step == 1:
        return (c - z) * s
    return (c - z / step) * (s * step)


class FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, z: Tensor, Q: int, step: int, kappa: float, Qc: int,
                grad_x: str, lo: Optional[Tensor], hi: Optional[Tensor]) -> Tensor:
        v, c, inside = _codes(x, s, z, Q, step, kappa, Qc)
        out = dequantize(c, s, z, step)
        # ∂x̂/∂s = (step·c − z) − (x/s)·inside  (LSQ form), kept for the backward pass
        t = torch.addcmul(c * step - z if step != 1 else c - z, v, inside.to(v.dtype), value=-1.0) \
            if ctx.needs_input_grad[1] else None
        if grad_x == "range":
            mask = (x >= lo) & (x <= hi)
        elif grad_x == "quant":
            mask = inside
        else:
            mask = None
        ctx.save_for_backward(t, mask)
        ctx.shape = s.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        t, mask = ctx.saved_tensors
        gs = torch.dot(g.reshape(-1), t.reshape(-1)).reshape(ctx.shape) if t is not None else None
        gx = None
        if ctx.needs_input_grad[0]:
            gx = g if mask is None else g * mask
        return gx, gs, None, None, None, None, None, None, None, None


def fake_quant_fused(x: Tensor, s: Tensor, z: Tensor, bits: int, step: int = 1, kappa: float = 0.0,
                     code_bits: Optional[int] = None, grad_x: str = "quant",
                     lo: Optional[Tensor] = None, hi: Optional[Tensor] = None) -> Tensor:
    """Fake quantization with scale ``s`` and zero point ``z`` (see module docstring)."""
    if grad_x not in GRAD_X_MODES:
        raise ValueError(f"grad_x={grad_x!r} is not valid; valid: {', '.join(GRAD_X_MODES)}")
    Q = (1 << bits) - 1
    Qc = (1 << (code_bits if code_bits is not None else bits)) - 1
    z = z.detach()
    if not torch.is_grad_enabled() or not (x.requires_grad or s.requires_grad):
        return dequantize(_codes(x, s, z, Q, step, kappa, Qc)[1], s, z, step)
    return FakeQuant.apply(x, s, z, Q, step, float(kappa), Qc, grad_x, lo, hi)
