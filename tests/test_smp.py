"""SMP propagation (bench_suite/smp.py, METHOD.md §7) against hand-computed updates."""
from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch

from bench_suite.nn.graph import prepare_graph
from bench_suite.nn.propagations import APPNPPropagation
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import PROPAGATIONS, load_all
from bench_suite.smp import SMPPropagation, undirected_edge_count
from bench_suite.spec import SpecError, resolve_spec
from bench_suite.testing import tiny_graph

load_all()


def path_graph3() -> dgl.DGLGraph:
    """0 — 1 — 2, symmetric, no self loops."""
    return dgl.graph((torch.tensor([0, 1, 1, 2]), torch.tensor([1, 0, 2, 1])), num_nodes=3)


def dense_a_hat(graph: dgl.DGLGraph) -> np.ndarray:
    n = graph.num_nodes()
    a = np.zeros((n, n))
    src, dst = graph.edges()
    a[dst.numpy(), src.numpy()] = 1.0
    a_t = a + np.eye(n)
    d = a_t.sum(1)
    return a_t / np.sqrt(np.outer(d, d))


def smp_step_numpy(a_hat, x, h, lam, s, form, mu=9.0, eta=0.1, eta_s=1e-5, eta_lambda=1e-5, c=0.01, edges=2):
    lap = np.eye(len(x)) - a_hat
    xt = (1 - eta * (1 + mu)) * x + eta * mu * a_hat @ x + eta * h
    delta = xt - x
    prod = lap @ delta if form == "exact" else a_hat @ delta
    x_new = xt + 2 * eta * lam * prod
    t = float(np.trace(delta.T @ lap @ delta))
    lam_new = lam + eta_lambda * (c * edges - s * s - t)
    s_new = s + 2 * eta_s * lam * s
    return x_new, lam_new, s_new, t


@pytest.mark.parametrize("form", ["exact", "released"])
def test_one_layer_matches_hand_computed_update(form):
    graph = path_graph3()
    g = prepare_graph(graph)
    h = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=torch.float64)
    lam0, s0, c = 0.7, 0.3, 0.5  # large λ so the multiplier term is visible
    prop = SMPPropagation(1, QuantFactory(), form=form, c=c, lambda0=lam0, s0=s0, eta_lambda=0.01, eta_s=0.02).eval()
    out, hidden = prop(g, h)
    x_np, lam_np, _, t_np = smp_step_numpy(dense_a_hat(graph), h.numpy(), h.numpy(), lam0, s0, form,
                                           eta_lambda=0.01, eta_s=0.02, c=c, edges=2)
    # prepare_graph stores d̃^{-1/2} in float32, hence 1e-6 and not 1e-12
    np.testing.assert_allclose(out.numpy(), x_np, rtol=1e-6, atol=1e-6)
    other = smp_step_numpy(dense_a_hat(graph), h.numpy(), h.numpy(), lam0, s0,
                           "released" if form == "exact" else "exact", c=c, edges=2)[0]
    assert np.abs(other - x_np).max() > 1e-2  # the two forms are distinguishable here
    assert len(hidden) == 1 and torch.equal(hidden[0], out)
    extra = prop.extra_metrics()
    assert extra["smp_budget"] == pytest.approx(c * 2)
    assert extra["smp_T"][0] == pytest.approx(t_np, rel=1e-6)
    assert extra["smp_lambda"][0] == pytest.approx(lam_np, rel=1e-6)


def test_two_layers_chain_lambda_and_slack():
    """The second layer uses λ and s updated by the first (s with the pre-step λ)."""
    graph = path_graph3()
    g = prepare_graph(graph)
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    kw = dict(c=0.2, lambda0=0.5, s0=2.0, eta_lambda=0.1, eta_s=0.1)
    out, _ = SMPPropagation(2, QuantFactory(), **kw).eval()(g, h)
    a_hat, x, lam, s = dense_a_hat(graph), h.numpy(), 0.5, 2.0
    for _ in range(2):
        x, lam, s, _ = smp_step_numpy(a_hat, x, h.numpy(), lam, s, "exact", eta_lambda=0.1, eta_s=0.1, c=0.2)
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-6, atol=1e-6)


def test_multiplier_held_at_zero_equals_appnp():
    graph, x, _ = tiny_graph(n=60, features=5)
    g = prepare_graph(graph)
    smp = SMPPropagation(10, QuantFactory(), lambda0=0.0, s0=0.0, eta_lambda=0.0, mu=9.0, eta=0.1).eval()
    appnp = APPNPPropagation(10, QuantFactory(), alpha=0.1).eval()
    out_s, hid_s = smp(g, x)
    out_a, hid_a = appnp(g, x)
    torch.testing.assert_close(out_s, out_a, rtol=1e-6, atol=1e-6)
    for a, b in zip(hid_s, hid_a):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # and not vacuously: a non-zero multiplier changes the result
    moved, _ = SMPPropagation(10, QuantFactory(), lambda0=5.0).eval()(g, x)
    assert (moved - out_a).abs().max() > 1e-3


def test_multiplier_rises_below_budget_and_falls_above():
    graph, x, _ = tiny_graph(n=60, features=5)
    g = prepare_graph(graph)
    edges = undirected_edge_count(g)
    assert edges == graph.num_edges() // 2
    lam0 = 0.01
    below = SMPPropagation(3, QuantFactory(), c=1e3, lambda0=lam0, eta_lambda=1e-3).eval()
    below(g, x)
    e = below.extra_metrics()
    assert all(t < e["smp_budget"] for t in e["smp_T"])
    assert e["smp_lambda"][0] > lam0 and e["smp_lambda"][2] > e["smp_lambda"][1] > e["smp_lambda"][0]
    above = SMPPropagation(3, QuantFactory(), c=0.0, lambda0=lam0, eta_lambda=1e-3).eval()
    above(g, x)
    e = above.extra_metrics()
    assert all(t > 0 for t in e["smp_T"])
    assert e["smp_lambda"][0] < lam0 and e["smp_lambda"][2] < e["smp_lambda"][1] < e["smp_lambda"][0]


def test_multiplier_restarts_every_forward_and_records_eval_only():
    graph, x, _ = tiny_graph()
    g = prepare_graph(graph)
    prop = SMPPropagation(4, QuantFactory(), c=1.0)
    prop.train()
    prop(g, x)
    assert prop.extra_metrics() == {}
    prop.eval()
    out1, _ = prop(g, x)
    first = prop.extra_metrics()
    out2, _ = prop(g, x)
    assert torch.equal(out1, out2) and prop.extra_metrics() == first
    assert len(first["smp_lambda"]) == len(first["smp_T"]) == 4


def test_form_is_validated_with_a_helpful_message():
    with pytest.raises(ValueError, match="form='exactly'.*'exact', 'released'"):
        SMPPropagation(2, QuantFactory(), form="exactly")
    with pytest.raises(SpecError, match="form"):
        resolve_spec({"dataset": "csbm", "model": "decoupled", "propagation": "smp", "form": "nope"})


def test_quantized_smp_routes_delta_product_through_its_own_quantizers():
    graph, x, _ = tiny_graph()
    g = prepare_graph(graph)
    torch.manual_seed(0)
    prop = PROPAGATIONS.create("smp", depth=3, quant=QuantFactory("qlr", 4))
    calls = []
    for k in range(3):
        for role in ("message", "aggregate"):
            prop.q_delta[k][role].register_forward_hook(lambda m, i, o, k=k, r=role: calls.append((k, r)))
    h = x.clone().requires_grad_(True)
    out, hidden = prop(g, h)
    assert sorted(calls) == sorted((k, r) for k in range(3) for r in ("message", "aggregate"))
    out.square().sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    prop.eval()
    with torch.no_grad():
        out_q, _ = prop(g, x)
    fp, _ = SMPPropagation(3, QuantFactory()).eval()(g, x)
    assert not torch.allclose(out_q, fp)  # quantization actually acts
    assert torch.isfinite(torch.tensor(prop.extra_metrics()["smp_T"])).all()


def test_training_run_records_multipliers():
    from bench_suite.train import run

    spec = resolve_spec({"dataset": "csbm", "dataset.nodes": 300, "model": "decoupled", "propagation": "smp",
                         "depth": 4, "epochs": 3, "c": 0.05})
    rec = run(spec)
    extra = rec["extra"]
    assert len(extra["smp_lambda"]) == 4 and len(extra["smp_T"]) == 4
    assert extra["smp_budget"] > 0 and len(rec["layers"]) == 4


def test_lambda_min_projects_the_multiplier():
    """Far above the budget λ turns negative; lambda_min=0 keeps it at or above 0."""
    graph, _, _ = tiny_graph()
    g = prepare_graph(graph)
    h = torch.randn(graph.num_nodes(), 4) * 50  # large ‖H‖: T(Δ) of the first layers ≫ c·|E|
    free = SMPPropagation(8, QuantFactory(), c=1e-4, eta_lambda=1e-3).eval()
    proj = SMPPropagation(8, QuantFactory(), c=1e-4, eta_lambda=1e-3, lambda_min=0.0).eval()
    free(g, h)
    proj(g, h)
    assert min(free.extra_metrics()["smp_lambda"]) < 0
    assert min(proj.extra_metrics()["smp_lambda"]) >= 0
