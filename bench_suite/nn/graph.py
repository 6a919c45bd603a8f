"""Graph preparation and the quantized normalised aggregation shared by every layer."""
from __future__ import annotations

import dgl
import torch
from torch import Tensor


def prepare_graph(g: dgl.DGLGraph) -> dgl.DGLGraph:
    """Ã = A + I with ``ndata['norm'] = d̃^{-1/2}`` ([N, 1]) and ``ndata['deg'] = d̃``.

    The input graph is symmetric without self-loops (``GraphData.graph``).
    """
    g = dgl.add_self_loop(dgl.remove_self_loop(g))
    deg = g.in_degrees().float().clamp(min=1)
    g.ndata["deg"] = deg.unsqueeze(1)
    g.ndata["norm"] = deg.pow(-0.5).unsqueeze(1)
    return g


def sum_neighbours(g: dgl.DGLGraph, x: Tensor) -> Tensor:
    """Ã·x: the unweighted sum over in-neighbours (self-loop included).

    ``dgl.ops.copy_u_sum`` is the sparse product ``update_all(fn.copy_u, fn.sum)`` runs (the same
    ``gspmm`` kernel and autograd function), without the frame bookkeeping around it (~0.1 ms a call)."""
    return dgl.ops.copy_u_sum(g, x)


#: adjacency normalisations: "sym" Â = D̃^{-1/2} Ã D̃^{-1/2} (GCN), "row" D̃^{-1} Ã (the random walk,
#: as PairNorm's and some of DropEdge's scripts use it)
ADJ_NORMS = ("sym", "row")
#: normalisations of the DropEdge authors' search space (DropEdge/DropEdge src/normalization.py) that
#: add the identity to a normalised adjacency: "first_order" I + D^{-1/2} A D^{-1/2} (``FirstOrderGCN``,
#: D without the self loop; an isolated node's factor is 0), "bingge" I + D̃^{-1/2} Ã D̃^{-1/2}
#: (``BingGeNormAdj``).  Quantized, the normalised aggregation is quantized as for "sym" and the
#: identity term (the layer's own quantized feature) is added to it in float.
IDENTITY_ADJ_NORMS = ("first_order", "bingge")


def check_adj_norm(norm: str, where: str, identity: bool = False) -> str:
    """``norm`` if valid for ``where``: :data:`ADJ_NORMS`, and the :data:`IDENTITY_ADJ_NORMS` where
    ``identity`` (a GCN layer's)."""
    valid = ADJ_NORMS + (IDENTITY_ADJ_NORMS if identity else ())
    if norm not in valid:
        raise ValueError(f"{where} norm={norm!r} is not valid; valid: {', '.join(map(repr, valid))}")
    return norm


def normalized_aggregate(g: dgl.DGLGraph, x: Tensor, q_message=None, q_aggregate=None, norm: str = "sym") -> Tensor:
    """Â·x = D̃^{-1/2} · Ã · (D̃^{-1/2} x) (``norm="row"``: D̃^{-1} · Ã · x), quantized as in
    METHOD.md §2/§9.

    ``message`` quantizes the source-scaled feature (D̃^{-1/2}x, or x for ``row``), so the
    neighbour sum of its codes is exact in integers; ``aggregate`` quantizes the normalised
    result (after the destination's factor), whose range does not grow with the degree.
    The :data:`IDENTITY_ADJ_NORMS` return ``x`` plus their normalised aggregation, quantized the same
    way (``first_order``: the neighbour sum leaves the node's own message out).
    """
    if norm == "bingge":
        return x + normalized_aggregate(g, x, q_message, q_aggregate, "sym")
    if norm == "first_order":
        deg = g.ndata["deg"] - 1.0  # without the self loop prepare_graph added
        f = torch.where(deg > 0, deg.clamp(min=1.0).rsqrt(), torch.zeros_like(deg))
        m = x * f
        if q_message is not None:
            m = q_message(m, g)
        a = (sum_neighbours(g, m) - m) * f
        if q_aggregate is not None:
            a = q_aggregate(a, g)
        return x + a
    if norm == "sym":
        src = dst = g.ndata["norm"]
    else:
        src, dst = None, 1.0 / g.ndata["deg"]
    m = x if src is None else x * src
    if q_message is not None:
        m = q_message(m, g)
    a = sum_neighbours(g, m) * dst
    if q_aggregate is not None:
        a = q_aggregate(a, g)
    return a


def laplacian_apply(g: dgl.DGLGraph, x: Tensor) -> Tensor:
    """L̃·x = x − Â·x (unquantized)."""
    return x - normalized_aggregate(g, x)


def dirichlet_energy(g: dgl.DGLGraph, x: Tensor) -> float:
    """tr(Xᵀ L̃ X) / n on a prepared graph (METHOD.md §10)."""
    x = x.detach().double()
    return float((x * laplacian_apply(g, x)).sum() / x.shape[0])


def rayleigh_quotient(g: dgl.DGLGraph, x: Tensor) -> float:
    """tr(Xᵀ L̃ X) / tr(XᵀX): the Dirichlet energy with the scale of X divided out."""
    x = x.detach().double()
    denom = float((x * x).sum())
    return float((x * laplacian_apply(g, x)).sum()) / denom if denom > 0 else 0.0


def mean_average_distance(g: dgl.DGLGraph, x: Tensor) -> float:
    """MAD: mean over nodes of the mean cosine distance to their neighbours (self excluded)."""
    x = x.detach().double()
    src, dst = g.edges()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if src.numel() == 0:
        return 0.0
    xn = torch.nn.functional.normalize(x, dim=1)
    dist = 1.0 - (xn[src] * xn[dst]).sum(1)
    n = x.shape[0]
    tot = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, dist)
    cnt = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, torch.ones_like(dist))
    has = cnt > 0
    return float((tot[has] / cnt[has]).mean())


def layer_metrics(g: dgl.DGLGraph, hidden: list) -> list:
    """Per-layer oversmoothing metrics of a list of node representations."""
    return [
        {"layer": i, "dirichlet": dirichlet_energy(g, h), "dirichlet_normalized": rayleigh_quotient(g, h),
         "mad": mean_average_distance(g, h)}
        for i, h in enumerate(hidden)
    ]

