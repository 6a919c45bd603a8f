"""Conversion of a trained fake-quant model into an integer model (METHOD.md §9), and the
calibration of static ranges.

:func:`convert` reads each quantizer's :class:`~bench_suite.engine.ranges.RangeRule` and each
weight's codes (:mod:`bench_suite.engine.ranges`) and builds the runtime objects of
:mod:`bench_suite.engine.intmodel`.  With ``calibrate_on=(graph, features)`` it then runs
:func:`calibrate`: one integer forward pass over that graph fixes every dynamic range (QLR's
α·[min, max] of the current tensor) at the value it took there, so the integer model runs
without the per-layer min/max passes.  Calibrated on the graph it is deployed on, the model
computes exactly what the dynamic one computes; calibrate on a graph that keeps the deployed
degree distribution, since the aggregate ranges depend on it (node-induced subgraphs shrink
degrees and narrow them).
"""
from __future__ import annotations

import numpy as np
import torch

from bench_suite.engine.intmodel import Aggregation, EngineGraph, IntDecoupled, IntGCN, IntLinear, IntModel, check_sums
from bench_suite.engine.ranges import RangeRule, quantize_weight, recording, rule_of, rule_state, rules
from bench_suite.quant.base import Quantizer

__all__ = ["convert", "convertible", "calibrate", "fp32_bytes", "RangeRule", "rule_of", "rule_state", "quantize_weight", "rules"]

F32 = np.float32


def convertible() -> tuple:
    """``(model classes, propagation classes)`` that :func:`convert` converts: a model is an instance of
    one of the first, a decoupled model's propagation exactly one of the second."""
    from bench_suite.nn.models import Decoupled, DeepGCN
    from bench_suite.nn.propagations import APPNPPropagation
    from bench_suite.smp import SMPPropagation

    return (DeepGCN, Decoupled), (APPNPPropagation, SMPPropagation)


def convert(model: torch.nn.Module, calibrate_on: tuple | None = None, calibration_graph: str = "",
            sums: str = "exact") -> IntModel:
    """An integer model equivalent to ``model`` in eval mode.  ``calibrate_on``: ``(EngineGraph,
    features)`` to calibrate static ranges on (:func:`calibrate`, described as ``calibration_graph``);
    None keeps the dynamic ranges.  ``sums`` (:data:`bench_suite.engine.intmodel.SUMS`): ``"exact"``
    computes the aggregate role's codes and ranges from the exact integer neighbour sums;
    ``"reference"`` from the fake-quant model's float32 sums where they decide a code or a range
    (:mod:`bench_suite.engine.kernels.sum_order`: that model's codes exactly, at a cost in time); the
    model keeps it (:attr:`~bench_suite.engine.intmodel.IntModel.sums`) and calibrates in that mode."""
    from bench_suite.nn.models import Decoupled, DeepGCN

    check_sums(sums)
    model.eval()
    if isinstance(model, DeepGCN):
        int_model: IntModel = _gcn(model)
    elif isinstance(model, Decoupled):
        int_model = _decoupled(model)
    else:
        raise ValueError(f"cannot convert {type(model).__name__} to an integer model; supported: DeepGCN ('gcn'), "
                         "Decoupled ('decoupled' with propagation 'appnp' or 'smp')")
    int_model.sums = sums
    if calibrate_on is not None:
        calibrate(int_model, *calibrate_on, graph=calibration_graph)
    return int_model


def check_plain_gcn_layer(model, layer, where: str, who: str = "integer engine") -> None:
    """A ValueError unless ``layer`` of the DeepGCN ``model`` is the plain GCN layer (no batchnorm, no self
    weight, the symmetric normalisation): the one layer the integer engine and the tuned FP32 path compute."""
    if getattr(model, "bns", None) is not None or getattr(layer, "weight_self", None) is not None:
        raise ValueError(f"{who}: {where} has batchnorm or a self weight; supported: the plain GCN layer")
    if getattr(layer, "norm", "sym") != "sym":
        raise ValueError(f"{who}: {where} aggregates with norm={layer.norm!r}; "
                         "supported: 'sym' (D̃^-1/2 Ã D̃^-1/2)")


def _gcn(model) -> IntGCN:
    linears, aggs, biases = [], [], []
    for k, layer in enumerate(model.layers):
        where = f"gcn layer {k}"
        check_plain_gcn_layer(model, layer, where)
        r = rules(layer.q, ("input", "feature", "message", "aggregate", "update"), where)
        w = quantize_weight(layer.q["weight"], layer.weight.detach().t().contiguous(), f"{where} weight")
        linears.append(IntLinear(w, r["input"], r["feature"]))
        aggs.append(Aggregation(r["message"], r["aggregate"], r["update"]))
        biases.append(layer.bias.detach().numpy() if layer.bias is not None else np.zeros(w.data.shape[0], F32))
    return IntGCN(linears, aggs, biases)


def _decoupled(model) -> IntDecoupled:
    appnp, smp_prop = convertible()[1]
    kind = type(model.prop)
    if kind not in (appnp, smp_prop):
        raise ValueError(f"integer engine: propagation {kind.__name__} is not supported; "
                         "supported: APPNPPropagation ('appnp'), SMPPropagation ('smp')")
    linears = []
    for k, lin in enumerate(model.mlp.lins):
        where = f"mlp layer {k}"
        r = rules(lin.q, ("input", "feature"), where)
        w = quantize_weight(lin.q["weight"], lin.weight.detach().t().contiguous(), f"{where} weight")
        bias = lin.bias.detach().numpy() if lin.bias is not None else np.zeros(w.data.shape[0], F32)
        linears.append(IntLinear(w, r["input"], r["feature"], bias))
    aggs = [Aggregation(*rules(q, ("message", "aggregate", "update"), f"propagation step {k}").values())
            for k, q in enumerate(model.prop.q)]
    if kind is appnp:
        return IntDecoupled(linears, aggs, model.prop.alpha)
    if not getattr(model.prop, "quantize_output", True):
        raise ValueError("integer engine: SMP with quantize_output=false (float step outputs) is not supported")
    smp = {key: getattr(model.prop, key) for key in IntDecoupled.SMP_KEYS}
    deltas = [Aggregation(*rules(q, ("message", "aggregate"), f"smp step {k} (Δ)").values())
              for k, q in enumerate(model.prop.q_delta)]
    return IntDecoupled(linears, aggs, smp=smp, delta_aggs=deltas)


def calibrate(int_model: IntModel, g: EngineGraph, x, graph: str = "") -> IntModel:
    """Freeze every dynamic range of ``int_model`` (in place) at the value one forward pass over
    graph ``g`` with features ``x`` gives it; ``int_model.calibration`` records the graph
    (``graph``: its name, ``nodes``, ``edges``: undirected edges of A)."""
    if int_model.calibration is not None:
        raise ValueError(f"this integer model's ranges are already calibrated (on {int_model.calibration})")
    with recording() as seen, torch.no_grad():
        int_model(g, np.asarray(x, F32))

    def freeze(r: RangeRule) -> RangeRule:
        if not r.dynamic:
            return r
        if id(r) not in seen:
            raise RuntimeError("calibration: a dynamic range rule was not applied in the calibration pass")
        return r.frozen(seen[id(r)])

    int_model.map_rules(freeze)
    int_model.calibration = {"graph": graph, "nodes": int(g.num_nodes), "edges": int(g.undirected_edges)}
    return int_model


def fp32_bytes(model: torch.nn.Module) -> int:
    """4 bytes per model parameter (quantizer parameters excluded)."""
    quant = {id(p) for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()}
    return 4 * sum(p.numel() for p in model.parameters() if id(p) not in quant)
