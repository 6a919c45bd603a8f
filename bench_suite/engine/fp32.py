"""The tuned FP32 baseline (implementation ``fp32-tuned`` of a speed measurement): the float32 models
the integer engine converts, computed with DGL's sparse kernel and the normalisation folded in.

DGL's layers (``GraphConv(norm='both')``, ``APPNPConv``: the ``dgl-fp32`` baseline of
:mod:`bench_suite.engine.bench`) recompute the degrees every call and make a separate pass over the
node features for each of: source scale, destination scale, bias, ReLU.  This path computes the
same function with the same weights, as a hand-written float32 inference path would:

* ``Â = D̃^{-1/2} Ã D̃^{-1/2}`` with the factors ``d̃^{-1/2}`` (``g.ndata['norm']`` of
  :func:`bench_suite.nn.graph.prepare_graph`) read once per graph; ``Ã·y`` is DGL's
  ``dgl.ops.copy_u_sum`` (the ``gspmm`` kernel that ``update_all(copy_u, sum)`` runs), so the
  sparse product is DGL's own;
* every aggregated tensor is pre-scaled by the source factor by the pass that produced it, and the
  destination factor is applied in the pass after the aggregation, fused with what follows it
  (bias, ReLU, APPNP's teleport term, SMP's elementwise steps): one in-place pass over the nodes
  between two products (numba, parallel over rows, same thread count, float32 arithmetic without
  contraction or reassociation);
* inference only: ``torch.inference_mode``, no dropout, no quantizers, no autograd bookkeeping.

Per model (``n = d̃^{-1/2}`` as a column, ``⊙`` row scaling):

* GCN (:class:`bench_suite.nn.models.DeepGCN`, layers ``H' = Â H W + b``, ReLU between): a layer
  takes ``P = n ⊙ H`` (the input features scaled once per forward; later layers get it from the
  previous epilogue) and computes ``S = Ã·(P W)`` or ``S = (Ã·P) W`` — aggregating at the narrower
  of the two widths, as DGL's ``GraphConv`` orders its product — then in place
  ``H' = relu(n ⊙ S + b)`` and, for the next layer, ``P' = n ⊙ H'`` in the same pass (the last layer:
  ``n ⊙ S + b``, the logits).
* APPNP (:class:`bench_suite.nn.propagations.APPNPPropagation`, ``X_{k+1} = (1−α) Â X_k + α H``):
  the MLP with ``torch.addmm`` and in-place ReLU, then on ``Z_k = n ⊙ X_k``:
  ``Z_{k+1} = c ⊙ (Ã·Z_k) + α n ⊙ H`` with ``c = (1−α) n²``: one sparse product and one in-place pass
  a step; the last step ``X_K = (1−α) n ⊙ (Ã·Z_{K−1}) + α H``.
* SMP (:class:`bench_suite.smp.SMPPropagation`, quantize_output irrelevant in float): per step
  ``S = Ã·(n ⊙ X)``; one pass forms ``X̃ = (c1 X + c2 n ⊙ S) + c3 H``, ``Δ = X̃ − X`` and ``n ⊙ Δ``;
  ``S_Δ = Ã·(n ⊙ Δ)``; one pass forms ``ÂΔ = n ⊙ S_Δ``, the new ``X = X̃ + 2ηλ·(Δ − ÂΔ)`` (``exact``;
  ``X̃ + 2ηλ·ÂΔ`` ``released``), ``n ⊙ X`` for the next step and ``T(Δ) = Σ Δ·(Δ − ÂΔ)`` (float64
  accumulation), then the multiplier step of :func:`bench_suite.smp.multiplier_step`.  |E| is
  counted once per graph.

Where the form comes from: the factorisation ``Â = D̃^{-1/2} Ã D̃^{-1/2}`` of GCN (Kipf & Welling 2017)
and APPNP (Gasteiger et al. 2019) lets the two diagonal factors ride on the passes next to the sparse
product instead of passes of their own; it is the split the integer engine makes too (METHOD.md §9:
messages source-scaled, the destination factor in the epilogue), so the comparison is between two
paths folded alike.  The narrower-width ordering of a GCN layer's product is DGL ``GraphConv``'s.  The
issue that asked for this baseline (issue 23) measured such a path 1.3-1.5x faster than DGL's layers.

The logits equal the suite's float32 model's (and DGL's) up to float32 rounding: the products are
the same, the scalings are associated differently (``tests/test_engine_fp32.py``).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from numba import njit, prange

from bench_suite.engine.convert import check_plain_gcn_layer
from bench_suite.engine.kernels.common import EXACT_FASTMATH, row_chunks

__all__ = ["TunedGCN", "TunedAPPNP", "TunedSMP", "tuned_fp32"]


# --------------------------------------------------------------------------- fused row passes

@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _scale_bias_relu(y, n, b, relu, prescale, nchunks):
    rows, width = y.shape
    chunk = (rows + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(rows, (t + 1) * chunk)):
            r, ni = y[i], n[i]
            for f in range(width):
                v = r[f] * ni + b[f]
                if relu and not v > 0:
                    v = np.float32(0)
                if prescale:
                    v = v * ni
                r[f] = v


def scale_bias_relu(y: torch.Tensor, n: np.ndarray, b: np.ndarray, relu: bool, prescale: bool) -> torch.Tensor:
    """In place: ``y ← relu(n ⊙ y + b)`` (``relu``), then ``y ← n ⊙ y`` (``prescale``); ``y`` float32
    contiguous [N, F], ``n`` [N], ``b`` [F]."""
    _scale_bias_relu(y.numpy(), n, b, bool(relu), bool(prescale), row_chunks(y.shape[0]))
    return y


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _scale_add(s, c, a, nchunks):
    rows, width = s.shape
    chunk = (rows + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(rows, (t + 1) * chunk)):
            r, ar, ci = s[i], a[i], c[i]
            for f in range(width):
                r[f] = r[f] * ci + ar[f]


def scale_add(s: torch.Tensor, c: np.ndarray, a: torch.Tensor) -> torch.Tensor:
    """In place: ``s ← c ⊙ s + a`` (``c`` a factor per row)."""
    _scale_add(s.numpy(), c, a.numpy(), row_chunks(s.shape[0]))
    return s


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _smp_pre(x, s, h, n, c1, c2, c3, delta, dscaled, nchunks):
    rows, width = x.shape
    chunk = (rows + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for i in range(t * chunk, min(rows, (t + 1) * chunk)):
            xr, sr, hr, dr, qr, ni = x[i], s[i], h[i], delta[i], dscaled[i], n[i]
            for f in range(width):
                v = (c1 * xr[f] + c2 * (sr[f] * ni)) + c3 * hr[f]
                sr[f] = v
                d = v - xr[f]
                dr[f] = d
                qr[f] = d * ni


@njit(parallel=True, cache=True, fastmath=EXACT_FASTMATH)
def _smp_post(xt, delta, sd, n, k, exact, x, xscaled, tpart, nchunks):
    rows, width = xt.shape
    chunk = (rows + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc = 0.0
        for i in range(t * chunk, min(rows, (t + 1) * chunk)):
            tr, dr, sr, xr, qr, ni = xt[i], delta[i], sd[i], x[i], xscaled[i], n[i]
            for f in range(width):
                a = sr[f] * ni
                lap = dr[f] - a
                v = tr[f] + k * (lap if exact else a)
                xr[f] = v
                qr[f] = v * ni
                acc += np.float64(dr[f] * lap)
        tpart[t] = acc


# --------------------------------------------------------------------------- the models

class _Graph:
    """What a tuned path reads of a prepared graph, once: ``n = d̃^{-1/2}`` (numpy [N] and torch [N, 1])."""

    def __init__(self, g) -> None:
        self.g = g
        self.key = (g.num_nodes(), g.num_edges())
        self.norm_t = g.ndata["norm"].reshape(-1, 1).to(torch.float32).contiguous()
        self.norm = self.norm_t.reshape(-1).numpy()


class _Tuned:
    """Holds the per-graph constants of the last graph seen (the graph object is the key)."""

    def __init__(self) -> None:
        self._graph: Optional[_Graph] = None

    def graph(self, g) -> _Graph:
        cg = self._graph
        if cg is None or cg.g is not g or cg.key != (g.num_nodes(), g.num_edges()):
            cg = self._graph = self.prepare(g)
        return cg

    def prepare(self, g) -> _Graph:
        return _Graph(g)

    def __call__(self, g, x: torch.Tensor) -> torch.Tensor:
        if x.is_sparse or x.layout != torch.strided:
            raise ValueError("tuned FP32 path: the features must be a dense tensor")
        with torch.inference_mode():
            return self.forward(self.graph(g), x.to(torch.float32).contiguous())


def _copy_u_sum(g, y: torch.Tensor) -> torch.Tensor:
    import dgl

    return dgl.ops.copy_u_sum(g, y)


class TunedGCN(_Tuned):
    """The tuned FP32 form of a :class:`bench_suite.nn.models.DeepGCN` (module docstring)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.weights: List[torch.Tensor] = []
        self.biases: List[np.ndarray] = []
        for k, layer in enumerate(model.layers):
            check_plain_gcn_layer(model, layer, f"gcn layer {k}", who="tuned FP32 path")
            w = layer.weight.detach().to(torch.float32).contiguous().clone()
            self.weights.append(w)
            b = layer.bias.detach().numpy().copy() if layer.bias is not None else np.zeros(w.shape[1], np.float32)
            self.biases.append(np.ascontiguousarray(b, np.float32))  # a snapshot, as the weights

    def forward(self, cg: _Graph, x: torch.Tensor) -> torch.Tensor:
        g, n = cg.g, cg.norm
        p = x * cg.norm_t  # n ⊙ X, once; later layers' inputs come pre-scaled from the epilogue
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.shape[0] < w.shape[1]:  # aggregate at the narrower width
                y = torch.mm(_copy_u_sum(g, p), w)
            else:
                y = _copy_u_sum(g, torch.mm(p, w))
            p = scale_bias_relu(y, n, b, relu=k < last, prescale=k < last)
        return p


def _mlp(model):
    ws, bs = [], []
    for lin in model.mlp.lins:
        w = lin.weight.detach().to(torch.float32).contiguous().clone()
        ws.append(w)
        bs.append(lin.bias.detach().clone() if lin.bias is not None else torch.zeros(w.shape[1]))
    return ws, bs


def _run_mlp(ws, bs, x: torch.Tensor) -> torch.Tensor:
    for k, (w, b) in enumerate(zip(ws, bs)):
        x = torch.addmm(b, x, w)
        if k < len(ws) - 1:
            x.relu_()
    return x


class TunedAPPNP(_Tuned):
    """The tuned FP32 form of a :class:`bench_suite.nn.models.Decoupled` with APPNP (module docstring)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.ws, self.bs = _mlp(model)
        self.depth, self.alpha = int(model.prop.depth), float(model.prop.alpha)

    def prepare(self, g) -> _Graph:
        cg = _Graph(g)
        n = cg.norm
        cg.c = ((1.0 - self.alpha) * n * n).astype(np.float32)  # (1-α) n², per row
        cg.c_last = ((1.0 - self.alpha) * n).astype(np.float32)  # (1-α) n: the last step un-scales
        cg.alpha_n = (self.alpha * cg.norm_t)  # α n
        return cg

    def forward(self, cg: _Graph, x: torch.Tensor) -> torch.Tensor:
        h = _run_mlp(self.ws, self.bs, x)
        if self.depth == 0:
            return h
        g = cg.g
        z = h * cg.norm_t  # Z_0 = n ⊙ H
        teleport = h * cg.alpha_n  # α n ⊙ H
        for _ in range(self.depth - 1):
            z = scale_add(_copy_u_sum(g, z), cg.c, teleport)
        return scale_add(_copy_u_sum(g, z), cg.c_last, h.mul_(self.alpha))  # (1-α) n ⊙ Ã Z + α H


class TunedSMP(_Tuned):
    """The tuned FP32 form of a :class:`bench_suite.nn.models.Decoupled` with SMP (module docstring)."""

    KEYS = ("form", "mu", "eta", "eta_s", "eta_lambda", "c", "lambda0", "s0", "lambda_min")

    def __init__(self, model) -> None:
        super().__init__()
        self.ws, self.bs = _mlp(model)
        p = model.prop
        self.depth = int(p.depth)
        self.smp = {k: getattr(p, k) for k in self.KEYS}

    def prepare(self, g) -> _Graph:
        from bench_suite.smp import undirected_edge_count

        cg = _Graph(g)
        cg.edges = undirected_edge_count(g)
        return cg

    def forward(self, cg: _Graph, x: torch.Tensor) -> torch.Tensor:
        from bench_suite.smp import multiplier_step

        h = _run_mlp(self.ws, self.bs, x)
        p, g, n = self.smp, cg.g, cg.norm
        eta, mu = p["eta"], p["mu"]
        f32 = np.float32
        c1, c2, c3 = f32(1 - eta * (1 + mu)), f32(eta * mu), f32(eta)
        lam, s = p["lambda0"], p["s0"]
        budget = p["c"] * cg.edges
        exact = p["form"] == "exact"
        x, xs = h, h * cg.norm_t
        delta, dscaled = torch.empty_like(h), torch.empty_like(h)
        xnew = torch.empty_like(h)
        nchunks = row_chunks(h.shape[0])
        tpart = np.zeros(nchunks)
        hn = h.numpy()
        for _ in range(self.depth):
            xt = _copy_u_sum(g, xs)  # S = Ã (n ⊙ X); becomes X̃ in place
            _smp_pre(x.numpy(), xt.numpy(), hn, n, c1, c2, c3, delta.numpy(), dscaled.numpy(), nchunks)
            sd = _copy_u_sum(g, dscaled)  # Ã (n ⊙ Δ)
            if x is h:  # the step's output must not overwrite H
                x = xnew
            _smp_post(xt.numpy(), delta.numpy(), sd.numpy(), n, f32(2 * eta * lam), exact, x.numpy(), xs.numpy(),
                      tpart, nchunks)
            lam, s = multiplier_step(lam, s, float(tpart.sum()), budget, p["eta_lambda"], p["eta_s"],
                                     p["lambda_min"])
        return x


def tuned_fp32(model) -> _Tuned:
    """The tuned FP32 path of a float model the integer engine converts
    (:func:`bench_suite.engine.convert.convertible`), with its weights: call it as ``path(g, x)`` with a
    graph prepared by :func:`bench_suite.nn.graph.prepare_graph`."""
    from bench_suite.nn.models import Decoupled, DeepGCN
    from bench_suite.nn.propagations import APPNPPropagation
    from bench_suite.smp import SMPPropagation

    if isinstance(model, DeepGCN):
        return TunedGCN(model)
    if isinstance(model, Decoupled):
        if type(model.prop) is APPNPPropagation:
            return TunedAPPNP(model)
        if type(model.prop) is SMPPropagation:
            return TunedSMP(model)
        raise ValueError(f"tuned FP32 path: propagation {type(model.prop).__name__} is not supported; supported: "
                         "APPNPPropagation ('appnp'), SMPPropagation ('smp')")
    raise ValueError(f"tuned FP32 path: {type(model).__name__} is not supported; supported: DeepGCN ('gcn'), "
                     "Decoupled ('decoupled' with propagation 'appnp' or 'smp')")
