"""DropEdge (Rong et al., ICLR 2020) as a graph transform usable with any backbone."""
from __future__ import annotations

import dgl
import torch

from bench_suite.registry import TRANSFORMS


@TRANSFORMS.register("dropedge")
class DropEdge:
    r"""DropEdge (Rong et al., "DropEdge: Towards Deep Graph Convolutional Networks on Node
    Classification", ICLR 2020).

    Every training epoch, ``round(p·|E|)`` undirected edges of A, drawn uniformly without
    replacement, are removed (both directions, so the graph stays symmetric):
    :math:`A_{drop} = A - A'` with :math:`A'` holding :math:`V_p = p|E|` edges.  The
    backbone then renormalises Ã = A_drop + I itself.  Evaluation uses the full graph
    (``bench_suite.train`` applies transforms to training epochs only).  Draws use
    torch's global RNG, which the run seeds.
    """

    def __init__(self, p: float = 0.3):
        self.validate_params(p=p)
        self.p = float(p)

    @staticmethod
    def validate_params(p: float = 0.3) -> None:
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"dropedge p={p!r} is not valid; use a drop rate in [0, 1)")

    def __call__(self, graph: dgl.DGLGraph) -> dgl.DGLGraph:
        src, dst = graph.edges()
        keep_dir = src < dst  # one direction of each undirected edge; self loops dropped
        u, v = src[keep_dir], dst[keep_dir]
        m = u.numel()
        n_drop = int(round(self.p * m))
        kept = torch.randperm(m)[n_drop:]
        u, v = u[kept], v[kept]
        return dgl.graph((torch.cat([u, v]), torch.cat([v, u])), num_nodes=graph.num_nodes())

    def __repr__(self) -> str:
        return f"DropEdge(p={self.p})"

