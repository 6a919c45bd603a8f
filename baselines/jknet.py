"""JKNet: jumping-knowledge networks (Xu et al., ICML 2018)."""
from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.graph import check_adj_norm
from bench_suite.nn.layers import QGraphConv, QLinear
from bench_suite.nn.models import DeepGCN, GraphModel, check_depth, refuse_full_precision_options
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS
from bench_suite.sparse import dropout

JK_MODES = ("concat", "max")
#: ``xu``: Xu et al.'s JKNet (``depth`` GCN layers, layer aggregation, a linear output);
#: ``dropedge``: the DropEdge authors' JKNet (``densegcn``), whose numbers the DropEdge README tables
JK_VARIANTS = ("xu", "dropedge")


@MODELS.register("jknet")
class JKNet(GraphModel):
    r"""JKNet (Xu et al., "Representation Learning on Graphs with Jumping Knowledge Networks", ICML 2018).

    ``depth`` GCN layers of width ``hidden``, then layer aggregation and a linear output:

    .. math:: H^{(l)} = \mathrm{ReLU}(\hat A H^{(l-1)} W^{(l)}),\qquad
              Z = \big[H^{(1)}\Vert\cdots\Vert H^{(L)}\big]\ (\text{concat})\ \text{or}\
              \max_l H^{(l)}\ (\text{element-wise max}),\qquad Y = Z W_{out} + b

    Hidden states: the L layer outputs.

    ``variant="dropedge"`` is the JKNet of the DropEdge authors (Rong et al., ICLR 2020; repository
    DropEdge/DropEdge, ``src/models.py`` ``GCNModel`` with ``--type densegcn`` and ``src/layers.py``
    ``GraphBaseBlock(dense=True, aggrmethod="concat")``), the model behind their README's JKNet rows:
    ``depth`` counts graph convolutions, an input GCN layer then ``depth - 2`` hidden ones, each
    followed by ReLU and dropout (no dropout on the raw features); their ``depth - 1`` outputs are
    concatenated (or max-pooled) and a GCN layer, not a linear one, maps them to the classes.
    Weights and biases are drawn U(±1/√out) (``GraphConvolutionBS.reset_parameters``).
    ``self_weight`` is their ``--withloop`` (full precision only).
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5, mode: str = "concat", norm: str = "sym",
                 variant: str = "xu", self_weight: bool = False):
        self.validate_params(depth=depth, hidden=hidden, dropout=dropout, mode=mode, variant=variant)
        super().__init__()
        check_depth(depth, "jknet")
        if not quant.fp32:
            refuse_full_precision_options(quant.name, self_weight=self_weight)
        self.dropout, self.mode, self.variant = dropout, mode, variant
        n_states = depth if variant == "xu" else depth - 1
        init = "xavier" if variant == "xu" else "uniform"
        self.layers = nn.ModuleList(
            QGraphConv(in_dim if k == 0 else hidden, hidden, quant, layer=k, norm=norm, init=init,
                       self_weight=self_weight)
            for k in range(n_states)
        )
        z_dim = hidden * n_states if mode == "concat" else hidden
        self.out = (QLinear(z_dim, num_classes, quant, layer="out") if variant == "xu" else
                    QGraphConv(z_dim, num_classes, quant, layer="out", norm=norm, init=init, self_weight=self_weight))

    @staticmethod
    def validate_params(depth: int = 2, hidden: int = 64, dropout: float = 0.5, mode: str = "concat",
                        norm: str = "sym", variant: str = "xu", self_weight: bool = False) -> None:
        check_adj_norm(norm, "jknet")
        if mode not in JK_MODES:
            raise ValueError(f"jknet mode={mode!r} is not valid; valid: {', '.join(map(repr, JK_MODES))}")
        if variant not in JK_VARIANTS:
            raise ValueError(f"jknet variant={variant!r} is not valid; valid: {', '.join(map(repr, JK_VARIANTS))}")
        if variant == "dropedge" and isinstance(depth, int) and depth < 2:
            raise ValueError(f"jknet variant='dropedge' needs depth >= 2 (an input and an output graph "
                             f"convolution), not depth={depth!r}")

    #: before anything runs, the full-precision-only options with a quantizer are refused (as GCN's)
    validate_spec = staticmethod(DeepGCN.validate_spec)

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden, h = [], x
        if self.variant == "dropedge":
            # ingc, then the dense block: x = dropout(relu(gc(x))); the states are kept after dropout
            for layer in self.layers:
                h = dropout(F.relu(layer(g, h)), self.dropout, self.training)
                hidden.append(h)
            z = torch.cat(hidden, 1) if self.mode == "concat" else torch.stack(hidden, 0).amax(0)
            return self.output(self.out(g, z), hidden, return_hidden)
        for layer in self.layers:
            h = F.relu(layer(g, dropout(h, self.dropout, self.training)))
            hidden.append(h)
        z = torch.cat(hidden, 1) if self.mode == "concat" else torch.stack(hidden, 0).amax(0)
        logits = self.out(F.dropout(z, self.dropout, self.training))
        return self.output(logits, hidden, return_hidden)
