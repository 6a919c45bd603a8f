"""Matrix files: expansion, precedence of defaults/fixed/axes/overrides, typos rejected with context."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import bench_suite.defaults as tuned
from bench_suite.registry import MODELS, QUANTIZERS, RegistryError, load_all
from bench_suite.runner.matrix import (MatrixError, combinations, expand_matrix, load_matrix, parse_only,
                                       parse_overrides, shipped_matrices)
from bench_suite.spec import SpecError

load_all()


def matrix(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_axes_sub_axes_exclude_include_and_seeds(tmp_path):
    p = matrix(tmp_path, """
        name: grid
        seeds: 3
        fixed: {dataset: csbm, epochs: 7}
        axes:
          depth: [2, 4, 8]
          arch: [{model: gcn}, {model: decoupled, propagation: appnp, alpha: [0.1, 0.2]}]
        exclude: [{model: gcn, depth: [4, 8]}]
        include: [{model: sage, depth: 2}]
    """)
    specs = expand_matrix(p)
    labels = [s.label() for s in specs]
    # gcn only at depth 2, decoupled at 3 depths x 2 alphas, sage once: (1 + 6 + 1) x 3 seeds
    assert len(specs) == 24 and len(set(s.run_id for s in specs)) == 24
    assert sum("gcn/L" in lab for lab in labels) == 3 and not any("gcn/L4" in lab for lab in labels)
    assert sorted({s.data["propagation"]["alpha"] for s in specs if s.data["propagation"]}) == [0.1, 0.2]
    assert {s.seed for s in specs} == {0, 1, 2} and all(s.train.epochs == 7 for s in specs)
    assert any(lab.startswith("csbm/sage/L2/") for lab in labels)
    assert load_matrix(p).name == "grid"


def test_an_exclude_rule_naming_seeds_drops_those_runs_only(tmp_path):
    """A rule with ``seed`` drops single runs (fewer seeds of costly cells, the rest of the grid whole),
    includes too; the ids of the runs it keeps are those of the matrix without it."""
    text = """
        name: grid
        seeds: 4
        fixed: {dataset: csbm, epochs: 7}
        axes:
          depth: [2, 8]
          model: [gcn, sage]
        include: [{model: gcn, depth: 4}]
    """
    full = expand_matrix(matrix(tmp_path, text, "full.yaml"))
    trimmed = expand_matrix(matrix(tmp_path, text + "    exclude: [{depth: [8, 4], seed: [2, 3]}, {model: sage, seed: 0}]\n",
                                   "trim.yaml"))
    kept = {(s.data["model"]["name"], s.data["model"]["depth"], s.seed) for s in trimmed}
    want = {(m, d, k) for m, d, k in ((m, d, k) for m in ("gcn", "sage") for d in (2, 8) for k in range(4))
            if not (d == 8 and k >= 2) and not (m == "sage" and k == 0)} | {("gcn", 4, 0), ("gcn", 4, 1)}
    assert kept == want and len(trimmed) == len(want) == 12  # 4 + 2 + 3 + 1 + 2
    assert {s.run_id for s in trimmed} < {s.run_id for s in full}
    with pytest.raises(MatrixError, match="seeed"):
        expand_matrix(matrix(tmp_path, text + "    exclude: [{seeed: 1}]\n", "typo.yaml"))


def test_precedence_tuned_rules_then_matrix_defaults_then_fixed_then_axes_then_overrides(tmp_path, monkeypatch):
    rules = matrix(tmp_path, """
        - {match: {model: gcn}, set: {hidden: 16, lr: 0.3, dropout: 0.1}, source: test}
    """, "rules.yaml")
    monkeypatch.setattr(tuned, "_FILES", [rules])
    monkeypatch.setattr(tuned, "_RULES", None)
    p = matrix(tmp_path, """
        seeds: [0]
        fixed: {dataset: csbm, model: gcn, epochs: 3}
        axes: {depth: [2, 3], dropout: [0.2]}
        defaults: {model: {gcn: {lr: 0.05, epochs: 9}}, depth: {3: {hidden: 32}}}
    """)
    by_depth = {s.data["model"]["depth"]: s.data for s in expand_matrix(p)}
    d2, d3 = by_depth[2], by_depth[3]
    assert d2["model"]["hidden"] == 16  # tuned rule
    assert d3["model"]["hidden"] == 32  # matrix default beats tuned rule
    assert d2["train"]["lr"] == 0.05  # matrix default beats tuned rule
    assert d2["train"]["epochs"] == 3  # fixed beats matrix default
    assert d2["model"]["dropout"] == 0.2  # axis beats tuned rule
    over = expand_matrix(p, parse_overrides(["lr=0.001", "hidden=8", "dropout=0.7"]))
    assert {(s.data["train"]["lr"], s.data["model"]["hidden"], s.data["model"]["dropout"]) for s in over} == \
        {(0.001, 8, 0.7)}


def test_overrides_collapse_duplicates_and_seed_override(tmp_path):
    p = matrix(tmp_path, """
        fixed: {dataset: csbm, model: gcn}
        axes: {depth: [2, 4]}
    """)
    assert len(expand_matrix(p)) == 20  # default seeds 0..9
    specs = expand_matrix(p, {"seed": 5, "depth": 3})
    assert len(specs) == 1 and specs[0].seed == 5 and specs[0].data["model"]["depth"] == 3


@pytest.mark.parametrize("body, needles", [
    ("axes: {model: [gcn, gcnn]}", ["m.yaml", "'gcnn'", "gcn", "decoupled", "run #"]),
    ("axes: {model: gcn, depht: [2]}", ["m.yaml", "'depht'", "depth", "Did you mean"]),
    ("axes: {model: gcn, quant: qlr, bits: [8, 3]}", ["m.yaml", "bits=3", "8, 4, 2"]),
    ("axes: {model: gcn, quant: nosuchquant, bits: 4}", ["m.yaml", "'nosuchquant'", "quantizer"]),
    ("axis: {model: gcn}", ["m.yaml", "'axis'", "axes", "exclude"]),
    ("axes: {model: gcn}\ndefaults: {model: {gcm: {lr: 0.1}}}", ["m.yaml", "defaults.model", "'gcm'", "gcn"]),
    ("axes: {model: gcn}\nseeds: [a]", ["m.yaml", "seeds"]),
])
def test_typos_fail_naming_file_key_and_valid_choices(tmp_path, body, needles):
    p = matrix(tmp_path, "fixed: {dataset: csbm}\n" + body + "\n")
    with pytest.raises((SpecError, RegistryError)) as err:
        expand_matrix(p)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_unknown_matrix_name_lists_shipped_ones():
    with pytest.raises(MatrixError) as err:
        load_matrix("smok")
    assert "smoke" in str(err.value) and "'smok'" in str(err.value)


def test_every_shipped_matrix_is_tested():
    assert shipped_matrices() == ["breadth", "datasets", "depth", "depth-quant", "paper", "paper-lite", "quantizers",
                                  "reproduce", "search-dropedge", "search-dropedge-int4", "smoke", "smp-int4", "speed",
                                  "speed-decoupled"]


@pytest.mark.parametrize("name", ["smoke", "paper-lite", "paper", "quantizers", "breadth", "depth", "depth-quant",
                                  "smp-int4", "reproduce", "datasets", "speed", "speed-decoupled", "search-dropedge",
                                  "search-dropedge-int4"])
def test_shipped_matrices_expand(name):
    assert name in shipped_matrices()
    m = load_matrix(name)
    n_runs = len(combinations(m))
    # the paper matrix is large: resolve one dataset, depth and seed of it (every other axis)
    overrides = {"dataset": "cora", "depth": 2, "seed": 0} if name == "paper" else {}
    specs = expand_matrix(m, overrides)  # every plugin a shipped matrix names is registered: a typo fails here
    assert specs and len({s.run_id for s in specs}) == len(specs)
    assert {s.kind for s in specs} == ({"speed"} if name.startswith("speed") else {"train"})
    if name == "speed":  # 4 graphs x 3 bit widths x 2 range modes + INT2 BT* calibrated on the 3 real graphs,
        # whose runs train the model first
        assert len(specs) == n_runs == 4 * 3 * 2 + 3
        assert {(s.data["graph"]["name"], s.measure.train_protocol, s.measure.train_epochs) for s in specs} == {
            ("arxiv-like", "brief", 0), ("cora", "tuned", 0), ("amazon-computers", "tuned", 0),
            ("coauthor-physics", "tuned", 0)}
        assert {s.data["train"]["epochs"] for s in specs if "train" in s.data} == {400, 1000}
        bt = [s for s in specs if s.data["quant"]["truncation"] == "bt*"]
        assert {(s.data["graph"]["name"], s.data["quant"]["bits"], s.measure.ranges) for s in bt} == {
            (g, 2, "calibrated") for g in ("cora", "amazon-computers", "coauthor-physics")}
    if name == "speed-decoupled":  # 2 propagations x 2 depths x 3 bit widths x 2 range modes
        assert len(specs) == n_runs == 24 and {s.data["propagation"]["name"] for s in specs} == {"appnp", "smp"}
    if name == "smoke":
        assert {s.data["dataset"]["name"] for s in specs} == {"csbm", "cora"}
        assert any(s.data["quant"]["name"] == "fp32" for s in specs)
        assert any(s.data["quant"]["bits"] == 2 for s in specs)
    if name == "paper":
        assert m.seeds == tuple(range(10)) and n_runs == 5 * 10 * 6 * 11 * 10
        assert len(specs) == 10 * 11 and {s.data["quant"].get("truncation") for s in specs} >= {"none", "bt*"}
    if name == "paper-lite":  # 2 datasets x (GCN, GCNII x 3 depths + APPNP, SMP x 2 + SMP lambda_min=0) x 4 x 3 seeds
        assert len(specs) == n_runs == 2 * 11 * 4 * 3
        assert {s.data["train"]["epochs"] for s in specs if s.data["propagation"] and
                s.data["propagation"]["name"] == "appnp"} == {1000}
    if name == "breadth":  # every registered model and transform, FP32 + every quantizer at INT4, 3 seeds
        assert len(specs) == n_runs == 13 * 5 * 3
        assert {s.data["quant"]["name"] for s in specs} == {"fp32"} | set(QUANTIZERS.keys())
        assert {s.data["model"]["name"] for s in specs} == set(MODELS.keys())
    if name == "depth":  # 2 datasets x 6 depths x (11 architectures + SMP lambda_min=0) x 10 seeds, FP32 only
        assert len(specs) == n_runs == 2 * 6 * 12 * 10 and {s.data["quant"]["name"] for s in specs} == {"fp32"}
    if name in ("depth", "depth-quant"):  # SMP as written and with the projection, at every depth
        smp = [s.data["propagation"].get("lambda_min") for s in specs
               if (s.data.get("propagation") or {}).get("name") == "smp"]
        assert smp.count(0) == smp.count(None) == len(smp) // 2 > 0
    if name == "depth-quant":  # 2 datasets x 2 depths x (3 architectures + SMP lambda_min=0) x 3 quantizations x 10 seeds
        assert len(specs) == n_runs == 2 * 2 * 4 * 3 * 10
    if name == "smp-int4":  # 2 datasets x (3 SMP variants + APPNP) x 10 seeds at K = 10, QLR INT4
        assert len(specs) == n_runs == 2 * 4 * 10
        smp = {(s.data["propagation"]["c"], s.data["train"]["lr"], s.data["train"]["weight_decay"],
                s.data["train"]["epochs"]) for s in specs if s.data["propagation"]["name"] == "smp"}
        # the authors' INT4 defaults, and the two variants' explicit keys winning over them
        assert smp == {(1e-5, 0.015, 1e-5, 200), (0.1, 0.015, 1e-5, 200), (1e-5, 0.01, 5e-4, 1000)}
    if name == "datasets":  # its header: 14 datasets x 6 architectures x 9 quantizations x 10 seeds, less seeds
        # 3-9 of GCNII-16 and APPNP/SMP at K = 64 on the nine larger graphs (the trim)
        larger = {"amazon-photo", "amazon-computers", "coauthor-cs", "coauthor-physics", "chameleon", "squirrel",
                  "actor", "minesweeper", "tolokers"}
        assert len(specs) == n_runs == 14 * 6 * 9 * 10 - 9 * 3 * 9 * 7 == 5859
        costly = lambda s: s.data["model"]["name"] == "gcnii" or s.data["model"]["depth"] == 64  # noqa: E731
        seeds = {(s.data["dataset"]["name"], costly(s)): set() for s in specs}
        for s in specs:
            seeds[(s.data["dataset"]["name"], costly(s))].add(s.data["train"]["seed"])
        for (dataset, cell), got in seeds.items():
            assert got == (set(range(3)) if cell and dataset in larger else set(range(10))), (dataset, cell)
        blocks = {(s.data["dataset"]["name"], s.data["model"]["name"], s.data["model"]["depth"],
                   json.dumps(s.data["propagation"], sort_keys=True), json.dumps(s.data["quant"], sort_keys=True))
                  for s in specs}
        assert len(blocks) == 14 * 6 * 9  # every block kept
        assert len({s.data["dataset"]["name"] for s in specs}) == 14
        smp = [s.data["propagation"] for s in specs if (s.data["propagation"] or {}).get("name") == "smp"]
        assert smp and all(p["lambda_min"] == 0 for p in smp)
        sparse = {s.data["dataset"]["name"] for s in specs if s.data["dataset"].get("sparse_features")}
        assert sparse == {"cora", "citeseer", "amazon-photo", "amazon-computers", "coauthor-cs", "coauthor-physics"}
    if name == "quantizers":  # 2 datasets x 2 models x (FP32 + 4 quantizers x 3 bits + 2 x BT/BT*) x 10 seeds
        assert len(specs) == n_runs == 2 * 2 * (1 + 12 + 4) * 10


def test_combinations_are_flat_key_values(tmp_path):
    p = matrix(tmp_path, "seeds: [1]\nfixed: {dataset: csbm}\naxes: {model: [gcn, sage]}\n")
    flats = combinations(load_matrix(p))
    assert [f["model"] for f in flats] == ["gcn", "sage"] and all(f["seed"] == 1 for f in flats)
    assert "gcn" in MODELS


def test_only_selects_a_subset_of_the_matrix_with_the_same_run_ids(tmp_path):
    p = matrix(tmp_path, """
        name: grid
        seeds: 2
        fixed: {dataset: csbm, epochs: 7}
        axes:
          depth: [2, 8]
          arch: [{model: [gcn, sgc]}, {model: decoupled, propagation: [appnp, smp]},
                 {model: decoupled, propagation: smp, lambda_min: 0}]
    """)
    full = {s.run_id: s for s in expand_matrix(p)}
    assert len(full) == 2 * 5 * 2

    def pick(*items):
        specs = expand_matrix(p, only=parse_only(items))
        assert all(full[s.run_id].data == s.data for s in specs)  # same runs, same ids
        return specs

    # a key inside a sub-axis (an override model=gcn would rewrite the decoupled runs instead)
    assert {s.data["model"]["name"] for s in pick("model=gcn,sgc")} == {"gcn", "sgc"}
    assert len(pick("model=gcn,sgc")) == 8
    smp = pick("propagation=smp", "depth=8")
    assert len(smp) == 4 and all(s.data["model"]["depth"] == 8 for s in smp)
    # none selects the runs without the key: SMP as written, not the projected one
    plain = pick("propagation=smp", "lambda_min=none")
    assert len(plain) == 4 and all(s.data["propagation"].get("lambda_min") is None for s in plain)
    assert len(pick("lambda_min=0")) == 4 and len(pick("lambda_min=0.0")) == 4  # numbers compare as numbers
    # the label names the projection (SMP as written and SMP with lambda_min=0 differ in a listing)
    assert {s.label() for s in pick("propagation=smp", "depth=8", "seed=0")} == {
        "csbm/decoupled+smp/L8/fp32/s0", "csbm/decoupled+smp[lambda_min=0]/L8/fp32/s0"}
    with pytest.raises(MatrixError, match=r"has key 'modle'.*its runs have: .*model"):
        expand_matrix(p, only=parse_only(["modle=gcn"]))
    with pytest.raises(MatrixError, match=r"model=gcm: .*its values of model: decoupled, gcn, sgc"):
        expand_matrix(p, only=parse_only(["model=gcm"]))
    with pytest.raises(MatrixError, match="no run matches all"):
        expand_matrix(p, only=parse_only(["model=sgc", "propagation=appnp"]))
    with pytest.raises(SpecError, match="not KEY=VALUE"):
        parse_only(["model"])


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "a/b", "..", "x/../y", "-x", "x y"])
def test_matrix_name_that_is_not_a_plain_identifier_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys, name):
    """Records go to RESULTS/<name>/: a name with a separator or '..' would write outside --results."""
    import json

    from bench_suite.cli import main

    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere")
    p = matrix(tmp_path, f"name: {json.dumps(name)}\nseeds: [0]\nfixed: {{dataset: csbm, model: gcn, epochs: 1}}\n")
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    assert main(["run", str(p), "--results", "res", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(name) in err and str(p) in err and "letters, digits" in err
    assert sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*")) == ["m.yaml", "work", "work/deep"]


def test_matrix_name_plain_identifier_or_file_stem_accepted(tmp_path):
    assert load_matrix(matrix(tmp_path, "name: depth-quant_v1.2\nfixed: {dataset: csbm, model: gcn}\n")).name \
        == "depth-quant_v1.2"
    assert load_matrix(matrix(tmp_path, "fixed: {dataset: csbm, model: gcn}\n", "from-stem.yaml")).name == "from-stem"
    with pytest.raises(MatrixError, match="from the file name"):
        load_matrix(matrix(tmp_path, "fixed: {dataset: csbm, model: gcn}\n", "has space.yaml"))


def test_a_key_written_twice_is_an_error_not_a_silent_override(tmp_path):
    p = matrix(tmp_path, """
        fixed: {dataset: csbm}
        axes:
          depth: [2, 4]
          depth: [8]
    """)
    with pytest.raises(MatrixError) as err:
        load_matrix(p)
    msg = str(err.value)
    assert "m.yaml" in msg and "'depth' twice" in msg and "line 4" in msg, msg


def test_shipped_yaml_files_have_no_repeated_keys():
    from bench_suite.report.reproduce import load_references

    assert tuned.rules() and load_references()  # defaults rules and references parse under the strict loader
    for name in shipped_matrices():
        load_matrix(name)
