"""Integer models: codes in, codes between layers, float logits out (METHOD.md §9).

The runtime only: conversion from a trained fake-quant model and range calibration are
:mod:`bench_suite.engine.convert`.  Every stage follows the fake-quant model's quantizers (their
:class:`~bench_suite.engine.ranges.RangeRule`):
dense transforms run as uint8 × int8 → int32 products (oneDNN, VNNI), normalised
aggregation as ``Â·x = q_aggregate(D̃^{-1/2}·s·(Ã·q − z·d̃))`` over packed message codes, and each
dynamic range comes from min/max of the current tensor, which the fused kernels
return per row.  Quantizers and ReLU are monotone, so a range further down the
chain follows from the per-row extremes without another pass.

How the neighbour sums of the ``aggregate`` role are computed is the model's ``sums`` mode
(:data:`SUMS`, chosen at :func:`bench_suite.engine.convert.convert`, stored with the model):

* ``"exact"`` (default): every normalised sum is the integer model's ``s·(S − z·d̃)·d̃^{-1/2}`` from
  the exact int32 sums, and a dynamic aggregate range is the min/max of those.  The fake-quant
  model adds the same dequantized messages one by one in float32, so the two models can give an
  element within rounding error of a tie a different code, and a dynamic range whose extreme moves
  by an ulp a different scale (so other codes too); nothing is spent on telling them apart.
* ``"reference"``: where the fake-quant model's float32 neighbour sums and the exact integer sums
  would give the ``aggregate`` role different codes (a sum within rounding error of a tie, the
  range's extremes), the sums are recomputed in the fake-quant model's order
  (:mod:`bench_suite.engine.kernels.sum_order`), so the integer model computes that model's
  aggregate codes and ranges exactly, at a cost in time (INT8 inference +45-55% as measured when it was
  always on; +23-32% for a 4-layer INT8/INT4 GCN on arxiv-like-10, one thread, under load).

With exact sums and static ranges after the sums (calibrated, QAT/DQ), a GCN layer sums each row
and applies its epilogue in one pass that writes the next layer's codes
(:func:`bench_suite.engine.kernels.aggregate_epilogue`, :meth:`Aggregation.fusable`): the same values
without the int32 matrix of sums.  An SMP step runs as two such passes that carry its elementwise
work (:func:`bench_suite.engine.kernels.smp_fused_steps`, :meth:`IntDecoupled.smp_fusable`).

In both modes the dense products are exact integer sums, which the fake-quant model's float32 BLAS
products approximate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

from bench_suite.bits import qmax
from bench_suite.engine import kernels as K
from bench_suite.engine.packing import PackedTensor, row_bytes
from bench_suite.engine.profile import stage
from bench_suite.engine.ranges import RangeRule, rule_from_state, rule_state
from bench_suite.restricted_unpickle import restricted_pickle_module

F32 = np.float32
#: stage names for :mod:`bench_suite.engine.profile`
INPUT, GEMM, RANGE = "input codes", "dense int8 product (oneDNN)", "range of a float tensor"
PACK, AGGREGATE = "quantize + pack messages", "sparse aggregation (int32 sums)"
EPI_RANGE, OUTPUT = "epilogue: range pass", "epilogue: codes / float output"
WHOLE, AGG_RANGE = "high-degree rows in float order", "range of the normalised sums (extremes in float order)"
TIES = "sums near ties in float order"
FUSED = "sparse aggregation + epilogue, fused (static ranges)"
SMP = "SMP elementwise steps"
#: the ``sums`` modes of an integer model (module docstring): the integer sums as they are, or the
#: fake-quant model's float32 order wherever it decides an aggregate code or range
SUMS = ("exact", "reference")


def check_sums(sums) -> str:
    """``sums`` if it is one of :data:`SUMS`, else a ValueError naming it and the valid ones."""
    if not isinstance(sums, str) or sums not in SUMS:
        raise ValueError(f"integer engine: sums={sums!r} is not valid; valid: 'exact' (the integer sums, default) "
                         "or 'reference' (the fake-quant model's float32 order where it decides a code or a range)")
    return sums


def fq(x: np.ndarray, p: tuple) -> np.ndarray:
    """Fake quantization of a float32 vector under ``p`` (``(s, z, Q)`` or, bit-truncated,
    ``(s, z, Q, step, κ, Qc)``: :func:`bench_suite.engine.kernels.grid`), as the kernels compute it."""
    trunc, (s, z, qm, step, kappa, qc, zs, ss) = K.grid(p)
    c = np.clip(np.rint(x / s) + z, F32(0), qm)
    if trunc:
        return (np.clip(np.rint((c + kappa) / step), F32(0), qc) - zs) * ss
    return (c - z) * s


@dataclass
class EngineGraph:
    """CSR of Ã (in-neighbours, self-loops included) with d̃ and d̃^{-1/2} as float32."""

    indptr: np.ndarray
    indices: np.ndarray
    deg: np.ndarray
    norm: np.ndarray

    @classmethod
    def from_dgl(cls, g) -> "EngineGraph":
        """From a graph prepared by :func:`bench_suite.nn.graph.prepare_graph`."""
        indptr, indices, _ = g.adj_tensors("csc")
        return cls(indptr.numpy().astype(np.int64), indices.numpy().astype(np.int64),
                   g.ndata["deg"].reshape(-1).numpy().astype(F32), g.ndata["norm"].reshape(-1).numpy().astype(F32))

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def undirected_edges(self) -> int:
        """|E| of A (self-loops excluded): :func:`bench_suite.smp.count_undirected` on the CSR."""
        from bench_suite.smp import count_undirected

        return count_undirected(np.repeat(np.arange(self.num_nodes), np.diff(self.indptr)), self.indices)


class IntLinear:
    """``q_input(x) · q_weight(W)`` as uint8 × int8 → int32 sums (oneDNN, VNNI), scaled by ``s_x·s_w``.

    oneDNN takes an integer input zero point and a symmetric int8 weight.  The weight is stored
    centred on the integer ``centre`` nearest its zero point for which ``q − centre`` fits int8
    (the zero point itself when it does); what is left, ``shift = centre − z_w`` (non-zero when some
    ``q − z_w`` does not fit int8, as for an INT8 weight whose zero point is not 128, and fractional
    under bit truncation), and
    the fractional part of the input's zero point (bit truncation) are added to the integer sums
    as a row and a column term before one multiplication by ``s_x·s_w``, so the product is the
    exact integer sum scaled once, as long as the sums stay below 2^24 (a float32 integer):

        Σ_k (x_k − z)(q_k − z_w) = Σ_k (x_k − ⌊z⌉)(q_k − centre) + shift·(Σ_k x_k − z·K) + (⌊z⌉ − z)·Σ_k (q_k − centre)
    """

    def __init__(self, weight: PackedTensor, input_rule: RangeRule, feature_rule: RangeRule,
                 bias: np.ndarray | None = None) -> None:
        self.weight, self.input_rule, self.feature_rule = weight, input_rule, feature_rule
        self.bias = None if bias is None else np.asarray(bias, F32).reshape(1, -1)
        codes = weight.codes().astype(np.int16)
        lowest, highest = (int(codes.max()) - 127, int(codes.min()) + 128) if codes.size else (0, 0)
        self.centre = min(max(int(round(float(weight.zero))), lowest), highest)
        self.shift = self.centre - weight.zero
        w8n = (codes - self.centre).astype(np.int8)
        self.col_sums = w8n.astype(np.float32).sum(axis=1)  # Σ_k w8[j, k], for an input zero that is no integer
        self.packed = torch.ops.onednn.qlinear_prepack(torch.from_numpy(w8n), None)
        self.w_scale = torch.tensor([weight.scale], dtype=torch.float32)
        self.unit = torch.ones(1, dtype=torch.float32)
        self.w_zero = torch.zeros(1, dtype=torch.int64)

    @property
    def out_dim(self) -> int:
        return self.weight.data.shape[0]

    def __call__(self, xq: np.ndarray, p: tuple) -> np.ndarray:
        s, z = K.effective(p)
        zi = int(round(z)) if np.isfinite(z) else 0  # oneDNN takes an integer zero point
        x = torch.from_numpy(xq)
        if not self.shift and zi == z:  # centred weight, integer input zero: oneDNN scales the int32 sums
            return torch.ops.onednn.qlinear_pointwise(x, float(s), zi, self.packed, self.w_scale, self.w_zero,
                                                      None, 1.0, 0, torch.float32, "none", [], "").numpy()
        y = torch.ops.onednn.qlinear_pointwise(x, 1.0, zi, self.packed, self.unit, self.w_zero,
                                               None, 1.0, 0, torch.float32, "none", [], "").numpy()
        col = (F32(zi - z) * self.col_sums) if zi != z else np.zeros(self.out_dim, F32)
        return K.finish_product(y, xq, z, self.shift, col, F32(s) * F32(self.weight.scale))

    @property
    def nbytes(self) -> int:
        return self.weight.nbytes + (0 if self.bias is None else self.bias.nbytes) + 2 * 12

    def map_rules(self, fn: Callable[[RangeRule], RangeRule]) -> None:
        self.input_rule, self.feature_rule = fn(self.input_rule), fn(self.feature_rule)

    def state(self) -> dict:
        return {"weight": self.weight.state(), "input": rule_state(self.input_rule),
                "feature": rule_state(self.feature_rule), "bias": self.bias}

    @classmethod
    def from_state(cls, d: dict) -> "IntLinear":
        return cls(PackedTensor.from_state(d["weight"]), rule_from_state(d["input"]), rule_from_state(d["feature"]),
                   d["bias"])


def input_codes(x: np.ndarray, rule: RangeRule) -> tuple:
    """Codes of the float input features under the first layer's input rule."""
    x = np.ascontiguousarray(x, dtype=F32)
    if rule.dynamic:
        rmin, rmax = K.rows_minmax(x)
        p = rule.params(rmin.min(), rmax.max())
    else:
        p = rule.params()
    return K.quantize(x, p), p


class Aggregation:
    """One quantized normalised aggregation ``Â·x`` (message, aggregate roles) with its update rule;
    ``sum_mode``: how its neighbour sums are computed (:data:`SUMS`; the model sets it, :attr:`IntModel.sums`)."""

    def __init__(self, message: RangeRule, aggregate: RangeRule, update: RangeRule | None = None,
                 sum_mode: str = "exact") -> None:
        self.message, self.aggregate, self.update = message, aggregate, update
        self.sum_mode = check_sums(sum_mode)

    def apply(self, g: EngineGraph, x: np.ndarray, rmin=None, rmax=None) -> np.ndarray:
        """The float value of the quantized ``Â·x`` (no update quantizer); ``rmin``/``rmax``:
        the per-row range of ``x`` if the caller has it."""
        if (rmin is None or rmax is None) and self.message.dynamic:
            rmin, rmax = stage(RANGE, K.rows_minmax, x)
        S, sums, ap = self.sums(g, x, None, rmin, rmax)
        return stage(OUTPUT, K.epilogue, S, ap, np.zeros((1, x.shape[1]), F32), mode="float", sums=sums, deg=g.deg,
                     norm=g.norm)

    def sums(self, g: EngineGraph, x: np.ndarray, feature: tuple | None, rmin, rmax):
        """Pack message codes of ``d̃^{-1/2}·q_feature(x)`` and sum them over Ã: ``(S, NeighbourSums,
        params of the aggregate role)``.  ``sum_mode`` ``"exact"``: the integer sums as they are (a
        dynamic aggregate range from their per-row extremes); ``"reference"``: the sums that decide an
        aggregate code recomputed in the fake-quant model's order, and a dynamic aggregate range the
        fake-quant model's (:func:`bench_suite.engine.kernels.sum_extremes`)."""
        bits = self.message.bits
        reference = self.sum_mode == "reference"
        packed, msg, ext = self.messages(g, x, feature, rmin, rmax)
        S, smin, smax = stage(AGGREGATE, K.aggregate, g.indptr, g.indices, packed, bits, x.shape[1],
                              gather=g.indices.size * packed.shape[1])
        sm, zm = (F32(v) for v in K.effective(msg))
        if reference:
            return self._reference_sums(g, S, smin, smax, packed, msg, ext, sm, zm)
        if self.aggregate.dynamic:
            amin = sm * (smin.astype(F32) - zm * g.deg) * g.norm
            amax = sm * (smax.astype(F32) - zm * g.deg) * g.norm
            agg = self.aggregate.params(amin.min(), amax.max())
        else:
            agg = self.aggregate.params()
        return S, K.NeighbourSums(S, sm, zm, g.indptr, g.indices, packed, bits), agg

    def messages(self, g: EngineGraph, x: np.ndarray, feature: tuple | None, rmin, rmax) -> tuple:
        """``(packed message codes of d̃^{-1/2}·q_feature(x), their params, ext)``; ``ext``: the message
        range's extremes as ``[[lo, hi]]`` when the rule is dynamic and the sums are ``"reference"``."""
        ext = None
        if self.message.dynamic:
            lo, hi = (rmin, rmax) if feature is None else (fq(rmin, feature), fq(rmax, feature))
            mlo, mhi = (lo * g.norm).min(), (hi * g.norm).max()
            if self.sum_mode == "reference":
                ext = np.array([[mlo, mhi]], F32)
                mlo, mhi = ext[0, 0], ext[0, 1]
            msg = self.message.params(mlo, mhi)
        else:
            msg = self.message.params()
        bits = self.message.bits
        packed = stage(PACK, K.quantize_pack, x, g.norm, msg, bits, row_bytes(x.shape[1], bits), feature)
        return packed, msg, ext

    def fusable(self, following: RangeRule | None = None) -> bool:
        """Whether the sums and the epilogue can run as one pass (:func:`bench_suite.engine.kernels.aggregate_epilogue`):
        exact sums, and the aggregate, update and ``following`` (the next layer's input) ranges static,
        so known before any row is summed.  The message range may be dynamic: it is set before packing."""
        return (self.sum_mode == "exact" and not self.aggregate.dynamic
                and not (self.update is not None and self.update.dynamic)
                and not (following is not None and following.dynamic))

    def _reference_sums(self, g: EngineGraph, S, smin, smax, packed, msg, ext, sm, zm):
        """:meth:`sums` with ``sum_mode="reference"``: ``ext`` the message range's extremes (``[[lo, hi]]``)
        when the message rule is dynamic."""
        bits = self.message.bits
        # every message code lies between these two
        codes = K.quantize(ext, msg) if ext is not None else np.array([0, qmax(bits)])
        spread = float(np.abs(codes.astype(np.float64) - float(zm)).max())
        ns = K.NeighbourSums(S, sm, zm, g.indptr, g.indices, packed, bits,
                             K.row_bounds(g.deg, g.norm, sm, zm, spread))
        if self.aggregate.dynamic:  # the fake-quant model's range; the integer sums' is within ulps of it
            lo, hi = ns.estimates(smin, smax, g.deg, g.norm)
            ns = stage(WHOLE, K.whole_rows, ns, g.norm, g.deg, self.aggregate.grid_scale(lo.min(), hi.max()))
            agg = self.aggregate.params(*stage(AGG_RANGE, K.sum_extremes, ns, smin, smax, g.deg, g.norm))
        else:
            agg = self.aggregate.params()
            ns = stage(WHOLE, K.whole_rows, ns, g.norm, g.deg, _step(agg))
        return S, stage(TIES, K.fix_ties, ns, g.norm, g.deg, _step(agg)), agg

    def map_rules(self, fn: Callable[[RangeRule], RangeRule]) -> None:
        self.message, self.aggregate = fn(self.message), fn(self.aggregate)
        if self.update is not None:
            self.update = fn(self.update)

    def state(self) -> dict:
        return {"message": rule_state(self.message), "aggregate": rule_state(self.aggregate),
                "update": None if self.update is None else rule_state(self.update)}

    @classmethod
    def from_state(cls, d: dict) -> "Aggregation":
        upd = d.get("update")
        return cls(rule_from_state(d["message"]), rule_from_state(d["aggregate"]),
                   None if upd is None else rule_from_state(upd))


def _step(p: tuple) -> float:
    """The step ``s`` of the grid on which quantizer parameters ``p`` round (the 8-bit grid under bit truncation)."""
    return float(K.grid(p)[1][0])


def _extremes(rmin, rmax) -> tuple:
    """Global extremes from per-row ones (``()`` when no range pass ran: a static rule's params)."""
    return () if rmin is None else (rmin.min(), rmax.max())


def _ranged(y: np.ndarray, first: RangeRule, *later: RangeRule) -> tuple:
    """``(rmin, rmax, params of first)`` for the float tensor ``y``; the per-row range pass
    runs only when ``first`` or a ``later`` rule (one whose range follows from ``y``'s) is dynamic."""
    if first.dynamic or any(r.dynamic for r in later):
        rmin, rmax = stage(RANGE, K.rows_minmax, y)
        return rmin, rmax, first.params(rmin.min(), rmax.max())
    return None, None, first.params()


def _relu_range(rmin, rmax, upd: tuple, relu: bool) -> tuple:
    if rmin is None:  # static rules downstream: no range needed
        return ()
    lo, hi = np.array([rmin.min()], F32), np.array([rmax.max()], F32)
    if upd is not None:
        lo, hi = fq(lo, upd), fq(hi, upd)
    if relu:
        lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return float(lo[0]), float(hi[0])


class IntModel:
    """Common save/load, size accounting and the walk over range rules.

    ``calibration`` is None while ranges are dynamic; after
    :func:`bench_suite.engine.convert.calibrate` it describes the graph the static ranges were
    calibrated on (stored with the model)."""

    kind = ""
    calibration: Optional[dict] = None
    _sums = "exact"
    #: take the fused passes where the ranges allow (an attribute of the object, not saved); False: the unfused ones
    fuse = True

    def parts(self) -> list:  # pragma: no cover - abstract
        """The linears and aggregations holding range rules."""
        raise NotImplementedError

    def map_rules(self, fn: Callable[[RangeRule], RangeRule]) -> None:
        """Replace every range rule ``r`` of the model by ``fn(r)``."""
        for part in self.parts():
            part.map_rules(fn)

    @property
    def sums(self) -> str:
        """How every aggregation computes its neighbour sums (:data:`SUMS`, module docstring); setting it
        sets each aggregation's ``sum_mode``."""
        return self._sums

    @sums.setter
    def sums(self, value: str) -> None:
        self._sums = check_sums(value)
        for part in self.parts():
            if isinstance(part, Aggregation):
                part.sum_mode = value

    def fused_layers(self) -> int:
        """Layers whose aggregation and epilogue run as one pass (:func:`bench_suite.engine.kernels.aggregate_epilogue`)."""
        return 0

    @property
    def ranges(self) -> str:
        """``"calibrated"`` (static ranges frozen at conversion) or ``"dynamic"`` (any rule reads its tensor)."""
        return "calibrated" if self.calibration is not None else "dynamic"

    def state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path) -> None:
        torch.save({"kind": self.kind, "state": self.state(), "calibration": self.calibration, "sums": self.sums},
                   path)

    @property
    def nbytes(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


def load(path) -> IntModel:
    # a model file may come from anyone: numpy arrays and plain values only, no code
    d = torch.load(path, pickle_module=restricted_pickle_module(path))
    classes = {c.kind: c for c in (IntGCN, IntDecoupled)}
    if d.get("kind") not in classes:
        raise ValueError(f"{path}: unknown integer model kind {d.get('kind')!r}; valid: {', '.join(classes)}")
    model = classes[d["kind"]].from_state(d["state"])
    model.calibration = d.get("calibration")
    model.sums = d.get("sums", "exact")  # files saved before the sums mode computed the exact sums
    return model


class IntGCN(IntModel):
    """Integer DeepGCN: per layer ``q_u(Â·q_f(q_in(H)·q_w(W)) + b)``, ReLU between layers.

    A layer whose aggregate, update and next-input ranges are static (calibrated, QAT/DQ) and whose
    sums are exact sums its neighbours and applies the epilogue in one pass that writes the next
    layer's codes (:func:`bench_suite.engine.kernels.aggregate_epilogue`); others aggregate into an
    int32 matrix first.  ``fuse = False`` (an attribute of the object, not saved) always takes the
    two passes, the same values."""

    kind = "gcn"

    def __init__(self, linears: List[IntLinear], aggs: List[Aggregation], biases: List[np.ndarray]) -> None:
        self.linears, self.aggs = linears, aggs
        self.biases = [np.asarray(b, F32).reshape(1, -1) for b in biases]

    def forward(self, g: EngineGraph, x: np.ndarray) -> np.ndarray:
        xq, p = stage(INPUT, input_codes, np.asarray(x, F32), self.linears[0].input_rule)
        for k, (lin, agg, b) in enumerate(zip(self.linears, self.aggs, self.biases)):
            last = k == len(self.linears) - 1
            y = stage(GEMM, lin, xq, p, macs=xq.size * lin.out_dim)
            ymin, ymax, feat = _ranged(y, lin.feature_rule, agg.message)
            nxt = None if last else self.linears[k + 1].input_rule
            if self.fuse and agg.fusable(nxt):
                packed, msg, _ = agg.messages(g, y, feat, ymin, ymax)
                kw = dict(update=agg.update.params(), gather=g.indices.size * packed.shape[1])
                args = (g.indptr, g.indices, packed, agg.message.bits, y.shape[1], g.deg, g.norm, msg,
                        agg.aggregate.params(), b)
                if last:
                    return stage(FUSED, K.aggregate_epilogue, *args, mode="float", **kw)
                p = nxt.params()
                xq = stage(FUSED, K.aggregate_epilogue, *args, relu=True, mode="codes", following=p, **kw)
                continue
            S, sums, ap = agg.sums(g, y, feat, ymin, ymax)
            kw = dict(sums=sums, deg=g.deg, norm=g.norm)
            rmin = rmax = None  # static update and next-input ranges need no range pass
            if agg.update.dynamic or (nxt is not None and nxt.dynamic):
                rmin, rmax = stage(EPI_RANGE, K.epilogue, S, ap, b, mode="range", **kw)
            upd = agg.update.params(*_extremes(rmin, rmax))
            if last:
                return stage(OUTPUT, K.epilogue, S, ap, b, update=upd, mode="float", **kw)
            p = nxt.params(*_relu_range(rmin, rmax, upd, True))
            xq = stage(OUTPUT, K.epilogue, S, ap, b, update=upd, relu=True, mode="codes", following=p, **kw)
        raise AssertionError("unreachable")

    __call__ = forward

    def fused_layers(self) -> int:
        nxt = [l.input_rule for l in self.linears[1:]] + [None]
        return sum(agg.fusable(r) for agg, r in zip(self.aggs, nxt)) if self.fuse else 0

    def parts(self) -> list:
        return [*self.linears, *self.aggs]

    @property
    def nbytes(self) -> int:
        return sum(l.nbytes for l in self.linears) + sum(b.nbytes for b in self.biases) + 3 * 12 * len(self.aggs)

    def state(self) -> dict:
        return {"linears": [l.state() for l in self.linears], "aggs": [a.state() for a in self.aggs],
                "biases": self.biases}

    @classmethod
    def from_state(cls, d: dict) -> "IntGCN":
        return cls([IntLinear.from_state(s) for s in d["linears"]], [Aggregation.from_state(s) for s in d["aggs"]],
                   d["biases"])


class IntDecoupled(IntModel):
    """Integer decoupled model: quantized MLP, then K propagation steps, either APPNP
    ``X ← q_u((1−α)·Â X + α·H)`` (Gasteiger et al. 2019) or SMP (one multiplier step
    per layer, arXiv 2308.14949, :class:`bench_suite.smp.SMPPropagation`).  Features
    stay float between steps; every ``Â·`` runs on packed message codes.  With static ranges and exact
    sums an SMP step is two fused passes (:func:`bench_suite.engine.kernels.smp_fused_steps`; ``fuse =
    False``, an attribute not saved, takes the unfused steps: the same values)."""

    kind = "decoupled"
    SMP_KEYS = ("form", "mu", "eta", "eta_s", "eta_lambda", "c", "lambda0", "s0", "lambda_min")

    def __init__(self, linears: List[IntLinear], aggs: List[Aggregation], alpha: float = 0.1,
                 smp: dict | None = None, delta_aggs: List[Aggregation] | None = None) -> None:
        self.linears, self.aggs, self.alpha = linears, aggs, float(alpha)
        self.smp, self.delta_aggs = smp, delta_aggs

    def mlp(self, x: np.ndarray) -> np.ndarray:
        xq, p = stage(INPUT, input_codes, np.asarray(x, F32), self.linears[0].input_rule)
        for k, lin in enumerate(self.linears):
            y = stage(GEMM, lin, xq, p, macs=xq.size * lin.out_dim)
            ymin, ymax, feat = _ranged(y, lin.feature_rule)
            if k == len(self.linears) - 1:
                return stage(OUTPUT, K.epilogue, y, feat, lin.bias, mode="float")
            nxt = self.linears[k + 1].input_rule
            rmin = rmax = None
            if nxt.dynamic:
                rmin, rmax = stage(EPI_RANGE, K.epilogue, y, feat, lin.bias, mode="range")
            p = nxt.params(*_relu_range(rmin, rmax, None, True))
            xq = stage(OUTPUT, K.epilogue, y, feat, lin.bias, relu=True, mode="codes", following=p)
        raise AssertionError("unreachable")

    def forward(self, g: EngineGraph, x: np.ndarray) -> np.ndarray:
        h = self.mlp(x)
        return self._smp(g, h) if self.smp is not None else self._appnp(g, h)

    def _appnp(self, g: EngineGraph, h: np.ndarray) -> np.ndarray:
        teleport = F32(self.alpha) * h
        xk = h
        for agg in self.aggs:
            rmin = rmax = None  # the message range follows from x's row ranges (Aggregation.sums)
            if agg.message.dynamic:
                rmin, rmax = stage(RANGE, K.rows_minmax, xk)
            S, sums, ap = agg.sums(g, xk, None, rmin, rmax)
            kw = dict(sums=sums, deg=g.deg, norm=g.norm, coef=1.0 - self.alpha)
            rmin = rmax = None
            if agg.update.dynamic:
                rmin, rmax = stage(EPI_RANGE, K.epilogue, S, ap, teleport, mode="range", **kw)
            upd = agg.update.params(*_extremes(rmin, rmax))
            xk = stage(OUTPUT, K.epilogue, S, ap, teleport, update=upd, mode="float", **kw)
        return xk

    def _smp(self, g: EngineGraph, h: np.ndarray) -> np.ndarray:
        """SMP steps in the order of :meth:`bench_suite.smp.SMPPropagation.forward`; the
        elementwise work of a step runs in three fused parallel kernels (smp_pre, smp_post,
        fq_rows), which also hand each aggregation the row ranges of its input."""
        from bench_suite.smp import multiplier_step

        p = self.smp
        eta, mu = p["eta"], p["mu"]
        budget = p["c"] * g.undirected_edges
        lam, s = p["lambda0"], p["s0"]
        c1, c2, c3 = F32(1 - eta * (1 + mu)), F32(eta * mu), F32(eta)
        h = np.ascontiguousarray(h, dtype=F32)
        x = h
        rmin = rmax = None  # later steps get x's row ranges from fq_rows
        if self.aggs and self.aggs[0].message.dynamic:
            rmin, rmax = stage(RANGE, K.rows_minmax, x)
        exact = p["form"] == "exact"
        if self.fuse and self.smp_fusable():
            state = {"lam": lam, "s": s}

            def multiplier(t):  # the step's T(Δ) → the next step's 2ηλ (None: the first step's)
                if t is not None:
                    state["lam"], state["s"] = multiplier_step(state["lam"], state["s"], t, budget, p["eta_lambda"],
                                                               p["eta_s"], p.get("lambda_min"))
                return F32(2 * eta * state["lam"])

            steps = [(a.message.params(), a.aggregate.params(), a.update.params(), d.message.params(),
                      d.aggregate.params()) for a, d in zip(self.aggs, self.delta_aggs)]
            bits = self.aggs[0].message.bits
            return stage(FUSED, K.smp_fused_steps, g.indptr, g.indices, g.deg, g.norm, h, bits, h.shape[1], steps,
                         c1, c2, c3, exact, multiplier,
                         gather=2 * len(steps) * g.indices.size * row_bytes(h.shape[1], bits))
        for agg, dagg in zip(self.aggs, self.delta_aggs):
            xt, delta, dmin, dmax = stage(SMP, K.smp_pre, x, agg.apply(g, x, rmin, rmax), h, c1, c2, c3)
            a_delta = dagg.apply(g, delta, dmin, dmax)
            v, vmin, vmax, t = stage(SMP, K.smp_post, xt, delta, a_delta, F32(2 * eta * lam), exact)
            upd = agg.update.params(vmin.min(), vmax.max()) if agg.update.dynamic else agg.update.params()
            x, rmin, rmax = stage(SMP, K.fq_rows, v, upd)
            lam, s = multiplier_step(lam, s, t, budget, p["eta_lambda"], p["eta_s"], p.get("lambda_min"))
        return x

    __call__ = forward

    def smp_fusable(self) -> bool:
        """Whether the SMP steps can run two fused passes each (:func:`bench_suite.engine.kernels.smp_fused_steps`):
        exact sums, every message, aggregate and update range static and one bit width."""
        if self.smp is None or not self.aggs:
            return False
        bits = self.aggs[0].message.bits
        return all(a.fusable() and not a.message.dynamic and d.fusable() and not d.message.dynamic
                   and a.message.bits == d.message.bits == bits for a, d in zip(self.aggs, self.delta_aggs))

    def fused_layers(self) -> int:
        return len(self.aggs) if self.fuse and self.smp_fusable() else 0

    def parts(self) -> list:
        return [*self.linears, *self.aggs, *(self.delta_aggs or [])]

    @property
    def nbytes(self) -> int:
        n = sum(l.nbytes for l in self.linears) + 3 * 12 * len(self.aggs) + 8
        return n + (0 if self.smp is None else 2 * 12 * len(self.delta_aggs) + 8 * len(self.SMP_KEYS))

    def state(self) -> dict:
        return {"linears": [l.state() for l in self.linears], "aggs": [a.state() for a in self.aggs],
                "alpha": self.alpha, "smp": self.smp,
                "delta_aggs": None if self.delta_aggs is None else [a.state() for a in self.delta_aggs]}

    @classmethod
    def from_state(cls, d: dict) -> "IntDecoupled":
        deltas = d.get("delta_aggs")
        return cls([IntLinear.from_state(s) for s in d["linears"]], [Aggregation.from_state(s) for s in d["aggs"]],
                   d["alpha"], d.get("smp"), None if deltas is None else [Aggregation.from_state(s) for s in deltas])
