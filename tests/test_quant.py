"""Properties shared by every quantizer (QLR, BT, BT*, QAT, DQ) at every bit width."""
from __future__ import annotations

import math

import pytest
import torch

from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all
from bench_suite.spec import resolve_spec
from bench_suite.testing import tiny_graph
from bench_suite.train import run

load_all()

# (key, bits, params)
CASES = [(k, b, {}) for k in ("qlr", "qlr-frozen", "qat", "dq") for b in (8, 4, 2)] + [
    ("qlr", 2, {"truncation": "bt"}),
    ("qlr", 2, {"truncation": "bt*"}),
    ("qlr", 4, {"lsq_scale": True}),
]
IDS = [f"{k}-int{b}" + "".join(f"-{v}" for v in p.values()) for k, b, p in CASES]


def _trained_quantizer(key: str, bits: int, params: dict, role: str = "aggregate", x=None):
    torch.manual_seed(0)
    graph = prepare_graph(tiny_graph()[0])
    q = QuantFactory(key, bits, params)(role, layer=0)
    if x is None:
        x = torch.randn(graph.num_nodes(), 7) * 1.5 + 0.3
    q.train()
    for _ in range(3):
        q(x, graph)
    q.eval()
    return q, x, graph


@pytest.mark.parametrize("key,bits,params", CASES, ids=IDS)
def test_codes_reconstruct_forward_exactly(key, bits, params):
    q, x, graph = _trained_quantizer(key, bits, params)
    with torch.no_grad():
        y = q(x, graph)
        codes, scale, zero = q.codes(x)
    assert codes.dtype == torch.int32 and codes.shape == x.shape
    assert int(codes.min()) >= 0 and int(codes.max()) <= 2 ** bits - 1
    assert torch.equal(q.dequant(codes, scale, zero), y)
    assert torch.equal((codes - zero) * scale, y)
    s, z = q.qparams(x)
    assert torch.equal(s, scale) and torch.equal(z, zero)


@pytest.mark.parametrize("key,bits,params", CASES, ids=IDS)
def test_range_contains_zero_and_error_is_half_a_step_inside(key, bits, params):
    for shift in (0.3, 5.0, -5.0):  # mixed-sign, all-positive, all-negative tensors
        x = torch.randn(40, 7) + shift
        q, x, graph = _trained_quantizer(key, bits, params, x=x)
        with torch.no_grad():
            lo, hi = q.range_for(x)
            y = q(x, graph)
            _, scale, _ = q.codes(x)
        assert float(lo) <= 0.0 <= float(hi), f"range [{float(lo)}, {float(hi)}] misses 0"
        inside = (x >= lo) & (x <= hi)
        assert inside.any()
        bound = float(scale) / 2
        if params.get("truncation") == "bt*":  # the skew shift moves rounding by |κ| 8-bit steps
            bound += abs(float(q.kappa)) * float(scale) / 85
        err = (y - x).abs()[inside]
        assert float(err.max()) <= bound * (1 + 1e-5), (float(err.max()), bound)
        assert torch.unique(y).numel() <= 2 ** bits


@pytest.mark.parametrize("key,bits,params", CASES, ids=IDS)
def test_state_dict_round_trip_gives_identical_eval_outputs(key, bits, params):
    q, x, graph = _trained_quantizer(key, bits, params)
    if any(p.requires_grad for p in q.parameters()):  # move learnable state away from its init
        opt = torch.optim.Adam(q.parameters(), lr=0.05)
        q.train()
        for _ in range(3):
            opt.zero_grad()
            (q(x, graph) - x).square().sum().backward()
            opt.step()
        q.eval()
    fresh = QuantFactory(key, bits, params)("aggregate", layer=0)
    fresh.load_state_dict(q.state_dict())
    fresh.eval()
    x2 = torch.randn_like(x) * 2
    with torch.no_grad():
        assert torch.equal(fresh(x, graph), q(x, graph))
        assert torch.equal(fresh(x2, graph), q(x2, graph))


def test_every_quantizer_trains_a_gcn_on_csbm_without_nan():
    for key, bits, params in CASES:
        flat = {"dataset": "csbm", "dataset.nodes": 150, "model": "gcn", "depth": 2, "epochs": 4,
                "quant": key, "bits": bits, **params}
        rec = run(resolve_spec(flat))
        m = rec["metrics"]
        assert math.isfinite(m["final_train_loss"]), (key, bits, params, m)
        assert 0.0 <= m["test_acc"] <= 1.0, (key, bits, params, m)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32 on the CPU: the numba kernel
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_fused_fake_quant_matches_base_fake_quant_in_value_and_gradient(bits, dtype):
    """The fused function is a speed-up of ``fake_quant``: same x̂, same ∂/∂x, same ∂/∂α (z constant in α)."""
    from bench_suite.quant.base import fake_quant, scale_zero
    from bench_suite.quant.fused import fake_quant_fused

    gen = torch.Generator().manual_seed(bits)
    x0 = (torch.randn(300, generator=gen, dtype=torch.float64) * 2 + 0.4).to(dtype)
    w = torch.randn(300, generator=gen, dtype=torch.float64).to(dtype)
    mn, mx = float(x0.min()), float(x0.max())
    outs = []
    for fused in (False, True):
        x = x0.clone().requires_grad_(True)
        a = torch.tensor(0.55, dtype=dtype, requires_grad=True)
        lo, hi = a * mn, a * mx
        if fused:
            s, z = scale_zero(lo, hi, bits)
            y = fake_quant_fused(x, s, z, bits)
        else:
            y = fake_quant(x, lo, hi, bits)
        (y * w).sum().backward()
        outs.append((y.detach(), x.grad, a.grad))
    assert bool((outs[0][0] == outs[1][0]).all())  # equal values (signed zeros may differ)
    # ∂/∂x: the kernel gives g·mask exactly; autograd through x/s·s rounds it by up to an ulp in float32
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(outs[0][1], outs[1][1], rtol=rtol, atol=0) and 0 < float(outs[1][1].sum()) < 300
    # ∂/∂α: a sum over 300 terms, float64 accumulation in the kernel vs torch's float32 sum
    assert float(outs[1][2]) == pytest.approx(float(outs[0][2]), rel=1e-9 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("kappa", [0.0, 1.0, -2.0])
def test_truncation_kernel_matches_the_torch_reference(kappa):
    """BT/BT* (step 85 on the 8-bit grid): the float32 kernel gives the torch path's values bit for bit,
    and its ∂x̂/∂s factor and mask are those of the torch formula."""
    from bench_suite.quant.base import scale_zero
    from bench_suite.quant.fused import _codes, dequantize, fake_quant_fused

    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(5000, generator=gen).pow(2) - 0.3  # right-skewed
    lo, hi = torch.tensor(float(x0.min()) * 0.7), torch.tensor(float(x0.max()) * 0.7)
    s, z = scale_zero(lo, hi, 8)
    v, c, inside = _codes(x0, s, z, 255, 85, kappa, 3)
    ref = dequantize(c, s, z, 85)
    x = x0.clone().requires_grad_(True)
    sp = s.clone().requires_grad_(True)
    y = fake_quant_fused(x, sp, z, 8, step=85, kappa=kappa, code_bits=2)
    assert torch.equal(y.detach(), ref)
    w = torch.randn(5000, generator=gen)
    (y * w).sum().backward()
    t_ref = torch.addcmul(c * 85 - z, v, inside.to(v.dtype), value=-1.0)
    assert torch.equal(x.grad, w * inside)
    assert float(sp.grad) == pytest.approx(float((w.double() * t_ref.double()).sum()), rel=1e-5)


@pytest.mark.parametrize("shape,with_keep", [((300, 17), True), ((300, 17), False), ((4000,), False), ((0, 5), True)])
def test_range_kernel_equals_the_general_kernel_bit_for_bit(shape, with_keep):
    """DQ's vectorized kernel (clipped STE, kept rows) gives the general kernel's values and mask exactly."""
    import numpy as np

    from bench_suite.quant.base import scale_zero
    from bench_suite.quant.fused import _fq_kernel, _fq_range_kernel

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(*shape, generator=gen) * 2
    lo, hi = torch.tensor(-1.5), torch.tensor(2.5)
    if x.numel():
        x.view(-1)[:3] = torch.tensor([-1.5, 2.5, 0.0])  # on the clip bounds and at zero
    s, z = scale_zero(lo, hi, 4)
    s32, z32, lo32, hi32 = (np.float32(float(v)) for v in (s, z, lo, hi))
    row = max(x[0].numel(), 1) if x.dim() > 1 and x.shape[0] else 1
    keep = (torch.rand(shape[0], generator=gen) < 0.3).numpy() if with_keep else np.empty(0, dtype=np.bool_)
    outs = []
    for fast in (True, False):
        out, mask = np.empty(x.numel(), np.float32), np.empty(x.numel(), np.bool_)
        if fast:
            _fq_range_kernel(x.view(-1).numpy(), s32, z32, 15, lo32, hi32, out, mask, keep, row)
        else:
            _fq_kernel(x.view(-1).numpy(), s32, z32, 15, 1, np.float32(0), 15, z32, s32, 2, lo32, hi32, False,
                       out, np.empty(0, np.float32), mask, keep, row)
        outs.append((out, mask))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    if with_keep and x.numel():
        kept = np.repeat(keep, row)
        assert np.array_equal(outs[0][0][kept], x.view(-1).numpy()[kept]) and outs[0][1][kept].all()
        assert not np.array_equal(outs[0][0][~kept], x.view(-1).numpy()[~kept])
