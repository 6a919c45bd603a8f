"""GCNII: deep GCN with initial residual and identity mapping (Chen et al., ICML 2020)."""
from __future__ import annotations

import math

import dgl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.graph import normalized_aggregate
from bench_suite.nn.layers import QLinear, make_quantizers
from bench_suite.nn.models import GraphModel, check_depth
from bench_suite.quant.base import QuantFactory, quantized_matmul
from bench_suite.registry import MODELS
from bench_suite.sparse import dropout


def gcnii_beta(lam: float, layer: int) -> float:
    """β_l = log(λ/l + 1), l = 1, 2, … (Chen et al. 2020, eq. 6)."""
    return math.log(lam / layer + 1)


class QGCNIIConv(nn.Module):
    r"""One GCNII layer (Chen et al., "Simple and Deep Graph Convolutional Networks", ICML 2020),
    quantized at every stage (before the activation, which the model applies).

    .. math:: S = (1-\alpha)\,\hat A H^{(l)} + \alpha H^{(0)},\qquad
              H^{(l+1)} = (1-\beta_l)\,S + \beta_l\,S W^{(l)}

    ``message``/``aggregate`` quantize ÂH, ``input``/``weight``/``feature`` the product
    S·W, ``update`` the layer output.

    ``star`` is GCNII* (the authors' ``--variant``, their model.py ``GraphConvolution``): the
    product takes ``[ÂH, H⁽⁰⁾]`` (a 2d × d weight) instead of S, the identity term keeps S:
    :math:`H^{(l+1)} = (1-\beta_l)\,S + \beta_l\,[\hat A H^{(l)} \Vert H^{(0)}]\,W^{(l)}`.
    """

    def __init__(self, dim: int, quant: QuantFactory, layer: int, alpha: float, beta: float, star: bool = False):
        super().__init__()
        self.alpha, self.beta, self.star = alpha, beta, star
        self.weight = nn.Parameter(torch.empty(2 * dim if star else dim, dim))
        self.q = make_quantizers(quant, layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])  # as in the authors' code
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, g: dgl.DGLGraph, h: Tensor, h0: Tensor) -> Tensor:
        agg = normalized_aggregate(g, h, self.q["message"], self.q["aggregate"])
        support = (1 - self.alpha) * agg + self.alpha * h0
        product_in = torch.cat([agg, h0], 1) if self.star else support
        mapped = self.q["feature"](quantized_matmul(self.q["input"], product_in, self.q["weight"], self.weight))
        return self.q["update"]((1 - self.beta) * support + self.beta * mapped, g)


@MODELS.register("gcnii")
class GCNII(GraphModel):
    r"""GCNII (Chen et al., ICML 2020): linear input layer, ``depth`` GCNII layers, linear output.

    .. math:: H^{(0)} = \mathrm{ReLU}(X W_{in}),\quad
              H^{(l)} = \mathrm{ReLU}\big(((1-\alpha)\hat A H^{(l-1)} + \alpha H^{(0)})
              ((1-\beta_l)I + \beta_l W^{(l)})\big),\quad \beta_l = \log(\lambda/l + 1),\quad
              Y = H^{(L)} W_{out}

    Dropout before every layer.  ``lamda`` is the paper's λ (spelled as in its code).  ``star``:
    GCNII* (:class:`QGCNIIConv`), the variant the authors' full-supervised script also runs.
    The paper uses a larger weight decay (0.01) on the GCNII layers than on the
    linear ones (5e-4); the suite's trainer has one weight decay for all weights.
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.6, alpha: float = 0.1, lamda: float = 0.5,
                 star: bool = False):
        self.validate_params(hidden=hidden, dropout=dropout, alpha=alpha, lamda=lamda, star=star)
        super().__init__()
        check_depth(depth, "gcnii")
        self.dropout = dropout
        self.lin_in = QLinear(in_dim, hidden, quant, layer="in")
        self.layers = nn.ModuleList(
            QGCNIIConv(hidden, quant, k, alpha, gcnii_beta(lamda, k + 1), star) for k in range(depth)
        )
        self.lin_out = QLinear(hidden, num_classes, quant, layer="out")

    @staticmethod
    def validate_params(depth: int = 2, hidden: int = 64, dropout: float = 0.6, alpha: float = 0.1,
                        lamda: float = 0.5, star: bool = False) -> None:
        if not isinstance(star, bool):
            raise ValueError(f"gcnii star={star!r} is not valid; use true (GCNII*) or false")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"gcnii alpha={alpha!r} must lie in [0, 1] (initial-residual weight)")
        if not lamda > 0:
            raise ValueError(f"gcnii lamda={lamda!r} must be > 0 (β_l = log(lamda/l + 1))")

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        h0 = F.relu(self.lin_in(dropout(x, self.dropout, self.training)))
        h, hidden = h0, []
        for layer in self.layers:
            h = F.relu(layer(g, F.dropout(h, self.dropout, self.training), h0))
            hidden.append(h)
        logits = self.lin_out(F.dropout(h, self.dropout, self.training))
        return self.output(logits, hidden, return_hidden)
