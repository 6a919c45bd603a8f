"""DropEdge (Rong et al., ICLR 2020) as a graph transform usable with any backbone."""
from __future__ import annotations

import dgl
import torch

from bench_suite.registry import TRANSFORMS


@TRANSFORMS.register("dropedge")
class DropEdge:
    r"""DropEdge (Rong et al., "DropEdge: Towards Deep Graph Convolutional Networks on Node
    Classification", ICLR 2020).

    Every training epoch a fraction ``p`` of the edges of A, drawn uniformly without
    replacement, is removed: :math:`A_{drop} = A - A'`.  As the authors' code does it
    (DropEdge/DropEdge ``src/sample.py`` ``randomedge_sampler``: ``int(nnz · percent)`` of the
    adjacency's non-zeros kept), each direction of an edge is an entry of its own, so the
    sampled graph is in general not symmetric (``symmetric=False``); ``symmetric=True`` drops
    ``round(p·|E|)`` undirected edges, both directions together.  The backbone renormalises
    Ã = A_drop + I itself.  Evaluation uses the full graph (``bench_suite.train`` applies
    transforms to training epochs only).  Draws use torch's global RNG, which the run seeds.
    """

    def __init__(self, p: float = 0.3, symmetric: bool = False):
        self.validate_params(p=p, symmetric=symmetric)
        self.p, self.symmetric = float(p), bool(symmetric)

    @staticmethod
    def validate_params(p: float = 0.3, symmetric: bool = False) -> None:
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"dropedge p={p!r} is not valid; use a drop rate in [0, 1)")
        if not isinstance(symmetric, bool):
            raise ValueError(f"dropedge symmetric={symmetric!r} is not valid; use true or false")

    def __call__(self, graph: dgl.DGLGraph) -> dgl.DGLGraph:
        src, dst = graph.edges()
        if not self.symmetric:
            keep = src != dst
            u, v = src[keep], dst[keep]
            kept = torch.randperm(u.numel())[: int(u.numel() * (1.0 - self.p))]
            return dgl.graph((u[kept], v[kept]), num_nodes=graph.num_nodes())
        keep_dir = src < dst  # one direction of each undirected edge; self loops dropped
        u, v = src[keep_dir], dst[keep_dir]
        m = u.numel()
        n_drop = int(round(self.p * m))
        kept = torch.randperm(m)[n_drop:]
        u, v = u[kept], v[kept]
        return dgl.graph((torch.cat([u, v]), torch.cat([v, u])), num_nodes=graph.num_nodes())

    def __repr__(self) -> str:
        return f"DropEdge(p={self.p}, symmetric={self.symmetric})"
