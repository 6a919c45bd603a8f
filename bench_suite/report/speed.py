"""Speed and size tables from the integer engine's ``kind: speed`` records (a row per timed
implementation: :func:`bench_suite.record.speed_rows`), whether a speed matrix's runner or
``bench-suite speed --results`` wrote them.

One table per machine (CPU model and thread count, from the records): latency,
speed-up over DGL FP32 and over the tuned FP32 path (:mod:`bench_suite.engine.fp32`; records made
before it was timed show "–"), model size and compression per model, graph and bit width.
Several records of the same configuration are summarised by their median latency, taken over
the records of the newest code version that measured it (the git commit of its latest record):
a kernel change must not be averaged with the timings of the code it replaced.  Records of older
versions stay in the store and are counted in a footnote.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pandas as pd

from bench_suite.record import speed_rows
from bench_suite.report.aggregate import Store
from bench_suite.report.tables import EMPTY, Table, bits_name, slug

SPEED_COLS = ["cpu", "threads", "model", "depth", "hidden", "graph", "bits", "quant", "impl", "median_ms",
              "speedup_vs_dgl", "speedup_vs_fp32", "model_bytes", "fp32_bytes", "compression", "int_test_acc",
              "agreement", "matrix", "status", "commit", "timestamp"]
KEY_COLS = ["model", "depth", "hidden", "graph", "bits", "quant", "impl"]
NUMERIC_COLS = ("median_ms", "speedup_vs_dgl", "speedup_vs_fp32", "model_bytes", "fp32_bytes", "compression",
                "int_test_acc", "agreement")


def _section(spec: Dict[str, Any], name: str) -> Dict[str, Any]:
    """``spec[name]`` as a dict (a bare value such as ``"gcn"`` becomes ``{"name": "gcn"}``)."""
    v = spec.get(name) if isinstance(spec, dict) else None
    return v if isinstance(v, dict) else ({"name": v} if v is not None else {})


def _model_label(rec: Dict[str, Any]) -> str:
    """A decoupled model is named with its propagation (APPNP and SMP must not pool), an SMP with
    its multiplier floor."""
    spec = rec.get("spec") or {}
    return (str(rec.get("model") or _section(spec, "model").get("name") or "?")
            + (f"+{rec['propagation']}" if rec.get("propagation") else "")
            + (f" (λ ≥ {rec['lambda_min']:g})" if rec.get("lambda_min") is not None else ""))


def _quant_label(rec: Dict[str, Any]) -> str:
    """Bit truncation, calibrated ranges and the integer model's sums mode are part of the quantizer
    compared (INT2 QLR and INT2 QLR BT* must not pool, nor dynamic and calibrated ranges, nor exact and
    reference sums: they sit side by side)."""
    spec = rec.get("spec") or {}
    return (str(rec.get("quant") or _section(spec, "quant").get("name") or "–")
            + (f" {rec['truncation']}" if rec.get("truncation") not in (None, "none") else "")
            + (" calibrated" if rec.get("ranges") == "calibrated" else "")
            + (f" {rec['sums']} sums" if rec.get("sums", "exact") != "exact" else ""))


def _rows(store: Store) -> List[Dict[str, Any]]:
    return [row for rec in store.speed for row in speed_rows(rec)]


def speed_frame(store: Store) -> pd.DataFrame:
    """One row per speed record (missing fields become NaN / ``?``)."""
    rows = []
    for rec in _rows(store):
        env: Dict[str, Any] = rec.get("env") or {}
        spec = rec.get("spec") or {}
        rows.append({
            "cpu": str(rec.get("cpu") or env.get("cpu") or "unknown CPU"),
            "threads": rec.get("threads", env.get("torch_threads")),
            "model": _model_label(rec),
            "depth": rec.get("depth", _section(spec, "model").get("depth")),
            "hidden": rec.get("hidden", _section(spec, "model").get("hidden")),
            "graph": str(rec.get("graph") or _section(spec, "dataset").get("name") or "?")
            + (f" (trained, tuned protocol, {int(rec['train_epochs_run'])} ep)" if rec.get("train_protocol") == "tuned"
               else f" (trained {int(rec['train_epochs'])} ep)" if rec.get("train_epochs") else ""),
            "bits": rec.get("bits", _section(spec, "quant").get("bits")),
            "quant": _quant_label(rec),
            "impl": str(rec.get("impl") or "?"),
            **{k: rec.get(k) for k in NUMERIC_COLS},
            "matrix": rec.get("_matrix", ""),
            "status": str(rec.get("status") or "ok"),
            "commit": str(env.get("git_commit") or ""),
            "timestamp": str(rec.get("timestamp") or rec.get("finished") or ""),
        })
    df = pd.DataFrame(rows, columns=SPEED_COLS)
    for c in NUMERIC_COLS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["bits"] = pd.to_numeric(df["bits"], errors="coerce").fillna(32).astype(int)
    for c in ("threads", "depth", "hidden"):
        df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype(int)
    df.loc[df["bits"] == 32, "quant"] = "–"  # the FP32 baselines do not depend on the quantizer compared
    return df.sort_values(["cpu", "threads"] + KEY_COLS).reset_index(drop=True)


def _num(v: float, fmt: str, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or (fmt == "d" and v == 0):
        return EMPTY
    return f"{v:{fmt}}{suffix}"


def _newest_version(g: pd.DataFrame) -> pd.DataFrame:
    """The records of ``g`` (one configuration) made by the code version of its latest record."""
    latest = g.sort_values("timestamp", kind="stable").iloc[-1]["commit"]
    return g[g["commit"] == latest]


def speed_tables(frame: pd.DataFrame) -> List[Table]:
    """One :class:`Table` per (CPU, threads); failed records are listed as footnotes."""
    tables = []
    for (cpu, threads), sub in frame.groupby(["cpu", "threads"], sort=True):
        ok = sub[sub["status"] == "ok"]
        rows = []
        superseded = 0
        groups = sorted(ok.groupby(KEY_COLS), key=lambda kv: (*kv[0][:4], -kv[0][4], *kv[0][5:]))
        for key, g in groups:  # widest bit width (the FP32 baselines) first
            model, depth, hidden, graph, bits, quant, impl = key
            newest = _newest_version(g)
            superseded += len(g) - len(newest)
            g = newest
            rows.append([model, _num(depth, "d"), _num(hidden, "d"), graph, bits_name(int(bits)), quant, impl,
                         str(len(g)),
                         _num(g["median_ms"].median(), ".2f"),
                         _num(g["speedup_vs_dgl"].median(), ".2f", "×"),
                         _num(g["speedup_vs_fp32"].median(), ".2f", "×"),
                         _num(g["model_bytes"].median() / 1024, ".1f"),
                         _num(g["fp32_bytes"].median() / 1024, ".1f"),
                         _num(g["compression"].median(), ".1f", "×"),
                         _num(100 * g["int_test_acc"].median(), ".1f") if impl == "int" else EMPTY,
                         _num(100 * g["agreement"].median(), ".2f") if impl == "int" else EMPTY])
        foot = [f"{r.model} {r.graph} {bits_name(int(r.bits))} {r.impl}: status {r.status}"
                for r in sub[sub["status"] != "ok"].itertuples()]
        if superseded:
            foot.append(f"n counts the records of the newest code version of each configuration; {superseded} "
                        f"record{'s' if superseded != 1 else ''} of older versions not pooled")
        name = f"speed_{slug(cpu)}_t{threads}"
        title = f"Inference latency and model size on {cpu}, {threads} thread{'s' if threads != 1 else ''}"
        tables.append(Table(name, title, ["model", "depth", "hidden", "graph", "bits", "quantizer", "impl", "n",
                                          "median ms", "speed-up vs DGL", "speed-up vs tuned FP32", "model KiB",
                                          "FP32 KiB", "compression", "test acc % (int)",
                                          "agreement % with fake-quant"],
                            rows, footnotes=sorted(foot), n_label_cols=7))
    return tables


def breakdown_tables(store: Store) -> List[Table]:
    """Where the integer forward pass spends its time: one table per speed record that has a
    ``breakdown`` (``bench-suite speed --breakdown``), a row per stage with its time, share,
    bytes moved, MACs and floor, and the floor of the whole pass against DGL FP32."""
    tables = []
    newest: Dict[str, Dict[str, Any]] = {}  # one table per configuration: its newest record
    recs = [r for r in _rows(store) if isinstance(r.get("breakdown"), dict) and r.get("status", "ok") == "ok"]
    for rec in sorted(recs, key=lambda r: str(r.get("timestamp"))):
        newest[f"{_model_label(rec)}-{rec.get('depth')} h{rec.get('hidden')} {rec.get('graph')} "
               f"{bits_name(int(rec['bits']))} {_quant_label(rec)} t{rec.get('threads')}"] = rec
    for label, rec in sorted(newest.items()):
        b = rec["breakdown"]
        total = float(b.get("profiled_ms") or 0) or 1.0
        rows = [[s["stage"], str(s["calls"]), f"{s['ms']:.1f}", f"{100 * s['ms'] / total:.0f}",
                 f"{s['bytes'] / 1e6:.0f}", _num(s["gather_bytes"] / 1e6, ".0f") if s["gather_bytes"] else EMPTY,
                 _num(s["macs"] / 1e9, ".2f") if s["macs"] else EMPTY, _num(s["floor_ms"], ".1f"),
                 _num(s["ms"] / s["floor_ms"], ".1f", "×") if s["floor_ms"] else EMPTY]
                for s in b["stages"]]
        rows.append(["all stages", "", f"{b['profiled_ms']:.1f}", "100", "", "", "", _num(b["floor_ms"], ".1f"),
                     _num(b["profiled_ms"] / b["floor_ms"], ".1f", "×") if b["floor_ms"] else EMPTY])
        if b.get("floor_ms") is None:
            foot = [f"no floor: {b.get('floor_withheld') or 'not measured'}."]
        else:
            foot = [f"floor of a stage = max((bytes + gather bytes) / {b['bandwidth_gbs']} GB/s (parallel copy, read + "
                    f"write counted), MACs / {b['int8_peak_gmacs']} GMAC/s (oneDNN uint8 x int8 on a cache-resident "
                    "4096x256x256 product)), both measured in the same run; bytes count every array a stage reads or "
                    "writes once; an aggregation also gathers the code rows once per edge (gather MB)."
                    + ("" if "floor_withheld" in b else " (Records before gather bytes were counted left them out.)")]
        vs_fp32 = rec.get("speedup_vs_fp32")
        foot.append(f"measured forward {rec.get('median_ms')} ms median ({rec.get('speedup_vs_dgl')}x DGL FP32"
                    + (f", {vs_fp32}x the tuned FP32 path" if vs_fp32 is not None else "") + "); "
                    + (f"a pass at the floor would be {b.get('ceiling_vs_dgl')}x DGL FP32 on this machine, "
                       if b.get("floor_ms") is not None else "")
                    + f"{rec.get('threads')} threads, {rec.get('cpu')}.")
        tables.append(Table(f"breakdown_{slug(label)}", f"Where the time goes: {label}",
                            ["stage", "calls", "ms", "% of pass", "MB moved", "gather MB", "GMAC", "floor ms",
                             "vs floor"], rows, footnotes=foot, n_label_cols=1))
    return tables
