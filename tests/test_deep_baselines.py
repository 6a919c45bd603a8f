"""Deep-GNN baselines (baselines/*.py, METHOD.md §8) against their published rules in dense numpy."""
from __future__ import annotations

import math

import dgl
import numpy as np
import pytest
import torch

from baselines.dagnn import DAGNNPropagation
from baselines.dropedge import DropEdge
from baselines.elastic import ElasticPropagation
from baselines.gcnii import QGCNIIConv, gcnii_beta
from baselines.pairnorm import pair_norm
from bench_suite import testing
from bench_suite.nn.graph import prepare_graph
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS, TRANSFORMS, load_all
from bench_suite.spec import SpecError, resolve_spec

load_all()
TOL = dict(rtol=1e-5, atol=1e-5)  # prepare_graph keeps d̃^{-1/2} in float32
RNG = np.random.default_rng(0)


def small_graph() -> dgl.DGLGraph:
    """A 4-node graph: triangle 0-1-2 plus pendant 3 on 2 (symmetric, no self loops)."""
    und = [(0, 1), (1, 2), (0, 2), (2, 3)]
    src = [u for u, v in und] + [v for u, v in und]
    dst = [v for u, v in und] + [u for u, v in und]
    return dgl.graph((torch.tensor(src), torch.tensor(dst)), num_nodes=4)


def dense(graph: dgl.DGLGraph):
    """A, Â and the normalised incidence matrix Δ̃ (one row per undirected edge u > v)."""
    n = graph.num_nodes()
    a = np.zeros((n, n))
    src, dst = graph.edges()
    a[dst.numpy(), src.numpy()] = 1.0
    d = a.sum(1) + 1
    a_hat = (a + np.eye(n)) / np.sqrt(np.outer(d, d))
    pairs = [(u, v) for u in range(n) for v in range(n) if u > v and a[u, v]]
    inc = np.zeros((len(pairs), n))
    for e, (u, v) in enumerate(pairs):
        inc[e, u], inc[e, v] = 1 / np.sqrt(d[u]), -1 / np.sqrt(d[v])
    return a, a_hat, inc


def t64(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def test_gcnii_layer_matches_published_rule():
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    h, h0 = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    alpha, lam, l = 0.1, 0.5, 3
    beta = math.log(lam / l + 1)
    assert gcnii_beta(lam, l) == pytest.approx(beta)
    conv = QGCNIIConv(3, QuantFactory(), layer=l - 1, alpha=alpha, beta=beta).double()
    w = conv.weight.detach().numpy()
    s = (1 - alpha) * a_hat @ h + alpha * h0
    expected = s @ ((1 - beta) * np.eye(3) + beta * w)
    np.testing.assert_allclose(conv(g, t64(h), t64(h0)).detach().numpy(), expected, **TOL)


def test_gcnii_star_matches_the_authors_variant():
    """GCNII* (chennnM/GCNII model.py, variant=True): θ·[ÂH ‖ H0]·W + (1−θ)·((1−α)ÂH + αH0), W 2d × d."""
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    h, h0 = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    alpha, beta = 0.2, gcnii_beta(1.5, 2)
    conv = QGCNIIConv(3, QuantFactory(), layer=1, alpha=alpha, beta=beta, star=True).double()
    w = conv.weight.detach().numpy()
    assert w.shape == (6, 3)
    hi = a_hat @ h
    expected = beta * np.concatenate([hi, h0], 1) @ w + (1 - beta) * ((1 - alpha) * hi + alpha * h0)
    np.testing.assert_allclose(conv(g, t64(h), t64(h0)).detach().numpy(), expected, **TOL)
    plain = QGCNIIConv(3, QuantFactory(), layer=1, alpha=alpha, beta=beta).double()
    assert plain.weight.shape == (3, 3)
    spec = resolve_spec({"dataset": "cornell", "model": "gcnii", "depth": 2, "star": True})
    assert spec.data["model"]["star"] is True
    assert "star" not in resolve_spec({"dataset": "cornell", "model": "gcnii", "depth": 2}).data["model"]


def test_gcnii_model_uses_beta_per_layer():
    model = MODELS.create("gcnii", in_dim=5, num_classes=3, depth=4, quant=QuantFactory(), lamda=0.5)
    assert [layer.beta for layer in model.layers] == pytest.approx([math.log(0.5 / l + 1) for l in range(1, 5)])


@pytest.mark.parametrize("mode", ["PN", "PN-SI", "PN-SCS"])
def test_pairnorm_matches_published_rule(mode):
    x = RNG.normal(size=(6, 4)) * 3 + 1
    s = 1.7
    mean = x.mean(0)
    if mode == "PN":
        xc = x - mean
        expected = s * xc / np.sqrt(1e-6 + (xc ** 2).sum(1).mean())
    elif mode == "PN-SI":
        xc = x - mean
        expected = s * xc / np.sqrt(1e-6 + (xc ** 2).sum(1, keepdims=True))
    else:
        expected = s * x / np.sqrt(1e-6 + (x ** 2).sum(1, keepdims=True)) - mean
    np.testing.assert_allclose(pair_norm(t64(x), mode, s).numpy(), expected, rtol=1e-12)
    if mode == "PN":  # PN keeps the total squared row norm at n·s²
        assert (expected ** 2).sum(1).mean() == pytest.approx(s * s, rel=1e-5)


def test_dagnn_retention_matches_published_rule():
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    z = RNG.normal(size=(4, 3))
    prop = DAGNNPropagation(3, QuantFactory()).double()
    out, hidden = prop(g, t64(z))
    p = prop.proj.weight.detach().numpy().reshape(-1)
    b = float(prop.proj.bias.detach())
    hops = [z]
    for _ in range(3):
        hops.append(a_hat @ hops[-1])
    scores = [1 / (1 + np.exp(-(hk @ p + b))) for hk in hops]  # s_ℓ = σ(H_ℓ p)
    expected = sum(sc[:, None] * hk for sc, hk in zip(scores, hops))
    np.testing.assert_allclose(out.detach().numpy(), expected, **TOL)
    assert len(hidden) == 3
    np.testing.assert_allclose(hidden[2].detach().numpy(), hops[3], **TOL)


@pytest.mark.parametrize("mode", ["l1", "l21"])
def test_elastic_one_step_matches_published_rule(mode):
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, inc = dense(graph)
    lap = np.eye(4) - a_hat
    np.testing.assert_allclose(inc.T @ inc, lap, atol=1e-12)  # Δ̃ᵀΔ̃ = L̃
    h = RNG.normal(size=(4, 3)) * 4
    lam1, lam2, gamma = 0.3, 2.0, 0.25
    beta = 1 / (2 * gamma)

    def project(z):
        if mode == "l1":
            return np.clip(z, -lam1, lam1)
        nrm = np.linalg.norm(z, axis=1, keepdims=True)
        return np.where(nrm > lam1, z * lam1 / np.maximum(nrm, 1e-30), z)

    f, z = h.copy(), np.zeros((inc.shape[0], 3))
    for _ in range(2):
        y = f - gamma * (f - h + lam2 * lap @ f)
        f_bar = y - gamma * inc.T @ z
        z = project(z + beta * inc @ f_bar)
        f = y - gamma * inc.T @ z
    prop = ElasticPropagation(2, QuantFactory(), lambda1=lam1, lambda2=lam2, gamma=gamma, mode=mode)
    out, hidden = prop(g, t64(h))
    np.testing.assert_allclose(out.numpy(), f, **TOL)
    # the dual step is active (not collapsed into APPNP): without λ1 the result differs
    plain = ElasticPropagation(2, QuantFactory(), lambda1=0.0, lambda2=lam2, gamma=gamma)(g, t64(h))[0]
    assert (plain - out).abs().max() > 1e-2
    # and l1 vs l21 projections differ on this input
    other = ElasticPropagation(2, QuantFactory(), lambda1=lam1, lambda2=lam2, gamma=gamma,
                               mode="l21" if mode == "l1" else "l1")(g, t64(h))[0]
    assert (other - out).abs().max() > 1e-3


def test_elastic_default_gamma_without_lambda1_is_appnp():
    from bench_suite.nn.propagations import APPNPPropagation

    graph, x, _ = testing.tiny_graph()
    g = prepare_graph(graph)
    out = ElasticPropagation(5, QuantFactory(), lambda1=0.0, lambda2=3.0)(g, x)[0]
    ref = APPNPPropagation(5, QuantFactory(), alpha=0.25)(g, x)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_sgc_matches_published_rule_and_caches_in_fp32():
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    x = t64(RNG.normal(size=(4, 5)))
    model = MODELS.create("sgc", in_dim=5, num_classes=2, depth=3, quant=QuantFactory()).double()
    w, b = model.lin.weight.detach().numpy(), model.lin.bias.detach().numpy()
    expected = np.linalg.matrix_power(a_hat, 3) @ x.numpy() @ w + b
    with torch.no_grad():
        out, hidden = model(g, x, return_hidden=True)
    np.testing.assert_allclose(out.numpy(), expected, **TOL)
    np.testing.assert_allclose(hidden[0].numpy(), a_hat @ x.numpy() @ w, **TOL)
    first = model(g, x)
    assert model._cache is not None and model._cache[0] is g
    first.sum().backward()  # the linear layer trains through the cached features
    assert model.lin.weight.grad.abs().sum() > 0
    np.testing.assert_allclose(model(g, x).detach().numpy(), expected, **TOL)


@pytest.mark.parametrize("block", [0, 2])
def test_resgcn_matches_the_dropedge_residual_rule(block):
    """Input layer, hidden layers in residual blocks (one block when block=0), output layer."""
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    x = t64(RNG.normal(size=(4, 5)))
    model = MODELS.create("resgcn", in_dim=5, num_classes=2, depth=6, quant=QuantFactory(), hidden=4,
                          block=block).double().eval()
    ws = [(l.weight.detach().numpy(), l.bias.detach().numpy()) for l in model.layers]
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    layer = lambda h, k: relu(a_hat @ h @ ws[k][0] + ws[k][1])  # noqa: E731
    h = layer(x.numpy(), 0)
    blocks = [[1, 2, 3, 4]] if block == 0 else [[1, 2], [3, 4]]
    for b in blocks:
        h_in = h
        for k in b:
            h = layer(h, k)
        h = h + h_in  # one skip per block, after the block's last ReLU
    out = a_hat @ h @ ws[5][0] + ws[5][1]
    with torch.no_grad():
        np.testing.assert_allclose(model(g, x).numpy(), out, **TOL)


@pytest.mark.parametrize("model", ["gcn", "resgcn"])
def test_logits_at_initialisation_stay_order_one_at_depth_64(model):
    """A deep GCN or ResGCN must not diverge at initialisation (a residual after every ReLU layer
    gave logits with std ~1e8 at depth 64)."""
    torch.manual_seed(0)
    graph = dgl.rand_graph(200, 1200)
    graph = dgl.to_bidirected(dgl.remove_self_loop(graph))
    g = prepare_graph(graph)
    x = torch.rand(200, 50)
    x = x / x.sum(1, keepdim=True)  # row-normalised features, as the Planetoid loaders give them
    m = MODELS.create(model, in_dim=50, num_classes=7, depth=64, quant=QuantFactory(), hidden=64).eval()
    with torch.no_grad():
        logits = m(g, x)
    assert torch.isfinite(logits).all()
    assert float(logits.std()) < 10.0, float(logits.std())


@pytest.mark.parametrize("mode", ["concat", "max"])
def test_jknet_matches_jumping_knowledge_rule(mode):
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    x = t64(RNG.normal(size=(4, 5)))
    model = MODELS.create("jknet", in_dim=5, num_classes=2, depth=2, quant=QuantFactory(), hidden=3,
                          mode=mode).double().eval()
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    hs, h = [], x.numpy()
    for layer in model.layers:
        h = relu(a_hat @ h @ layer.weight.detach().numpy() + layer.bias.detach().numpy())
        hs.append(h)
    z = np.concatenate(hs, 1) if mode == "concat" else np.maximum(hs[0], hs[1])
    expected = z @ model.out.weight.detach().numpy() + model.out.bias.detach().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(model(g, x).numpy(), expected, **TOL)


@pytest.mark.parametrize("mode", ["concat", "max"])
def test_jknet_dropedge_variant_is_the_authors_densegcn(mode):
    """variant=dropedge (DropEdge src/models.py, --type densegcn): depth counts graph convolutions,
    the depth - 1 states after ReLU are concatenated (or max-pooled) and a GCN layer maps them to
    the classes; weights and biases U(+-1/sqrt(out))."""
    graph = small_graph()
    g = prepare_graph(graph)
    _, a_hat, _ = dense(graph)
    x = t64(RNG.normal(size=(4, 5)))
    model = MODELS.create("jknet", in_dim=5, num_classes=2, depth=4, quant=QuantFactory(), hidden=3,
                          mode=mode, variant="dropedge").double().eval()
    assert len(model.layers) == 3 and model.out.weight.shape == ((9 if mode == "concat" else 3), 2)
    for layer in list(model.layers) + [model.out]:
        bound = 1 / math.sqrt(layer.weight.shape[1])
        assert float(layer.weight.abs().max()) <= bound and float(layer.bias.abs().max()) <= bound
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    hs, h = [], x.numpy()
    for layer in model.layers:
        h = relu(a_hat @ h @ layer.weight.detach().numpy() + layer.bias.detach().numpy())
        hs.append(h)
    z = np.concatenate(hs, 1) if mode == "concat" else np.max(hs, 0)
    expected = a_hat @ z @ model.out.weight.detach().numpy() + model.out.bias.detach().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(model(g, x).numpy(), expected, **TOL)


@pytest.mark.parametrize("variant,raw", [("dropedge", True), ("xu", False)])
def test_jknet_dropedge_variant_does_not_drop_the_raw_features(variant, raw):
    """The DropEdge authors drop hidden states only; Xu et al.'s JKNet as built here also drops the input."""
    graph = small_graph()
    g = prepare_graph(graph)
    x = torch.rand(4, 50) + 0.5
    torch.manual_seed(0)
    model = MODELS.create("jknet", in_dim=50, num_classes=2, depth=3, quant=QuantFactory(), hidden=3,
                          dropout=0.5, variant=variant).train()
    seen = []
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.append(args[1]))
    model(g, x)
    assert torch.equal(seen[0], x) is raw


def test_jknet_variant_and_self_weight_in_the_spec():
    """The default variant leaves every existing JKNet run id unchanged (no new spec key); a bad
    variant and self_weight with a quantizer are refused before anything runs."""
    spec = resolve_spec({"dataset": "csbm", "model": "jknet"})
    assert "variant" not in spec.data["model"] and "self_weight" not in spec.data["model"]
    assert resolve_spec({"dataset": "csbm", "model": "jknet", "variant": "dropedge"}).data["model"]["variant"] == "dropedge"
    with pytest.raises(SpecError, match="variant='kipf'"):
        resolve_spec({"dataset": "csbm", "model": "jknet", "variant": "kipf"})
    from bench_suite.spec import validate_spec
    with pytest.raises(ValueError, match="self_weight=True is full precision only"):
        validate_spec(resolve_spec({"dataset": "csbm", "model": "jknet", "self_weight": True, "quant": "qlr",
                                    "bits": 4}))


def test_dropedge_as_the_authors_sample_keeps_a_fraction_of_directed_entries():
    """randomedge_sampler keeps int(nnz * (1 - p)) entries of the symmetric adjacency, each direction
    on its own: some edges keep one direction only."""
    graph, _, _ = testing.tiny_graph(n=200)
    torch.manual_seed(0)
    out = DropEdge(p=0.4)(graph)
    pairs = set(zip(*(e.tolist() for e in out.edges())))
    assert out.num_edges() == int(graph.num_edges() * 0.6) and len(pairs) == out.num_edges()
    assert pairs <= set(zip(*(e.tolist() for e in graph.edges())))
    assert any((v, u) not in pairs for u, v in pairs)  # not symmetric


def test_symmetric_dropedge_drops_about_p_and_keeps_symmetry():
    graph, _, _ = testing.tiny_graph(n=200)
    und = graph.num_edges() // 2
    torch.manual_seed(0)
    t = DropEdge(p=0.4, symmetric=True)
    out = t(graph)
    src, dst = out.edges()
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((v, u) in pairs for u, v in pairs) and all(u != v for u, v in pairs)
    assert out.num_nodes() == graph.num_nodes()
    assert out.num_edges() // 2 == und - round(0.4 * und)
    original = set(zip(*(e.tolist() for e in graph.edges())))
    assert pairs <= original
    assert set(zip(*(e.tolist() for e in t(graph).edges()))) != pairs  # a fresh draw each call
    with pytest.raises(ValueError, match="p=1.5"):
        DropEdge(p=1.5)


def test_dropedge_is_applied_to_training_epochs_only():
    from bench_suite.train import run

    seen = []
    orig = DropEdge.__call__

    def spy(self, graph):
        out = orig(self, graph)
        seen.append(out.num_edges())
        return out

    DropEdge.__call__ = spy
    try:
        spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "gcn", "depth": 2, "epochs": 3,
                             "transform": "dropedge", "p": 0.5, "patience": 10})
        rec = run(spec)
    finally:
        DropEdge.__call__ = orig
    assert len(seen) == 3 and rec["metrics"]["epochs_run"] == 3
    full = rec["data"]["edges"]  # directed edge count of the symmetric graph
    assert all(e == int(full * 0.5) for e in seen)  # the authors' sampler: int(nnz * (1 - p)) entries kept
    assert TRANSFORMS.get("dropedge") is DropEdge


def test_bad_mode_values_fail_in_the_spec():
    for flat, word in ((dict(model="jknet", mode="sum"), "mode='sum'"),
                       (dict(model="pairnorm", mode="BN"), "mode='BN'"),
                       (dict(model="decoupled", propagation="elastic", mode="l2"), "mode='l2'")):
        with pytest.raises(SpecError, match=word):
            resolve_spec({"dataset": "csbm", **flat})


QUANT = "qlr"
MODEL_KEYS = ["resgcn", "jknet", "pairnorm", "gcnii", "sgc"]
PROP_KEYS = ["smp", "dagnn", "elastic", "appnp"]


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_models_run_at_depths_1_2_16(key):
    testing.check_model(key, depths=(1, 2, 16), quant=QUANT)


@pytest.mark.parametrize("key", PROP_KEYS)
def test_propagations_run_at_depths_1_2_16(key):
    testing.check_propagation(key, depths=(1, 2, 16), quant=QUANT)


def test_dagnn_trains_its_lazily_sized_projection():
    """The retention projection is sized at the first forward, after the optimizer was built."""
    import torch.nn.functional as F

    from bench_suite.data.datasets import load_dataset
    from bench_suite.train import build_model, optimizer_for

    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "decoupled", "propagation": "dagnn",
                         "depth": 3, "dropout": 0.0})
    data = load_dataset("csbm", seed=0, nodes=300)
    g = prepare_graph(data.graph)
    torch.manual_seed(0)
    model = build_model(spec, data)
    opt = optimizer_for(model, spec.train)  # as train.fit does: before any forward pass
    snapshots = []
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(g, data.features)[data.train_mask], data.labels[data.train_mask]).backward()
        opt.step()
        snapshots.append(model.prop.proj.weight.detach().clone())
    assert snapshots[0].shape == (1, data.num_classes)
    assert not torch.equal(snapshots[0], snapshots[1]) and not torch.equal(snapshots[1], snapshots[2])


def test_citeseer_jknet_takes_the_authors_withloop_at_full_precision_only():
    """citeseer_JKNet_nodrop.sh's --withloop is full precision only: the defaults give it to a spec naming
    no quantizer (or fp32) and leave it out of a quantized one, which then expands without an error."""
    from bench_suite.defaults import apply_defaults
    from bench_suite.spec import resolve_spec

    for flat in ({"dataset": "citeseer", "model": "jknet", "depth": 16},
                 {"dataset": "citeseer", "model": "jknet", "depth": 16, "quant": "fp32"}):
        assert apply_defaults(flat)["self_weight"] is True
    q = apply_defaults({"dataset": "citeseer", "model": "jknet", "depth": 16, "quant": "qlr", "bits": 4})
    assert "self_weight" not in q and q["variant"] == "dropedge"
    resolve_spec(q)  # a quantized JKNet with self_weight would be refused here
    assert "self_weight" not in apply_defaults({"dataset": "cora", "model": "jknet", "depth": 16})
