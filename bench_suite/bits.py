"""The bit widths the method quantizes to, and the largest code of a width.

A leaf module (no imports from the suite) so that specs, quantizers, the integer engine and
reports share one definition without import cycles.
"""
from __future__ import annotations

from typing import Any, Tuple

#: the integer widths a quantizer can be asked for (METHOD.md §1); FP32 is the identity, not a width here
BITS: Tuple[int, ...] = (8, 4, 2)
#: the width a full-precision (``fp32``) run records as its ``bits``
FP32_BITS = 32


def qmax(bits: int) -> int:
    """The largest code of a ``bits``-bit unsigned grid, ``2^bits − 1`` (codes are ``0 … qmax``)."""
    return (1 << bits) - 1


def is_full_precision(quantizer_class: Any) -> bool:
    """A quantizer class that leaves values in full precision and takes no bit width
    (``full_precision = True``, as ``quant=fp32``'s identity)."""
    return bool(getattr(quantizer_class, "full_precision", False))
