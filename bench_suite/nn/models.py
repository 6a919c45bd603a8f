"""Backbones at any depth (1 to 128 layers), registered in ``MODELS``.

Every model is built as ``cls(in_dim, num_classes, depth, quant, **params)`` and
called as ``model(g, x, return_hidden=False)`` on a prepared graph; with
``return_hidden=True`` it also returns the per-layer node representations that
the oversmoothing metrics read.  A model with ``sparse_input = True`` also takes ``x``
as a CSR tensor (sparse features, :mod:`bench_suite.sparse`); the others are given it dense.
"""
from __future__ import annotations

from typing import List, Tuple

import dgl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_suite.nn.layers import QGATConv, QGraphConv, QLinear, QSAGEConv
from bench_suite.quant.base import QuantFactory, is_full_precision
from bench_suite.registry import MODELS, PROPAGATIONS, QUANTIZERS
from bench_suite.sparse import dropout

MAX_DEPTH = 128


def check_depth(depth: int, model: str) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth={depth!r} for model {model!r} is not valid; use an integer in 1..{MAX_DEPTH}")
    return depth


class GraphModel(nn.Module):
    """Base class: ``forward(g, x, return_hidden=False)`` and optional run extras."""

    #: whether ``forward`` takes the features as a CSR tensor: true when ``x`` only meets
    #: :func:`bench_suite.sparse.dropout` and a first layer's :func:`quantized_matmul`
    sparse_input: bool = False

    def extra_metrics(self) -> dict:
        """Model-specific values recorded with a run (e.g. SMP's multipliers)."""
        return {}

    def output(self, logits: Tensor, hidden: List[Tensor], return_hidden: bool):
        return (logits, hidden) if return_hidden else logits


def widths(in_dim: int, hidden: int, out_dim: int, depth: int) -> List[Tuple[int, int]]:
    dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
    return list(zip(dims[:-1], dims[1:]))


def refuse_full_precision_options(quant: str, self_weight: bool = False) -> None:
    """A ValueError if GCN's full-precision-only option ``self_weight`` (a second weight nothing
    quantizes) is set, for quantizer ``quant``."""
    if self_weight is True:
        raise ValueError(f"self_weight={self_weight!r} is full precision only, not with quant={quant!r}")


@MODELS.register("gcn")
class DeepGCN(GraphModel):
    """Plain deep GCN (Kipf & Welling 2017): ``depth`` GCN layers, ReLU and dropout between.

    Shows oversmoothing as depth grows.  ``input_dropout=False`` drops only hidden states,
    not the raw features (the DropEdge authors' GCN); ``init``, ``norm`` and ``self_weight``: see
    :class:`~bench_suite.nn.layers.QGraphConv`.  ``batchnorm=True`` normalises every layer's
    output over the nodes before its activation, the output layer's too (the DropEdge authors'
    ``withbn``, src/layers.py ``GraphConvolutionBS``: ``BatchNorm1d`` after the bias); quantized, after
    the layer's ``update`` quantizer, in float (the next layer's ``input`` quantizer sees its output, as
    quantization-aware training keeps batch norm in float until it is folded for inference; the
    integer engine converts only the plain GCN layer).
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5, input_dropout: bool = True,
                 init: str = "xavier", norm: str = "sym", batchnorm: bool = False, self_weight: bool = False):
        super().__init__()
        check_depth(depth, "gcn")
        if not quant.fp32:
            refuse_full_precision_options(quant.name, self_weight=self_weight)
        self.dropout, self.input_dropout = dropout, input_dropout
        dims = widths(in_dim, hidden, num_classes, depth)
        self.layers = nn.ModuleList(
            QGraphConv(i, o, quant, layer=k, norm=norm, init=init, self_weight=self_weight)
            for k, (i, o) in enumerate(dims)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(o) for _, o in dims) if batchnorm else None

    @staticmethod
    def validate_spec(data: dict) -> None:
        """Before anything runs: the full-precision-only option with a quantizer is refused."""
        quant = (data.get("quant") or {}).get("name", "fp32")
        if not is_full_precision(QUANTIZERS.get(quant)):
            refuse_full_precision_options(quant, self_weight=(data.get("model") or {}).get("self_weight", False))

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden = []
        h = x
        for k, layer in enumerate(self.layers):
            if k > 0 or self.input_dropout:
                h = dropout(h, self.dropout, self.training)
            h = layer(g, h)
            if self.bns is not None:
                h = self.bns[k](h)
            hidden.append(h)
            if k < len(self.layers) - 1:
                h = F.relu(h)
        return self.output(h, hidden, return_hidden)


@MODELS.register("gat")
class DeepGAT(GraphModel):
    """GAT (Veličković et al. 2018): ``heads`` attention heads in hidden layers, one head at the output."""

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 8, heads: int = 8, dropout: float = 0.6, attn_dropout: float = 0.6):
        super().__init__()
        check_depth(depth, "gat")
        layers = []
        d = in_dim
        for k in range(depth):
            last = k == depth - 1
            layers.append(QGATConv(d, num_classes if last else hidden, 1 if last else heads, quant, layer=k,
                                   feat_drop=dropout, attn_drop=attn_dropout, concat=not last))
            d = hidden * heads
        self.layers = nn.ModuleList(layers)

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        hidden = []
        h = x
        for k, layer in enumerate(self.layers):
            h = layer(g, h)
            hidden.append(h)
            if k < len(self.layers) - 1:
                h = F.elu(h)
        return self.output(h, hidden, return_hidden)


@MODELS.register("sage")
class DeepSAGE(GraphModel):
    """GraphSAGE with the mean aggregator (Hamilton et al. 2017), full-batch.

    Dense input only: the first layer averages the raw features over neighbours."""

    sparse_input = False

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        check_depth(depth, "sage")
        self.dropout, self.input_dropout, self.bns = dropout, True, None  # shares DeepGCN.forward
        self.layers = nn.ModuleList(
            QSAGEConv(i, o, quant, layer=k) for k, (i, o) in enumerate(widths(in_dim, hidden, num_classes, depth))
        )

    forward = DeepGCN.forward


class QMLP(nn.Module):
    """Two (or more) quantized linear layers with ReLU and dropout: H = MLP(X)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, quant: QuantFactory,
                 layers: int = 2, dropout: float = 0.5):
        super().__init__()
        self.dropout = dropout
        self.lins = nn.ModuleList(
            QLinear(i, o, quant, layer=f"mlp{k}") for k, (i, o) in enumerate(widths(in_dim, hidden, out_dim, layers))
        )

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for k, lin in enumerate(self.lins):
            h = lin(dropout(h, self.dropout, self.training))
            if k < len(self.lins) - 1:
                h = F.relu(h)
        return h


@MODELS.register("decoupled")
class Decoupled(GraphModel):
    """Decoupled model: H = MLP(X), then ``depth`` = K steps of a registered propagation.

    APPNP (Gasteiger et al. 2019) and SMP (arXiv 2308.14949) are this model with
    ``propagation='appnp'`` or ``propagation='smp'``; the propagation's own
    parameters are spec keys too.
    """

    sparse_input = True

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory,
                 propagation: str = "appnp", propagation_params: dict | None = None,
                 hidden: int = 64, dropout: float = 0.5, mlp_layers: int = 2):
        super().__init__()
        check_depth(depth, "decoupled")
        self.mlp = QMLP(in_dim, hidden, num_classes, quant, layers=mlp_layers, dropout=dropout)
        self.prop = PROPAGATIONS.create(propagation, depth=depth, quant=quant, **(propagation_params or {}))

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        h = self.mlp(x)
        out, hidden = self.prop(g, h)
        return self.output(out, hidden, return_hidden)

    def extra_metrics(self) -> dict:
        fn = getattr(self.prop, "extra_metrics", None)
        return fn() if fn else {}
