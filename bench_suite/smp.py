"""SMP: smoothness-aware message propagation (proposed; arXiv 2308.14949, METHOD.md §7).

Used as ``model=decoupled propagation=smp``: H = MLP(X), then K propagation layers
starting from X⁽⁰⁾ = H, each one step of the basic differential multiplier method
(Platt & Barr, NIPS 1988) on

    ℒ(X, λ, s) = ½‖X − H‖² + (μ/2)·tr(Xᵀ L̃ X) + λ·(c·|E| − s² − T(Δ)),
    T(Δ) = tr(Δᵀ L̃ Δ),  Δ = X_{k+1} − X_k.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import dgl
from torch import Tensor, nn

from bench_suite.nn.graph import normalized_aggregate
from bench_suite.nn.propagations import Propagation
from bench_suite.quant.base import QuantFactory, RoleQuantizers
from bench_suite.registry import PROPAGATIONS

FORMS = ("exact", "released")


def count_undirected(src, dst) -> int:
    """|E| of A from the endpoints of every directed edge of a symmetric graph (torch or numpy
    arrays): undirected edges, self loops excluded.

    This is the |E| of T(Δ) = Σ_{(i,j)∈E} ‖Δ_i/√d̃_i − Δ_j/√d̃_j‖² = tr(Δᵀ L̃ Δ): each
    undirected edge once, and self loops add nothing to the sum.
    """
    return int((src != dst).sum()) // 2


def undirected_edge_count(g: dgl.DGLGraph) -> int:
    """|E| of A (:func:`count_undirected`) on a prepared (symmetric, Ã) DGL graph."""
    return count_undirected(*g.edges())


def multiplier_step(lam: float, s: float, t: float, budget: float, eta_lambda: float, eta_s: float,
                    lambda_min: Optional[float] = None) -> Tuple[float, float]:
    """One step of the basic differential multiplier method on (λ, s) after a layer whose Δ has
    T(Δ) = ``t``: ``λ ← λ + η_λ·(c|E| − s² − T)``, ``s ← s + 2η_s·λ·s`` (both from the values before
    the step), then λ projected onto [lambda_min, ∞) if ``lambda_min`` is set."""
    lam, s = lam + eta_lambda * (budget - s * s - t), s + 2 * eta_s * lam * s
    if lambda_min is not None:
        lam = max(lam, lambda_min)
    return lam, s


@PROPAGATIONS.register("smp")
class SMPPropagation(Propagation):
    r"""SMP (Wang et al., CIKM 2023, arXiv 2308.14949): one multiplier step per layer.

    .. math::

        \tilde X &= (1-\eta(1+\mu))X + \eta\mu\,\hat A X + \eta H,\qquad \Delta = \tilde X - X\\
        X &\leftarrow \tilde X + 2\eta\lambda\,\tilde L\Delta \quad(\text{form="exact"}),\qquad
        X \leftarrow \tilde X + 2\eta\lambda\,\hat A\Delta \quad(\text{form="released"})\\
        s &\leftarrow s + 2\eta_s\lambda s,\qquad
        \lambda \leftarrow \lambda + \eta_\lambda\,(c|E| - s^2 - T(\Delta)),\quad T(\Delta)=\mathrm{tr}(\Delta^\top\tilde L\Delta)

    With λ ≡ 0 and μ = 9, η = 0.1 this is APPNP with α = 0.1.  The s and λ updates
    both read the values from before the step (a simultaneous gradient step on ℒ).

    * |E| = undirected edges of A (no self loops), see :func:`undirected_edge_count`.
    * λ and s restart at ``lambda0`` / ``s0`` at every forward pass.  They are dual
      variables with their own ascent rule, so they carry no gradient (T is detached).
    * Quantization: step k's ÂX uses ``self.q[k]`` (``message``/``aggregate``); the
      product on Δ (ÂΔ, from which L̃Δ = Δ − ÂΔ) uses ``self.q_delta[k]``; each step's
      output goes through ``self.q[k]["update"]``.  T(Δ) = ‖Δ‖² − tr(Δᵀ ÂΔ) reuses
      that quantized product, i.e. it is what the layer actually computes.
    * ``lambda_min`` (suite option, default None = METHOD.md §7 as written): project λ
      onto [lambda_min, ∞) after each ascent step.  Without it λ turns negative once
      T(Δ) of the first layers exceeds c·|E| (large ‖H‖), and a negative λ makes the
      exact-form correction *raise* T; over 64 layers that compounds into an infinite
      loss.  ``lambda_min=0`` keeps the multiplier's sign of an inequality constraint.
    * :meth:`extra_metrics` gives λ and T(Δ) of every layer (λ after the layer's update)
      from the last evaluation forward, and the budget c·|E|.
    """

    def __init__(self, depth: int, quant: QuantFactory, form: str = "exact", mu: float = 9.0, eta: float = 0.1,
                 eta_s: float = 1e-5, eta_lambda: float = 1e-5, c: float = 0.01, lambda0: float = 0.001,
                 s0: float = 0.001, lambda_min: Optional[float] = None, quantize_output: bool = True):
        self.validate_params(form=form, mu=mu, eta=eta, eta_s=eta_s, eta_lambda=eta_lambda, c=c,
                             quantize_output=quantize_output)
        super().__init__(depth, quant)
        self.q_delta = nn.ModuleList(RoleQuantizers(quant, k, ("message", "aggregate")) for k in range(depth))
        self.form = form
        self.mu, self.eta, self.eta_s, self.eta_lambda = float(mu), float(eta), float(eta_s), float(eta_lambda)
        self.c, self.lambda0, self.s0 = float(c), float(lambda0), float(s0)
        self.lambda_min = None if lambda_min is None else float(lambda_min)
        self.quantize_output = quantize_output
        self._last: dict = {}
        self._edges: Optional[tuple] = None  # (graph, (nodes, edges), |E|) of the last forward pass

    @staticmethod
    def validate_params(form: str = "exact", mu: float = 9.0, eta: float = 0.1, eta_s: float = 1e-5,
                        eta_lambda: float = 1e-5, c: float = 0.01, lambda0: float = 0.001, s0: float = 0.001,
                        lambda_min: Optional[float] = None, quantize_output: bool = True) -> None:
        if form not in FORMS:
            raise ValueError(f"smp form={form!r} is not valid; valid: {', '.join(map(repr, FORMS))} "
                             "(exact: X̃ + 2ηλ·L̃Δ as derived; released: X̃ + 2ηλ·ÂΔ as in the authors' code)")
        for name, val in (("mu", mu), ("eta", eta), ("eta_s", eta_s), ("eta_lambda", eta_lambda), ("c", c)):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
                raise ValueError(f"smp {name}={val!r} must be a number >= 0")
        if not isinstance(quantize_output, bool):
            raise ValueError(f"smp quantize_output={quantize_output!r} must be true or false (true: each step's "
                             "output goes through the update quantizer; false: it stays float, as in the "
                             "authors' code)")
        if eta <= 0:
            raise ValueError(f"smp eta={eta!r} must be > 0 (the step size of the descent on X)")

    def forward(self, g: dgl.DGLGraph, h: Tensor):
        eta, mu = self.eta, self.mu
        budget = self.c * self._edge_count(g)
        lam, s = self.lambda0, self.s0
        x, hidden = h, []
        lams: List[float] = []
        ts: List[float] = []
        for k in range(self.depth):
            xt = (1 - eta * (1 + mu)) * x + (eta * mu) * self.aggregate(g, x, k) + eta * h
            delta = xt - x
            a_delta = normalized_aggregate(g, delta, self.q_delta[k]["message"], self.q_delta[k]["aggregate"])
            step = delta - a_delta if self.form == "exact" else a_delta  # L̃Δ or ÂΔ
            x = xt + (2 * eta * lam) * step
            if self.quantize_output:
                x = self.q[k]["update"](x, g)
            t = float((delta.detach() * (delta.detach() - a_delta.detach())).sum())
            lam, s = multiplier_step(lam, s, t, budget, self.eta_lambda, self.eta_s, self.lambda_min)
            hidden.append(x)
            lams.append(lam)
            ts.append(t)
        if not self.training:
            self._last = {"smp_lambda": lams, "smp_T": ts, "smp_budget": budget}
        return x, hidden

    def _edge_count(self, g: dgl.DGLGraph) -> int:
        """:func:`undirected_edge_count` of ``g``, kept for the last graph seen (training calls it every
        forward pass on the same graph; the graph object itself is the key, as ids are reused)."""
        key = (g.num_nodes(), g.num_edges())
        if self._edges is None or self._edges[0] is not g or self._edges[1] != key:
            self._edges = (g, key, undirected_edge_count(g))
        return self._edges[2]

    def extra_metrics(self) -> dict:
        return dict(self._last)
