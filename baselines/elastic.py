"""Elastic GNN: elastic message passing (EMP) with ℓ1 / ℓ21 graph smoothness (Liu et al., ICML 2021)."""
from __future__ import annotations

from typing import Optional, Tuple

import dgl
import torch
from torch import Tensor

from bench_suite.nn.propagations import Propagation
from bench_suite.quant.base import QuantFactory
from bench_suite.registry import PROPAGATIONS

EMP_MODES = ("l21", "l1")


def incidence(g: dgl.DGLGraph) -> Tuple[Tensor, Tensor, Tensor]:
    """Edges (u, v) with u > v of a prepared graph, one per undirected edge of A, and d̃^{-1/2}.

    Δ̃ = Δ·D̃^{-1/2} is the normalised incidence matrix (row e: +1 at u_e, −1 at v_e),
    so Δ̃ᵀΔ̃ = L̃.
    """
    src, dst = g.edges()
    keep = src > dst
    return src[keep], dst[keep], g.ndata["norm"]


def inc_apply(x: Tensor, u: Tensor, v: Tensor, norm: Tensor) -> Tensor:
    """Δ̃·x: per edge, x_u/√d̃_u − x_v/√d̃_v."""
    xs = x * norm
    return xs[u] - xs[v]


def inc_t_apply(z: Tensor, u: Tensor, v: Tensor, norm: Tensor, n: int) -> Tensor:
    """Δ̃ᵀ·z: per node i, (Σ_{e: u_e=i} z_e − Σ_{e: v_e=i} z_e)/√d̃_i."""
    out = z.new_zeros(n, z.shape[1]).index_add_(0, u, z).index_add_(0, v, -z)
    return out * norm


def l1_projection(z: Tensor, radius: float) -> Tensor:
    """Projection onto the ℓ∞ ball of radius λ1 (the dual of the ℓ1 penalty): element-wise clamp."""
    return z.clamp(-radius, radius)


def l21_projection(z: Tensor, radius: float) -> Tensor:
    """Row-wise projection onto the ℓ2 ball of radius λ1 (the dual of the ℓ21 penalty)."""
    norm = z.norm(dim=1, keepdim=True)
    scale = torch.where(norm > radius, radius / norm.clamp(min=1e-30), torch.ones_like(norm))
    return z * scale


@PROPAGATIONS.register("elastic")
class ElasticPropagation(Propagation):
    r"""EMP from Elastic GNN (Liu, Ding, Jin, Xu, Ma, Liu & Tang, ICML 2021), algorithm 1.

    Minimises ½‖F − H‖² + (λ2/2)·tr(Fᵀ L̃ F) + λ1‖Δ̃F‖_p (p = ℓ21 row-wise or ℓ1) by
    primal-dual steps, with Z ∈ R^{|E|×c} (Z⁰ = 0), β = 1/(2γ):

    .. math::
        Y^{k+1} &= F^k - \gamma\,(F^k - H + \lambda_2 \tilde L F^k)
                 = (1-\gamma-\gamma\lambda_2)F^k + \gamma\lambda_2\hat A F^k + \gamma H\\
        \bar F^{k+1} &= Y^{k+1} - \gamma\tilde\Delta^\top Z^k,\qquad
        Z^{k+1} = \Pi_{\lambda_1}\big(Z^k + \beta\tilde\Delta\bar F^{k+1}\big)\\
        F^{k+1} &= Y^{k+1} - \gamma\tilde\Delta^\top Z^{k+1}

    Π is the element-wise clamp to [−λ1, λ1] (``mode="l1"``) or the row-wise projection
    onto the ℓ2 ball of radius λ1 (``mode="l21"``).  ``gamma=None`` takes the paper's
    γ = 1/(1 + λ2), for which Y = γH + (1 − γ)ÂF.  With λ1 = 0 the dual steps vanish
    (and with that γ, EMP is APPNP with α = γ).  ÂF is quantized through ``message`` /
    ``aggregate`` and each step's output F through ``update``; the edge-level dual Z
    stays in floating point.
    """

    def __init__(self, depth: int, quant: QuantFactory, lambda1: float = 3.0, lambda2: float = 3.0,
                 gamma: Optional[float] = None, mode: str = "l21"):
        self.validate_params(lambda1=lambda1, lambda2=lambda2, gamma=gamma, mode=mode)
        super().__init__(depth, quant)
        self.lambda1, self.lambda2, self.mode = float(lambda1), float(lambda2), mode
        self.gamma = 1.0 / (1.0 + self.lambda2) if gamma is None else float(gamma)
        self.beta = 1.0 / (2.0 * self.gamma)

    @staticmethod
    def validate_params(lambda1: float = 3.0, lambda2: float = 3.0, gamma: Optional[float] = None,
                        mode: str = "l21") -> None:
        if mode not in EMP_MODES:
            raise ValueError(f"elastic mode={mode!r} is not valid; valid: {', '.join(map(repr, EMP_MODES))}")
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f"elastic lambda1={lambda1!r}, lambda2={lambda2!r} must both be >= 0")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"elastic gamma={gamma!r} must be > 0, or null for 1/(1 + lambda2)")

    def project(self, z: Tensor) -> Tensor:
        return l21_projection(z, self.lambda1) if self.mode == "l21" else l1_projection(z, self.lambda1)

    def forward(self, g: dgl.DGLGraph, h: Tensor):
        gamma, lam2 = self.gamma, self.lambda2
        u, v, norm = incidence(g)
        n = g.num_nodes()
        z = h.new_zeros(u.numel(), h.shape[1])
        f, hidden = h, []
        for k in range(self.depth):
            y = (1 - gamma - gamma * lam2) * f + gamma * h
            if lam2:
                y = y + (gamma * lam2) * self.aggregate(g, f, k)
            if self.lambda1:
                f_bar = y - gamma * inc_t_apply(z, u, v, norm, n)
                z = self.project(z + self.beta * inc_apply(f_bar, u, v, norm))
                y = y - gamma * inc_t_apply(z, u, v, norm, n)
            f = self.q[k]["update"](y, g)
            hidden.append(f)
        return f, hidden
