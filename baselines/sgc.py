"""SGC: simplified graph convolution (Wu et al., ICML 2019)."""
from __future__ import annotations

import dgl
from torch import Tensor, nn

from bench_suite.nn.graph import normalized_aggregate
from bench_suite.nn.layers import QLinear
from bench_suite.nn.models import GraphModel, check_depth
from bench_suite.quant.base import NODE_ROLES, QuantFactory, RoleQuantizers
from bench_suite.registry import MODELS


@MODELS.register("sgc")
class SGC(GraphModel):
    r"""SGC (Wu, Souza, Zhang, Fifty, Yu & Weinberger, "Simplifying Graph Convolutional Networks", ICML 2019).

    .. math:: X^{(k)} = \hat A X^{(k-1)}\ (k = 1..K,\ X^{(0)} = X),\qquad Y = X^{(K)} W + b

    K = ``depth`` feature propagation steps (each quantized through its own ``message``
    / ``aggregate`` / ``update`` quantizers), then one quantized linear layer.  In full
    precision the propagated features are computed once per (graph, features) pair and
    reused, as SGC precomputes them.

    Hidden states: to keep memory at O(n·c) per layer on wide inputs, hop k is reported
    through the classifier, X^{(k)} W (no bias); the last equals the logits minus b.
    """

    def __init__(self, in_dim: int, num_classes: int, depth: int, quant: QuantFactory):
        super().__init__()
        check_depth(depth, "sgc")
        self.q = nn.ModuleList(RoleQuantizers(quant, k, NODE_ROLES) for k in range(depth))
        self.lin = QLinear(in_dim, num_classes, quant, layer="out")
        self.cacheable = quant.fp32
        self._cache: tuple | None = None

    def propagate(self, g: dgl.DGLGraph, x: Tensor, keep_hops: bool = False):
        """X^{(K)} and, with ``keep_hops``, the per-hop states X^{(k)}W."""
        if not keep_hops and self._cache is not None and self._cache[0] is g and self._cache[1] is x:
            return self._cache[2], []
        h, hops = x, []
        for q in self.q:
            h = q["update"](normalized_aggregate(g, h, q["message"], q["aggregate"]), g)
            if keep_hops:
                hops.append(h.detach() @ self.lin.weight.detach())
        if self.cacheable and not h.requires_grad:
            self._cache = (g, x, h)
        return h, hops

    def forward(self, g: dgl.DGLGraph, x: Tensor, return_hidden: bool = False):
        feats, hops = self.propagate(g, x, keep_hops=return_hidden)
        return self.output(self.lin(feats), hops, return_hidden)
