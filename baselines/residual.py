"""ResGCN as the DropEdge authors build it (Rong et al., ICLR 2020)."""
from __future__ import annotations

import dgl
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.layers import QGraphConv
from bench_suite.nn.models import GraphModel, check_depth
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS


@MODELS.register("resgcn")
class ResGCN(GraphModel):
    r"""Deep GCN with residual blocks, as the DropEdge authors implement it (repository
    DropEdge/DropEdge, ``src/models.py`` ``GCNModel`` with ``ResGCNBlock``, ``src/layers.py``
    ``GraphBaseBlock`` with ``aggrmethod="add"``).

    An input GCN layer (in → hidden), ``depth − 2`` hidden GCN layers grouped in residual
    blocks of ``block`` layers, and an output GCN layer (hidden → classes); every layer but
    the last is followed by ReLU and dropout (the raw features are not dropped).  A block
    adds its input to its output:

    .. math:: H_{b+1} = f_{block}(H_b) + H_b

    Depth 1 is a single GCN layer.  ``block=0`` puts all hidden layers in one block, as every script of the authors does
    (``--nhiddenlayer 1``, depth = nbaseblocklayer + 2).  The sum is taken once per block,
    after the ReLU and dropout of its last layer, so the logits at initialisation stay O(1)
    at any depth (a residual after every layer of a ReLU network would grow them
    geometrically).  ``init="uniform"`` is the authors' U(±1/√out).
    Hidden states: every layer's output.
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5, block: int = 0, init: str = "uniform",
                 norm: str = "sym"):
        super().__init__()
        check_depth(depth, "resgcn")
        if not isinstance(block, int) or block < 0:
            raise ValueError(f"resgcn block={block!r} is not valid; use 0 (one block) or a positive layer count")
        self.dropout = dropout
        n_hidden = max(depth - 2, 0)
        self.block = block or max(n_hidden, 1)
        dims = ([(in_dim, hidden)] + [(hidden, hidden)] * n_hidden + [(hidden, num_classes)] if depth > 1
                else [(in_dim, num_classes)])
        self.layers = nn.ModuleList(QGraphConv(i, o, quant, layer=k, norm=norm, init=init)
                                    for k, (i, o) in enumerate(dims))

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden = []
        last = len(self.layers) - 1
        h = x
        block_in = None
        for k, layer in enumerate(self.layers):
            if k == last:
                h = layer(g, h)
                hidden.append(h)
                break
            if k >= 1 and (k - 1) % self.block == 0:
                block_in = h
            h = F.dropout(F.relu(layer(g, h)), self.dropout, self.training)
            if k >= 1 and (k % self.block == 0 or k == last - 1):
                h = h + block_in
            hidden.append(h)
        return self.output(h, hidden, return_hidden)
