"""The SMP reproduction ablation options: SMP ``quantize_output`` and QLR ``grad_mask`` (both non-default
settings of the authors' code, SamirMoustafa/SMP_GNN_Quant@00dd14c)."""
from __future__ import annotations

import pytest
import torch

from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.quant.qlr import QLRQuantizer
from bench_suite.registry import PROPAGATIONS, load_all
from bench_suite.spec import SpecError, resolve_spec
from bench_suite.testing import tiny_graph

load_all()

BASE = {"dataset": "cora", "split": "random", "model": "decoupled", "propagation": "smp", "form": "released",
        "depth": 10, "quant": "qlr", "bits": 2, "truncation": "bt*", "seed": 0}


def test_options_at_their_default_keep_the_run_id_and_are_validated():
    rid = resolve_spec(BASE).run_id
    assert resolve_spec({**BASE, "quantize_output": True, "grad_mask": "input"}).run_id == rid
    ids = {resolve_spec({**BASE, **o}).run_id for o in
           ({"quantize_output": False}, {"grad_mask": "output"}, {"quantize_output": False, "grad_mask": "output"})}
    assert len(ids) == 3 and rid not in ids
    assert "quantize_output" not in resolve_spec(BASE).data["propagation"]
    assert "grad_mask" not in resolve_spec(BASE).data["quant"]
    with pytest.raises(SpecError, match="grad_mask='nope' is not valid"):
        resolve_spec({**BASE, "grad_mask": "nope"})
    with pytest.raises(SpecError, match="quantize_output"):
        resolve_spec({**BASE, "quantize_output": 1})
    with pytest.raises(SpecError, match="lsq_scale"):
        resolve_spec({**BASE, "grad_mask": "output", "lsq_scale": True})


def test_quantize_output_false_returns_the_unquantized_step_output():
    graph, x, _ = tiny_graph()
    g = prepare_graph(graph)
    props = [PROPAGATIONS.create("smp", depth=1, quant=QuantFactory("qlr", 2), form="released",
                                 quantize_output=flag).eval() for flag in (True, False)]
    with torch.no_grad():
        out_q, _ = props[0](g, x)
        out_f, _ = props[1](g, x)
        assert not bool(props[1].q[0]["update"].initialized)  # never called
        assert torch.equal(props[0].q[0]["update"](out_f), out_q)  # the default = the update quantizer on it
    assert not torch.equal(out_f, out_q)
    assert out_q.unique().numel() <= 4 < out_f.unique().numel()


def _quantizer(mask: str, x: torch.Tensor, alpha: float) -> QLRQuantizer:
    q = QLRQuantizer(2, "feature", truncation="bt*", grad_mask=mask)
    with torch.no_grad():
        q(x)  # lazy init (κ, α)
        q.alpha.fill_(alpha)
    return q


def test_grad_mask_output_passes_gradient_to_clipped_elements_and_gives_alpha_no_gradient():
    # at α=0.5 both -0.8 and 10 are clipped; the range [-0.4, 5] puts the 8-bit zero point at
    # v = 0.4/(5.4/255) = 18.9, rounded up to 19: the top code dequantizes inside the range (its
    # elements keep their gradient), the bottom code at -19·s < -0.4 (masked in their backward;
    # with κ = round(skewness) = 5 the bottom code holds every x below ~0.4)
    x = torch.cat([torch.linspace(-0.8, 1.0, 41), torch.tensor([10.0])])
    grads = {}
    for mask in ("input", "output"):
        q = _quantizer(mask, x, 0.5)
        xr = x.clone().requires_grad_(True)
        out = q(xr)
        (out * torch.linspace(0.5, 1.5, x.numel())).sum().backward()
        grads[mask] = (out.detach(), xr.grad.clone(), float(q.alpha.grad))
    assert torch.equal(grads["input"][0], grads["output"][0])  # same forward value
    assert grads["input"][1][-1] == 0 and grads["output"][1][-1] != 0  # clipped at the top: passes
    assert grads["input"][1][0] == 0 and grads["output"][1][0] == 0  # clipped at the bottom: masked
    assert grads["input"][1][40] != 0 and grads["output"][1][40] != 0  # x = 1: inside, middle code
    assert grads["input"][2] != 0 and grads["output"][2] == 0.0  # BT*: their α gradient is exactly 0


def test_grad_mask_output_masks_by_the_output_against_the_scaled_range():
    """All-positive input: code 0 dequantizes to 0 < α·min x, which their backward masks."""
    x = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 10.0])
    q = _quantizer("output", x, 1.0)
    xr = x.clone().requires_grad_(True)
    out = q(xr)
    out.sum().backward()
    below = out.detach() < 0.5
    assert below.any() and (~below).any()
    assert torch.equal(xr.grad, (~below).float())
