"""Reports rendered from a result store: statistics, flags, files, determinism, empty store."""
from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import report_store as fx  # noqa: E402

from bench_suite.report import render_report  # noqa: E402
from bench_suite.report.aggregate import aggregate, completeness_note, load_store, runs_frame  # noqa: E402

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # two-sided 95% t quantiles (tables)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return fx.write_store(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def rendered(store_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    render_report([store_dir], out)
    return out


def _agg(store_dir: Path, seeds=None):
    runs = runs_frame(load_store([store_dir]), seeds)
    return aggregate(runs, seeds)


def _row(agg, method, quantizer, depth, metric="test_acc"):
    sel = agg[(agg.method == method) & (agg.quantizer == quantizer) & (agg.depth == depth) & (agg.metric == metric)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_statistics_equal_hand_computed_values(store_dir):
    agg = _agg(store_dir)
    for method, quantizer, depth, seeds in [("gcn", "QLR INT8", 4, fx.SEEDS),
                                            ("decoupled+smp(exact)", "QLR INT2 BT*", 16, fx.SEEDS),
                                            ("gcn", "QLR INT2", 16, (0, 2))]:
        vals = [fx.accuracy(method, quantizer, depth, s) for s in seeds]
        r = _row(agg, method, quantizer, depth)
        n = len(vals)
        mean = sum(vals) / n
        std = statistics.stdev(vals)  # unbiased (n - 1)
        half = T975[n - 1] * std / math.sqrt(n)
        assert r["n"] == n and r["expected"] == len(fx.SEEDS)
        assert r["mean"] == pytest.approx(mean, abs=1e-12)
        assert r["std"] == pytest.approx(std, rel=1e-9)
        assert r["ci95_low"] == pytest.approx(mean - half, rel=1e-7)
        assert r["ci95_high"] == pytest.approx(mean + half, rel=1e-7)
        assert (r["min"], r["max"]) == (min(vals), max(vals))


def test_groups_exclude_seed_and_keep_quantizer_variants_apart(store_dir):
    agg = _agg(store_dir)
    acc = agg[agg.metric == "test_acc"]
    # 2 methods: gcn 3 depths, smp 2 depths; 4 quantizers each
    assert len(acc) == (3 + 2) * 4
    assert set(acc.quantizer) == {"FP32", "QLR INT8", "QLR INT2", "QLR INT2 BT*"}
    assert set(acc.method) == {"gcn", "decoupled+smp(exact)"}


def test_missing_and_failed_seeds_are_flagged_not_averaged(store_dir, rendered):
    r = _row(_agg(store_dir), "gcn", "QLR INT2", 16)
    assert not r["complete"] and r["seeds_failed"] == "1" and r["seeds_missing"] == "3"
    assert r["note"] == "n=2/4: seeds 1 failed, 3 missing"
    note = "n=2/4: seeds 1 failed, 3 missing"
    table = (rendered / "tables" / "acc_by_depth_cora_int2.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| gcn | QLR INT2 |"))
    assert row.rstrip(" |").endswith("†") and note in table
    assert table.count("†") == 2  # the one flagged cell and its footnote
    tex = (rendered / "tables" / "acc_by_depth_cora_int2.tex").read_text()
    assert "$^\\dagger$" in tex and note in tex
    cells = list(csv.reader((rendered / "tables" / "acc_by_depth_cora_int2.csv").open()))
    assert any(c.endswith("†") for c in next(r for r in cells if r[:2] == ["gcn", "QLR INT2"]))
    # a complete group in the same table carries no mark
    assert "†" not in next(line for line in table.splitlines() if line.startswith("| gcn | QLR INT2 BT* |"))
    readme = (rendered / "README.md").read_text()
    missing = readme.split("## Missing / failed", 1)[1]
    assert "| cora | gcn | QLR INT2 | 16 | n=2/4 | 1 | 3 |" in missing and "NonFiniteLoss" in missing


def test_expected_seeds_option_flags_absent_seeds(store_dir):
    r = _row(_agg(store_dir, seeds=range(6)), "gcn", "FP32", 2)
    assert (r["n"], r["expected"], r["seeds_missing"]) == (4, 6, "4,5")
    assert r["note"] == "n=4/6: seeds 4,5 missing"
    assert completeness_note(3, 3, [], []) == ""


def test_render_writes_every_indexed_file_and_valid_pngs(rendered):
    readme = (rendered / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links, readme
    for link in links:
        assert (rendered / link).is_file(), f"index links {link} but it was not written"
    pngs = sorted((rendered / "figures").glob("*.png"))
    assert {p.name for p in pngs} == {"depth_cora_fp32.png", "depth_cora_int8.png", "depth_cora_int2.png",
                                      "bits_cora_gcn.png", "bits_cora_decoupled-smp-exact.png",
                                      "oversmoothing_cora_L16_fp32.png", "oversmoothing_cora_L16_int8.png",
                                      "oversmoothing_cora_L16_int2.png", "smp_constraint_cora_K16.png"}
    from PIL import Image

    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert f"figures/{p.name}" in links
    for t in (rendered / "tables").iterdir():
        assert f"tables/{t.name}" in links
    # speed table names the machine and the speed-ups over DGL and over the tuned FP32 path
    speed = (rendered / "tables" / "speed_fixture-cpu-2-0ghz_t2.md").read_text()
    assert "Fixture CPU @ 2.0GHz, 2 threads" in speed
    assert "| median ms | speed-up vs DGL | speed-up vs tuned FP32 | model KiB |" in speed
    assert "| INT2 | qlr | int | 1 | 10.00 | 4.00× | 3.00× | 4.0 | 64.0 | 16.0× |" in speed
    assert "| FP32 | – | fp32-tuned | 1 | 30.00 | 1.33× | 1.00× | 64.0 | 64.0 | 1.0× |" in speed


def test_best_value_is_bold(rendered):
    table = (rendered / "tables" / "acc_by_bits_cora.md").read_text()
    best_fp32 = 100 * statistics.mean(fx.accuracy("decoupled+smp(exact)", "FP32", 2, s) for s in fx.SEEDS)
    assert f"**{best_fp32:.1f} ± " in table
    assert table.count("**") == 2 + 2 * 3  # title + one best per column (FP32, INT8, INT2)
    assert "\\textbf{" in (rendered / "tables" / "acc_by_bits_cora.tex").read_text()


def test_render_is_deterministic(store_dir, rendered, tmp_path):
    again = tmp_path / "again"
    render_report([store_dir], again)
    files = sorted(p.relative_to(rendered) for p in rendered.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        if f.name == "README.md":  # names the output directory in its command line
            continue
        assert (rendered / f).read_bytes() == (again / f).read_bytes(), f"{f} differs between renders"


def test_partial_store_renders_and_old_records_without_fields(tmp_path):
    d = fx.write_store(tmp_path / "results", speed=False, junk=False,
                       only={("gcn", "FP32", 2, 0), ("gcn", "FP32", 2, 1)})
    old = {"spec": {"dataset": {"name": "cora"}, "model": {"name": "gcn", "depth": 4}},
           "metrics": {"test_acc": 0.5}}  # a bare record: no kind, status, env, layers or train section
    (d / "old.json").write_text(json.dumps(old))
    out = tmp_path / "out"
    res = render_report([d], out)
    assert res.n_train == 3 and res.n_speed == 0
    readme = (out / "README.md").read_text()
    assert "No speed records" in readme
    agg = (out / "aggregates.csv").read_text()
    assert "gcn,FP32,32,4,test_acc,1,2,0.5," in agg  # expected = seeds seen in the matrix {0, 1}


def test_empty_store_renders_no_records_message(tmp_path):
    (tmp_path / "results").mkdir()
    from bench_suite.cli import main

    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "No records found" in readme and "Everything is missing" in readme
    assert (tmp_path / "out" / "aggregates.csv").read_text().startswith("group,dataset,method")
    assert not list((tmp_path / "out").glob("figures/*"))


def test_missing_results_directory_is_an_error(tmp_path, capsys):
    from bench_suite.cli import main

    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_labels_name_the_keys_that_tell_colliding_groups_apart(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for i, (hidden, depth, lr) in enumerate([(64, 2, 0.01), (128, 2, 0.01), (64, 4, 0.005)]):
        rec = fx.train_record("gcn", "FP32", 2, 0)
        rec["spec"]["model"].update(hidden=hidden, depth=depth)
        rec["spec"]["train"]["lr"] = lr  # varies with depth only: no collision, so not shown
        rec["run_id"] = f"r{i}"
        (d / f"r{i}.json").write_text(json.dumps(rec))
    runs = runs_frame(load_store([d]))
    assert sorted(set(runs.method)) == ["gcn [hidden=128]", "gcn [hidden=64]"]
    assert runs.set_index("run_id").loc["r2", "method"] == "gcn [hidden=64]"


def _matrix_with_records(tmp_path, name: str, body: str, recorded) -> tuple:
    """Matrix ``name`` from ``body`` and a store holding an ok record for each spec ``recorded(spec)`` selects."""
    import textwrap

    from bench_suite.registry import load_all
    from bench_suite.runner.matrix import expand_matrix

    load_all()
    mpath = tmp_path / f"{name}.yaml"
    mpath.write_text(f"name: {name}\n" + textwrap.dedent(body))
    res = tmp_path / "res" / name
    res.mkdir(parents=True)
    for s in filter(recorded, expand_matrix(mpath)):
        (res / f"{s.run_id}.json").write_text(json.dumps({"kind": "train", "run_id": s.run_id, "spec": s.data,
                                                           "status": "ok", "matrix": name,
                                                           "metrics": {"test_acc": 0.5}}))
    return mpath, res


def test_runs_of_a_matrix_without_a_record_are_listed_as_not_run(tmp_path):
    """A group with no record at all is absent from the aggregates; ``matrices=`` still reports it."""
    from bench_suite.report.render import not_run

    mpath, res = _matrix_with_records(tmp_path, "nr", """
        seeds: [0, 1]
        fixed: {dataset: csbm, epochs: 2}
        axes: {model: gcn, depth: [2, 3]}
    """, lambda s: s.data["model"]["depth"] == 2 and s.data["train"]["seed"] == 0)
    pending = not_run([mpath], load_store([res]))
    assert pending[["depth", "runs"]].values.tolist() == [[2, 1], [3, 2]]
    out = render_report([res], tmp_path / "rep", matrices=[mpath], figures=False)
    assert out.not_run == 3
    index = (tmp_path / "rep" / "README.md").read_text()
    assert "Not run yet: 3 runs" in index and "| nr | csbm | gcn | FP32 | 3 | 2 |" in index


def test_speed_table_keeps_propagations_and_trained_graphs_apart():
    from types import SimpleNamespace

    from bench_suite.report.speed import speed_frame, speed_tables

    base = {"kind": "speed", "model": "decoupled", "depth": 10, "hidden": 64, "graph": "arxiv-like", "bits": 2,
            "quant": "qlr", "impl": "int", "cpu": "Fixture CPU", "threads": 2, "speedup_vs_dgl": 2.0,
            "model_bytes": 10, "fp32_bytes": 40, "compression": 4.0}
    recs = [dict(base, propagation="appnp", median_ms=10.0), dict(base, propagation="smp", median_ms=30.0),
            dict(base, model="gcn", propagation=None, graph="cora", train_epochs=50, median_ms=5.0,
                 int_test_acc=0.8, agreement=0.999),
            dict(base, propagation="smp", median_ms=40.0, truncation="bt*"),
            dict(base, propagation="smp", median_ms=50.0, truncation="none")]
    (table,) = speed_tables(speed_frame(SimpleNamespace(speed=recs)))
    rows = {r[0] + " " + r[3] + " " + r[5]: r for r in table.rows}
    assert rows["decoupled+smp arxiv-like qlr bt*"][8] == "40.00"  # BT* is its own row
    assert rows["decoupled+smp arxiv-like qlr"][7] == "2"  # plain QLR: the records without and with "none"
    rows = {r[0] + " " + r[3]: r for r in table.rows if r[5] == "qlr"}
    assert set(rows) == {"decoupled+appnp arxiv-like", "decoupled+smp arxiv-like", "gcn cora (trained 50 ep)"}
    assert rows["decoupled+appnp arxiv-like"][8] == "10.00" and rows["decoupled+smp arxiv-like"][8] == "40.00"
    assert rows["gcn cora (trained 50 ep)"][-2:] == ["80.0", "99.90"]


def test_speed_table_shows_the_speed_up_over_the_tuned_fp32_path_and_a_dash_for_records_without_it():
    """Records made before the tuned FP32 path was timed have no ``speedup_vs_fp32``: their cell is "–",
    beside configurations whose records have it (and a record without it does not pull the median)."""
    from types import SimpleNamespace

    from bench_suite.report.speed import speed_frame, speed_tables
    from bench_suite.report.tables import EMPTY

    base = {"kind": "speed", "model": "gcn", "depth": 4, "hidden": 256, "graph": "arxiv-like", "bits": 4,
            "quant": "qlr", "impl": "int", "cpu": "Fixture CPU", "threads": 2, "model_bytes": 10, "fp32_bytes": 40,
            "compression": 4.0, "median_ms": 20.0, "speedup_vs_dgl": 5.0, "env": {"git_commit": "c"}}
    recs = [dict(base, bits=8),  # an older record: no speedup_vs_fp32 at all
            dict(base, speedup_vs_fp32=3.0), dict(base, speedup_vs_fp32=None), dict(base, speedup_vs_fp32=4.0),
            dict(base, bits=2, speedup_vs_fp32=None)]
    (table,) = speed_tables(speed_frame(SimpleNamespace(speed=recs)))
    col = table.header.index("speed-up vs tuned FP32")
    assert table.header[col - 1] == "speed-up vs DGL"
    rows = {r[4]: r for r in table.rows}
    assert rows["INT8"][col] == EMPTY and rows["INT2"][col] == EMPTY and rows["INT8"][col - 1] == "5.00×"
    assert rows["INT4"][col] == "3.50×" and rows["INT4"][7] == "3"
    assert "| INT8 | qlr | int | 1 | 20.00 | 5.00× | – |" in table.markdown()


def test_accuracy_bands_are_clipped_to_percent_range():
    from bench_suite.report.figures import _band

    vals = [1.0, 2.0, 60.0]  # 3 seeds: the t-interval reaches far below 0
    lo, hi = _band("test_acc")(vals)
    raw_lo, raw_hi = _band("epoch_ms_mean")(vals)
    assert raw_lo < 0 and lo == 0.0 and hi == min(raw_hi, 100.0)
    assert _band("test_acc")([99.0, 99.5, 100.0])[1] == 100.0


def test_a_group_the_matrix_runs_with_fewer_seeds_is_not_flagged_missing(tmp_path):
    """smoke runs its Cora groups with seed 0 only: with the matrix given, that group is complete,
    and a group missing a seed the matrix asks for is still flagged."""
    from bench_suite.report.aggregate import group_status, runs_frame
    from bench_suite.report.render import matrix_seeds

    mpath, res = _matrix_with_records(tmp_path, "fs", """
        seeds: [0, 1]
        fixed: {dataset: csbm, epochs: 2}
        axes: {model: gcn, depth: [2, 4]}
        include:
          - {dataset: csbm, model: gcn, depth: 3, seed: 0, epochs: 2}
    """, lambda s: s.data["train"]["seed"] == 0 or s.data["model"]["depth"] == 4)  # depth 2 misses seed 1
    runs = runs_frame(load_store([res]))
    inferred = group_status(runs).set_index("depth")["complete"].to_dict()
    assert inferred == {2: False, 3: False, 4: True}  # without the matrix: the union {0, 1} everywhere
    st = group_status(runs, expected_by_group=matrix_seeds([mpath])).set_index("depth")
    assert st["complete"].to_dict() == {2: False, 3: True, 4: True} and st.loc[2, "seeds_missing"]
    out = render_report([res], tmp_path / "rep", matrices=[mpath], figures=False)
    assert out.incomplete_groups == 1


def test_methods_at_a_single_depth_get_a_bit_width_figure_not_depth_figures(tmp_path):
    """A quantizer study (each method at one depth) draws accuracy by bit width; a depth figure of
    isolated dots is not drawn.  The full fixture (several depths) draws no bit-width figure."""
    only = {("gcn", q, 2, s) for q in fx.QUANTS for s in fx.SEEDS}
    d = fx.write_store(tmp_path / "results", speed=False, junk=False, only=only)
    out = tmp_path / "out"
    render_report([d], out)
    pngs = {p.name for p in (out / "figures").glob("*.png")}
    assert pngs == {"bitwidth_cora_gcn_L2.png"}
    readme = (out / "README.md").read_text()
    assert "figures/bitwidth_cora_gcn_L2.png" in readme and "by bit width" in readme
    # one quantizer family (QLR at two widths, no BT*): seaborn's dodge divided by zero
    only = {("gcn", q, 2, s) for q in ("FP32", "QLR INT8", "QLR INT2") for s in fx.SEEDS}
    d = fx.write_store(tmp_path / "results1", speed=False, junk=False, only=only)
    render_report([d], tmp_path / "out1")
    assert {p.name for p in (tmp_path / "out1" / "figures").glob("*.png")} == {"bitwidth_cora_gcn_L2.png"}


def test_a_single_bit_width_depth_study_gets_no_bit_width_figures_or_tables(tmp_path):
    """An FP32-only depth study: the depth figure and depth table hold every method; a per-method
    'by bit width' figure (one line) and an 'accuracy by bit width' table (one column) are not drawn."""
    only = {(m, "FP32", d, s) for m, (_, _, depths) in fx.METHODS.items() for d in depths for s in fx.SEEDS}
    d = fx.write_store(tmp_path / "results", speed=False, junk=False, only=only)
    out = tmp_path / "out"
    render_report([d], out)
    assert {p.name for p in (out / "figures").glob("*.png")} == {"depth_cora_fp32.png",
                                                                 "oversmoothing_cora_L16_fp32.png",
                                                                 "smp_constraint_cora_K16.png"}
    assert {p.name for p in (out / "tables").glob("*.md")} == {"acc_by_depth_cora_fp32.md"}
    # with two bit widths the per-method figures and the bit-width table come back
    only |= {(m, "QLR INT8", d, s) for m, (_, _, depths) in fx.METHODS.items() for d in depths for s in fx.SEEDS}
    d = fx.write_store(tmp_path / "results2", speed=False, junk=False, only=only)
    render_report([d], tmp_path / "out2")
    assert {"bits_cora_gcn.png", "bits_cora_decoupled-smp-exact.png"} <= {
        p.name for p in (tmp_path / "out2" / "figures").glob("*.png")}
    assert (tmp_path / "out2" / "tables" / "acc_by_bits_cora.md").is_file()


def test_speed_table_pools_only_the_newest_code_version_of_a_configuration():
    from types import SimpleNamespace

    from bench_suite.report.speed import speed_frame, speed_tables

    base = {"kind": "speed", "model": "gcn", "depth": 4, "hidden": 256, "graph": "arxiv-like", "bits": 4,
            "quant": "qlr", "impl": "int", "cpu": "Fixture CPU", "threads": 2, "model_bytes": 10, "fp32_bytes": 40,
            "compression": 4.0}

    def rec(commit, stamp, ms):
        return dict(base, env={"git_commit": commit}, timestamp=stamp, median_ms=ms, speedup_vs_dgl=100.0 / ms)

    # the old kernel's two records (100, 90 ms) must not pull the median of the new one's (40, 50 ms)
    recs = [rec("old", "2026-11-20T10:00:00+0000", 100.0), rec("new", "2026-11-29T10:00:00+0000", 40.0),
            rec("old", "2026-11-21T10:00:00+0000", 90.0), rec("new", "2026-11-29T11:00:00+0000", 50.0),
            dict(rec("old", "2026-11-21T10:00:00+0000", 20.0), bits=8)]  # another configuration: its only version
    (table,) = speed_tables(speed_frame(SimpleNamespace(speed=recs)))
    rows = {r[4]: r for r in table.rows}
    assert (rows["INT4"][7], rows["INT4"][8]) == ("2", "45.00")
    assert (rows["INT8"][7], rows["INT8"][8]) == ("1", "20.00")
    assert any("2 records of older versions not pooled" in f for f in table.footnotes)


def test_gap_to_fp32_table_gives_the_welch_interval_of_each_quantizer_against_fp32(rendered):
    """Every fixture quantizer sits a constant offset below FP32 with the same per-seed offsets
    (0, 1, 2, 4 points): QLR INT8 is 1 point down, and its Welch interval with 4 + 4 seeds
    (equal variances: 6 degrees of freedom) is -1.0 ± t(0.975, 6) · sqrt(2 s² / 4)."""
    table = (rendered / "tables" / "gap_to_fp32_cora.md").read_text()
    assert "| method | depth | FP32 | QLR INT8 | QLR INT2 | QLR INT2 BT* |" in table
    s2 = sum((v - 1.75) ** 2 for v in (0, 1, 2, 4)) / 3
    half = 2.446911851 * math.sqrt(2 * s2 / 4)
    row = next(line for line in table.splitlines() if line.startswith("| gcn | 4 |"))
    assert f"| -1.0 [{-1 - half:+.1f}, {-1 + half:+.1f}] |" in row and "| -5.0 [" in row  # INT8, INT2 BT*
    # gcn QLR INT2 at depth 16 has seeds 0 and 2 only: the cell says so, and its difference uses them
    row = next(line for line in table.splitlines() if line.startswith("| gcn | 16 |"))
    cell = row.split("|")[5].strip()
    assert cell.endswith("(n=2/4)") and float(cell.split()[0]) == pytest.approx(-10 + (1.0 - 1.75), abs=0.051)


def test_gap_to_fp32_table_names_quantized_groups_without_an_fp32_base(tmp_path):
    only = {("gcn", q, d, s) for q, d in (("FP32", 2), ("QLR INT8", 2), ("QLR INT8", 4)) for s in fx.SEEDS}
    d = fx.write_store(tmp_path / "results", speed=False, junk=False, only=only)
    render_report([d], tmp_path / "out", figures=False)
    table = (tmp_path / "out" / "tables" / "gap_to_fp32_cora.md").read_text()
    assert "| gcn | 2 |" in table and "| gcn | 4 |" not in table
    assert "gcn (L=4): quantized runs but no finished FP32 run to compare with" in table


def test_smp_constraint_per_step_is_read_from_the_records_and_drawn_for_deep_smp(store_dir, rendered):
    from bench_suite.report.aggregate import smp_frame

    smp = smp_frame(runs_frame(load_store([store_dir])))
    assert set(smp["method"]) == {"decoupled+smp(exact)"}  # GCN records carry no constraint
    r = smp[(smp.depth == 16) & (smp.quantizer == "QLR INT8") & (smp.seed == 2) & (smp.step == 3)].iloc[0]
    assert r["lambda"] == pytest.approx(0.032) and r["T"] == pytest.approx(fx.SMP_BUDGET / 2)
    assert r["T_over_budget"] == pytest.approx(0.5)
    # every ok SMP run contributes one row per step: 4 quantizers x 4 seeds x (2 + 16) steps
    assert len(smp) == 4 * 4 * (2 + 16)
    # the figure is drawn for K = 16, not for K = 2 (below min_depth)
    assert (rendered / "figures" / "smp_constraint_cora_K16.png").is_file()
    assert not (rendered / "figures" / "smp_constraint_cora_K2.png").exists()


def test_report_defaults_to_each_datasets_own_metric(tmp_path):
    """A binary dataset's records hold ROC-AUC as their ``test_score``: the tables show it by default,
    not the accuracy (which the majority class makes high); ``--metric test_acc`` still shows accuracy."""
    d = tmp_path / "results" / "fixture"
    d.mkdir(parents=True)
    for seed in fx.SEEDS:
        rec = fx.train_record("gcn", "FP32", 2, seed)
        rec["spec"]["dataset"]["name"] = "minesweeper"
        rec["run_id"] = f"{seed:016x}"
        rec["metrics"].update({"metric": "roc_auc", "test_acc": 0.80, "test_roc_auc": 0.9, "test_score": 0.9,
                               "train_score": 0.95})
        (d / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    render_report([d], tmp_path / "out", figures=False)
    table = (tmp_path / "out" / "tables" / "acc_by_depth_minesweeper_fp32.md").read_text()
    assert "90.0 ± 0.0" in table and "80.0" not in table
    render_report([d], tmp_path / "acc", figures=False, metric="test_acc")
    assert "80.0 ± 0.0" in (tmp_path / "acc" / "tables" / "acc_by_depth_minesweeper_fp32.md").read_text()


def test_report_out_naming_a_file_is_one_line(tmp_path, capsys):
    """``--out`` that is a file: one line naming it, exit 2, the file untouched."""
    from bench_suite.cli import main

    store = fx.write_store(tmp_path / "results", speed=False, junk=False)
    target = tmp_path / "afile"
    target.write_text("keep")
    assert main(["report", str(store), "--out", str(target), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "is a file" in err[0]
    assert target.read_text() == "keep"


@pytest.mark.parametrize("target", ["a_folder", "no_such_folder/x.csv"])
def test_export_to_a_folder_or_a_missing_folder_is_one_line(tmp_path, capsys, target):
    from bench_suite.cli import main

    store = fx.write_store(tmp_path / "results", speed=False, junk=False)
    (tmp_path / "a_folder").mkdir()
    assert main(["export", str(store), "--csv", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and target in err[0]
    assert not (tmp_path / "no_such_folder").exists() and not any((tmp_path / "a_folder").iterdir())
