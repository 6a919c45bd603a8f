"""Quantized layers.  Every layer asks its ``QuantFactory`` for one quantizer per role
(METHOD.md §2): ``input``, ``weight``, ``feature``, ``message``, ``aggregate``, ``update``.
FP32 gives identity quantizers, so layer code never branches on precision.
"""
import math

import dgl
import dgl.function as fn
import torch
from dgl.nn.functional import edge_softmax
from torch import Tensor, nn

from bench_suite.nn.graph import check_adj_norm, normalized_aggregate
from bench_suite.quant.base import ROLES, QuantFactory, RoleQuantizers, quantized_matmul
from bench_suite.sparse import csr_matmul, dropout, is_sparse


def make_quantizers(quant: QuantFactory, layer, roles=ROLES) -> RoleQuantizers:
    return RoleQuantizers(quant, layer, roles)


class QLinear(nn.Module):
    """y = q_feature(q_input(x) · q_weight(W)) + b."""

    def __init__(self, in_dim: int, out_dim: int, quant: QuantFactory, layer=None, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.q = make_quantizers(quant, layer, ("input", "weight", "feature"))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.q["feature"](quantized_matmul(self.q["input"], x, self.q["weight"], self.weight))
        return h if self.bias is None else h + self.bias


#: weight initialisations of a GCN layer: "xavier" (Glorot uniform, bias 0) or "uniform"
#: (U(±1/√out) for weight and bias, as Kipf's pygcn and the DropEdge code initialise)
GCN_INITS = ("xavier", "uniform")


class QGraphConv(nn.Module):
    r"""GCN layer (Kipf & Welling, ICLR 2017), quantized at every stage.

    .. math:: H' = \hat A\,(H W) + b,\qquad \hat A = \tilde D^{-1/2}\tilde A\tilde D^{-1/2}

    (``norm="row"``: :math:`\tilde D^{-1}\tilde A`).  ``init`` is one of :data:`GCN_INITS`.
    ``self_weight=True`` adds :math:`H W_{self}` (a second weight on the node's own features, the
    DropEdge authors' ``withloop``, src/layers.py ``GraphConvolutionBS``), full precision only.
    ``norm`` may also be one of :data:`~bench_suite.nn.graph.IDENTITY_ADJ_NORMS` (the identity plus a
    normalised adjacency; quantized, the identity term is the layer's quantized feature, added in float).
    The graph must come from :func:`bench_suite.nn.graph.prepare_graph`.

    >>> from bench_suite.quant import QuantFactory
    >>> from bench_suite.nn.graph import prepare_graph
    >>> g = prepare_graph(dgl.graph(([0, 1], [1, 0]), num_nodes=3))
    >>> QGraphConv(4, 2, QuantFactory())(g, torch.ones(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, out_dim: int, quant: QuantFactory, layer=None, bias: bool = True,
                 norm: str = "sym", init: str = "xavier", self_weight: bool = False):
        super().__init__()
        if init not in GCN_INITS:
            raise ValueError(f"GCN layer init={init!r} is not valid; valid: {', '.join(map(repr, GCN_INITS))}")
        if self_weight and not quant.fp32:
            raise ValueError(f"GCN layer self_weight=true is full precision only, not with quant={quant.name!r}")
        self.norm, self.init = check_adj_norm(norm, "GCN layer", identity=True), init
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.weight_self = nn.Parameter(torch.empty(in_dim, out_dim)) if self_weight else None
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.q = make_quantizers(quant, layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        weights = [self.weight] + ([self.weight_self] if self.weight_self is not None else [])
        if self.init == "uniform":
            bound = 1.0 / math.sqrt(self.weight.shape[1])
            for w in weights:
                nn.init.uniform_(w, -bound, bound)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -bound, bound)
            return
        for w in weights:
            nn.init.xavier_uniform_(w)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, g: dgl.DGLGraph, x: Tensor) -> Tensor:
        h = self.q["feature"](quantized_matmul(self.q["input"], x, self.q["weight"], self.weight))
        out = normalized_aggregate(g, h, self.q["message"], self.q["aggregate"], self.norm)
        if self.weight_self is not None:
            out = out + (csr_matmul(x, x.values(), self.weight_self) if is_sparse(x) else x @ self.weight_self)
        if self.bias is not None:
            out = out + self.bias
        return self.q["update"](out, g)


class QGATConv(nn.Module):
    r"""Graph attention layer (Veličković et al., ICLR 2018), quantized.

    .. math:: h_i' = \sum_{j\in N(i)\cup\{i\}} \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a^\top[Wh_i\Vert Wh_j])\big)\,Wh_j

    Attention logits and the softmax stay in floating point; the projected source
    features are the ``message`` role.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int, quant: QuantFactory, layer=None,
                 feat_drop: float = 0.6, attn_drop: float = 0.6, negative_slope: float = 0.2,
                 concat: bool = True):
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.weight = nn.Parameter(torch.empty(in_dim, heads * out_dim))
        self.attn_l = nn.Parameter(torch.empty(1, heads, out_dim))
        self.attn_r = nn.Parameter(torch.empty(1, heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        self.feat_drop = nn.Dropout(feat_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.leaky = nn.LeakyReLU(negative_slope)
        self.q = make_quantizers(quant, layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        nn.init.zeros_(self.bias)

    def forward(self, g: dgl.DGLGraph, x: Tensor) -> Tensor:
        x = dropout(x, self.feat_drop.p, self.training)
        h = self.q["feature"](quantized_matmul(self.q["input"], x, self.q["weight"], self.weight))
        h = h.view(-1, self.heads, self.out_dim)
        with g.local_scope():
            g.ndata["el"] = (h * self.attn_l).sum(-1, keepdim=True)
            g.ndata["er"] = (h * self.attn_r).sum(-1, keepdim=True)
            g.apply_edges(fn.u_add_v("el", "er", "e"))
            g.edata["a"] = self.attn_drop(edge_softmax(g, self.leaky(g.edata.pop("e"))))
            m = self.q["message"](h.reshape(h.shape[0], -1), g).view_as(h)
            g.ndata["m"] = m
            g.update_all(fn.u_mul_e("m", "a", "x"), fn.sum("x", "agg"))
            agg = g.ndata["agg"]
        agg = self.q["aggregate"](agg.reshape(agg.shape[0], -1), g).view_as(h)
        out = agg.reshape(agg.shape[0], -1) if self.concat else agg.mean(1)
        return self.q["update"](out + self.bias, g)


class QSAGEConv(nn.Module):
    r"""GraphSAGE layer, mean aggregator (Hamilton et al., NeurIPS 2017), quantized.

    .. math:: h_i' = W_{self} h_i + W_{neigh}\,\frac{1}{|N(i)|}\sum_{j\in N(i)} h_j + b

    Uses the graph without self-loops (``ndata['deg']`` − 1 neighbours).  ``message``
    quantizes the source features, ``aggregate`` the neighbour mean.
    """

    def __init__(self, in_dim: int, out_dim: int, quant: QuantFactory, layer=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2 * in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.in_dim = in_dim
        self.q = make_quantizers(quant, layer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(self.bias)

    def forward(self, g: dgl.DGLGraph, x: Tensor) -> Tensor:
        x = self.q["input"](x)
        m = self.q["message"](x, g)
        with g.local_scope():
            g.ndata["m"] = m
            g.update_all(fn.copy_u("m", "x"), fn.sum("x", "s"))
            s = g.ndata["s"] - m  # prepared graphs carry a self-loop: drop it
        neigh = self.q["aggregate"](s / (g.ndata["deg"] - 1).clamp(min=1), g)
        w = self.q["weight"](self.weight)
        h = self.q["feature"](torch.cat([x, neigh], 1) @ w)
        return self.q["update"](h + self.bias, g)
