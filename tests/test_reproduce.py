"""The reproduction report: published value, source, Δ and verdict for each reference row."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.report_store import write_store  # noqa: E402

from bench_suite.report import render_report  # noqa: E402
from bench_suite.report.aggregate import load_store, runs_frame  # noqa: E402
from bench_suite.report.reproduce import (Reference, flat_spec, load_references, matches,  # noqa: E402
                                          reproduction_frame, reproduction_table)


def _refs():
    # fixture accuracies (tests/fixtures/report_store.py): gcn FP32 depth 2 = 80 - 1 + offsets
    # {0, 1, 2, 4} -> mean 80.75, std 1.71; depth 16: 77.75
    return [
        Reference("GCN", {"dataset": "cora", "model": "gcn", "depth": 2}, "Paper A, Table 1", value=80.0, std=0.5,
                  runs=100),
        Reference("GCN deep", {"dataset": "cora", "model": "gcn", "depth": 16}, "Paper B, Table 2", value=70.0, runs=1),
        Reference("GCN deep INT8", {"dataset": "cora", "model": "gcn", "depth": 16, "quant": "qlr", "bits": 8},
                  "Paper B", value=70.0, runs=1, explanation="the paper stops early; run X shows it"),
        Reference("GCN QLR INT2", {"dataset": "cora", "model": "gcn", "depth": 2, "quant": "qlr", "bits": 2,
                                   "truncation": "none"}, "none readable", at_least=75),
        Reference("GAT", {"dataset": "cora", "model": "gat", "depth": 2}, "Paper C", value=83.0, std=0.7),
    ]


def test_reproduction_rows_compare_with_the_published_value(tmp_path):
    write_store(tmp_path)
    runs = runs_frame(load_store([tmp_path]))
    frame = reproduction_frame(runs, _refs()).set_index("method")
    a = frame.loc["GCN"]
    assert a["n"] == 4 and a["mean"] == pytest.approx(80.75) and a["delta"] == pytest.approx(0.75)
    assert a["tolerance"] == 1.5 and a["verdict"] == "reproduced"  # max(1.5, published std 0.5)
    b = frame.loc["GCN deep"]  # a single published run: the tolerance is the suite's own std
    assert b["delta"] == pytest.approx(7.75) and b["tolerance"] == pytest.approx(1.707825, abs=1e-5)
    assert b["verdict"] == "MISS"
    assert frame.loc["GCN deep INT8", "verdict"] == "miss, explained"
    assert frame.loc["GCN QLR INT2", "verdict"] == "below target"  # 80 - 10 - 1 + offsets < 75
    assert frame.loc["GAT", "verdict"] == "not run"
    table = reproduction_table(frame.reset_index())
    md = table.markdown()
    assert "| GCN | cora | 2 | 80.8 ± 1.7 (n=4) | 99.0 | 80.0 ± 0.5 | Paper A, Table 1 | +0.8 | 1.5 | reproduced |" in md
    assert "70.0 (1 run)" in md and "+7.8" in md and "target ≥ 75" in md
    assert "the paper stops early; run X shows it" in md  # the explanation is a footnote


def test_plugin_keys_left_out_of_a_reference_mean_none():
    """{model: gcn, depth: 8} selects plain GCN, not GCN+DropEdge, and only FP32."""
    spec = {"dataset": {"name": "cora", "split": "public"}, "model": {"name": "gcn", "depth": 8, "hidden": 128},
            "propagation": None, "quant": {"name": "fp32", "bits": 32}, "transform": {"name": "dropedge", "p": 0.6},
            "train": {"seed": 0, "epochs": 400}}
    ref = Reference("x", {"dataset": "cora", "model": "gcn", "depth": 8}, "s")
    assert not matches(ref, flat_spec(spec))
    assert matches(Reference("x", {"dataset": "cora", "model": "gcn", "depth": 8, "transform": "dropedge",
                                   "p": 0.6}, "s"), flat_spec(spec))
    spec["transform"] = None
    assert matches(ref, flat_spec(spec))
    assert not matches(Reference("x", {"dataset": "cora", "model": "gcn", "depth": 8, "hidden": 64}, "s"),
                       flat_spec(spec))


def test_every_shipped_reference_selects_runs_of_the_reproduce_matrix():
    """references.yaml and matrices/reproduce.yaml must not drift apart: each reference row matches
    one group (10 seeds) of the matrix, and each has a source."""
    from bench_suite.registry import load_all
    from bench_suite.runner.matrix import expand_matrix

    load_all()
    specs = expand_matrix("reproduce")
    flats = [flat_spec(s.data) for s in specs]
    for ref in load_references():
        hits = [f for f in flats if matches(ref, f)]
        assert len(hits) == 10, (ref.method, ref.match, len(hits))
        assert ref.source and (ref.value is not None or ref.at_least is not None or "could not" in ref.source
                               or "no accuracy" in ref.source), ref


def test_report_renders_the_reproduction_table(tmp_path):
    store = write_store(tmp_path / "results")
    refs = tmp_path / "refs.yaml"
    refs.write_text(json.dumps([{"method": "GCN", "match": {"dataset": "cora", "model": "gcn", "depth": 2},
                                 "value": 80.0, "std": 0.5, "runs": 100, "source": "Paper A, Table 1"}]))
    import bench_suite.report.reproduce as rep

    old = rep.REFERENCES
    rep.REFERENCES = refs
    try:
        render_report([store.parent], tmp_path / "out", figures=False)
    finally:
        rep.REFERENCES = old
    md = (tmp_path / "out" / "tables" / "reproduction.md").read_text()
    assert "Paper A, Table 1" in md and "reproduced" in md
    assert "reproduction" in (tmp_path / "out" / "README.md").read_text()
