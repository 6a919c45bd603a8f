"""DAGNN propagation: adaptive adjustment of receptive fields (Liu, Gao & Ji, KDD 2020)."""
from __future__ import annotations

import dgl
import torch
from torch import Tensor, nn

from bench_suite.nn.propagations import Propagation
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import PROPAGATIONS


@PROPAGATIONS.register("dagnn")
class DAGNNPropagation(Propagation):
    r"""DAGNN (Liu, Gao & Ji, "Towards Deeper Graph Neural Networks", KDD 2020).

    On Z = MLP(X) (the decoupled model's MLP):

    .. math:: H_\ell = \hat A^\ell Z\ (\ell = 0..K),\qquad S = [H_0, \dots, H_K] \in \mathbb R^{n\times(K+1)\times c},\\
              s_{i\ell} = \sigma(H_{\ell,i}\, p),\qquad X_{out,i} = \sum_{\ell=0}^{K} s_{i\ell} H_{\ell,i}

    p ∈ R^{c×1} is the trainable projection (with a bias, as in the authors' ``Linear(c, 1)``);
    its width c is inferred at the first forward pass.  The retention scores stay in
    floating point (like attention); each hop's ÂH is quantized with ``message`` /
    ``aggregate`` and its result with ``update``.  Hidden states: H_1 … H_K.
    """

    def __init__(self, depth: int, quant: QuantFactory):
        super().__init__(depth, quant)
        self.proj = nn.LazyLinear(1)

    def forward(self, g: dgl.DGLGraph, h: Tensor):
        hops, x = [h], h
        for k in range(self.depth):
            x = self.q[k]["update"](self.aggregate(g, x, k), g)
            hops.append(x)
        stack = torch.stack(hops, 1)  # [n, K+1, c]
        scores = torch.sigmoid(self.proj(stack))  # [n, K+1, 1]
        return (scores * stack).sum(1), hops[1:]

