"""Every registered plugin passes the conformance kit (bench_suite.testing)."""
from __future__ import annotations

import pytest

from bench_suite import testing
from bench_suite.registry import DATASETS, MODELS, PROPAGATIONS, QUANTIZERS, TRANSFORMS, load_all

load_all()
QUANT_FOR_MODELS = "qlr"


@pytest.mark.parametrize("key", QUANTIZERS.keys())
def test_quantizer_conforms(key):
    testing.check_quantizer(key)


@pytest.mark.parametrize("key", QUANTIZERS.keys())
def test_quantizer_has_a_range_rule_for_the_integer_engine(key):
    testing.check_range_rule(key)


@pytest.mark.parametrize("key", [k for k in MODELS.keys() if k != "decoupled"])
def test_model_conforms(key):
    testing.check_model(key, quant=QUANT_FOR_MODELS)


@pytest.mark.parametrize("key", PROPAGATIONS.keys())
def test_propagation_conforms(key):
    testing.check_propagation(key, quant=QUANT_FOR_MODELS)


@pytest.mark.parametrize("key", TRANSFORMS.keys())
def test_transform_conforms(key):
    testing.check_transform(key)


def test_kit_checks_a_symmetric_dropedge_for_symmetry():
    testing.check_transform("dropedge", {"symmetric": True})
    from baselines.dropedge import DropEdge

    class Lopsided(DropEdge):
        """Claims symmetry, drops directions on their own."""

        def __call__(self, graph):
            self.symmetric = False
            out = super().__call__(graph)
            self.symmetric = True
            return out

    TRANSFORMS.register("_lopsided", Lopsided)
    try:
        with pytest.raises(AssertionError, match="broke symmetry"):
            testing.check_transform("_lopsided", {"symmetric": True, "p": 0.5})
    finally:
        TRANSFORMS.unregister("_lopsided")


@pytest.mark.parametrize("key", DATASETS.keys())
def test_dataset_plugin_conforms(key):
    testing.check_dataset_plugin(key)


def test_kit_catches_a_broken_model():
    """The kit is not vacuous: a model with the wrong output width fails it."""
    import torch

    from bench_suite.nn.models import GraphModel

    @MODELS.register("_broken_for_test")
    class Broken(GraphModel):
        def __init__(self, in_dim, num_classes, depth, quant, hidden: int = 4):
            super().__init__()
            self.lin = torch.nn.Linear(in_dim, num_classes + 1)

        def forward(self, g, x, return_hidden=False):
            out = self.lin(x)
            return self.output(out, [out], return_hidden)

    try:
        with pytest.raises(AssertionError, match="output shape"):
            testing.check_model("_broken_for_test", depths=(1,))
    finally:
        MODELS.unregister("_broken_for_test")


@pytest.mark.parametrize("key,extra", [("gcn", {}), ("sage", {}), ("decoupled", {})])
def test_core_backbones_build_and_train_at_depth_128(key, extra):
    """Specs allow depths up to 128: the core backbones build, run a training step and
    return per-layer states there too (FP32 and quantized).  Not GAT: with DGL's
    initialisation (xavier, gain √2) and dropout its activations overflow to inf
    at depth 128 in a training step — a property of the model, recorded as a failed (non-finite) run in a matrix."""
    from bench_suite import testing

    testing.check_model(key, depths=(128,), quant="qlr", extra=extra)


def test_kit_checks_the_constructor_and_forward_contract():
    """A model whose constructor does not start with (in_dim, num_classes, depth, quant), or whose
    forward has no return_hidden, fails the kit before it is built; a quantizer whose evaluation
    range is neither static nor α·[min, max] and declares no range_rule fails check_range_rule."""
    import torch

    from bench_suite.quant.base import Quantizer

    class WrongOrder(torch.nn.Module):
        def __init__(self, num_classes, in_dim, depth, quant, hidden: int = 4):
            super().__init__()

        def forward(self, g, x, return_hidden=False):
            return x

    class NoHidden(torch.nn.Module):
        def __init__(self, in_dim, num_classes, depth, quant):
            super().__init__()

        def forward(self, g, x):
            return x

    class Squared(Quantizer):
        """Eval range [min², max²]: neither static nor scaled min/max."""

        def qparams(self, x):
            lo, hi = x.min() ** 2, x.max() ** 2 + 1
            return (hi - lo) / (2 ** self.bits - 1), -lo / ((hi - lo) / (2 ** self.bits - 1))

        def forward(self, x, graph=None):
            return x

    MODELS.register("_wrong_order", WrongOrder)
    MODELS.register("_no_hidden", NoHidden)
    QUANTIZERS.register("_squared", Squared)
    try:
        with pytest.raises(AssertionError, match=r"constructor must start with \(in_dim, num_classes, depth, quant\)"):
            testing.check_model("_wrong_order", depths=(1,))
        with pytest.raises(AssertionError, match=r"forward must take \(g, x, return_hidden\), takes \(g, x\)"):
            testing.check_model("_no_hidden", depths=(1,))
        with pytest.raises(AssertionError, match="no range rule for the integer engine"):
            testing.check_range_rule("_squared", bits_list=(4,))
    finally:
        MODELS.unregister("_wrong_order")
        MODELS.unregister("_no_hidden")
        QUANTIZERS.unregister("_squared")
