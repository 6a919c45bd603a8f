"""What each quantizer role of the message-passing layers sees (METHOD.md §2)."""
from __future__ import annotations

import dgl
import torch

from bench_suite.nn.graph import prepare_graph
from bench_suite.nn.layers import QGraphConv, QSAGEConv
from bench_suite.quant.base import QuantFactory


def _graph() -> dgl.DGLGraph:
    # a star (hub 0 with four leaves) and a pendant edge 4-5: degrees 1..4 in one graph
    src = torch.tensor([0, 0, 0, 0, 4])
    dst = torch.tensor([1, 2, 3, 4, 5])
    return prepare_graph(dgl.to_bidirected(dgl.graph((src, dst), num_nodes=6)))


def _dense_adjacency(g: dgl.DGLGraph) -> torch.Tensor:
    """Ã (self-loops included) as a dense matrix, rows = destinations."""
    a = torch.zeros(g.num_nodes(), g.num_nodes(), dtype=torch.float64)
    s, d = g.edges()
    a[d, s] = 1.0
    return a


def _record(layer, role: str) -> list:
    seen = []
    layer.q[role].register_forward_hook(lambda m, args, out: seen.append(args[0].detach().double()))
    return seen


def test_gcn_aggregate_role_sees_the_normalised_aggregation() -> None:
    g = _graph()
    torch.manual_seed(0)
    layer = QGraphConv(3, 2, QuantFactory(), bias=False)
    x = torch.randn(6, 3)
    seen, msg = _record(layer, "aggregate"), _record(layer, "message")
    layer(g, x)
    a = _dense_adjacency(g)
    d = a.sum(1)
    a_hat = a / d.sqrt()[:, None] / d.sqrt()[None, :]
    h = (x @ layer.weight).detach().double()
    torch.testing.assert_close(seen[0], a_hat @ h)  # Âx, after both D̃^{-1/2} factors
    torch.testing.assert_close(msg[0], h / d.sqrt()[:, None])  # the source-scaled feature
    # not the raw neighbour sum Ã·(D̃^{-1/2}x), whose range grows with the hub's degree
    assert not torch.allclose(seen[0], a @ (h / d.sqrt()[:, None]))


def test_sage_aggregate_role_sees_the_neighbour_mean() -> None:
    g = _graph()
    torch.manual_seed(0)
    layer = QSAGEConv(3, 2, QuantFactory())
    x = torch.randn(6, 3)
    seen = _record(layer, "aggregate")
    layer(g, x)
    a = _dense_adjacency(g) - torch.eye(6, dtype=torch.float64)  # neighbours without self
    mean = (a @ x.double()) / a.sum(1, keepdim=True)
    torch.testing.assert_close(seen[0], mean)
    assert not torch.allclose(seen[0], a @ x.double())
