"""GCN with residual connections (Kipf & Welling, ICLR 2017, appendix B)."""
from __future__ import annotations

import dgl
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.layers import QGraphConv
from bench_suite.nn.models import GraphModel, check_depth, widths
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS


@MODELS.register("resgcn")
class ResGCN(GraphModel):
    r"""Deep GCN with residual connections (Kipf & Welling 2017, appendix B).

    .. math:: H^{(l+1)} = \sigma\big(\hat A H^{(l)} W^{(l)}\big) + H^{(l)}

    on every layer whose input and output widths agree (the hidden layers); the
    first (in → hidden) and last (hidden → classes) layers are plain GCN layers.
    Dropout precedes every layer.  Hidden states are the layer outputs.
    """

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        check_depth(depth, "resgcn")
        self.dropout = dropout
        dims = widths(in_dim, hidden, num_classes, depth)
        self.layers = nn.ModuleList(QGraphConv(i, o, quant, layer=k) for k, (i, o) in enumerate(dims))
        self.residual = [i == o and 0 < k < depth - 1 for k, (i, o) in enumerate(dims)]

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden, h = [], x
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            out = layer(g, F.dropout(h, self.dropout, self.training))
            if k < last:
                out = F.relu(out)
                if self.residual[k]:
                    out = out + h
            h = out
            hidden.append(h)
        return self.output(h, hidden, return_hidden)
