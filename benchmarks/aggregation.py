"""The integer aggregation kernel ``S = Ã·q`` (INT8/INT4/INT2) of a git ref against this tree, with
and without node reordering, next to DGL's FP32 ``copy_u_sum`` on the same order.

    python benchmarks/aggregation.py [--ref REF] [--graphs cora amazon-computers ...] [--bits 8 4 2]
                                     [--widths 64 256 classes] [--rounds 9] [--threads 2]
                                     [--orders natural rcm degree] [--offsets 16 32 48]
                                     [--out results/cost/aggregation.jsonl]

Graphs are Ã (self-loops added) of registered datasets (read offline from ``BENCH_SUITE_DATA``)
or of the generated graphs of :mod:`bench_suite.engine.bench` (``arxiv-like``).  ``classes`` as a
width is the graph's class count (a decoupled model's propagation, the last GCN layer).

The kernel module of ``--ref`` (default: the merge-base of ``HEAD`` and ``main``) is read with ``git show`` and imported from a
temporary directory next to this tree's, so both run in this one process on the same arrays.
Orders: ``natural`` (the dataset's), ``rcm`` (reverse Cuthill–McKee of Ã, scipy) and ``degree``
(descending degree, hubs first; ties in natural order); the codes (and DGL's features) are
permuted with the graph.  Every variant is checked bit-exact against the ``int64`` sparse product
``Ã @ q`` (permuted) before timing.

``--offsets``: also this tree's kernel on the natural order with the code matrix starting that many
bytes past a cache line (:func:`bench_suite.engine.packing.pack` starts it on one), in the same
interleaved rounds (``ratio_offset_over_aligned``: how much slower rows that straddle cache lines are).

Three measurements per (graph, bits, width), each interleaved (every round runs each variant
once, in an order rotated from round to round) with medians over ``--rounds``:

1. one thread, CPU time (``time.process_time``): ref and tree kernel on each order and DGL's
   ``copy_u_sum`` (one torch thread) on each order.  On the shared machine this is the stable
   measure of work: waiting for a core does not count.  GB/s = gathered code bytes
   (``nnz · row bytes``) / time.
2. the split between two threads: each thread's share of the rows timed alone (one thread, CPU
   time, this tree's kernel through ``aggregate(..., bounds=...)``) for the ref's split (equal
   rows) and this tree's (:func:`chunk_bounds`, equal edges); ``ratio_split_rows_over_edges`` is
   the ratio of the makespans (the slower share).
3. ``--threads`` threads (the engine's 2), wall clock: ref, tree and DGL on the natural order.
   On a loaded 2-core machine this is mostly the wait until the second thread gets a core.

One JSON line per (graph, bits, width) to ``--out``, with the load average before and after.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def load_module(source: str, name: str, where: Path):
    """Import ``source`` (a kernel module's text) as module ``name`` from directory ``where``."""
    path = where / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_graph(name: str, data_dir: str | None):
    """``(indptr, indices, classes)`` of Ã, in-neighbour CSR as the engine builds it."""
    import bench_suite.data.datasets  # noqa: F401  (registers the datasets)
    from bench_suite.engine.bench import graph_inputs
    from bench_suite.engine.intmodel import EngineGraph
    from bench_suite.nn.graph import prepare_graph

    g, _x, classes, _ = graph_inputs(name, 0, data_dir)
    eg = EngineGraph.from_dgl(prepare_graph(g))
    return eg.indptr, eg.indices, int(classes)


def permutation(order: str, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray | None:
    """``perm`` with new row ``r`` = old row ``perm[r]`` (None for the natural order)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = len(indptr) - 1
    if order == "natural":
        return None
    if order == "rcm":
        m = sp.csr_matrix((np.ones(indices.size, np.int8), indices, indptr), shape=(n, n))
        return np.asarray(reverse_cuthill_mckee(m, symmetric_mode=True), np.int64)
    if order == "degree":
        return np.argsort(-np.diff(indptr), kind="stable").astype(np.int64)
    raise ValueError(f"unknown order {order!r}")


def permute(indptr, indices, perm):
    """CSR of ``P Ã Pᵀ`` (rows and columns renumbered), column indices sorted per row."""
    import scipy.sparse as sp

    n = len(indptr) - 1
    m = sp.csr_matrix((np.ones(indices.size, np.int8), indices, indptr), shape=(n, n))[perm][:, perm]
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int64)


def dgl_graph(indptr, indices):
    import dgl
    import torch

    dst = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    g = dgl.graph((torch.from_numpy(indices), torch.from_numpy(dst)), num_nodes=len(indptr) - 1)
    return g.formats("csc")


def interleaved(fns: dict, rounds: int, clock) -> dict:
    """Median milliseconds of each of ``fns`` over ``rounds`` rounds; every round runs each once, in
    an order rotated by one from the previous round's."""
    names = list(fns)
    times = {k: [] for k in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            fns[name]()
            times[name].append((clock() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default=None, help="git ref of the old kernel (default: merge-base of HEAD and main)")
    ap.add_argument("--graphs", nargs="+", default=["cora", "amazon-computers", "coauthor-physics", "arxiv-like"])
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 4, 2])
    ap.add_argument("--widths", nargs="+", default=["64", "256", "classes"])
    ap.add_argument("--orders", nargs="+", default=["natural", "rcm", "degree"])
    ap.add_argument("--offsets", nargs="*", type=int, default=[],
                    help="also time the code matrix this many bytes past a cache line (natural order)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-fp32", action="store_true", help="skip DGL's float copy_u_sum")
    ap.add_argument("--data-dir", default=os.environ.get("BENCH_SUITE_DATA"))
    ap.add_argument("--out", default=str(ROOT / "results" / "cost" / "aggregation.jsonl"))
    args = ap.parse_args(argv)

    import dgl
    import scipy.sparse as sp
    import torch

    from bench_suite.engine import kernels as K
    from bench_suite.engine.kernels import aggregation as new
    from bench_suite.engine.packing import CACHE_LINE, aligned_empty, pack

    if args.ref is None:
        args.ref = git("merge-base", "HEAD", "main")
    ref_commit = git("rev-parse", args.ref)
    tree = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "bench_suite"))
    tmp = Path(tempfile.mkdtemp(prefix="aggbench-"))
    old = load_module(git("show", f"{ref_commit}:bench_suite/engine/kernels/aggregation.py"), "aggregation_ref", tmp)
    K.retain_heap()
    threads = K.set_threads(args.threads)

    def set_threads(t: int) -> None:
        K.set_threads(t)
        torch.set_num_threads(t)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    for gname in args.graphs:
        indptr, indices, classes = load_graph(gname, args.data_dir)
        n, nnz = len(indptr) - 1, indices.size
        orders = {}
        for o in args.orders:
            t0 = time.perf_counter()
            perm = permutation(o, indptr, indices)
            csr = (indptr, indices) if perm is None else permute(indptr, indices, perm)
            orders[o] = (perm, csr, (time.perf_counter() - t0) * 1e3)
        a = sp.csr_matrix((np.ones(nnz, np.int64), indices, indptr), shape=(n, n))
        widths = sorted({classes if w == "classes" else int(w) for w in args.widths})
        for width in widths:
            x = torch.from_numpy(np.random.default_rng(width).standard_normal((n, width)).astype(np.float32))
            fp32 = {}
            if not args.no_fp32:
                for o, (perm, csr, _) in orders.items():
                    gd = dgl_graph(*csr)
                    xo = x if perm is None else x[torch.from_numpy(perm)].contiguous()
                    fp32[o] = (lambda gd=gd, xo=xo: dgl.ops.copy_u_sum(gd, xo))
                    fp32[o]()
            for bits in args.bits:
                q = np.random.default_rng(bits * 1000 + width).integers(0, 2 ** bits, (n, width)).astype(np.uint8)
                ref = np.asarray(a @ q.astype(np.int64))
                packed = pack(q, bits)
                variants = {"ref": (lambda p=packed: old.aggregate(indptr, indices, p, bits, width))}
                for o, (perm, csr, _) in orders.items():
                    po = packed
                    if perm is not None:  # the permuted copy on a cache line too, as pack() puts the natural one
                        po = aligned_empty(packed.shape)
                        np.take(packed, perm, axis=0, out=po)
                    variants[f"tree/{o}"] = (lambda c=csr, p=po: new.aggregate(c[0], c[1], p, bits, width))
                for off in args.offsets:  # the same codes, the matrix's first byte `off` bytes past a line
                    buf = aligned_empty((packed.nbytes + CACHE_LINE,))
                    po = buf[off % CACHE_LINE:off % CACHE_LINE + packed.nbytes].reshape(packed.shape)
                    po[...] = packed
                    variants[f"tree/natural+{off}B"] = (lambda p=po: new.aggregate(indptr, indices, p, bits, width))
                for name, fn in variants.items():  # compile, then check bit-exactness
                    S, lo, hi = fn()
                    perm = orders[name.split("/")[1].split("+")[0]][0] if "/" in name else None
                    want = ref if perm is None else ref[perm]
                    if not (np.array_equal(S, want) and np.array_equal(lo, want.min(1)) and np.array_equal(hi, want.max(1))):
                        raise SystemExit(f"{gname} bits={bits} width={width} {name}: sums differ from Ã @ q")
                timed = dict(variants)
                timed.update({f"fp32/{o}": f for o, f in fp32.items()})
                load_before = os.getloadavg()
                # (1) one thread, CPU time: the work of each variant, which waiting for a core on
                # the shared machine does not inflate
                set_threads(1)
                cpu1 = interleaved(timed, args.rounds, time.process_time)
                # (2) the two threads' shares of the rows, each timed alone (one thread, CPU time)
                # with this tree's kernel: the makespan of the split of the ref (equal rows: 32
                # chunks of ceil(n/32) rows, numba hands each thread 16 in a row) and of this tree's
                # (chunk_bounds: equal edges)
                half_old = min(n, 16 * -(-n // 32))
                half_new = int(new.chunk_bounds(indptr, 32)[16])
                halves = {f"{split}/{h}": (lambda r=r: new.aggregate(indptr, indices, packed, bits, width,
                                                                     bounds=np.array(r, np.int64)))
                          for split, cut in (("rows", half_old), ("edges", half_new))
                          for h, r in (("0", (0, cut)), ("1", (cut, n)))}
                share = interleaved(halves, args.rounds, time.process_time)
                makespan = {s_: max(share[f"{s_}/0"], share[f"{s_}/1"]) for s_ in ("rows", "edges")}
                # (3) two threads, wall clock (the engine's setting; on a loaded machine mostly the
                # wait for the second core)
                set_threads(args.threads)
                wall = interleaved({k: timed[k] for k in ("ref", "tree/natural", "fp32/natural") if k in timed},
                                   args.rounds, time.perf_counter)
                gathered = nnz * packed.shape[1]
                med = cpu1
                rec = {
                    "benchmark": "aggregation", "machine": f"{os.uname().nodename}, {os.cpu_count()} cores",
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                    "ref": args.ref, "ref_commit": ref_commit, "tree": tree, "tree_dirty": dirty,
                    "graph": gname, "nodes": n, "nnz": nnz, "max_degree": int(np.diff(indptr).max()),
                    "bits": bits, "width": width, "row_bytes": packed.shape[1], "rounds": args.rounds,
                    "cpu_1thread_ms": med,
                    "ratio_ref_over_tree": med["ref"] / med["tree/natural"],
                    "ratio_natural_over_order": {o: med["tree/natural"] / med[f"tree/{o}"] for o in orders if o != "natural"},
                    "ratio_offset_over_aligned": {off: med[f"tree/natural+{off}B"] / med["tree/natural"]
                                                  for off in args.offsets},
                    "fp32_ratio_natural_over_order": {o: med["fp32/natural"] / med[f"fp32/{o}"]
                                                      for o in orders if o != "natural" and fp32},
                    "fp32_over_int_same_order": {o: med[f"fp32/{o}"] / med[f"tree/{o}"] for o in orders if fp32},
                    "gathered_GBps_1thread": {k: gathered / (v * 1e6) for k, v in med.items() if not k.startswith("fp32")},
                    "split_thread0_edge_share": {"rows": float(indptr[half_old] / nnz), "edges": float(indptr[half_new] / nnz)},
                    "split_cpu_ms": share, "split_makespan_ms": makespan,
                    "ratio_split_rows_over_edges": makespan["rows"] / makespan["edges"],
                    "threads": threads, "wall_ms": wall,
                    "wall_ratio_ref_over_tree": wall["ref"] / wall["tree/natural"],
                    "reorder_ms": {o: orders[o][2] for o in orders if o != "natural"},
                }
                with out_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{gname:17s} b={bits} w={width:4d}  cpu ref {med['ref']:8.2f} tree {med['tree/natural']:8.2f} ms "
                      f"x{rec['ratio_ref_over_tree']:.2f}  " +
                      "  ".join(f"{o} x{v:.2f}" for o, v in rec["ratio_natural_over_order"].items()) +
                      "".join(f"  +{o}B x{v:.2f}" for o, v in rec["ratio_offset_over_aligned"].items()) +
                      (f"  fp32 {med['fp32/natural']:.2f} ms " + " ".join(
                          f"{o} x{v:.2f}" for o, v in rec["fp32_ratio_natural_over_order"].items()) if fp32 else "") +
                      f"  split x{rec['ratio_split_rows_over_edges']:.2f}  wall2 x{rec['wall_ratio_ref_over_tree']:.2f}"
                      f"  load {load_before[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
