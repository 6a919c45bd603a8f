"""Quantization: shared fake-quant arithmetic, the quantizer interface, QLR and BT/BT*."""
from bench_suite.quant.base import (  # noqa: F401
    NODE_ROLES,
    ROLES,
    IdentityQuantizer,
    QuantFactory,
    RoleQuantizers,
    Quantizer,
    fake_quant,
    qmax,
    quantize_codes,
    round_ste,
    scale_zero,
)
