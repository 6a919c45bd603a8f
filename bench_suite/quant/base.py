"""Uniform asymmetric fake quantization (METHOD.md §1) and the quantizer interface.

Every quantizer is a ``torch.nn.Module`` built as ``cls(bits, role, **params)`` and
called as ``q(x, graph=None)``.  Layers pass the DGL graph for node-level roles
(``message``, ``aggregate``, ``update``) so that degree-aware quantizers (DQ) can
mask nodes.  FP32 is the identity quantizer.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from bench_suite.sparse import csr_matmul, densify, is_sparse
from bench_suite.bits import FP32_BITS, is_full_precision, qmax  # noqa: F401  (qmax: re-exported)

ROLES: Tuple[str, ...] = ("input", "weight", "feature", "message", "aggregate", "update")
NODE_ROLES: Tuple[str, ...] = ("message", "aggregate", "update")
EPS = 1e-8


def round_ste(x: Tensor) -> Tensor:
    """round() in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def scale_zero(lo: Tensor, hi: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    """Scale and zero point for the range [lo, hi] (which must contain 0).

    ``s = max((hi - lo) / Q, eps)``, ``z = clamp(round(-lo / s), 0, Q)``, with the
    straight-through estimator on round so gradients reach ``lo``/``hi``.
    """
    Q = qmax(bits)
    s = torch.clamp((hi - lo) / Q, min=EPS)
    z = torch.clamp(round_ste(-lo / s), 0, Q)
    return s, z


def quantize_codes(x: Tensor, s: Tensor, z: Tensor, bits: int) -> Tensor:
    """Integer codes ``q = clamp(round(x/s) + z, 0, Q)`` (no gradient)."""
    return torch.clamp(torch.round(x / s) + z, 0, qmax(bits))


def fake_quant(x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    """``x̂ = (clamp(round(x/s) + z, 0, Q) − z)·s`` with STE (METHOD.md §1).

    Autograd gives ∂x̂/∂x = 1 inside the range and 0 where clamped, and the
    LSQ-form gradient with respect to ``lo``/``hi`` when they carry one.
    """
    s, z = scale_zero(lo, hi, bits)
    q = torch.clamp(round_ste(x / s) + z, 0, qmax(bits))
    return (q - z) * s


class Quantizer(nn.Module):
    """Base class: one instance serves one role in one layer."""

    def __init__(self, bits: int, role: str) -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"unknown quantizer role {role!r}; valid: {', '.join(ROLES)}")
        self.bits = int(bits)
        self.role = role

    @property
    def is_identity(self) -> bool:
        return False

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmul(self, x: Tensor, weight: Callable[[], Tensor]) -> Tensor:
        """``self(x) @ weight()``, evaluated in that order (a layer's ``q_input(x) · q_weight(W)``).
        A quantizer may compute it its own way with the same values and gradients (QLR does
        for a constant sparse input).

        ``x`` may be a CSR tensor (sparse features, :mod:`bench_suite.sparse`): a quantizer that
        does not override this sees it densified; the built-in ones quantize the stored values
        with range statistics over the whole tensor, implicit zeros included."""
        if is_sparse(x):
            x = densify(x)
        return self(x) @ weight()

    def qparams(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Scale and zero point this quantizer uses for ``x`` in evaluation mode.

        Used by the integer engine; the default reads ``range_for(x)``.
        """
        lo, hi = self.range_for(x)
        s, z = scale_zero(lo.detach(), hi.detach(), self.bits)
        return s, z

    def range_for(self, x: Tensor) -> Tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"bits={self.bits}, role={self.role}"


def quantized_matmul(q_input: Any, x: Tensor, q_weight: Any, weight: Tensor) -> Tensor:
    """``q_input(x) @ q_weight(weight)`` through :meth:`Quantizer.matmul` (plain modules: directly,
    on the densified ``x`` if it is sparse)."""
    mm = getattr(q_input, "matmul", None)
    if mm is None:
        return q_input(densify(x)) @ q_weight(weight)
    return mm(x, lambda: q_weight(weight))


class IdentityQuantizer(Quantizer):
    """Full precision (FP32): returns its input unchanged."""

    #: no bit width to choose: specs carry ``bits: 32`` (see :mod:`bench_suite.quant.fp32`)
    full_precision = True

    def __init__(self, bits: int = FP32_BITS, role: str = "input") -> None:
        super().__init__(bits, role)

    @property
    def is_identity(self) -> bool:
        return True

    def forward(self, x: Tensor, graph: Any = None) -> Tensor:
        return x

    def matmul(self, x: Tensor, weight: Callable[[], Tensor]) -> Tensor:
        if is_sparse(x):
            return csr_matmul(x, x.values(), weight())
        return x @ weight()


class RoleQuantizers(nn.Module):
    """The quantizers of one layer, one per role, addressed as ``q["message"]``."""

    def __init__(self, quant: "QuantFactory", layer: Any = None, roles: Tuple[str, ...] = ROLES) -> None:
        super().__init__()
        self.roles = tuple(roles)
        for r in self.roles:
            self.add_module(r, quant(r, layer))

    def __getitem__(self, role: str) -> Quantizer:
        return getattr(self, role)

    def items(self):
        return [(r, getattr(self, r)) for r in self.roles]


class QuantFactory:
    """Builds one quantizer per (role, layer) for a model.

    ``QuantFactory("qlr", 4, {"truncation": "none"})("message", layer=3)``.
    """

    def __init__(self, name: str = "fp32", bits: int = FP32_BITS, params: Optional[Dict[str, Any]] = None) -> None:
        from bench_suite.registry import QUANTIZERS

        self.name = name
        self.bits = int(bits)
        self.params = dict(params or {})
        QUANTIZERS.get(name)  # raises with the list of valid keys
        QUANTIZERS.check_params(name, self.params)

    @property
    def fp32(self) -> bool:
        """Full precision: every role is the identity (``quant=fp32`` or another full-precision plugin)."""
        from bench_suite.registry import QUANTIZERS

        return is_full_precision(QUANTIZERS.get(self.name))

    def __call__(self, role: str, layer: Optional[int] = None) -> Quantizer:
        if role not in ROLES:
            raise ValueError(f"unknown quantizer role {role!r}; valid: {', '.join(ROLES)}")
        from bench_suite.registry import QUANTIZERS

        return QUANTIZERS.create(self.name, bits=self.bits, role=role, **self.params)

    def __repr__(self) -> str:
        return f"QuantFactory({self.name!r}, bits={self.bits}, params={self.params!r})"
