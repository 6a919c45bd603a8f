"""Sparse node features (bench_suite/sparse.py): a CSR input computes what the dense input computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench_suite import sparse
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory, Quantizer
from bench_suite.quant.qlr import skewness
from bench_suite.registry import MODELS, load_all
from bench_suite.spec import resolve_spec
from bench_suite.testing import tiny_graph
from bench_suite.train import optimizer_for, seed_everything
from bench_suite.spec import TrainConfig

load_all()

#: (quantizer, bits, params): the configurations the dense/sparse equivalence is checked for
CONFIGS = [
    ("fp32", 32, {}),
    ("qlr", 4, {}),
    ("qlr", 2, {"truncation": "bt*"}),
    ("qat", 4, {}),
    ("dq", 4, {}),
]
CONFIG_IDS = ["fp32", "qlr-int4", "qlr-int2-bt*", "qat-int4", "dq-int4"]


def bag_of_words(n: int = 120, f: int = 300, density: float = 0.03, seed: int = 0, signed: bool = False):
    """A row-normalised random bag-of-words matrix (``signed``: a few negative entries too)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < density).float() * torch.rand(n, f, generator=g)
    x[torch.arange(n), torch.randint(0, f, (n,), generator=g)] = 1.0  # no empty row
    if signed:
        x[torch.rand(n, f, generator=g) < density / 4] *= -1
    return x / x.abs().sum(1, keepdim=True)


def quantizer_state(model) -> dict:
    return {name: buf.clone() for name, buf in model.state_dict().items() if ".q." in name}


def one_step(model_name, quant, bits, params, graph, x, y, seed=0, steps=1, model_params=None, dtype=torch.float32):
    """Train ``steps`` steps from seed ``seed``; returns (train logits of each step, eval logits, quantizer state)."""
    seed_everything(seed)
    model = MODELS.create(model_name, in_dim=x.shape[1], num_classes=int(y.max()) + 1, depth=2,
                          quant=QuantFactory(quant, bits, params), **(model_params or {})).to(dtype)
    opt = optimizer_for(model, TrainConfig())
    xin = sparse.features_for(model, x)
    train_logits = []
    for _ in range(steps):
        model.train()
        opt.zero_grad()
        out = model(graph, xin)
        F.cross_entropy(out, y).backward()
        opt.step()
        train_logits.append(out.detach())
    model.eval()
    with torch.no_grad():
        ev = model(graph, xin)
    return train_logits, ev, quantizer_state(model), model


def assert_same_run(dense, sp, rtol=1e-5, atol=1e-6):
    (td, ed, qd), (ts, es, qs) = dense[:3], sp[:3]
    for a, b in zip(td, ts):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    torch.testing.assert_close(es, ed, rtol=rtol, atol=atol)
    assert qd.keys() == qs.keys()
    for k in qd:
        torch.testing.assert_close(qs[k], qd[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


class FirstProductFactory(QuantFactory):
    """Quantizes the first layer's ``input`` and ``weight`` only (the quantizers a sparse input meets),
    FP32 elsewhere: no later quantizer turns a last-bit difference of the product into another code."""

    def __call__(self, role, layer=None):
        first = role in ("input", "weight") and layer == 0
        return super().__call__(role, layer) if first else QuantFactory()(role, layer)


def run_both(x, y, graph, quant, bits, params, steps, factory=QuantFactory, model="gcn", hook=False):
    """``one_step`` on dense ``x`` and on its CSR form; with ``hook``, also the first layer's product
    (the input of its ``feature`` quantizer) at the first forward pass."""
    out = []
    for inp in (x, sparse.to_csr(x)):
        seed_everything(0)
        m = MODELS.create(model, in_dim=x.shape[1], num_classes=int(y.max()) + 1, depth=2,
                          quant=factory(quant, bits, params))
        first = []
        if hook:
            m.layers[0].q["feature"].register_forward_pre_hook(lambda mod, a: first.append(a[0].detach().clone()))
        opt = optimizer_for(m, TrainConfig())
        xin = sparse.features_for(m, inp)
        logits = []
        for _ in range(steps):
            m.train()
            opt.zero_grad()
            o = m(graph, xin)
            F.cross_entropy(o, y).backward()
            opt.step()
            logits.append(o.detach())
        m.eval()
        with torch.no_grad():
            ev = m(graph, xin)
        out.append((logits, ev, quantizer_state(m), first[:1]))
    return out


#: the whole fully quantized run stays the same for these on this input; QAT's and DQ's first-batch ranges
#: are order statistics of lattice-valued tensors (sums of products of codes), so their later quantizers
#: meet exact ties x/s = k + ½, where a last-bit difference of the product picks the other code (as
#: another BLAS or thread count would): they are checked with the first product quantized alone
NO_TIES = CONFIGS[:3]


@pytest.mark.parametrize("quant,bits,params", NO_TIES, ids=CONFIG_IDS[:3])
def test_generated_input_fully_quantized_same_run(quant, bits, params):
    graph, _, y = tiny_graph(n=120, classes=3)
    dense, sp = run_both(bag_of_words(120, 300), y, prepare_graph(graph), quant, bits, params, steps=3)
    assert_same_run(dense[:3], sp[:3])


@pytest.mark.parametrize("signed", [False, True], ids=["nonneg", "signed"])
@pytest.mark.parametrize("quant,bits,params", CONFIGS, ids=CONFIG_IDS)
def test_generated_input_quantized_first_product_same_run(quant, bits, params, signed):
    """The first product quantized (:class:`FirstProductFactory`): three training steps, eval logits and
    every quantizer's state (ranges, α, κ, step counts) agree; a signed input has a zero point inside the
    range (BT* then maps 0 off the grid: the rank-one term)."""
    graph, _, y = tiny_graph(n=120, classes=3)
    dense, sp = run_both(bag_of_words(120, 300, signed=signed), y, prepare_graph(graph), quant, bits, params,
                         steps=3, factory=FirstProductFactory)
    assert_same_run(dense[:3], sp[:3])


@pytest.mark.parametrize("quant,bits,params", CONFIGS, ids=CONFIG_IDS)
def test_generated_input_first_product_and_input_range_match(quant, bits, params):
    graph, _, y = tiny_graph(n=120, classes=3)
    dense, sp = run_both(bag_of_words(120, 300), y, prepare_graph(graph), quant, bits, params, steps=1, hook=True)
    torch.testing.assert_close(sp[3][0], dense[3][0], rtol=1e-5, atol=1e-7)
    for k, v in dense[2].items():
        if k.startswith("layers.0.q.input"):
            assert torch.equal(sp[2][k], v), k


# -- the pieces ---------------------------------------------------------------------


def test_to_csr_keeps_every_value_and_the_statistics_see_the_implicit_zeros():
    x = bag_of_words(50, 80, signed=True)
    xs = sparse.to_csr(x)
    assert torch.equal(xs.to_dense(), x) and xs.values().numel() == int((x != 0).sum())
    assert [float(v) for v in sparse.aminmax(xs)] == [float(v) for v in torch.aminmax(x)]
    pos = sparse.to_csr(x.abs())  # every stored value > 0: the minimum is an implicit zero
    assert float(sparse.aminmax(pos)[0]) == 0.0 and float(pos.values().min()) > 0
    assert sparse.moments_skewness(xs) == pytest.approx(skewness(x), rel=1e-10)
    flat = torch.randint(0, x.numel(), (500,))
    assert torch.equal(sparse.values_at(xs, flat), x.view(-1)[flat])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.6, 0.8])
def test_sparse_dropout_draws_the_dense_mask(p):
    x = bag_of_words(300, 400, density=0.05, signed=True)
    xs = sparse.to_csr(x)
    for seed in range(3):
        torch.manual_seed(seed)
        dense, after_dense = F.dropout(x, p, True), torch.rand(4)
        torch.manual_seed(seed)
        sp, after_sparse = sparse.dropout(xs, p, True), torch.rand(4)
        assert torch.equal(sp.to_dense(), dense), (seed, p)
        assert torch.equal(after_sparse, after_dense)  # the same generator draws taken
    assert sparse.dropout(xs, p, False) is xs


def test_sparse_dropout_falls_back_to_the_dense_mask_when_the_emulation_does_not_match(monkeypatch):
    x = bag_of_words(60, 90)
    monkeypatch.setattr(sparse, "_EMULATION_OK", [False])
    torch.manual_seed(1)
    dense = F.dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(sparse.dropout(sparse.to_csr(x), 0.5, True).to_dense(), dense)


@pytest.mark.parametrize("sample_size", [4096, 10**9])
def test_dq_quantiles_of_a_sparse_tensor_equal_the_dense_ones(sample_size):
    from baselines.dq import sample_quantiles

    x = bag_of_words(100, 200, density=0.2, signed=True)
    for p in (0.01, 0.05, 0.3):
        torch.manual_seed(0)
        dense = sample_quantiles(x, p, sample_size)
        torch.manual_seed(0)
        sp = sample_quantiles(sparse.to_csr(x), p, sample_size)
        assert [float(v) for v in sp] == [float(v) for v in dense], (p, sample_size)


def test_csr_matmul_gradients_equal_the_dense_product():
    x = bag_of_words(40, 70, signed=True)
    xs = sparse.to_csr(x)
    w = torch.randn(70, 5, requires_grad=True)
    v = xs.values().clone().requires_grad_(True)
    g = torch.randn(40, 5)
    (sparse.csr_matmul(xs, v, w) * g).sum().backward()
    wd = w.detach().clone().requires_grad_(True)
    xd = x.clone().requires_grad_(True)
    (xd @ wd * g).sum().backward()
    torch.testing.assert_close(w.grad, wd.grad)
    torch.testing.assert_close(v.grad, xd.grad[x != 0])


def test_a_quantizer_without_sparse_support_sees_the_dense_tensor():
    calls = []

    class Plain(Quantizer):
        def forward(self, x, graph=None):
            calls.append(x.layout)
            return x * 2

    x = bag_of_words(20, 30)
    w = torch.randn(30, 4)
    out = Plain(8, "input").matmul(sparse.to_csr(x), lambda: w)
    assert calls == [torch.strided] and torch.allclose(out, 2 * x @ w)


@pytest.mark.parametrize("model,params", [("gcn", {}), ("gat", {}), ("decoupled", {"propagation": "appnp"}),
                                          ("gcnii", {}), ("jknet", {}), ("pairnorm", {}), ("resgcn", {}),
                                          ("sage", {}), ("sgc", {})])
def test_every_model_gives_the_same_logits_for_sparse_features(model, params):
    graph, _, y = tiny_graph(n=60, classes=3)
    g = prepare_graph(graph)
    x = bag_of_words(60, 100)
    out = []
    for inp in (x, sparse.to_csr(x)):
        seed_everything(0)
        m = MODELS.create(model, in_dim=100, num_classes=3, depth=3, quant=QuantFactory(), **params)
        m.train()
        train = m(g, sparse.features_for(m, inp))
        m.eval()
        with torch.no_grad():
            out.append((train.detach(), m(g, sparse.features_for(m, inp))))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-5, atol=1e-6)


# -- the spec key and the real data -------------------------------------------------


def test_sparse_features_is_a_validated_dataset_key_left_out_at_its_default():
    from bench_suite.spec import SpecError

    dense = resolve_spec({"dataset": "cora", "model": "gcn"})
    assert "sparse_features" not in dense.data["dataset"]  # the run ids of existing records stay
    assert resolve_spec({"dataset": "cora", "model": "gcn", "sparse_features": False}).run_id == dense.run_id
    sp = resolve_spec({"dataset": "cora", "model": "gcn", "sparse_features": "true"})
    assert sp.data["dataset"]["sparse_features"] is True and sp.run_id != dense.run_id
    assert resolve_spec({"dataset": "cora", "model": "gcn", "dataset.sparse_features": True}).run_id == sp.run_id
    with pytest.raises(SpecError, match="sparse_features"):
        resolve_spec({"dataset": "cora", "model": "gcn", "sparse_features": 3})
    with pytest.raises(SpecError, match="sparse_features"):
        resolve_spec({"dataset": "cora", "model": "gcn", "sparse_feature": True})


@pytest.fixture(scope="module")
def cora(data_dir):
    from bench_suite.data.datasets import load_dataset

    return (load_dataset("cora", data_dir=data_dir),
            load_dataset("cora", data_dir=data_dir, sparse_features=True))


def test_cora_loads_sparse_with_the_same_values(cora):
    dense, sp = cora
    assert sparse.is_sparse(sp.features) and not sparse.is_sparse(dense.features)
    assert torch.equal(sp.features.to_dense(), dense.features) and sp.num_features == dense.num_features
    assert sp.features.values().numel() < 0.02 * sp.features.numel()


@pytest.mark.parametrize("quant,bits,params", CONFIGS, ids=CONFIG_IDS)
def test_cora_dense_and_sparse_give_the_same_run(cora, quant, bits, params):
    """GCN-2 on Cora.  FP32/QLR: two fully quantized training steps, eval logits and every quantizer's
    state.  Every configuration: the first training step with the first product quantized alone (logits
    and state after the step), and the first product and input range of the fully quantized model.
    (QAT/DQ beyond that: their codes are lattice values whose sums cancel to exactly 0 at ReLU's kink
    and tie at x/s = k + ½, where the last bit of a product decides: as with another BLAS.)"""
    dense, _ = cora
    g = prepare_graph(dense.graph)
    y = dense.labels.clamp(min=0)
    if (quant, bits, params) in NO_TIES:
        d, s = run_both(dense.features, y, g, quant, bits, params, steps=2)
        assert_same_run(d, s)
    d, s = run_both(dense.features, y, g, quant, bits, params, steps=1, factory=FirstProductFactory)
    torch.testing.assert_close(s[0][0], d[0][0], rtol=1e-5, atol=1e-6)
    assert d[2].keys() == s[2].keys()
    for k, v in d[2].items():
        torch.testing.assert_close(s[2][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    d, s = run_both(dense.features, y, g, quant, bits, params, steps=1, hook=True)
    torch.testing.assert_close(s[3][0], d[3][0], rtol=1e-5, atol=1e-7)
    for k, v in d[2].items():
        if k.startswith("layers.0.q.input"):
            assert torch.equal(s[2][k], v), k


def test_a_sparse_run_records_its_key(data_dir):
    from bench_suite.train import run

    spec = resolve_spec({"dataset": "cora", "model": "gcn", "sparse_features": True, "epochs": 2})
    rec = run(spec, data_dir=str(data_dir))
    assert rec["spec"]["dataset"]["sparse_features"] is True and rec["run_id"] == spec.run_id
    dense = run(resolve_spec({"dataset": "cora", "model": "gcn", "epochs": 2}), data_dir=str(data_dir))
    assert rec["metrics"]["val_loss"] == pytest.approx(dense["metrics"]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("K", [1, 7, 64, 130])
def test_sampled_rows_kernel_equals_the_one_entry_loop_bit_for_bit(K):
    """The four-wide kernel behind the CSR product's value gradient keeps every entry's own
    float32 sum order: equal bits to the one-entry loop, and to a plain Python float32 loop, on rows
    of every length 0..21 (the 4- and 1-wide paths and their mixes)."""
    rng = np.random.default_rng(K)
    lengths = np.arange(22)
    crow = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    m = 40
    col = np.concatenate([np.sort(rng.choice(m, n, replace=False)) for n in lengths]).astype(np.int64)
    # magnitudes spread over decades, so a changed summation order shows in the last bits
    G = (rng.standard_normal((lengths.size, K)) * 10.0 ** rng.integers(-3, 3, (lengths.size, K))).astype(np.float32)
    W = (rng.standard_normal((m, K)) * 10.0 ** rng.integers(-3, 3, (m, K))).astype(np.float32)
    out, ref = np.empty(col.size, np.float32), np.empty(col.size, np.float32)
    sparse._sampled_rows_kernel(crow, col, G, W, out)
    sparse._sampled_rows_reference(crow, col, G, W, ref)
    assert np.array_equal(out.view(np.int32), ref.view(np.int32))
    for i in (3, 8, 13, 21):
        for e in range(crow[i], crow[i + 1]):
            acc = np.float32(0.0)
            for k in range(K):
                acc = np.float32(acc + np.float32(G[i, k] * W[col[e], k]))
            assert out[e].view(np.int32) == acc.view(np.int32), (i, e)
    # a reordered sum would differ somewhere on these inputs (the check above can fail)
    if K >= 64:
        pairwise = np.array([np.sum(G[i] * W[col[e]], dtype=np.float32)
                             for i in range(lengths.size) for e in range(crow[i], crow[i + 1])], np.float32)
        assert not np.array_equal(pairwise.view(np.int32), out.view(np.int32))
