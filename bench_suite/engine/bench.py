"""Speed benchmark: DGL FP32 vs the suite's FP32 path vs the integer engine.

Timings are interleaved (one run of each implementation per round, ABAB…) and the
median of ``repeats`` rounds after ``warmup`` rounds is reported, with the same
thread count for torch, DGL and numba.  Each measurement becomes one ``speed``
record (see :func:`measure`).  Before timing, :func:`bench_suite.engine.kernels.retain_heap`
keeps freed memory in the process heap (for every implementation alike), and the
quantizer ranges are set by one forward on a subgraph (:func:`calibrate`).

Baselines: ``dgl.nn.GraphConv(norm='both')`` layers for GCN, ``dgl.nn.APPNPConv`` for
decoupled APPNP, and the SMP iteration over ``GraphConv`` (``weight=False``) for SMP;
all in eval mode under ``torch.no_grad()`` with the same thread count.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import dgl
import numpy as np
import torch

from bench_suite.record import SPEED

#: generated graphs: (nodes, undirected edges, features, classes)
GRAPHS: Dict[str, tuple] = {
    "arxiv-like": (169_343, 1_166_243, 128, 40),
    "arxiv-like-10": (16_934, 116_624, 128, 40),
    "small": (2_000, 10_000, 64, 8),
    "tiny": (300, 1_200, 16, 4),
}
MODELS = ("gcn", "decoupled")
PROPAGATIONS = ("appnp", "smp")
IMPLS = ("dgl-fp32", "suite-fp32", "int")
#: how the integer model gets its activation ranges: recomputed from every tensor (QLR's α·[min, max],
#: the exact simulation of the fake-quant model) or calibrated once and frozen (:func:`bench_suite.engine.convert.calibrate`)
RANGES = ("dynamic", "calibrated")


def power_law_graph(nodes: int, edges: int, seed: int = 0, exponent: float = 2.5) -> dgl.DGLGraph:
    """Symmetric graph without self-loops with exactly ``edges`` undirected edges.

    Chung–Lu model: node weights from a Pareto law of tail exponent ``exponent``
    (degrees ∝ weights), endpoints drawn ∝ weight, duplicates and self-loops
    rejected until the edge count is reached.  Node order is a random permutation.
    """
    if edges > nodes * (nodes - 1) // 2:
        raise ValueError(f"{edges} edges do not fit a simple graph on {nodes} nodes")
    rng = np.random.default_rng(seed)
    w = (rng.pareto(exponent - 1.0, nodes) + 1.0)
    p = w / w.sum()
    have = np.empty(0, dtype=np.int64)
    while have.size < edges:
        need = int((edges - have.size) * 1.1) + 16
        u = rng.choice(nodes, need, p=p)
        v = rng.choice(nodes, need, p=p)
        keep = u != v
        lo, hi = np.minimum(u, v)[keep], np.maximum(u, v)[keep]
        have = np.unique(np.concatenate([have, lo.astype(np.int64) * nodes + hi]))
    have = rng.permutation(have)[:edges]
    src, dst = have // nodes, have % nodes
    g = dgl.graph((np.concatenate([src, dst]), np.concatenate([dst, src])), num_nodes=nodes)
    return g


def generated(name: str, seed: int = 0):
    """``(graph, features, num_classes)`` of a generated graph in :data:`GRAPHS`."""
    if name not in GRAPHS:
        raise ValueError(f"unknown generated graph {name!r}; valid: {', '.join(GRAPHS)}")
    n, e, f, c = GRAPHS[name]
    g = power_law_graph(n, e, seed)
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((n, f)).astype(np.float32))
    return g, x, c


def real_graph(name: str, data_dir=None):
    """``(graph, features, num_classes, data)`` of a registered dataset (public/seed-0 split)."""
    from bench_suite.data.datasets import load_dataset

    data = load_dataset(name, seed=0, data_dir=data_dir)
    return data.graph, data.features, data.num_classes, data


def graph_inputs(name: str, seed: int = 0, data_dir=None):
    """A generated graph (:data:`GRAPHS`) or a registered dataset, by name; ``data`` is None
    for generated graphs (no labels to train on)."""
    from bench_suite.registry import DATASETS

    if name in GRAPHS:
        return (*generated(name, seed), None)
    if name in DATASETS.keys():
        return real_graph(name, data_dir)
    raise ValueError(f"speed: graph={name!r} is neither a generated graph ({', '.join(GRAPHS)}) nor a "
                     f"registered dataset ({', '.join(sorted(DATASETS.keys()))})")


def train_briefly(model: torch.nn.Module, g, data, epochs: int) -> None:
    """``epochs`` full-graph Adam steps on the training nodes (quantizers in training mode), with the
    suite's optimiser and defaults (:func:`bench_suite.train.optimizer_for`, :class:`TrainConfig`: lr
    0.01, weight decay 5e-4, quantizer parameters such as QLR's α in their own group at lr 1e-4).
    One Adam group at lr 0.01 for α too made QLR INT4/INT2 GCN-4 on amazon-computers predict one class."""
    import torch.nn.functional as F

    from bench_suite.spec import TrainConfig
    from bench_suite.train import optimizer_for

    opt = optimizer_for(model, TrainConfig())
    mask = data.train_mask & (data.labels >= 0)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(g, data.features)[mask], data.labels[mask]).backward()
        opt.step()


class DGLGCN(torch.nn.Module):
    """The ecosystem baseline: ``dgl.nn.GraphConv`` layers (norm='both'), ReLU between."""

    def __init__(self, model) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for layer in model.layers:
            i, o = layer.weight.shape
            conv = dgl.nn.GraphConv(i, o, norm="both", bias=layer.bias is not None)
            conv.weight.data.copy_(layer.weight.data)
            if layer.bias is not None:
                conv.bias.data.copy_(layer.bias.data)
            self.layers.append(conv)

    def forward(self, g, x):
        for k, conv in enumerate(self.layers):
            x = conv(g, x)
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def float_mlp(model) -> torch.nn.ModuleList:
    """``torch.nn.Linear`` copies of a decoupled model's MLP layers."""
    lins = torch.nn.ModuleList()
    for lin in model.mlp.lins:
        i, o = lin.weight.shape
        t = torch.nn.Linear(i, o, bias=lin.bias is not None)
        t.weight.data.copy_(lin.weight.data.t())
        if lin.bias is not None:
            t.bias.data.copy_(lin.bias.data)
        lins.append(t)
    return lins


def run_mlp(lins: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for k, lin in enumerate(lins):
        x = lin(x)
        if k < len(lins) - 1:
            x = torch.relu(x)
    return x


class DGLAPPNP(torch.nn.Module):
    """Baseline for decoupled models: the same float MLP, then ``dgl.nn.APPNPConv``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.lins = float_mlp(model)
        self.prop = dgl.nn.APPNPConv(model.prop.depth, model.prop.alpha)

    def forward(self, g, x):
        return self.prop(g, run_mlp(self.lins, x))


class DGLSMP(torch.nn.Module):
    """Baseline for decoupled SMP: the same float MLP, then the SMP iteration of
    :class:`bench_suite.smp.SMPPropagation` with Â applied by ``dgl.nn.GraphConv``
    (norm='both', no weight) — DGL has no SMP module of its own."""

    def __init__(self, model) -> None:
        super().__init__()
        self.lins = float_mlp(model)
        p = model.prop
        self.smp = {k: getattr(p, k) for k in ("form", "mu", "eta", "eta_s", "eta_lambda", "c", "lambda0", "s0",
                                                "lambda_min")}
        self.depth = p.depth
        self.conv = dgl.nn.GraphConv(1, 1, norm="both", weight=False, bias=False)

    def forward(self, g, x):
        from bench_suite.smp import multiplier_step, undirected_edge_count

        x = run_mlp(self.lins, x)
        h, p = x, self.smp
        eta, mu = p["eta"], p["mu"]
        lam, s = p["lambda0"], p["s0"]
        budget = p["c"] * undirected_edge_count(g)
        for _ in range(self.depth):
            xt = (1 - eta * (1 + mu)) * x + (eta * mu) * self.conv(g, x) + eta * h
            delta = xt - x
            a_delta = self.conv(g, delta)
            lap = delta - a_delta
            x = xt + (2 * eta * lam) * (lap if p["form"] == "exact" else a_delta)
            t = float((delta * lap).sum())
            lam, s = multiplier_step(lam, s, t, budget, p["eta_lambda"], p["eta_s"], p["lambda_min"])
        return x


def build(model: str, depth: int, hidden: int, in_dim: int, classes: int, quant, propagation: str = "appnp",
          lambda_min: Optional[float] = None):
    from bench_suite.registry import MODELS as REG

    if propagation not in PROPAGATIONS:
        raise ValueError(f"speed: propagation={propagation!r} is not supported; valid: {', '.join(PROPAGATIONS)}")
    if model not in MODELS:
        raise ValueError(f"speed: model={model!r} is not supported; valid: {', '.join(MODELS)}")
    params = {"hidden": hidden}
    if lambda_min is not None and (model, propagation) != ("decoupled", "smp"):
        raise ValueError(f"speed: lambda_min={lambda_min} applies to model=decoupled propagation=smp only, "
                         f"not model={model} propagation={propagation}")
    if model == "decoupled":
        params["propagation"] = propagation
        if lambda_min is not None:
            params["propagation_params"] = {"lambda_min": float(lambda_min)}
    return REG.create(model, in_dim=in_dim, num_classes=classes, depth=depth, quant=quant, **params)


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy model parameters (not quantizer state) from ``src`` to ``dst``."""
    from bench_suite.quant.base import Quantizer

    skip = {name for name, m in src.named_modules() if isinstance(m, Quantizer)}
    state = {k: v for k, v in src.state_dict().items() if not any(k.startswith(s + ".") for s in skip)}
    dst.load_state_dict(state, strict=False)


#: nodes of the induced subgraph used to set quantizer ranges before timing
CALIBRATION_NODES = 8192


def calibrate(model: torch.nn.Module, g0, x: torch.Tensor, seed: int = 0) -> None:
    """One training-mode forward on a random induced subgraph of at most
    :data:`CALIBRATION_NODES` nodes: sets static ranges and initialises QLR's α (its grid
    search costs tens of passes per quantizer, minutes at arxiv size).  Timing does not
    depend on the ranges' values; dynamic (QLR) ranges are recomputed on the full graph."""
    from bench_suite.nn.graph import prepare_graph

    n = g0.num_nodes()
    if n > CALIBRATION_NODES:
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, CALIBRATION_NODES, replace=False)))
        g0, x = dgl.node_subgraph(g0, keep, store_ids=False), x[keep]
    with torch.no_grad():
        model.train()
        model(prepare_graph(g0), x)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure(model: str = "gcn", depth: int = 4, hidden: int = 256, graph: str = "arxiv-like", bits: int = 2,
            quant: Optional[str] = None, threads: int = 2, repeats: int = 5, warmup: int = 1,
            impls: tuple = IMPLS, model_path: Optional[str] = None, seed: int = 0,
            propagation: str = "appnp", train_epochs: int = 0, data_dir=None,
            truncation: Optional[str] = None, breakdown: bool = False,
            lambda_min: Optional[float] = None, ranges: str = "dynamic", calibration_graph: Optional[str] = None,
            calibration_seed: Optional[int] = None) -> List[dict]:
    """Time each implementation in ``impls`` on one model and graph; one record per implementation.

    ``graph`` is a generated graph (:data:`GRAPHS`) or a registered dataset (read from
    ``data_dir`` / ``$BENCH_SUITE_DATA``).  The fake-quant model has random weights with
    ranges set by one calibration forward pass (timing does not depend on the weights'
    values), or, with ``train_epochs`` > 0 on a dataset, is trained that many epochs on
    its training nodes first (the record then also holds the test accuracy of the
    fake-quant and the integer model); ``model_path`` loads a saved integer model instead
    of converting one.  ``truncation`` (``bt``, ``bt*``; INT2 QLR) is passed to the quantizer,
    ``lambda_min`` (SMP) to the propagation: λ ≥ lambda_min keeps a deep SMP from diverging.
    ``breakdown`` (needs ``int`` in ``impls``): after timing, ``repeats`` more integer passes run
    under :func:`bench_suite.engine.profile.profiling`; the integer record gets ``breakdown``:
    per-stage time, bytes, MACs and floor, the measured bandwidth and int8 peak, the floor of
    the whole pass and the speed-up over DGL that floor would allow (``ceiling_vs_dgl``).

    ``ranges`` (:data:`RANGES`): ``dynamic`` recomputes every QLR range from its tensor;
    ``calibrated`` freezes them after one integer pass over the calibration graph — the deployed
    graph itself unless ``calibration_graph`` (a graph name as ``graph``, with ``calibration_seed``
    for generated ones) names another with the same features and degree distribution.  Records
    carry ``ranges`` and ``calibration_graph``.
    """
    from bench_suite.engine import tuning
    from bench_suite.engine.calibration import temporary_quantizer
    from bench_suite.engine.convert import calibrate as freeze_ranges
    from bench_suite.engine.convert import convert, fp32_bytes
    from bench_suite.engine.intmodel import EngineGraph, load
    from bench_suite.env import cpu_model
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.quant.base import QuantFactory
    from bench_suite.registry import QUANTIZERS

    if repeats < 5:
        raise ValueError(f"repeats={repeats} is too few for a median; use at least 5")
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        raise ValueError(f"unknown implementation(s) {bad}; valid: {', '.join(IMPLS)}")
    if breakdown and "int" not in impls:
        raise ValueError(f"speed: breakdown profiles the integer model; impls={list(impls)} has no 'int'")
    if int(train_epochs) < 0:
        raise ValueError(f"speed: train_epochs={train_epochs} must be >= 0")
    if ranges not in RANGES:
        raise ValueError(f"speed: ranges={ranges!r} is not valid; valid: {', '.join(RANGES)}")
    if ranges == "dynamic" and (calibration_graph is not None or calibration_seed is not None):
        raise ValueError("speed: calibration_graph / calibration_seed apply to ranges=calibrated only")
    g0, x, classes, data = graph_inputs(graph, seed, data_dir)
    if train_epochs and data is None:
        raise ValueError(f"speed: train_epochs={train_epochs} needs a dataset with labels; graph={graph!r} is "
                         "generated (use a dataset name such as amazon-computers)")
    torch.set_num_threads(threads)
    threads = tuning.set_threads(threads)
    tuning.retain_heap()  # process-wide: baselines and engine alike reuse freed memory
    g = prepare_graph(g0)
    eg = EngineGraph.from_dgl(g)
    xn = x.numpy()
    torch.manual_seed(seed)
    accuracy = {}
    with temporary_quantizer() as static:
        qkey = quant or ("qlr" if "qlr" in QUANTIZERS else static)
        fq_model = build(model, depth, hidden, x.shape[1], classes,
                         QuantFactory(qkey, bits, {"truncation": truncation} if truncation else None), propagation,
                         lambda_min)
        if train_epochs:
            train_briefly(fq_model, g, data, int(train_epochs))
        else:
            calibrate(fq_model, g0, x, seed)
        fq_model.eval()
        int_model = load(model_path) if model_path else convert(fq_model)
    if int_model.ranges != ranges:
        if int_model.ranges == "calibrated":
            raise ValueError(f"speed: model_path={model_path} holds a model with calibrated ranges "
                             f"({int_model.calibration}); use ranges=calibrated")
        freeze_ranges(int_model, *calibration_inputs(graph, seed, eg, xn, calibration_graph, calibration_seed,
                                                     data_dir))
    if data is not None:
        test = (data.test_mask & (data.labels >= 0)).numpy()
        labels = data.labels.numpy()
        with torch.no_grad():
            ref = fq_model(g, x).argmax(1).numpy()
        out = np.asarray(int_model(eg, xn)).argmax(1)
        accuracy = {"fake_quant_test_acc": round(float((ref[test] == labels[test]).mean()), 4),
                    "int_test_acc": round(float((out[test] == labels[test]).mean()), 4),
                    "agreement": round(float((out == ref).mean()), 5)}
    fp_model = build(model, depth, hidden, x.shape[1], classes, QuantFactory(), propagation, lambda_min)
    copy_weights(fq_model, fp_model)
    fp_model.eval()
    base = (DGLGCN if model == "gcn" else DGLSMP if propagation == "smp" else DGLAPPNP)(fp_model).eval()
    run = {
        "dgl-fp32": lambda: base(g, x),
        "suite-fp32": lambda: fp_model(g, x),
        "int": lambda: int_model(eg, xn),
    }
    load_start = os.getloadavg()
    times: Dict[str, List[float]] = {i: [] for i in impls}
    with torch.no_grad():
        for r in range(warmup + repeats):
            for i in impls:
                t = timed(run[i])
                if r >= warmup:
                    times[i].append(t)
    med = {i: float(np.median(v)) for i, v in times.items()}
    stages = profile_passes(int_model, eg, xn, repeats, med.get("dgl-fp32")) if breakdown else None
    fp = fp32_bytes(fp_model)
    common = {
        "kind": SPEED, "model": model, "depth": depth, "hidden": hidden, "graph": graph,
        "nodes": g0.num_nodes(), "edges": g0.num_edges() // 2, "bits": bits,
        "propagation": propagation if model == "decoupled" else None, "quant": qkey,
        "truncation": truncation or "none", "threads": threads, "lambda_min": lambda_min,
        "repeats": repeats, "warmup": warmup, "fp32_bytes": fp, "cpu": cpu_model(),
        "loadavg_1min": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "generator": ("Chung-Lu power law (Pareto weights, tail exponent 2.5), seed %d" % seed
                      if data is None else f"dataset {graph} (real graph)"),
        "train_epochs": int(train_epochs), "ranges": int_model.ranges,
        "calibration_graph": None if int_model.calibration is None else int_model.calibration["graph"], **accuracy,
    }
    out = []
    for i in impls:
        size = int_model.nbytes if i == "int" else fp
        rec = dict(common, impl=i, bits=bits if i == "int" else 32, median_ms=round(med[i], 3),
                   times_ms=[round(t, 3) for t in times[i]], model_bytes=size,
                   compression=round(fp / size, 3),
                   speedup_vs_dgl=round(med["dgl-fp32"] / med[i], 3) if "dgl-fp32" in med else None)
        if i == "int" and stages is not None:
            rec["breakdown"] = stages
        out.append(rec)
    return out


def calibration_inputs(graph: str, seed: int, eg, xn: np.ndarray, name: Optional[str], cal_seed: Optional[int],
                       data_dir=None) -> tuple:
    """``(EngineGraph, features, description)`` to calibrate on: the deployed graph (``eg``, ``xn``)
    unless ``name``/``cal_seed`` name another graph (:func:`graph_inputs`) with the same features."""
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph

    name = graph if name is None else name
    cal_seed = seed if cal_seed is None else int(cal_seed)
    what = f"{name} seed {cal_seed}" if name in GRAPHS else name
    if (name, cal_seed) == (graph, seed):
        return eg, xn, f"{what} (deployed graph)"
    g0, x, _, _ = graph_inputs(name, cal_seed, data_dir)
    if x.shape[1] != xn.shape[1]:
        raise ValueError(f"speed: calibration_graph={name!r} has {x.shape[1]} features; the model takes "
                         f"{xn.shape[1]} (graph={graph!r})")
    return EngineGraph.from_dgl(prepare_graph(g0)), x.numpy(), what


def profile_passes(int_model, eg, xn: np.ndarray, repeats: int, dgl_ms: Optional[float]) -> dict:
    """Stage breakdown of ``repeats`` integer forward passes and the floor of each stage
    (:mod:`bench_suite.engine.profile`); ``dgl_ms``: DGL's median, for ``ceiling_vs_dgl``.

    On a machine whose load average exceeds its cores (before or after the passes) the measured
    bandwidth and int8 peak are wrong: a warning, and the floors, rates and ceiling are None, with
    the reason in ``floor_withheld``."""
    import warnings

    from bench_suite.engine.profile import floor_withheld, int8_gemm_peak, profiling, stream_bandwidth

    with profiling() as st:
        for _ in range(repeats):
            int_model(eg, xn)
            st.passes += 1
    why = floor_withheld()
    if why is None:
        bw, peak = stream_bandwidth(), int8_gemm_peak()
        why = floor_withheld()
    if why is not None:
        warnings.warn(f"speed --breakdown: no floor: {why}", RuntimeWarning, stacklevel=2)
        rows = [dict(r, floor_ms=None) for r in st.rows(1.0, 1.0)]
        return {"stages": rows, "bandwidth_gbs": None, "int8_peak_gmacs": None,
                "profiled_ms": round(sum(r["ms"] for r in rows), 3), "floor_ms": None, "ceiling_vs_dgl": None,
                "floor_withheld": why}
    rows = st.rows(bw, peak)
    floor = sum(r["floor_ms"] for r in rows)
    return {"stages": rows, "bandwidth_gbs": round(bw, 2), "int8_peak_gmacs": round(peak, 1),
            "profiled_ms": round(sum(r["ms"] for r in rows), 3), "floor_ms": round(floor, 3),
            "ceiling_vs_dgl": round(dgl_ms / floor, 2) if dgl_ms and floor else None, "floor_withheld": None}


def write_record(record: dict, results: str | Path) -> Path:
    """Write one speed record as ``speed-<id>.json`` in ``results`` (:func:`bench_suite.record.write_record`:
    atomic, fsync'd); the id is a hash of the record with its environment and timestamp."""
    from bench_suite.env import environment
    from bench_suite.record import write_record as write

    record = dict(record, env=environment(), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    body = json.dumps(record, sort_keys=True, default=str)
    rid = hashlib.sha256(body.encode()).hexdigest()[:16]
    record["run_id"] = rid
    return write(Path(results) / f"speed-{rid}.json", record)
