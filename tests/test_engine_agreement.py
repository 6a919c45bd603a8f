"""The integer model converted with ``sums="reference"`` predicts its fake-quant model's classes on
≥ 99.9% of nodes (METHOD.md §9; on every case here, all of them), with dynamic ranges and with ranges
calibrated on the graph, on real graphs at 8, 4 and 2 bits; apart from the float32 rounding of the
fake-quant model's dense products, it computes that model's values.  (The default ``sums="exact"``
keeps the integer neighbour sums: ``tests/test_engine_sums.py``.)"""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

import bench_suite.nn.layers as layers
from bench_suite.engine import kernels as K
from bench_suite.engine.bench import build, calibrate, graph_inputs
from bench_suite.engine.convert import convert
from bench_suite.engine.intmodel import EngineGraph
from bench_suite.nn.graph import prepare_graph, sum_neighbours
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS, load_all
from bench_suite.sparse import densify, to_csr

load_all()

#: (dataset, bits, truncation, full-graph training epochs) with the GCN of :func:`trained`: INT8 and
#: INT4 depth 4; INT2 depth 2 with QLR and BT* (METHOD.md §6) or plain QLR, where trained this
#: briefly they reach MIN_ACCURACY (plain INT2 QLR on amazon-computers and BT* on coauthor-physics
#: predict one or two classes, at 10-30% test accuracy; INT2 on Cora and CiteSeer needs more epochs).
#: coauthor-physics (34,493 nodes, 8,415 features) trains on the CSR features; the cases of a dataset
#: are listed together so that it is loaded once.
CASES = [("cora", 8, None, 40), ("cora", 4, None, 40), ("cora", 2, "bt*", 150), ("cora", 2, None, 150),
         ("citeseer", 8, None, 40), ("citeseer", 4, None, 40), ("citeseer", 2, "bt*", 150), ("citeseer", 2, None, 150),
         ("amazon-computers", 8, None, 20), ("amazon-computers", 4, None, 20), ("amazon-computers", 2, "bt*", 20),
         ("coauthor-physics", 8, None, 10), ("coauthor-physics", 4, None, 10), ("coauthor-physics", 2, None, 10)]
#: test accuracy the fake-quant model must reach for the agreement to mean something
MIN_ACCURACY = 0.3


@functools.lru_cache(maxsize=1)
def _load(name: str, data_dir: str) -> tuple:
    from bench_suite.data.datasets import load_dataset

    d = load_dataset(name, seed=0, data_dir=data_dir)
    g = prepare_graph(d.graph)
    return name, d, g, EngineGraph.from_dgl(g), to_csr(d.features)


@pytest.fixture(scope="module", autouse=True)
def _release_datasets():
    yield
    _load.cache_clear()  # coauthor-physics holds 1.2 GB of dense features


@pytest.fixture
def dataset(request, data_dir):
    """``(name, data, prepared graph, EngineGraph, CSR features)``, loaded once for consecutive cases."""
    return _load(request.param, str(data_dir))


def trained(d, g, xs, bits: int, truncation, epochs: int) -> torch.nn.Module:
    """A QLR GCN trained ``epochs`` full-graph Adam steps with the suite's optimiser
    (:func:`bench_suite.train.optimizer_for`) on the CSR features (the suite's sparse path: the
    same training up to float rounding, at a fraction of the cost on coauthor-physics); depth 4,
    INT2 depth 2."""
    import torch.nn.functional as F

    from bench_suite.spec import TrainConfig
    from bench_suite.train import optimizer_for

    torch.manual_seed(0)
    m = MODELS.create("gcn", in_dim=d.features.shape[1], num_classes=d.num_classes, depth=4 if bits > 2 else 2,
                      hidden=64, quant=QuantFactory("qlr", bits, {"truncation": truncation} if truncation else None))
    opt = optimizer_for(m, TrainConfig())
    mask = d.train_mask & (d.labels >= 0)
    m.train()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(m(g, xs)[mask], d.labels[mask]).backward()
        opt.step()
    return m.eval()


@pytest.mark.parametrize("dataset,bits,truncation,epochs", CASES, indirect=["dataset"])
def test_agreement_dynamic_and_calibrated(monkeypatch, dataset, bits: int, truncation, epochs: int) -> None:
    """The fake-quant model runs on the dense features (its dense product is MKL's float32 sgemm);
    the calibrated model (on the deployed graph) computes the dynamic one's logits exactly, so both
    agree with the fake-quant model alike; given the integer model's dense products, the fake-quant
    model computes its logits bit for bit."""
    name, d, g, eg, xs = dataset
    t0 = time.perf_counter()
    m = trained(d, g, xs, bits, truncation, epochs)
    with torch.no_grad():
        ref = m(g, d.features).argmax(1).numpy()
    x = d.features.numpy()
    im = convert(m, sums="reference")
    dyn = im(eg, x)
    cal = convert(m, calibrate_on=(eg, x), sums="reference")(eg, x)
    np.testing.assert_array_equal(cal.view(np.int32), dyn.view(np.int32))
    agree = float((dyn.argmax(1) == ref).mean())
    test = (d.test_mask & (d.labels >= 0)).numpy()
    accuracy = float((ref[test] == d.labels.numpy()[test]).mean())
    what = f"{name} INT{bits}{' ' + truncation if truncation else ''}"
    assert accuracy >= MIN_ACCURACY, f"{what}: degenerate model, test accuracy {accuracy:.3f}"
    assert agree >= 0.999, f"{what}: the integer model agrees on {agree:.4%} of nodes"
    engine_products(monkeypatch, m, im)
    with torch.no_grad():
        same = m(g, d.features).numpy()
    np.testing.assert_array_equal(same.view(np.int32), dyn.view(np.int32))
    print(f"{what}: agreement {agree:.5f}, {int((dyn.argmax(1) != ref).sum())} nodes differ, fake-quant test "
          f"accuracy {accuracy:.3f}, {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("name", ["cora", "amazon-computers"])
def test_dgl_sums_neighbours_one_by_one_in_csc_order(name: str, data_dir) -> None:
    """What :mod:`bench_suite.engine.kernels.sum_order` reproduces: DGL's ``copy_u_sum`` adds the
    in-neighbours' rows one at a time in float32, in the order of the CSC indices the engine keeps."""
    _, _, _, data = graph_inputs(name, 0, data_dir)
    g = prepare_graph(data.graph)
    eg = EngineGraph.from_dgl(g)
    rng = np.random.default_rng(0)
    for f in (7, 64):
        m = ((rng.integers(0, 16, (eg.num_nodes, f)) - 5) * np.float32(0.0123457) * eg.norm[:, None]).astype(np.float32)
        got = sum_neighbours(g, torch.from_numpy(m)).numpy()
        want = np.zeros_like(m)
        for i in range(eg.num_nodes):
            for j in eg.indices[eg.indptr[i]:eg.indptr[i + 1]]:
                want[i] += m[j]
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def engine_products(monkeypatch, m: torch.nn.Module, im) -> None:
    """Give the fake-quant model the integer model's dense products: codes under the engine's input
    rule, exact integer sums scaled once (:class:`bench_suite.engine.intmodel.IntLinear`)."""
    lins = m.layers if hasattr(m, "layers") else m.mlp.lins
    by_weight = {id(lin.weight): int_lin for lin, int_lin in zip(lins, im.linears)}

    def product(q_input, x, q_weight, weight):
        int_lin = by_weight[id(weight)]
        v = np.ascontiguousarray(densify(x).detach().numpy(), dtype=np.float32)
        rule = int_lin.input_rule
        p = rule.params(v.min(), v.max()) if rule.dynamic else rule.params()
        return torch.from_numpy(int_lin(K.quantize(v, p), p))

    monkeypatch.setattr(layers, "quantized_matmul", product)


@pytest.mark.parametrize("model,bits,truncation", [("gcn", 8, None), ("gcn", 4, None), ("gcn", 2, "bt*"),
                                                   ("decoupled", 8, None), ("decoupled", 2, None)])
def test_with_the_engines_products_the_fake_quant_model_computes_the_integer_models_logits(
        monkeypatch, model: str, bits: int, truncation) -> None:
    """Every difference between the two models is the float32 rounding of the fake-quant model's dense
    products (MKL's sgemm, whose order of additions depends on the shapes, the CPU and the threads:
    blocks of the inner dimension, another kernel for narrow outputs and for few rows): given the
    integer model's products, the fake-quant model computes its logits bit for bit.  An untrained
    deep model (near-tied logits, every dynamic range following a tensor extreme) on a generated
    graph; its INT8 GCN has exact ties of the message quantizer (the scale cancels from
    ``m/s_m``), where the neighbour sums' order decides codes."""
    g0, x, classes, _ = graph_inputs("small", 0)
    g = prepare_graph(g0)
    torch.manual_seed(0)
    m = build(model, 4, 64, x.shape[1], classes,
              QuantFactory("qlr", bits, {"truncation": truncation} if truncation else None), "appnp")
    calibrate(m, g0, x, 0)  # QLR's α from its grid search
    m.eval()
    im = convert(m, sums="reference")
    out = im(EngineGraph.from_dgl(g), x.numpy())
    engine_products(monkeypatch, m, im)
    with torch.no_grad():
        ref = m(g, x).numpy()
    assert len(np.unique(ref.argmax(1))) > 1
    np.testing.assert_array_equal(out.view(np.int32), ref.view(np.int32))
