"""PairNorm (Zhao & Akoglu, ICLR 2020) and a deep GCN that uses it."""
from __future__ import annotations

import dgl
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.graph import check_adj_norm
from bench_suite.nn.layers import QGraphConv
from bench_suite.nn.models import GraphModel, check_depth, widths
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import MODELS
from bench_suite.sparse import dropout

PN_MODES = ("PN", "PN-SI", "PN-SCS", "None")
PN_EPS = 1e-6


def pair_norm(x: Tensor, mode: str = "PN", scale: float = 1.0) -> Tensor:
    r"""PairNorm (Zhao & Akoglu 2020), as in the authors' code (ε = 1e-6 inside the roots).

    .. math::
        \text{PN: } x^c_i = x_i - \tfrac1n\textstyle\sum_j x_j,\quad
            \dot x_i = s\,x^c_i \big/ \sqrt{\tfrac1n\sum_j\lVert x^c_j\rVert^2}\\
        \text{PN-SI: } \dot x_i = s\,x^c_i / \lVert x^c_i\rVert,\qquad
        \text{PN-SCS: } \dot x_i = s\,x_i / \lVert x_i\rVert - \tfrac1n\textstyle\sum_j x_j
    """
    if mode == "None":
        return x
    mean = x.mean(0)
    if mode == "PN":
        xc = x - mean
        return scale * xc / (PN_EPS + xc.square().sum(1).mean()).sqrt()
    if mode == "PN-SI":
        xc = x - mean
        return scale * xc / (PN_EPS + xc.square().sum(1, keepdim=True)).sqrt()
    if mode == "PN-SCS":
        return scale * x / (PN_EPS + x.square().sum(1, keepdim=True)).sqrt() - mean
    raise ValueError(f"pairnorm mode={mode!r} is not valid; valid: {', '.join(map(repr, PN_MODES))}")


class PairNorm(nn.Module):
    """:func:`pair_norm` as a layer."""

    def __init__(self, mode: str = "PN", scale: float = 1.0):
        super().__init__()
        self.mode, self.scale = mode, scale

    def forward(self, x: Tensor) -> Tensor:
        return pair_norm(x, self.mode, self.scale)


@MODELS.register("pairnorm")
class PairNormGCN(GraphModel):
    r"""Deep GCN with PairNorm after every hidden layer (Zhao & Akoglu, ICLR 2020).

    .. math:: H^{(l+1)} = \mathrm{ReLU}\big(\mathrm{PairNorm}_s(\hat A H^{(l)} W^{(l)})\big)

    as in the authors' ``DeepGCN``: dropout → GCN layer → PairNorm → ReLU, and a plain
    GCN output layer.  The authors' code (LingxiaoShawn/PairNorm ``data.py``) aggregates with
    the row-normalised D̃⁻¹Ã (``norm="row"``; their README: PN "works bad with symmetric
    normalized adjacency") and initialises U(±1/√out) (``init="uniform"``).  ``mode`` is PN, PN-SI or PN-SCS (or None), ``scale`` is s.
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5, mode: str = "PN", scale: float = 1.0,
                 norm: str = "row", init: str = "uniform"):
        self.validate_params(hidden=hidden, dropout=dropout, mode=mode, scale=scale)
        super().__init__()
        check_depth(depth, "pairnorm")
        self.dropout = dropout
        self.norm = PairNorm(mode, scale)
        self.layers = nn.ModuleList(
            QGraphConv(i, o, quant, layer=k, norm=norm, init=init)
            for k, (i, o) in enumerate(widths(in_dim, hidden, num_classes, depth))
        )

    @staticmethod
    def validate_params(depth: int = 2, hidden: int = 64, dropout: float = 0.5, mode: str = "PN",
                        scale: float = 1.0, norm: str = "row", init: str = "uniform") -> None:
        check_adj_norm(norm, "pairnorm")
        if mode not in PN_MODES:
            raise ValueError(f"pairnorm mode={mode!r} is not valid; valid: {', '.join(map(repr, PN_MODES))}")
        if not scale > 0:
            raise ValueError(f"pairnorm scale={scale!r} must be > 0")

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden, h = [], x
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            h = layer(g, dropout(h, self.dropout, self.training))
            if k < last:
                h = F.relu(self.norm(h))
            hidden.append(h)
        return self.output(h, hidden, return_hidden)
