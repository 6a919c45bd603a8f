"""The across-dataset section: ranks, Friedman, Nemenyi CD and Holm against hand-worked numbers;
the section rendered from records, deterministic, and absent below three datasets."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench_suite.report import render_report
from bench_suite.report.across import (block_ranks, cliques, compare, critical_difference, friedman, holm,
                                       nemenyi_q, wilcoxon_p)

# --------------------------------------------------------------------------- hand-worked example
#
# Four methods A, B, C, D on N = 5 blocks (higher is better):
#
#   block   A     B     C     D        ranks  A    B    C    D
#   1      .90   .85   .80   .70              1    2    3    4
#   2      .80   .80   .75   .60              1.5  1.5  3    4     (A, B tie for ranks 1-2)
#   3      .70   .72   .65   .66              2    1    4    3
#   4      .88   .86   .86   .80              1    2.5  2.5  4     (B, C tie for ranks 2-3)
#   5      .91   .89   .87   .85              1    2    3    4
#   rank sums                                 6.5  9    15.5 19    (total N·k(k+1)/2 = 50)
#   average ranks R_j                         1.3  1.8  3.1  3.8
#
# Friedman (Demšar 2006, eq. 1): χ²_F = 12N/(k(k+1))·[Σ R_j² − k(k+1)²/4]
#   = 12·5/20 · [1.69 + 3.24 + 9.61 + 14.44 − 25] = 3 · 3.98 = 11.94.
# Correction for ties (as scipy applies it): C = 1 − Σ(t³ − t)/(N·k·(k² − 1)) over the tied groups,
#   two ties of two: 1 − (6 + 6)/(5·4·15) = 1 − 12/300 = 0.96, so χ² = 11.94 / 0.96 = 12.4375,
#   with k − 1 = 3 degrees of freedom: p = P(χ²₃ > 12.4375) = 0.00602 (chi-square table: 0.006).
# Nemenyi: q_0.05 for k = 4 is 2.569 (Demšar 2006, Table 5a), so
#   CD = 2.569 · sqrt(4·5/(6·5)) = 2.569 · 0.81650 = 2.0976.
# Differences of average ranks: A–C 1.8 < CD, B–D 2.0 < CD, A–D 2.5 ≥ CD: only A and D differ;
#   the diagram's bars are {A, B, C} and {B, C, D}.
SCORES = pd.DataFrame([[.90, .85, .80, .70], [.80, .80, .75, .60], [.70, .72, .65, .66], [.88, .86, .86, .80],
                       [.91, .89, .87, .85]], columns=list("ABCD"))
# Demšar 2006, Table 5(a): q_0.05 of the Nemenyi test for k = 2..10 classifiers
Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


def test_ranks_with_ties_and_average_ranks_equal_the_hand_worked_ones():
    ranks = block_ranks(SCORES)
    assert ranks.to_numpy().tolist() == [[1, 2, 3, 4], [1.5, 1.5, 3, 4], [2, 1, 4, 3], [1, 2.5, 2.5, 4], [1, 2, 3, 4]]
    assert ranks.mean().tolist() == pytest.approx([1.3, 1.8, 3.1, 3.8], abs=1e-12)
    # lower is better: the same table ranks the other way round
    assert block_ranks(SCORES, higher=False).iloc[0].tolist() == [4, 3, 2, 1]


def test_friedman_statistic_and_p_equal_the_hand_worked_ones():
    stat, p = friedman(SCORES)
    assert stat == pytest.approx(11.94 / 0.96, abs=1e-9) == pytest.approx(12.4375)
    assert p == pytest.approx(0.00602, abs=5e-5)
    # without ties, blocks 1, 3, 5: rank sums A 4, B 5, C 10, D 11, so
    # χ² = 12/(N·k·(k+1))·Σ S_j² − 3N(k+1) = 12/60 · (16 + 25 + 100 + 121) − 45 = 52.4 − 45 = 7.4
    no_ties = SCORES.drop(index=[1, 3])
    assert friedman(no_ties)[0] == pytest.approx(7.4, abs=1e-9)


def test_nemenyi_q_is_demsars_table_and_the_critical_difference_is_hand_worked():
    for k, q in Q05.items():
        assert nemenyi_q(k) == pytest.approx(q, abs=1e-3), k  # the table rounds to 3 decimals
    assert critical_difference(4, 5) == pytest.approx(2.569 * math.sqrt(20 / 30), abs=1e-3)
    assert critical_difference(4, 5) == pytest.approx(2.0976, abs=2e-4)
    # Demšar's own example: four classifiers on 14 data sets, CD = 2.569·sqrt(4·5/(6·14)) = 1.25
    assert critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_cliques_join_exactly_the_methods_closer_than_the_critical_difference():
    avg = block_ranks(SCORES).mean()
    cd = critical_difference(4, 5)
    assert cliques(avg, cd) == [("A", "B", "C"), ("B", "C", "D")]
    # a larger CD joins all four (A-D = 2.5), a smaller one leaves A-B (0.5) and C-D (0.7) only
    assert cliques(avg, 2.6) == [("A", "B", "C", "D")]
    assert cliques(avg, 0.8) == [("A", "B"), ("C", "D")]
    assert cliques(avg, 0.4) == []


def test_holm_adjustment_equals_the_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> made non-decreasing: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped at 1


def test_compare_puts_it_together_and_leaves_out_incomplete_blocks():
    scores = pd.concat([SCORES, pd.DataFrame([[0.5, np.nan, 0.4, 0.3]], columns=list("ABCD"))], ignore_index=True)
    c = compare("toy", scores)
    assert (c.n, c.dropped, c.k) == (5, 1, 4)
    assert list(c.avg_ranks.index) == ["A", "B", "C", "D"]
    assert c.avg_ranks.tolist() == pytest.approx([1.3, 1.8, 3.1, 3.8])
    assert c.statistic == pytest.approx(12.4375) and c.cd == pytest.approx(2.0976, abs=2e-4)
    assert c.cliques == [("A", "B", "C"), ("B", "C", "D")]
    assert c.wins.tolist() == pytest.approx([3.5, 1.5, 0, 0])  # block 2's tie splits its win
    sig = {(r.a, r.b): r.nemenyi for r in c.pairwise.itertuples()}
    assert sig == {("A", "B"): False, ("A", "C"): False, ("A", "D"): True, ("B", "C"): False, ("B", "D"): False,
                   ("C", "D"): False}
    # Holm multiplies the smallest of the 6 p-values by 6
    assert c.pairwise["holm_p"].min() == pytest.approx(min(1.0, 6 * c.pairwise["wilcoxon_p"].min()))


def test_wilcoxon_p_by_hand():
    # differences 1, 2, 3, 4, 5: every sign positive is 1 of the 2^5 equally likely sign patterns,
    # two-sided p = 2/32
    assert wilcoxon_p(np.array([1.0, 2, 3, 4, 5]), np.zeros(5)) == pytest.approx(0.0625)
    # differences 1, 2, 3, 4, -5: W- = 5; the subsets of {1..5} with rank sum <= 5 are {}, {1}, {2}, {3}, {4},
    # {5}, {1,2}, {1,3}, {1,4}, {2,3}: 10 of 32, two-sided p = 20/32
    assert wilcoxon_p(np.array([1.0, 2, 3, 4, -5]), np.zeros(5)) == pytest.approx(0.625)
    assert wilcoxon_p(np.ones(4), np.ones(4)) == 1.0


# --------------------------------------------------------------------------- the rendered section
#
# Records shaped like the runner's (results/reproduce/*.json): 4 datasets (2 homophilous, 2
# heterophilous) x GCN-2 and APPNP at K = 10 and 64 x FP32 and 8 quantizations x 2 seeds.
# score = BASE[dataset] + GAP[quantizer] (- 0.04 more at K = 64 on the heterophilous ones) + 0.01·seed,
# so at INT2 QLR BT* beats DQ in every block (average ranks 1 and 2) and at INT8 QLR > DQ > QAT.

DATASETS = {"cora": 0.80, "citeseer": 0.70, "chameleon": 0.45, "texas": 0.60}
ARCHS = [({"name": "gcn", "hidden": 64, "dropout": 0.5}, None, 2),
         ({"name": "decoupled", "hidden": 64, "dropout": 0.5, "mlp_layers": 2}, {"name": "appnp", "alpha": 0.1}, 10),
         ({"name": "decoupled", "hidden": 64, "dropout": 0.5, "mlp_layers": 2}, {"name": "appnp", "alpha": 0.1}, 64)]
QUANTS = {  # (name, bits, truncation) -> gap to FP32
    ("fp32", 32, None): 0.0, ("qat", 8, None): -0.03, ("dq", 8, None): -0.02, ("qlr", 8, None): -0.01,
    ("qat", 4, None): -0.08, ("dq", 4, None): -0.05, ("qlr", 4, None): -0.06,
    ("qlr", 2, "bt*"): -0.10, ("dq", 2, None): -0.20}
SEEDS = (0, 1)


def _record(dataset: str, arch: int, quant: tuple, seed: int) -> dict:
    model, prop, depth = ARCHS[arch]
    name, bits, trunc = quant
    q = {"name": name, "bits": bits} if name == "fp32" else {"name": name, "bits": bits, "momentum": 0.1}
    if name == "qlr":
        q = {"name": "qlr", "bits": bits, "truncation": trunc or "none"}
    spec = {"version": 2, "dataset": {"name": dataset}, "model": {**model, "depth": depth}, "propagation": prop,
            "quant": q, "transform": None,
            "train": {"epochs": 200, "lr": 0.01, "weight_decay": 5e-4, "patience": 100, "quant_lr": 1e-4,
                      "seed": seed}}
    run_id = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    hetero = dataset in ("chameleon", "texas")
    score = round(DATASETS[dataset] + QUANTS[quant] - (0.04 if hetero and depth == 64 and bits < 32 else 0.0)
                  + 0.01 * seed, 6)
    metric = "accuracy"
    return {"kind": "train", "run_id": run_id, "status": "ok", "error": None, "spec": spec, "matrix": "datasets",
            "label": f"{dataset}/{model['name']}/L{depth}/{name}-int{bits}/s{seed}",
            "env": {"git_commit": "abc1234", "cpu": "Fixture CPU", "host": "fixture", "torch_threads": 1,
                    "versions": {"python": "3.11.7", "torch": "2.2.1"}},
            "started": f"2026-12-06T10:{seed:02d}:00.000+00:00", "finished": f"2026-12-06T10:{seed:02d}:30.000+00:00",
            "metrics": {"metric": metric, "test_acc": score, "test_score": score, "val_acc": score, "val_score": score,
                        "train_acc": 0.99, "train_score": 0.99, "best_epoch": 50, "epochs_run": 150},
            "layers": [], "extra": {}, "timings": {"total_s": 1.0}}


def _write(root: Path, datasets=tuple(DATASETS), skip=()) -> Path:
    d = root / "datasets"
    d.mkdir(parents=True)
    for ds in datasets:
        for a in range(len(ARCHS)):
            for quant in QUANTS:
                for seed in SEEDS:
                    if (ds, a, quant) in skip:
                        continue
                    rec = _record(ds, a, quant, seed)
                    (d / f"{rec['run_id']}.json").write_text(json.dumps(rec, indent=1))
    return d


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def rendered(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    render_report([store], out)
    return out


def _csv(path: Path):
    return list(csv.reader(path.open(encoding="utf-8")))


def test_section_renders_ranks_gaps_and_groups_from_the_records(rendered):
    readme = (rendered / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Across datasets", 1)[1].split("\n## ", 1)[0]
    assert "4 datasets: homophilous (2): cora, citeseer; heterophilous (2): chameleon, texas." in section
    for name in ("int8", "int4", "int2", "all"):
        assert f"figures/across_cd_{name}.png" in section and f"tables/across_ranks_{name}.csv" in section
    assert "figures/across_gap_heatmap.png" in section and "figures/across_depth_groups.png" in section
    # INT2: QLR BT* first in all 4 x 3 = 12 blocks
    assert _csv(rendered / "tables" / "across_ranks_int2.csv")[1:] == [
        ["QLR BT*", "1.000", "12.0", "–", "–"], ["DQ", "2.000", "0.0", "0.0005", "yes"]]
    # INT8: QLR > DQ > QAT in every block: ranks 1, 2, 3; Friedman χ² = 12·12/(3·4)·(1+4+9 − 12) = 24
    ranks8 = _csv(rendered / "tables" / "across_ranks_int8.csv")
    assert [r[:3] for r in ranks8[1:]] == [["QLR", "1.000", "12.0"], ["DQ", "2.000", "0.0"], ["QAT", "3.000", "0.0"]]
    title8 = (rendered / "tables" / "across_ranks_int8.md").read_text(encoding="utf-8").splitlines()[0]
    assert "over 12 blocks" in title8 and "Friedman χ² = 24.00" in title8
    assert f"CD (α = 0.05) = {2.343 * math.sqrt(3 * 4 / (6 * 12)):.3f}" in title8
    # the gap to FP32 per dataset: the quantizer's offset, 0.04 more on average over the heterophilous
    # datasets' 3 blocks (one of them at K = 64): e.g. texas DQ INT2 = -20 - 4/3 = -21.3 points
    gap = {r[0]: r for r in _csv(rendered / "tables" / "across_gap_to_fp32.csv")}
    header = gap["dataset"]
    assert header[:2] == ["dataset", "group"] and header[2] == "DQ INT8" and header[-1] == "QLR INT2 BT*"
    assert list(gap)[1:] == ["cora", "citeseer", "chameleon", "texas"]
    assert gap["cora"][header.index("DQ INT2")] == "-20.0" and gap["texas"][header.index("DQ INT2")] == "-21.3"
    # against depth, by group: at K = 64 the heterophilous mean is 4 points lower than the homophilous one
    depth = {(r[0], r[1], r[2]): r for r in _csv(rendered / "tables" / "across_depth_groups.csv")}
    dh = depth[("group", "method", "depth")]
    col = dh.index("QLR INT4")
    assert depth[("homophilous", "decoupled+appnp", "64")][col] == "-6.0 (2)"
    assert depth[("heterophilous", "decoupled+appnp", "64")][col] == "-10.0 (2)"
    assert depth[("heterophilous", "decoupled+appnp", "10")][col] == "-6.0 (2)"


def test_section_is_byte_identical_across_two_renders(store, rendered, tmp_path):
    again = tmp_path / "again"
    render_report([store], again)
    across = sorted(p.relative_to(rendered) for p in rendered.rglob("across_*") if p.is_file())
    assert len(across) == 4 * 2 * 3 + 2 * 3 + 4 + 2  # ranks + pairwise (md/tex/csv) per comparison, gaps, figures
    assert across == sorted(p.relative_to(again) for p in again.rglob("across_*") if p.is_file())
    for f in across:
        assert (rendered / f).read_bytes() == (again / f).read_bytes(), f"{f} differs between renders"
    section = (rendered / "README.md").read_text().split("## Across datasets", 1)[1].split("\n## ", 1)[0]
    assert section == (again / "README.md").read_text().split("## Across datasets", 1)[1].split("\n## ", 1)[0]


def test_a_block_missing_a_quantizer_is_left_out_and_said(tmp_path):
    d = _write(tmp_path / "results", skip={("texas", 1, ("qat", 8, None))})
    render_report([d], tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "tables" / "across_ranks_int8.md").read_text(encoding="utf-8")
    assert "over 11 blocks" in md and "1 block(s) left out" in md
    assert "over 12 blocks" in (tmp_path / "out" / "tables" / "across_ranks_int4.md").read_text(encoding="utf-8")


def test_section_is_absent_for_a_single_dataset(tmp_path):
    d = _write(tmp_path / "results", datasets=("cora",))
    render_report([d], tmp_path / "out", figures=False)
    assert "## Across datasets" not in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert not list((tmp_path / "out").rglob("across_*"))


def test_section_is_absent_when_quantized_runs_cover_two_datasets(tmp_path):
    """A third dataset run in FP32 only (as reproduce runs Amazon and Coauthor) compares no quantizer."""
    skip = {("texas", a, q) for a in range(len(ARCHS)) for q in QUANTS if q[0] != "fp32"}
    d = _write(tmp_path / "results", datasets=("cora", "citeseer", "texas"), skip=skip)
    render_report([d], tmp_path / "out", figures=False)
    assert "## Across datasets" not in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
