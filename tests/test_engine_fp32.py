"""The tuned FP32 baseline (:mod:`bench_suite.engine.fp32`): the same function as the suite's FP32 model
and DGL's layers, with the same weights, for every model the integer engine converts."""
from __future__ import annotations

import pytest
import torch

from bench_suite.engine.bench import DGLAPPNP, DGLGCN, DGLSMP, build, generated
from bench_suite.engine.fp32 import TunedAPPNP, TunedGCN, TunedSMP, tuned_fp32
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import load_all

load_all()

#: (model, propagation, depth, hidden, extra propagation parameters); GCN at hidden 16 < 64 input
#: features aggregates at the narrower width in the first layer and after the product in the others,
#: at hidden 128 the other way round
CASES = [("gcn", None, 3, 16, None), ("gcn", None, 3, 128, None), ("decoupled", "appnp", 10, 32, None),
         ("decoupled", "appnp", 1, 32, None), ("decoupled", "smp", 6, 32, {"lambda0": 0.5}),
         ("decoupled", "smp", 6, 32, {"form": "released", "lambda0": 0.5})]


def models(model, prop, depth, hidden, params, seed=0):
    g0, x, classes = generated("small", seed)
    g = prepare_graph(g0)
    torch.manual_seed(0)
    fp = build(model, depth, hidden, x.shape[1], classes, QuantFactory(), prop or "appnp")
    if params:
        from bench_suite.registry import PROPAGATIONS

        fp.prop = PROPAGATIONS.create(prop, depth=depth, quant=QuantFactory(), **params)
    with torch.no_grad():  # biases away from 0 (they start at 0): the test must see them applied
        for name, p in fp.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return g, x, fp.eval()


@pytest.mark.parametrize("model,prop,depth,hidden,params", CASES)
def test_tuned_fp32_logits_equal_the_fp32_models(model, prop, depth, hidden, params) -> None:
    g, x, fp = models(model, prop, depth, hidden, params)
    tuned = tuned_fp32(fp)
    assert isinstance(tuned, {"gcn": TunedGCN, "appnp": TunedAPPNP, "smp": TunedSMP}[prop or model])
    base = (DGLGCN if model == "gcn" else DGLSMP if prop == "smp" else DGLAPPNP)(fp).eval()
    with torch.no_grad():
        ref, dgl_out = fp(g, x), base(g, x)
    out = tuned(g, x)
    assert out.dtype == torch.float32 and out.shape == ref.shape and not out.requires_grad
    scale = float(ref.abs().max())
    assert scale > 0.1  # the comparison is not one of zeros
    # float32 rounding only: the same products, the scalings associated differently
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(out, dgl_out, rtol=1e-5, atol=1e-5 * scale)
    # a second call (the per-graph constants cached) and the input untouched
    x0 = x.clone()
    torch.testing.assert_close(tuned(g, x), out, rtol=0, atol=0)
    assert torch.equal(x, x0)


def test_tuned_fp32_is_a_snapshot_of_the_weights_and_follows_the_graph() -> None:
    g, x, fp = models("gcn", None, 2, 16, None)
    tuned = tuned_fp32(fp)
    before = tuned(g, x)
    with torch.no_grad():
        fp.layers[1].bias.add_(1e-3)
        ref = fp(g, x)
    # the weights were copied at construction: a changed model is a different function
    assert not torch.allclose(tuned(g, x), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tuned(g, x), before, rtol=0, atol=0)
    tuned = tuned_fp32(fp)
    g2, x2, _ = models("gcn", None, 2, 16, None, seed=1)  # another graph after the first one's constants
    assert not torch.equal(g2.ndata["norm"], g.ndata["norm"])  # same size, other degrees
    tuned(g, x)
    with torch.no_grad():
        ref2 = fp(g2, x2)
    torch.testing.assert_close(tuned(g2, x2), ref2, rtol=1e-5, atol=1e-5 * float(ref2.abs().max()))


def test_tuned_fp32_refuses_what_it_does_not_compute() -> None:
    fp = build("gcn", 2, 16, 8, 3, QuantFactory())
    with pytest.raises(ValueError, match="not supported"):
        tuned_fp32(torch.nn.Linear(2, 2))
    fp_sym = tuned_fp32(fp)
    g = prepare_graph(generated("tiny")[0])
    with pytest.raises(ValueError, match="dense"):
        fp_sym(g, torch.eye(g.num_nodes(), 8).to_sparse())
