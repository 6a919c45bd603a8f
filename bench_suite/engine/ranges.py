"""Range rules and weight codes: what the integer engine keeps of a trained quantizer (METHOD.md §1, §9).

A quantizer's evaluation-mode range becomes a :class:`RangeRule` the integer model applies at
run time without the torch module: ``static`` (fixed scale and zero point: QAT/DQ in eval, or a
range calibrated at conversion) or ``scaled_minmax`` (QLR: ``m = min(0, α·min x)``,
``M = max(0, α·max x)`` of the current tensor, arXiv 2308.14949).  A quantizer may declare its
rule with a ``range_rule() -> dict`` method; otherwise the rule is found by probing ``qparams``
and verified on further probes.

Inside :func:`recording`, every dynamic rule's :meth:`RangeRule.params` call is kept, so one
forward pass of an integer model gives the ranges to freeze into static rules
(:meth:`RangeRule.frozen`, :func:`bench_suite.engine.convert.calibrate`).

This module is a leaf of the engine: it imports the quantizers and the packing, nothing of the
integer model.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from typing import Dict, Iterator, Optional

import numpy as np
import torch

from bench_suite.bits import qmax
from bench_suite.engine.packing import PackedTensor, check_bits
from bench_suite.quant.base import Quantizer, quantize_codes
from bench_suite.quant.qlr import scale_chain

PROBES = ((-1.0, 1.0), (-3.0, 5.0), (0.0, 2.0), (-0.5, 0.0), (-7.0, 0.25))
KINDS = ("static", "scaled_minmax")

#: params of each dynamic rule applied inside :func:`recording`, by ``id(rule)``
_RECORDING: Optional[Dict[int, tuple]] = None


@dataclass
class RangeRule:
    """How one quantizer picks its range ``[m, M]`` in evaluation mode."""

    kind: str  # "static" or "scaled_minmax"
    bits: int  # bits of the stored codes
    scale: float = 1.0  # static rules store their scale and zero point
    zero: float = 0.0
    alpha: float = 1.0
    #: bit truncation (METHOD.md §6): codes of a ``grid_bits`` grid, shifted by ``kappa`` and
    #: divided by ``step`` into ``bits``-bit codes; ``step`` 1 means none
    grid_bits: int = 0
    step: int = 1
    kappa: float = 0.0

    @property
    def dynamic(self) -> bool:
        """Whether the range depends on the tensor (else :meth:`params` ignores the extremes and
        the engine skips the pass that would compute them)."""
        return self.kind != "static"

    def params(self, xmin: float = 0.0, xmax: float = 0.0) -> tuple:
        """``(scale, zero, Q)`` for a tensor whose extremes are ``xmin``/``xmax``; under bit truncation
        ``(scale, zero, Q, step, κ, Qc)`` of the ``grid_bits`` grid (:func:`bench_suite.engine.kernels.grid`)."""
        Q = qmax(self.grid_bits or self.bits)
        if self.kind == "static":
            s, z = self.scale, self.zero
        else:  # QLR's float32 chain, to the bit (bench_suite.quant.qlr.scale_chain); silent on
            # inf/NaN extremes (a diverging model) as torch's 0-dim ops are
            with np.errstate(all="ignore"):
                s, z = (float(v) for v in scale_chain(self.alpha, float(xmin), float(xmax), Q)[:2])
        if self.step == 1:
            out: tuple = (s, z, float(Q))
        else:
            out = (s, z, float(Q), float(self.step), float(self.kappa), float(qmax(self.bits)))
        if _RECORDING is not None and self.dynamic:
            if _RECORDING.setdefault(id(self), out) != out:
                raise RuntimeError("a range rule was applied twice with different ranges in one calibration pass")
        return out

    def grid_scale(self, xmin: float = 0.0, xmax: float = 0.0) -> float:
        """The scale of the grid :meth:`params` would round on for these extremes (the 8-bit grid under
        bit truncation), without recording it: a hint for work that depends on the range only roughly."""
        if self.kind == "static":
            return float(self.scale)
        with np.errstate(all="ignore"):
            return float(scale_chain(self.alpha, float(xmin), float(xmax), qmax(self.grid_bits or self.bits))[0])

    def frozen(self, params: tuple) -> "RangeRule":
        """The static rule that applies ``params`` (as :meth:`params` returned them) to every tensor."""
        return replace(self, kind="static", scale=float(params[0]), zero=float(params[1]))


@contextlib.contextmanager
def recording() -> Iterator[Dict[int, tuple]]:
    """Collect the params of every dynamic rule applied inside the block, by ``id(rule)``."""
    global _RECORDING
    prev, _RECORDING = _RECORDING, {}
    try:
        yield _RECORDING
    finally:
        _RECORDING = prev


def _probe(q: Quantizer, lo: float, hi: float) -> tuple:
    s, z = q.qparams(torch.tensor([lo, hi], dtype=torch.float32))
    return float(s), float(z)


def rule_of(q: Quantizer, where: str = "") -> RangeRule:
    """The :class:`RangeRule` of quantizer ``q`` in evaluation mode."""
    if getattr(q, "is_identity", False):
        raise ValueError(f"{where or 'quantizer'} is full precision (FP32); the integer engine needs every "
                         "role quantized to 8, 4 or 2 bits")
    bits = check_bits(int(q.bits), where)
    declared = getattr(q, "range_rule", None)
    if callable(declared):
        return RangeRule(bits=bits, **declared())
    q.eval()
    with torch.no_grad():
        first = _probe(q, *PROBES[0])
        if all(np.isclose(_probe(q, *p), first, rtol=1e-6, atol=0).all() for p in PROBES[1:]):
            return RangeRule("static", bits, scale=first[0], zero=first[1])
        # scaled min/max: on [-1, 1] the range is [-α, α], so s·Q = 2α
        alpha = getattr(q, "alpha", None)
        alpha = float(alpha) if isinstance(alpha, torch.Tensor) and alpha.numel() == 1 else first[0] * qmax(bits) / 2.0
        rule = RangeRule("scaled_minmax", bits, alpha=alpha)
        for p in PROBES[1:]:
            want = rule.params(*p)[:2]
            if not np.allclose(_probe(q, *p), want, rtol=1e-5, atol=1e-7):
                raise ValueError(
                    f"{where or type(q).__name__}: its evaluation range is neither static nor "
                    f"α·[min, max]; give {type(q).__name__} a range_rule() method for the integer engine")
        return rule


def rules(q_roles, roles: tuple, where: str) -> dict:
    """``{role: RangeRule}`` of a layer's :class:`~bench_suite.quant.base.RoleQuantizers`."""
    return {r: rule_of(q_roles[r], f"{where} role {r!r}") for r in roles}


def quantize_weight(q: Quantizer, w: torch.Tensor, where: str) -> PackedTensor:
    """Codes of a weight under its quantizer, packed (the stored form of the weight)."""
    bits = check_bits(int(q.bits), where)
    q.eval()
    with torch.no_grad():
        if getattr(q, "truncation", "none") != "none":  # BT/BT*: the quantizer's own 2-bit codes
            codes, s, z = q.codes(w.detach())  # zero point z/step: not an integer
            return PackedTensor.from_codes(codes.to(torch.uint8).numpy(), bits, float(s), float(z))
        s, z = q.qparams(w.detach())
        codes = quantize_codes(w.detach(), s, z, bits).to(torch.uint8).numpy()
    return PackedTensor.from_codes(codes, bits, float(s), int(round(float(z))))


def rule_state(r: RangeRule) -> dict:
    return asdict(r)


def rule_from_state(d: dict) -> RangeRule:
    if d.get("kind") not in KINDS:
        raise ValueError(f"unknown range rule kind {d.get('kind')!r} in an integer model; valid: {', '.join(KINDS)}")
    return RangeRule(**d)
