"""JKNet: jumping-knowledge networks (Xu et al., ICML 2018)."""
from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.graph import check_adj_norm
from bench_suite.nn.layers import QGraphConv, QLinear
from bench_suite.nn.models import GraphModel, check_depth
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS
from bench_suite.sparse import dropout

JK_MODES = ("concat", "max")


@MODELS.register("jknet")
class JKNet(GraphModel):
    r"""JKNet (Xu et al., "Representation Learning on Graphs with Jumping Knowledge Networks", ICML 2018).

    ``depth`` GCN layers of width ``hidden``, then layer aggregation and a linear output:

    .. math:: H^{(l)} = \mathrm{ReLU}(\hat A H^{(l-1)} W^{(l)}),\qquad
              Z = \big[H^{(1)}\Vert\cdots\Vert H^{(L)}\big]\ (\text{concat})\ \text{or}\
              \max_l H^{(l)}\ (\text{element-wise max}),\qquad Y = Z W_{out} + b

    Hidden states: the L layer outputs.
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5, mode: str = "concat", norm: str = "sym"):
        self.validate_params(hidden=hidden, dropout=dropout, mode=mode)
        super().__init__()
        check_depth(depth, "jknet")
        self.dropout, self.mode = dropout, mode
        self.layers = nn.ModuleList(
            QGraphConv(in_dim if k == 0 else hidden, hidden, quant, layer=k, norm=norm) for k in range(depth)
        )
        self.out = QLinear(hidden * depth if mode == "concat" else hidden, num_classes, quant, layer="out")

    @staticmethod
    def validate_params(depth: int = 2, hidden: int = 64, dropout: float = 0.5, mode: str = "concat",
                        norm: str = "sym") -> None:
        check_adj_norm(norm, "jknet")
        if mode not in JK_MODES:
            raise ValueError(f"jknet mode={mode!r} is not valid; valid: {', '.join(map(repr, JK_MODES))}")

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden, h = [], x
        for layer in self.layers:
            h = F.relu(layer(g, dropout(h, self.dropout, self.training)))
            hidden.append(h)
        z = torch.cat(hidden, 1) if self.mode == "concat" else torch.stack(hidden, 0).amax(0)
        logits = self.out(F.dropout(z, self.dropout, self.training))
        return self.output(logits, hidden, return_hidden)
