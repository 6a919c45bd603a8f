"""``quant=fp32``: full precision, registered like every other quantizer.

The identity (:class:`~bench_suite.quant.base.IdentityQuantizer`) in every role; a run with it
records ``bits: 32``.  A quantizer class that sets ``full_precision = True`` takes no bit width
from the user (``bits`` is 32 or absent) and is checked at 32 bits by the conformance kit.
"""
from __future__ import annotations

from bench_suite.quant.base import IdentityQuantizer
from bench_suite.registry import QUANTIZERS

QUANTIZERS.register("fp32")(IdentityQuantizer)
