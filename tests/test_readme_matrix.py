"""The matrix example in the README parses and expands as it says."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from bench_suite.registry import load_all
from bench_suite.runner.matrix import expand_matrix, parse_matrix

load_all()


def test_readme_matrix_example_expands():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Matrix files.*?```yaml\n(.*?)```", text, re.S).group(1)
    m = parse_matrix(yaml.safe_load(block), Path("readme.yaml"))
    specs = expand_matrix(m)
    # 2 datasets x (gcn at 2, 16 + gcnii at 2, 16, 64) x 4 quantizer settings, + the included GAT run; 10 seeds
    assert len(specs) == (2 * 5 * 4 + 1) * 10
    gcnii = [s for s in specs if s.data["model"]["name"] == "gcnii"]
    assert gcnii and all(s.train.lr == 0.01 for s in gcnii)
    cite = [s for s in specs if s.data["dataset"]["name"] == "citeseer" and s.data["model"]["name"] == "gcn"]
    assert all(s.train.weight_decay == 0.001 for s in cite) and all(s.train.epochs == 400 for s in specs)
    assert {s.data["quant"]["bits"] for s in specs if s.data["quant"]["name"] == "qlr"} == {8, 4, 2}


def test_readme_speed_matrix_example_expands_into_speed_specs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = re.search(r"## Matrix files(.*?)\n## ", text, re.S).group(1)
    block = re.findall(r"```yaml\n(.*?)```", section, re.S)[1]
    specs = expand_matrix(parse_matrix(yaml.safe_load(block), Path("readme-speed.yaml")))
    assert len(specs) == 2 * 3 * 2 and {s.kind for s in specs} == {"speed"}
    assert {(s.data["graph"]["name"], s.data["quant"]["bits"], s.measure.ranges) for s in specs} == {
        (g, b, r) for g in ("arxiv-like", "cora") for b in (8, 4, 2) for r in ("dynamic", "calibrated")}
    assert all(s.measure.repeats == 7 and s.data["model"]["hidden"] == 256 for s in specs)
