"""Speed measurement: DGL FP32 vs the suite's FP32 model vs the tuned FP32 path vs the integer engine, one speed spec
(:func:`bench_suite.spec.resolve_speed_spec`) → one ``speed`` record (:func:`run`).

Timings are interleaved (one run of each implementation per round, ABAB…) and the
median of ``repeats`` rounds after ``warmup`` rounds is reported, with the same
thread count for torch, DGL and numba (the process's torch thread count: the runner's
``--threads``, or ``bench-suite speed --threads``).  Before timing,
:func:`bench_suite.engine.kernels.retain_heap` keeps freed memory in the process heap (for every
implementation alike), and the quantizer ranges are set by one forward on a subgraph
(:func:`calibrate`).

Baselines: ``dgl.nn.GraphConv(norm='both')`` layers for GCN, ``dgl.nn.APPNPConv`` for
decoupled APPNP, and the SMP iteration over ``GraphConv`` (``weight=False``) for SMP;
all in eval mode under ``torch.no_grad()`` with the same thread count.  The tuned FP32 baseline
(``fp32-tuned``, :mod:`bench_suite.engine.fp32`: DGL's ``copy_u_sum`` with the normalisation folded
into one in-place pass after each product) is timed in the same rounds whenever the integer model is;
every row has its speed-up over DGL FP32 (``speedup_vs_dgl``) and over the tuned FP32 path
(``speedup_vs_fp32``): the baseline's median over the row's median.
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

import dgl
import numpy as np
import torch

from bench_suite.record import OK, new_record
from bench_suite.spec import GENERATED_GRAPHS, TUNED_FP32, RunSpec


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
    """``(graph, features, num_classes)`` of a generated graph in :data:`bench_suite.spec.GENERATED_GRAPHS`."""
    if name not in GENERATED_GRAPHS:
        raise ValueError(f"unknown generated graph {name!r}; valid: {', '.join(GENERATED_GRAPHS)}")
    n, e, f, c = GENERATED_GRAPHS[name]
    g = power_law_graph(n, e, seed)
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((n, f)).astype(np.float32))
    return g, x, c


def real_graph(name: str, data_dir=None, download: bool = False):
    """``(graph, features, num_classes, data)`` of a registered dataset (public/seed-0 split)."""
    from bench_suite.data.datasets import load_dataset

    data = load_dataset(name, seed=0, data_dir=data_dir, download=download)
    return data.graph, data.features, data.num_classes, data


def graph_inputs(name: str, seed: int = 0, data_dir=None, download: bool = False):
    """A generated graph (:data:`bench_suite.spec.GENERATED_GRAPHS`) or a registered dataset, by name;
    ``data`` is None for generated graphs (no labels to train on)."""
    from bench_suite.registry import DATASETS

    if name in GENERATED_GRAPHS:
        return (*generated(name, seed), None)
    if name in DATASETS.keys():
        return real_graph(name, data_dir, download)
    raise ValueError(f"speed: graph={name!r} is neither a generated graph ({', '.join(GENERATED_GRAPHS)}) nor a "
                     f"registered dataset ({', '.join(sorted(DATASETS.keys()))})")


#: the largest share of non-zero input features :func:`train_briefly` trains on in CSR form
SPARSE_TRAIN_DENSITY = 0.1


def train_briefly(model: torch.nn.Module, data, epochs: int, cfg=None) -> dict:
    """``epochs`` epochs of the suite's own training loop (:func:`bench_suite.train.fit`: its optimiser,
    QLR's α in its own group at lr 1e-4, the best validation epoch's state kept) with the default
    :class:`TrainConfig`, or with ``cfg`` (a :class:`TrainConfig`, its own epochs: the tuned protocol of
    ``train_protocol: tuned``), on ``data.graph``; returns :func:`~bench_suite.train.fit`'s metrics.
    Bag-of-words features (at most :data:`SPARSE_TRAIN_DENSITY` non-zero) train in their CSR form when
    the model takes it, as the matrices' ``sparse_features: true`` runs do (:mod:`bench_suite.sparse`:
    the same numbers up to float rounding; coauthor-physics' 34,493 x 8,415 input made 100 dense epochs
    too slow to measure); the timed passes and the agreement use the dense features."""
    import dataclasses

    from bench_suite.sparse import to_csr
    from bench_suite.spec import TrainConfig
    from bench_suite.train import fit

    x = data.features
    if getattr(model, "sparse_input", False) and x.dim() == 2 and x.numel() and \
            int(torch.count_nonzero(x)) <= SPARSE_TRAIN_DENSITY * x.numel():
        data = dataclasses.replace(data, features=to_csr(x))
    return fit(model, data, cfg if cfg is not None else TrainConfig(epochs=epochs, patience=epochs))


def trained_fake_quant(spec: RunSpec, model: torch.nn.Module, data) -> dict:
    """Train the speed spec's fake-quant ``model`` on ``data`` (:func:`train_briefly`: ``train_epochs`` of
    the default settings, or the spec's ``train`` section under ``train_protocol: tuned``), or load the
    weights an earlier measurement trained for the same model, quantizer, training and seed.

    Training runs on one torch thread whatever the measurement's thread count, so the weights are the same
    bits in every measurement (dynamic and calibrated ranges, 1 or 2 threads) and can be kept: in
    ``cache_dir()/speed-trained/<key>.npz`` (plain arrays, read without pickle) beside a JSON file of the
    training's epochs, the key hashing the spec's graph, model, propagation, quantizer, training and seed,
    the spec version and the torch version.  A measurement's timing then waits for no training.
    Returns ``trained`` (``trained`` or ``cache <key>``) and, under the tuned protocol,
    ``train_epochs_run`` and ``best_epoch``."""
    import hashlib
    import json

    from bench_suite.cache import cache_dir
    from bench_suite.spec import SPEC_VERSION

    d, m = spec.data, spec.measure
    ident = {k: d.get(k) for k in ("graph", "model", "propagation", "quant", "train")}
    ident.update(seed=m.seed, train_epochs=m.train_epochs, train_protocol=m.train_protocol,
                 spec_version=SPEC_VERSION, torch=torch.__version__)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    root = cache_dir() / "speed-trained"
    weights, meta = root / f"{key}.npz", root / f"{key}.json"
    state = model.state_dict()
    if weights.is_file() and meta.is_file():
        with np.load(weights, allow_pickle=False) as z:
            if set(z.files) == set(state):
                model.load_state_dict({k: torch.from_numpy(z[k].copy()) for k in state})
                return dict(json.loads(meta.read_text()), trained=f"cache {key}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fitted = train_briefly(model, data, m.train_epochs, spec.train if m.train_protocol == "tuned" else None)
    finally:
        torch.set_num_threads(threads)
    info = ({"train_epochs_run": fitted["epochs_run"], "best_epoch": fitted["best_epoch"]}
            if m.train_protocol == "tuned" else {})
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.npz"
    np.savez(tmp, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    meta_tmp = root / f".{key}.{os.getpid()}.json"
    meta_tmp.write_text(json.dumps(info))
    os.replace(meta_tmp, meta)
    os.replace(tmp, weights)
    return dict(info, trained="trained")


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
    """A registered model with ``hidden`` units; a model with a propagation (``decoupled``) gets
    ``propagation``, with SMP's ``lambda_min`` when given."""
    from bench_suite.registry import MODELS as REG

    params = {"hidden": hidden}
    if "propagation" in {p.name for p in REG.params(model)}:
        params["propagation"] = propagation
        if lambda_min is not None:
            params["propagation_params"] = {"lambda_min": float(lambda_min)}
    elif lambda_min is not None:
        raise ValueError(f"lambda_min={lambda_min} applies to a model with a propagation (SMP), not model={model}")
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


def measure(threads: Optional[int] = None, data_dir=None, **keys) -> List[dict]:
    """Resolve ``keys`` as a speed spec (:func:`bench_suite.spec.resolve_speed_spec`: ``model``,
    ``depth``, ``hidden``, ``graph``, ``bits``, ``impls``, ``repeats``, ...) and time it with
    ``threads`` threads (default: the process's); the rows of :func:`measure_spec`."""
    from bench_suite.spec import resolve_speed_spec

    spec = resolve_speed_spec(keys, "measure")
    if threads is not None:
        torch.set_num_threads(threads)
    return measure_spec(spec, data_dir)


def run(spec: RunSpec, data_dir=None, download: bool = False) -> Dict:
    """Execute one speed measurement and return its ``ok`` record (:func:`bench_suite.record.new_record`,
    kind ``speed``: one entry of ``measurements`` per implementation; the runner adds where and when it ran)."""
    from bench_suite.env import environment
    from bench_suite.spec import spec_plugins

    t0 = time.perf_counter()
    rows = measure_spec(spec, data_dir, download)
    return new_record(spec, OK, measurements=rows, timings={"total_s": time.perf_counter() - t0},
                      env=dict(environment(), plugins=spec_plugins(spec.data)))


def measure_spec(spec: RunSpec, data_dir=None, download: bool = False) -> List[dict]:
    """Time each implementation of a speed spec's ``impls`` on its model and graph; one row per
    implementation, with the process's torch thread count for torch, DGL and numba alike.

    ``graph`` is a generated graph or a registered dataset (read from ``data_dir`` /
    ``$BENCH_SUITE_DATA``).  The fake-quant model has random weights with ranges set by one
    calibration forward pass (timing does not depend on the weights' values), or, with
    ``train_epochs`` > 0 on a dataset, is trained that many epochs on its training nodes first, or with
    ``train_protocol: tuned`` in the suite's own protocol (the spec's ``train`` section; its rows add
    ``train_epochs_run`` and ``best_epoch``), by :func:`trained_fake_quant`; the rows of a trained model
    also hold the test accuracy of the fake-quant and the integer model.  ``model_path`` loads a saved
    integer model instead of converting one.  SMP's ``lambda_min`` (a propagation
    key) keeps a deep SMP from diverging.  ``breakdown``: after timing, ``repeats`` more integer
    passes run under :func:`bench_suite.engine.profile.profiling`; the integer row gets
    ``breakdown``: per-stage time, bytes, MACs and floor, the measured bandwidth and int8 peak,
    the floor of the whole pass and the speed-up over DGL that floor would allow (``ceiling_vs_dgl``).

    The implementations timed are ``impls`` with the tuned FP32 path (:data:`bench_suite.spec.TUNED_FP32`)
    added before ``int`` when ``int`` is timed and it is not listed: each row has ``speedup_vs_dgl``
    (DGL FP32's median / the row's) and ``speedup_vs_fp32`` (the tuned FP32 path's median / the row's),
    None where that baseline was not timed.

    ``ranges`` (:data:`bench_suite.spec.RANGES`): ``dynamic`` recomputes every QLR range from its
    tensor; ``calibrated`` freezes them after one integer pass over the calibration graph — the
    deployed graph itself unless ``calibration_graph`` (a graph name as ``graph``, with
    ``calibration_seed`` for generated ones) names another with the same features and degree
    distribution.  ``sums`` (:data:`bench_suite.spec.SUMS`): the integer model's sums mode
    (:func:`bench_suite.engine.convert.convert`).  Rows carry ``ranges``, ``sums``, ``calibration_graph`` and
    ``fused_layers`` (layers whose aggregation and epilogue ran as one pass: static ranges, exact sums).
    """
    from types import SimpleNamespace

    from bench_suite.engine import tuning
    from bench_suite.engine.convert import calibrate as freeze_ranges
    from bench_suite.engine.convert import convert, fp32_bytes
    from bench_suite.engine.fp32 import tuned_fp32
    from bench_suite.engine.intmodel import EngineGraph, load
    from bench_suite.env import cpu_model
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.train import build_model

    d, m = spec.data, spec.measure
    graph, model, quant = d["graph"]["name"], d["model"], d["quant"]
    prop = d.get("propagation") or {}
    g0, x, classes, data = graph_inputs(graph, m.seed, data_dir, download)
    threads = tuning.set_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    tuning.retain_heap()  # process-wide: baselines and engine alike reuse freed memory
    g = prepare_graph(g0)
    eg = EngineGraph.from_dgl(g)
    xn = x.numpy()
    shape = SimpleNamespace(num_features=x.shape[1], num_classes=classes)
    torch.manual_seed(m.seed)
    accuracy = {}
    fq_model = build_model(spec, shape)
    if m.train_protocol == "tuned" or m.train_epochs:
        accuracy = trained_fake_quant(spec, fq_model, data)
    else:
        calibrate(fq_model, g0, x, m.seed)
    fq_model.eval()
    int_model = load(m.model_path) if m.model_path else convert(fq_model, sums=m.sums)
    int_model.sums = m.sums  # a loaded model runs in the spec's mode
    if int_model.ranges != m.ranges:
        if int_model.ranges == "calibrated":
            raise ValueError(f"speed: model_path={m.model_path} holds a model with calibrated ranges "
                             f"({int_model.calibration}); use ranges=calibrated")
        freeze_ranges(int_model, *calibration_inputs(graph, m.seed, eg, xn, m.calibration_graph, m.calibration_seed,
                                                     data_dir))
    if data is not None:
        test = (data.test_mask & (data.labels >= 0)).numpy()
        labels = data.labels.numpy()
        with torch.no_grad():
            ref = fq_model(g, x).argmax(1).numpy()
        out = np.asarray(int_model(eg, xn)).argmax(1)
        accuracy = {**accuracy, "fake_quant_test_acc": round(float((ref[test] == labels[test]).mean()), 4),
                    "int_test_acc": round(float((out[test] == labels[test]).mean()), 4),
                    "agreement": round(float((out == ref).mean()), 5)}
    fp_model = build_model(RunSpec.from_dict(dict(d, quant={"name": "fp32", "bits": 32})), shape)
    copy_weights(fq_model, fp_model)
    fp_model.eval()
    base = (DGLGCN if model["name"] == "gcn" else DGLSMP if prop.get("name") == "smp" else DGLAPPNP)(fp_model).eval()
    tuned = tuned_fp32(fp_model)
    run_impl = {
        "dgl-fp32": lambda: base(g, x),
        "suite-fp32": lambda: fp_model(g, x),
        TUNED_FP32: lambda: tuned(g, x),
        "int": lambda: int_model(eg, xn),
    }
    impls = timed_impls(m.impls)
    load_start = os.getloadavg()
    times: Dict[str, List[float]] = {i: [] for i in impls}
    with torch.no_grad():
        for r in range(m.warmup + m.repeats):
            for i in impls:
                t = timed(run_impl[i])
                if r >= m.warmup:
                    times[i].append(t)
    med = {i: float(np.median(v)) for i, v in times.items()}
    stages = profile_passes(int_model, eg, xn, m.repeats, med.get("dgl-fp32")) if m.breakdown else None
    fp = fp32_bytes(fp_model)
    trunc = quant.get("truncation")
    common = {
        "model": model["name"], "depth": model["depth"], "hidden": model.get("hidden"), "graph": graph,
        "nodes": g0.num_nodes(), "edges": g0.num_edges() // 2, "bits": quant["bits"],
        "propagation": prop.get("name"), "quant": quant["name"],
        "truncation": trunc if trunc not in (None, "") else "none", "threads": threads,
        "lambda_min": prop.get("lambda_min"),
        "repeats": m.repeats, "warmup": m.warmup, "fp32_bytes": fp, "cpu": cpu_model(),
        "loadavg_1min": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "generator": ("Chung-Lu power law (Pareto weights, tail exponent 2.5), seed %d" % m.seed
                      if data is None else f"dataset {graph} (real graph)"),
        "train_epochs": m.train_epochs, "train_protocol": m.train_protocol, "ranges": int_model.ranges,
        "sums": int_model.sums,
        "fused_layers": int_model.fused_layers(),
        "calibration_graph": None if int_model.calibration is None else int_model.calibration["graph"], **accuracy,
    }
    out = []
    for i in impls:
        size = int_model.nbytes if i == "int" else fp
        row = dict(common, impl=i, bits=quant["bits"] if i == "int" else 32, median_ms=round(med[i], 3),
                   times_ms=[round(t, 3) for t in times[i]], model_bytes=size,
                   compression=round(fp / size, 3),
                   speedup_vs_dgl=round(med["dgl-fp32"] / med[i], 3) if "dgl-fp32" in med else None,
                   speedup_vs_fp32=round(med[TUNED_FP32] / med[i], 3) if TUNED_FP32 in med else None)
        if i == "int" and stages is not None:
            row["breakdown"] = stages
        out.append(row)
    return out


def timed_impls(impls) -> List[str]:
    """The implementations a measurement of ``impls`` times, in order: ``impls``, with the tuned FP32
    path (:data:`bench_suite.spec.TUNED_FP32`) before ``int`` when ``int`` is timed and it is not listed."""
    out = list(impls)
    if "int" in out and TUNED_FP32 not in out:
        out.insert(out.index("int"), TUNED_FP32)
    return out


def calibration_inputs(graph: str, seed: int, eg, xn: np.ndarray, name: Optional[str], cal_seed: Optional[int],
                       data_dir=None) -> tuple:
    """``(EngineGraph, features, description)`` to calibrate on: the deployed graph (``eg``, ``xn``)
    unless ``name``/``cal_seed`` name another graph (:func:`graph_inputs`) with the same features."""
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph

    name = graph if name is None else name
    cal_seed = seed if cal_seed is None else int(cal_seed)
    what = f"{name} seed {cal_seed}" if name in GENERATED_GRAPHS else name
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
