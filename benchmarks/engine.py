"""Integer engine checks beside the speed matrices (METHOD.md §9).

    python benchmarks/engine.py agreement  # integer vs fake-quant predictions on real graphs, both range modes
    python benchmarks/engine.py ranges     # calibrated vs dynamic ranges, interleaved, GCN-4 h256
    python benchmarks/engine.py fused --graphs arxiv-like cora --out results/cost/fused.jsonl
                                           # fused vs two-pass aggregation + epilogue, calibrated, GCN-4 h256
                                           # (--model smp: SMP K = 10 h64, fused steps vs unfused)
    python benchmarks/engine.py fused-kernel --out results/cost/fused.jsonl
                                           # the fused kernel alone against aggregate + epilogue, CPU time, 1 thread
    python benchmarks/engine.py gemm-codes # oneDNN's uint8 output against the feature quantizer's codes
    python benchmarks/engine.py bandwidth  # memory bandwidth (numpy copy) for the physical floor

Prints one JSON line per measurement.  The speed of the integer engine against DGL FP32 is a
matrix of speed measurements: ``bench-suite run speed`` (GCN-4) and ``bench-suite run
speed-decoupled`` (APPNP and SMP at K = 10, 64), stored and reported like training runs.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _row(benchmark: str, **fields) -> dict:
    """A JSON row: the benchmark's name, when, on which machine and commit, then ``fields``."""
    import os
    import platform
    from datetime import datetime, timezone

    from bench_suite.env import cpu_model, git_commit

    return {"benchmark": benchmark, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}, {cpu_model()}, {os.cpu_count()} cores", "commit": git_commit(), **fields}


def _emit(row: dict, out) -> None:
    """Print ``row`` as one JSON line and append it to ``out`` when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")


def bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """GB/s of a large numpy copy (read + write counted)."""
    a = np.ones(mb * 2 ** 20 // 8)
    b = np.empty_like(a)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def agreement(args) -> None:
    """Prediction agreement of the integer model with its fake-quant model, per dataset, model and bit
    width, with dynamic ranges and with ranges calibrated on the graph itself (METHOD.md §9: at
    least 99.9% of nodes).  Features are loaded dense, as the engine takes them."""
    import torch

    from bench_suite.data.datasets import load_dataset
    from bench_suite.engine.bench import train_briefly
    from bench_suite.engine.convert import convert
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.quant.base import QuantFactory
    from bench_suite.registry import MODELS, load_all

    load_all()
    models = {"gcn": ("gcn", {}), "appnp": ("decoupled", {"propagation": "appnp"}),
              "smp": ("decoupled", {"propagation": "smp"})}
    for ds in args.datasets:
        d = load_dataset(ds, seed=0, data_dir=args.data_dir)
        g = prepare_graph(d.graph)
        eg = EngineGraph.from_dgl(g)
        x = d.features.numpy()
        for name in args.models:
            model, params = models[name]
            for bits in args.bits:
                t0 = time.time()
                torch.manual_seed(0)
                hidden = {"hidden": args.hidden} if args.hidden else {}
                m = MODELS.create(model, in_dim=d.features.shape[1], num_classes=d.num_classes, depth=args.depth,
                                  quant=QuantFactory(args.quant, bits), **params, **hidden)
                train_briefly(m, d, args.epochs)
                m.eval()
                with torch.no_grad():
                    ref = m(g, d.features).argmax(1).numpy()
                row = {"dataset": ds, "model": name, "depth": args.depth, "hidden": args.hidden, "bits": bits,
                       "quant": args.quant, "epochs": args.epochs, "classes_predicted": int(len(set(ref)))}
                for ranges in args.ranges:
                    im = convert(m, calibrate_on=(eg, x) if ranges == "calibrated" else None,
                                 calibration_graph=f"{ds} (deployed graph)")
                    out = im(eg, x).argmax(1)
                    row[f"agreement_{ranges}"] = round(float((out == ref).mean()), 5)
                    row[f"disagree_{ranges}"] = int((out != ref).sum())
                row["seconds"] = round(time.time() - t0)
                print(json.dumps(row), flush=True)


def ranges_ratio(args) -> None:
    """Calibrated / dynamic ranges: one model, both integer models, timed interleaved (one pass of each
    per round) in this process; their outputs must be equal (calibrated on the deployed graph)."""
    import os

    import torch

    from bench_suite.engine import tuning
    from bench_suite.engine.bench import build, calibrate, graph_inputs
    from bench_suite.engine.convert import convert
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.quant.base import QuantFactory
    from bench_suite.registry import load_all

    load_all()
    torch.set_num_threads(args.threads)
    tuning.set_threads(args.threads)
    tuning.retain_heap()
    g0, x, classes, _ = graph_inputs(args.graph, 0, args.data_dir)
    eg = EngineGraph.from_dgl(prepare_graph(g0))
    xn = x.numpy()
    for bits in args.bits:
        torch.manual_seed(0)
        m = build("gcn", 4, 256, x.shape[1], classes, QuantFactory("qlr", bits))
        calibrate(m, g0, x, 0)  # QLR's α from its grid search on a subgraph
        m.eval()
        dyn, cal = convert(m), convert(m, calibrate_on=(eg, xn))
        same = bool(np.array_equal(dyn(eg, xn), cal(eg, xn)))
        load0 = os.getloadavg()[0]
        times = {"dynamic": [], "calibrated": []}
        for _ in range(args.repeats):
            for name, im in (("dynamic", dyn), ("calibrated", cal)):
                t = time.perf_counter()
                im(eg, xn)
                times[name].append((time.perf_counter() - t) * 1e3)
        ratios = [d / c for d, c in zip(times["dynamic"], times["calibrated"])]
        print(json.dumps({"graph": args.graph, "model": "gcn-4 h256", "bits": bits, "threads": args.threads,
                          "rounds": args.repeats, "equal_outputs": same,
                          "dynamic_ms": round(float(np.median(times["dynamic"])), 1),
                          "calibrated_ms": round(float(np.median(times["calibrated"])), 1),
                          "speedup_median_of_round_ratios": round(float(np.median(ratios)), 3),
                          "round_ratios": [round(r, 3) for r in ratios],
                          "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count()}),
              flush=True)


def fused_ratio(args) -> None:
    """The fused aggregation + epilogue (:func:`bench_suite.engine.kernels.aggregate_epilogue`) against the
    two passes it replaces: one calibrated integer GCN-4 h256 (``--model smp``: decoupled SMP at K = 10,
    h64, its fused steps, :func:`bench_suite.engine.kernels.smp_fused_steps`) per (graph, bits), forward passes with
    ``fuse`` on and off alternating (the order swapped every round), after a check that their outputs are
    equal.  Per round the ratio two-pass / fused of the whole pass; then, in further alternating rounds
    under :func:`~bench_suite.engine.profile.profiling`, the same ratio for the part that fuses (the
    aggregation and epilogue stages against the fused stage) and each stage's time.  One JSON line per
    (graph, bits, threads), printed and appended to ``--out``, with the machine, the load and the commit."""
    import os

    import torch

    from bench_suite.engine import tuning
    from bench_suite.engine.bench import build, calibrate, graph_inputs
    from bench_suite.engine.convert import convert
    from bench_suite.engine.intmodel import AGGREGATE, FUSED, GEMM, INPUT, OUTPUT, EngineGraph
    from bench_suite.engine.profile import profiling
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.quant.base import QuantFactory
    from bench_suite.registry import load_all

    load_all()
    tuning.retain_heap()
    for graph in args.graphs:
        g0, x, classes, _ = graph_inputs(graph, 0, args.data_dir)
        eg = EngineGraph.from_dgl(prepare_graph(g0))
        xn = x.numpy()
        for bits in args.bits:
            trunc = "bt*" if bits == 22 else None  # 22: INT2 with BT*
            b = 2 if trunc else bits
            torch.manual_seed(0)
            qf = QuantFactory("qlr", b, {"truncation": trunc} if trunc else None)
            smp = args.model == "smp"
            m = (build("decoupled", 10, 64, x.shape[1], classes, qf, propagation="smp") if smp
                 else build("gcn", 4, 256, x.shape[1], classes, qf))
            calibrate(m, g0, x, 0)  # QLR's α from its grid search on a subgraph
            m.eval()
            im = convert(m, calibrate_on=(eg, xn), calibration_graph=f"{graph} (deployed graph)")
            im.fuse = False
            two = im(eg, xn)
            im.fuse = True
            same = bool(np.array_equal(two.view(np.int32), im(eg, xn).view(np.int32)))
            for threads in args.threads:
                torch.set_num_threads(threads)
                tuning.set_threads(threads)
                for _ in range(2):  # warm-up at this thread count
                    for fuse in (True, False):
                        im.fuse = fuse
                        im(eg, xn)
                load0 = os.getloadavg()
                times = {True: [], False: []}
                for r in range(args.repeats):
                    for fuse in ((True, False) if r % 2 == 0 else (False, True)):
                        im.fuse = fuse
                        t = time.perf_counter()
                        im(eg, xn)
                        times[fuse].append((time.perf_counter() - t) * 1e3)
                stages = {True: [], False: []}
                for r in range(args.repeats):
                    for fuse in ((True, False) if r % 2 == 0 else (False, True)):
                        im.fuse = fuse
                        with profiling() as st:
                            im(eg, xn)
                        stages[fuse].append(dict(st.ms))
                im.fuse = True
                load1 = os.getloadavg()
                whole = [u / f for u, f in zip(times[False], times[True])]
                if smp:  # the propagation: every stage but the MLP's input codes and dense products
                    part_two = [sum(v for k, v in s.items() if k not in (INPUT, GEMM)) for s in stages[False]]
                    part_fused = [sum(v for k, v in s.items() if k not in (INPUT, GEMM)) for s in stages[True]]
                else:
                    part_two = [s.get(AGGREGATE, 0.0) + s.get(OUTPUT, 0.0) for s in stages[False]]
                    part_fused = [s.get(FUSED, 0.0) + s.get(OUTPUT, 0.0) for s in stages[True]]
                part = [u / f for u, f in zip(part_two, part_fused)]

                def med_stages(rows):
                    return {k: round(float(np.median([r.get(k, 0.0) for r in rows])), 2) for k in rows[0]}

                row = _row("fused-smp-step" if smp else "fused-aggregation-epilogue", **{
                       "graph": graph, "nodes": eg.num_nodes, "model": "smp K=10 h64" if smp else "gcn-4 h256",
                       "quant": "qlr", "bits": b, "truncation": trunc or "none", "ranges": "calibrated",
                       "threads": threads, "rounds": args.repeats, "equal_outputs": same,
                       "unfused_ms": round(float(np.median(times[False])), 2),
                       "fused_ms": round(float(np.median(times[True])), 2),
                       "speedup_median_of_round_ratios": round(float(np.median(whole)), 3),
                       "round_ratios": [round(v, 3) for v in whole],
                       "part_unfused_ms": round(float(np.median(part_two)), 2),
                       "part_fused_ms": round(float(np.median(part_fused)), 2),
                       "part_speedup_median_of_round_ratios": round(float(np.median(part)), 3),
                       "part": ("the propagation (every stage but the MLP's input codes and dense products), unfused vs fused"
                                if smp else "aggregation + epilogue (two passes, the last layer's float output included) vs fused"),
                       "stages_unfused_ms": med_stages(stages[False]), "stages_fused_ms": med_stages(stages[True]),
                       "loadavg_before": [round(v, 2) for v in load0], "loadavg_after": [round(v, 2) for v in load1]})
                _emit(row, args.out)


def fused_kernel(args) -> None:
    """The fused kernel alone (:func:`bench_suite.engine.kernels.aggregate_epilogue`, mode ``"codes"``)
    against :func:`~bench_suite.engine.kernels.aggregate` then :func:`~bench_suite.engine.kernels.epilogue`
    on the same packed codes of a graph (random codes, a hidden layer's quantizers), one thread, CPU
    time (``time.process_time``: waiting for a core on a loaded machine does not count), alternating
    rounds; the outputs are checked equal first.  One JSON line per (graph, bits, width)."""
    import os

    from bench_suite.engine import kernels as K
    from bench_suite.engine import tuning
    from bench_suite.engine.bench import graph_inputs
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.engine.packing import pack
    from bench_suite.nn.graph import prepare_graph
    from bench_suite.registry import load_all

    load_all()
    tuning.set_threads(1)
    tuning.retain_heap()
    for graph in args.graphs:
        g0, _, classes, _ = graph_inputs(graph, 0, args.data_dir)
        eg = EngineGraph.from_dgl(prepare_graph(g0))
        n = eg.num_nodes
        for bits in args.bits:
            qm = 2 ** bits - 1
            for width in (256, int(classes)):
                rng = np.random.default_rng(bits + width)
                packed = pack(rng.integers(0, qm + 1, (n, width)).astype(np.uint8), bits)
                bias = rng.standard_normal((1, width)).astype(np.float32)
                msg, agg, upd, nxt = (0.1, float((qm + 1) // 2), float(qm)), (0.05, 128.0, 255.0), \
                    (0.04, 60.0, 255.0), (2.0 / qm, 0.0, float(qm))
                sm, zm = (np.float32(v) for v in K.effective(msg))

                def two():
                    S = K.aggregate(eg.indptr, eg.indices, packed, bits, width)[0]
                    sums = K.NeighbourSums(S, sm, zm, eg.indptr, eg.indices, packed, bits)
                    return K.epilogue(S, agg, bias, sums=sums, deg=eg.deg, norm=eg.norm, update=upd, relu=True,
                                      mode="codes", following=nxt)

                def one():
                    return K.aggregate_epilogue(eg.indptr, eg.indices, packed, bits, width, eg.deg, eg.norm, msg, agg,
                                                bias, update=upd, relu=True, mode="codes", following=nxt)

                same = bool(np.array_equal(two(), one()))
                load0 = os.getloadavg()
                times = {"two": [], "one": []}
                for r in range(args.repeats):
                    for name, fn in ((("one", one), ("two", two)) if r % 2 == 0 else (("two", two), ("one", one))):
                        t = time.process_time()
                        fn()
                        times[name].append((time.process_time() - t) * 1e3)
                ratios = [a / b for a, b in zip(times["two"], times["one"])]
                row = _row("fused-kernel-cpu-time", **{"graph": graph, "nodes": n, "nnz": int(eg.indices.size), "bits": bits,
                       "width": width, "threads": 1, "rounds": args.repeats, "equal_outputs": same,
                       "two_pass_cpu_ms": round(float(np.median(times["two"])), 2),
                       "fused_cpu_ms": round(float(np.median(times["one"])), 2),
                       "speedup_median_of_round_ratios": round(float(np.median(ratios)), 3),
                       "round_ratios": [round(v, 3) for v in ratios],
                       "loadavg_before": [round(v, 2) for v in load0],
                       "loadavg_after": [round(v, 2) for v in os.getloadavg()]})
                _emit(row, args.out)


def gemm_codes(args) -> None:
    """Whether the dense product could hand the packing its feature codes (``q_feature(y)``) by itself:
    oneDNN's uint8 output (``output_scale = 1/s_f``, ``output_zero_point = z_f``) against the engine's
    ``clamp(rint(y/s_f) + z_f, 0, 255)`` of its float output (:func:`bench_suite.engine.kernels.quantize`),
    on random uint8 × int8 products of arxiv-like's hidden shape; one JSON line (and ``--out``)."""
    import os

    import torch

    from bench_suite.engine import kernels as K

    torch.set_num_threads(args.threads[0])
    rng = np.random.default_rng(0)
    n, k, m = 20_000, 256, 256
    x = torch.from_numpy(rng.integers(0, 256, (n, k)).astype(np.uint8))
    w = torch.ops.onednn.qlinear_prepack(torch.from_numpy(rng.integers(-127, 128, (m, k)).astype(np.int8)), None)
    s_x, z_x, ws, wz = 0.013, 7, torch.tensor([0.0021]), torch.zeros(1, dtype=torch.int64)
    y = torch.ops.onednn.qlinear_pointwise(x, s_x, z_x, w, ws, wz, None, 1.0, 0, torch.float32, "none", [], "").numpy()
    cases = []
    for s_f, z_f in ((0.37, 120), (0.5, 128), (0.123, 3)):
        want = K.quantize(y, (s_f, float(z_f), 255.0))
        got = torch.ops.onednn.qlinear_pointwise(x, s_x, z_x, w, ws, wz, None, 1.0 / s_f, z_f, torch.uint8, "none",
                                                 [], "").numpy()
        d = np.abs(got.astype(np.int16) - want.astype(np.int16))
        cases.append({"s_f": s_f, "z_f": z_f, "codes": int(d.size), "differ": int((d != 0).sum()), "max_diff": int(d.max())})
    _emit(_row("gemm-uint8-output-vs-feature-codes", shape=[n, k, m], cases=cases,
               exact=all(c["differ"] == 0 for c in cases), loadavg=[round(v, 2) for v in os.getloadavg()]), args.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["agreement", "ranges", "bandwidth", "fused", "fused-kernel",
                                          "gemm-codes"])
    p.add_argument("--graph", default="arxiv-like")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8], help="22: INT2 with BT* (fused)")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="fused: each count in turn; others: the first")
    p.add_argument("--graphs", nargs="+", default=["arxiv-like", "cora"], help="fused: graphs")
    p.add_argument("--model", choices=["gcn", "smp"], default="gcn", help="fused: GCN-4 h256 or SMP K = 10 h64")
    p.add_argument("--out", default=None, help="fused: append the rows to this JSONL file")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "coauthor-physics", "amazon-computers"])
    p.add_argument("--data-dir", default=None, help="dataset directory (default: $BENCH_SUITE_DATA)")
    p.add_argument("--quant", default="qlr")
    p.add_argument("--epochs", type=int, default=100, help="agreement: training epochs")
    p.add_argument("--models", nargs="+", default=["gcn"], choices=["gcn", "appnp", "smp"], help="agreement: models")
    p.add_argument("--depth", type=int, default=4, help="agreement: depth")
    p.add_argument("--hidden", type=int, default=256, help="agreement: hidden width (0: the model's default)")
    p.add_argument("--ranges", nargs="+", default=["dynamic", "calibrated"], choices=["dynamic", "calibrated"])
    a = p.parse_args()
    if a.what == "bandwidth":
        print(json.dumps({"copy_GBps": round(bandwidth(), 2)}))
    elif a.what == "agreement":
        agreement(a)
    elif a.what == "fused":
        fused_ratio(a)
    elif a.what == "fused-kernel":
        fused_kernel(a)
    elif a.what == "gemm-codes":
        gemm_codes(a)
    else:
        a.threads = a.threads[0]
        ranges_ratio(a)


if __name__ == "__main__":
    main()
