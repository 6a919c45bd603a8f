"""Every registered plugin passes the conformance kit (bench_suite.testing)."""
from __future__ import annotations

import pytest

from bench_suite import testing
from bench_suite.registry import DATASETS, MODELS, PROPAGATIONS, QUANTIZERS, TRANSFORMS, load_all

load_all()
QUANT_FOR_MODELS = "qlr" if "qlr" in QUANTIZERS else None


@pytest.mark.parametrize("key", QUANTIZERS.keys())
def test_quantizer_conforms(key):
    testing.check_quantizer(key)


@pytest.mark.parametrize("key", [k for k in MODELS.keys() if k != "decoupled"])
def test_model_conforms(key):
    testing.check_model(key, quant=QUANT_FOR_MODELS)


@pytest.mark.parametrize("key", PROPAGATIONS.keys())
def test_propagation_conforms(key):
    testing.check_propagation(key, quant=QUANT_FOR_MODELS)


@pytest.mark.parametrize("key", TRANSFORMS.keys())
def test_transform_conforms(key):
    testing.check_transform(key)


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
