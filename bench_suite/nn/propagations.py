"""Propagations for the decoupled model, registered in ``PROPAGATIONS``.

A propagation is built as ``cls(depth, quant, **params)`` and called as
``prop(g, h) -> (out, [x_1, ..., x_K])``.  Each of its K steps owns quantizers for
the ``message``, ``aggregate`` and ``update`` roles.
"""
from __future__ import annotations

import dgl
from torch import Tensor, nn

from bench_suite.nn.graph import normalized_aggregate
from bench_suite.quant.base import NODE_ROLES, QuantFactory, RoleQuantizers
from bench_suite.registry import PROPAGATIONS


class Propagation(nn.Module):
    """Base class: K steps, each with its own node-role quantizers in ``self.q[k]``."""

    def __init__(self, depth: int, quant: QuantFactory) -> None:
        super().__init__()
        self.depth = depth
        self.q = nn.ModuleList(
            RoleQuantizers(quant, k, NODE_ROLES) for k in range(depth)
        )

    def aggregate(self, g: dgl.DGLGraph, x: Tensor, k: int) -> Tensor:
        """Quantized Â·x for step k."""
        return normalized_aggregate(g, x, self.q[k]["message"], self.q[k]["aggregate"])

    def extra_metrics(self) -> dict:
        return {}


@PROPAGATIONS.register("appnp")
class APPNPPropagation(Propagation):
    r"""APPNP (Gasteiger et al., ICLR 2019): personalised-PageRank propagation.

    .. math:: X^{(k+1)} = (1-\alpha)\,\hat A X^{(k)} + \alpha H,\qquad X^{(0)} = H

    ``alpha`` is the teleport probability (0.1 in the paper).
    """

    def __init__(self, depth: int, quant: QuantFactory, alpha: float = 0.1):
        super().__init__(depth, quant)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"appnp alpha={alpha!r} must lie in [0, 1]")
        self.alpha = alpha

    def forward(self, g: dgl.DGLGraph, h: Tensor):
        x, hidden = h, []
        for k in range(self.depth):
            x = (1 - self.alpha) * self.aggregate(g, x, k) + self.alpha * h
            x = self.q[k]["update"](x, g)
            hidden.append(x)
        return x, hidden
