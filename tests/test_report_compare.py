"""``report A --against B`` (two stores group by group) and ``report A B`` saying which duplicates it dropped."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import report_store as fx  # noqa: E402

from bench_suite.cli import main  # noqa: E402
from bench_suite.report.aggregate import duplicate_runs, load_store, runs_frame  # noqa: E402
from bench_suite.report.compare import compare_runs  # noqa: E402

T975_DF2, T975_DF6 = 4.302652730, 2.446911851  # two-sided 95% t quantiles (tables)
SHIFT = 0.02  # B's accuracy is A's minus this, seed by seed
B_KEYS = {(m, q, d, s) for m, (_, _, depths) in fx.METHODS.items() for q in fx.QUANTS for d in depths
          for s in fx.SEEDS if m == "gcn" and d in (2, 16)}


def _rewrite(path: Path, **changes) -> None:
    rec = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "test_acc":
            rec["metrics"]["test_acc"] = value(rec["metrics"]["test_acc"])
        else:
            rec[key] = value
    path.write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A: the fixture store.  B: gcn at depths 2 and 16 (the same specs, so the same run ids), each
    accuracy SHIFT lower and finished later, plus gcn FP32 at depth 8 that A does not have."""
    root = tmp_path_factory.mktemp("stores")
    a = fx.write_store(root / "a", speed=False, junk=False)
    b = fx.write_store(root / "b", speed=False, junk=False, only=B_KEYS)
    for path in b.glob("*.json"):
        if json.loads(path.read_text())["status"] == "ok":
            _rewrite(path, test_acc=lambda v: round(v - SHIFT, 6))
        _rewrite(path, finished="2026-02-01T00:00:00")
    for seed in fx.SEEDS:
        rec = fx.train_record("gcn", "FP32", 8, seed)
        (b / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    return a, b


def _row(frame, method, quantizer, depth):
    sel = frame[(frame.method == method) & (frame.quantizer == quantizer) & (frame.depth == depth)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_groups_in_both_stores_get_both_means_the_difference_and_its_welch_interval(stores):
    a, b = stores
    frame = compare_runs(runs_frame(load_store([a])), runs_frame(load_store([b])), "test_acc")
    assert frame["found_in"].value_counts().to_dict() == {"both": 8, "A": 12, "B": 1}

    # four seeds each side, equal spread: Welch's df = 6; seed offsets 0, .01, .02, .04 have s² = 8.75e-4 / 3
    r = _row(frame, "gcn", "FP32", 2)
    accs = [fx.accuracy("gcn", "FP32", 2, s) for s in fx.SEEDS]
    half = T975_DF6 * math.sqrt(8.75e-4 / 3) * math.sqrt(1 / 4 + 1 / 4)
    assert (r.n_a, r.n_b) == (4, 4)
    assert r.mean_a == pytest.approx(sum(accs) / 4, abs=1e-9)
    assert r.mean_b == pytest.approx(sum(accs) / 4 - SHIFT, abs=1e-9)
    assert r["diff"] == pytest.approx(SHIFT, abs=1e-9)
    assert (r.ci95_low, r.ci95_high) == (pytest.approx(SHIFT - half, abs=1e-6), pytest.approx(SHIFT + half, abs=1e-6))

    # seed 1 failed and seed 3 missing on both sides: seeds 0 and 2 (offsets 0, .02) each, df = 2
    r = _row(frame, "gcn", "QLR INT2", 16)
    half = T975_DF2 * math.sqrt(2e-4 / 2 + 2e-4 / 2)
    assert (r.n_a, r.n_b) == (2, 2)
    assert (r.ci95_low, r.ci95_high) == (pytest.approx(SHIFT - half, abs=1e-6), pytest.approx(SHIFT + half, abs=1e-6))

    only_b = _row(frame, "gcn", "FP32", 8)
    assert only_b.found_in == "B" and only_b.n_a == 0 and math.isnan(only_b["diff"])
    assert _row(frame, "decoupled+smp(exact)", "QLR INT8", 16).found_in == "A"


def test_report_against_writes_the_comparison_table_and_a_readme_section(stores, tmp_path, capsys):
    a, b = stores
    out = tmp_path / "out"
    assert main(["report", str(a), "--against", str(b), "--out", str(out), "--no-figures", "--metric", "test_acc"]) == 0
    err = capsys.readouterr().err
    assert "8 groups in both, 12 only here, 1 only there" in err and "found more than once" not in err
    for ext in ("md", "tex", "csv"):
        assert (out / "tables" / f"comparison.{ext}").is_file()
    rows = {(r[1], r[2], r[3]): r for r in
            (line.split(",", 9) for line in (out / "tables" / "comparison.csv").read_text().splitlines()[1:])}
    # A − B in points: +2.00, interval 2 ± 100·half = [-0.95, +4.95]
    assert rows[("gcn", "FP32", "2")][4:] == ["80.75", "4", "78.75", "4", "+2.00", '"[-0.95, +4.95]"']
    assert rows[("gcn", "FP32", "8")][4:] == ["", "", "78.75", "4", "only in B", ""]
    assert rows[("gcn", "QLR INT8", "4")][4:] == ["78.75", "4", "", "", "only in A", ""]
    readme = (out / "README.md").read_text()
    section = readme.split("## Comparison with another result store", 1)[1].split("\n## ", 1)[0]
    assert f"B (`--against`): `{b}`" in section and "8 groups in both, 12 only in A, 1 only in B" in section
    assert "| cora | gcn | FP32 | 2 | 80.75 | 4 | 78.75 | 4 | +2.00 | [-0.95, +4.95] |" in section
    assert "A $-$ B" in (out / "tables" / "comparison.tex").read_text()


def test_merging_stores_says_how_many_duplicates_it_dropped_and_where_it_kept_them(stores, tmp_path, capsys):
    a, b = stores
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "ab"), "--no-figures"]) == 0
    err = capsys.readouterr().err
    # B's 31 copies (16 at depth 2, 15 at depth 16) are newer, and the failed copy fails on both sides
    assert (f"report: 31 run ids found more than once in the records read; one record kept for each (an ok record "
            f"first, then the newest finished): 31 from {b}; 31 duplicate records dropped") in err

    # C: an identical copy (a tie: the store given first wins), a newer failed copy (the ok one wins),
    # a newer ok copy (it wins)
    c = tmp_path / "c" / "fixture"
    c.mkdir(parents=True)
    originals = sorted(a.glob("*.json"))[:3]
    recs = [json.loads(p.read_text()) for p in originals]
    assert all(r["status"] == "ok" for r in recs)
    (c / originals[0].name).write_text(originals[0].read_text())
    (c / originals[1].name).write_text(json.dumps(dict(recs[1], status="failed", error="boom", metrics={},
                                                       finished="2027-01-01T00:00:00")))
    (c / originals[2].name).write_text(json.dumps(dict(recs[2], finished="2027-01-01T00:00:00")))
    dups = duplicate_runs(load_store([a, c]))
    kept = dict(zip(dups["run_id"], dups["kept_root"]))
    assert kept == {recs[0]["run_id"]: str(a), recs[1]["run_id"]: str(a), recs[2]["run_id"]: str(c)}
    assert main(["report", str(a), str(c), "--out", str(tmp_path / "ac"), "--no-figures"]) == 0
    assert f"3 run ids found more than once in the records read; one record kept for each (an ok record first, " \
           f"then the newest finished): 2 from {a}, 1 from {c}; 3 duplicate records dropped" in capsys.readouterr().err
