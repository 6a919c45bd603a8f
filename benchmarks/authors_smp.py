"""Run the SMP authors' own code (arXiv 2308.14949) on Cora random splits: a reference for bench_suite's SMP.

Not part of bench_suite: nothing in the package or its tests imports this file, and
torch_geometric is not a dependency of the project.  It drives the authors' unmodified
``main.py`` in a separate interpreter (a venv with torch_geometric) and writes one JSON line
per run.

Which code: the upload by the paper's first author (Shuang Wang), commit
``00dd14cd96576d884750c90004ff18e86284cdc5`` (2023-11-13) of the repository mirrored as
``SamirMoustafa/SMP_GNN_Quant``.  That is the version that produced ``performance_note.ipynb``:
the notebook prints ``Namespace(..., random_splits=2, seed=1234567890, symmetric=False, K=10, ...)``,
exactly the arguments of that commit's ``main.py``; the later commits of the fork (``c29452c``,
"clean code", by another author) dropped ``--random_splits`` and train on the public split.

Setup (outside this repository; commands as used on 2-core CPU machine, Python 3.11)::

    # 1. the authors' code, extracted from a git mirror (no work tree needed)
    mkdir -p /work/smp-ref/SMP_GNN_Quant-00dd14c
    git --git-dir=<mirror>/SMP_GNN_Quant archive 00dd14cd96576d884750c90004ff18e86284cdc5 \
        | tar -x -C /work/smp-ref/SMP_GNN_Quant-00dd14c
    # 2. a venv that reuses the suite's torch 2.2.1 (+ scipy, sklearn, pandas, ogb 1.3.6) and adds PyG
    python3.11 -m venv /work/smp-venv
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /work/smp-venv/lib/python3.11/site-packages/_suite_venv.pth
    /work/smp-venv/bin/pip install --no-deps torch_geometric==2.5.3
    # torch-scatter / torch-sparse: PyPI has only source distributions for them (no wheel for
    # torch 2.2.1 here), so the subprocess gets benchmarks/authors_smp_shim/ on PYTHONPATH: pure
    # PyTorch stand-ins for exactly the calls made on this path (see their docstrings).

Cora: the authors' ``dataset.py`` calls ``Planetoid(<code>/../data/Cora, "Cora")``.  This script
links the eight original Planetoid files ``ind.cora.*`` from ``$BENCH_SUITE_DATA/cora`` into
``<code>/../data/Cora/Cora/raw``, so PyG's own Planetoid reader processes them offline (2708
nodes, 10556 directed edges, 1433 features, 7 classes; ``verify-data`` checks the graph, the
features and the labels against bench_suite's loader).

Splits: the authors' ``random_planetoid_splits`` (20 per class / 500 / 1000, ``torch.randperm``
with a generator seeded by ``seeds[split]``, ``seeds[0:10]`` = 12232231, 12232432, ...).  Their
``main.py`` runs the single split ``random_splits - 1``: the notebook's runs (``--random_splits 2``)
are split 1.  Split k here = ``--random_splits k+1``.  The model seed is not a variable of their
code: ``prop_part_QUANT.__init__`` calls ``torch.manual_seed(1234567)`` before the linear layers
are built, so initialisation and dropout masks are the same on every split.

One change at run time, not to any computed value: ``LearnsQuantize.forward`` stores the
``scale``/``zero_point`` tensors it returns on ``ctx``; outputs of an autograd Function that sit on
its own ctx form a reference cycle through the C++ graph that Python cannot collect, so every
training step's whole graph leaks (~90 MB an epoch on Cora; the first run here was OOM-killed at
epoch 170 with 16 GB).  The child process replaces ``ctx.scale``/``ctx.zp`` by ``.detach()``-ed
aliases of the same storage after the authors' forward has run.  A 20-epoch run with and without
it printed identical logs.

Checks of the harness against the notebook (split 1, the notebook's split): FP32-SMP repeats the
notebook's 200 printed epochs (loss within 1e-4, i.e. print rounding; accuracies equal but for one
node in 6 epochs) and its selection, test 82.80 / val 85.60 at epoch 147.  The quantized runs repeat
it digit for digit for the first epochs (INT2 BT*: 10, INT4: 5) and then drift apart: 2- and 4-bit
rounding amplifies float differences between torch 1.7 and 2.2 (INT2 BT*: 78.0 here vs the notebook's
77.8; INT4: 80.3 vs 81.0).

Usage::

    # in bench_suite's venv (for verify-data) or any python3 (for run)
    python benchmarks/authors_smp.py verify-data --code DIR --python /work/smp-venv/bin/python
    python benchmarks/authors_smp.py run --code DIR --python /work/smp-venv/bin/python \
        --config int2-bt*-smp --splits 0-9 --out results/reference/smp_authors.jsonl

``run`` appends one JSON line per (config, split) and skips pairs already in ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

COMMIT = "00dd14cd96576d884750c90004ff18e86284cdc5"
REPO = "SamirMoustafa/SMP_GNN_Quant (fork of the authors' upload; commit by ShuangWang)"
SHIM_DIR = Path(__file__).resolve().parent / "authors_smp_shim"
SPLIT_SEEDS = [12232231, 12232432, 2234234, 4665565, 45543345, 454543543, 45345234, 54552234, 234235425,
               909099343]  # the authors' dataset.py: seeds_init (times 1 for splits 0..9)
PLANETOID_FILES = [f"ind.cora.{s}" for s in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")]

_COMMON = ["--device", "cpu", "--dataset", "Cora", "--runs", "1", "--K", "10", "--lambda1", "9", "--lambda2", "9",
           "--epochs", "200"]
#: The notebook's commands (performance_note.ipynb, cell index: its first line), without
#: ``--random_splits``; the README's INT2-BT* (SBT) command differs from the notebook's in c.
CONFIGS: Dict[str, Tuple[str, List[str]]] = {
    "fp32-smp": ("performance_note.ipynb cell 0 '#FP32-SMP'",
                 ["--qtype", "FP32", "--lambda_threshold", "0.00001", "--alpha_threshold", "0.1", "--lr1", "0.01",
                  "--weight_decay1", "0.00001", "--dropout", "0.8", "--prop_mode", "SMP"]),
    "int8-smp": ("performance_note.ipynb cell 2 '#INT8-SMP'",
                 ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.00001", "--qtype", "INT8", "--lr", "0.0001",
                  "--weight_decay", "0.00001", "--lr1", "0.01", "--weight_decay1", "0.00001", "--dropout", "0.8",
                  "--prop_mode", "SMP"]),
    "int4-smp": ("performance_note.ipynb cell 4 '#INT4-SMP'",
                 ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.00001", "--qtype", "INT4", "--lr", "0.0001",
                  "--weight_decay", "0.00005", "--lr1", "0.015", "--weight_decay1", "0.00001", "--dropout", "0.5",
                  "--prop_mode", "SMP"]),
    "int2-smp": ("performance_note.ipynb cell 6 '#INT2-SMP'",
                 ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.0001", "--qtype", "INT2", "--lr", "0.0001",
                  "--weight_decay", "0.00001", "--lr1", "0.01", "--weight_decay1", "0.00001", "--dropout", "0.5",
                  "--prop_mode", "SMP"]),
    "int2-bt-smp": ("performance_note.ipynb cell 8 '#INT2-BT-SMP'",
                    ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.2", "--qtype", "INT2", "--lr", "0.0001",
                     "--weight_decay", "0.00001", "--lr1", "0.01", "--weight_decay1", "0.00001", "--dropout", "0.5",
                     "--prop_mode", "SMP", "--BT_mode", "BT"]),
    "int2-bt*-smp": ("performance_note.ipynb cell 9 '#INT2-BT^{*}-SMP'",
                     ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.01", "--qtype", "INT2", "--lr", "0.0001",
                      "--weight_decay", "0.00001", "--lr1", "0.01", "--weight_decay1", "0.00001", "--dropout", "0.5",
                      "--prop_mode", "SMP", "--BT_mode", "SBT"]),
    "int2-bt*-smp-readme": ("README.md 'INT2-BT(INT2-BT^{*})', second command (SBT, alpha_threshold 0.1)",
                            ["--lambda_threshold", "0.00001", "--alpha_threshold", "0.1", "--qtype", "INT2", "--lr",
                             "0.0001", "--weight_decay", "0.00001", "--lr1", "0.01", "--weight_decay1", "0.00001",
                             "--dropout", "0.5", "--prop_mode", "SMP", "--BT_mode", "SBT"]),
}
#: The notebook's single run of each config (split 1): Highest Valid, Final Test.
NOTEBOOK = {"fp32-smp": (85.60, 82.80), "int8-smp": (85.20, 82.10), "int4-smp": (85.00, 81.00),
            "int2-smp": (76.80, 73.30), "int2-bt-smp": (79.20, 75.60), "int2-bt*-smp": (79.40, 77.80)}

EPOCH_RE = re.compile(r"^Split: (\d+), Run: (\d+), Epoch: (\d+), Loss: ([-\d.naninf]+), Train: ([\d.]+)%, "
                      r"Valid: ([\d.]+)% Test: ([\d.]+)%")


# --------------------------------------------------------------------------- child (PyG venv)
def child(code: str, argv: List[str]) -> None:
    """In the PyG venv: the authors' main.py with ``argv``, after the leak fix; prints ``#data`` and ``#split``."""
    import hashlib
    import runpy

    sys.path.insert(0, code)
    os.chdir(code)
    import QLR_quantizer_fun as Q  # noqa: E402  (the authors' module)
    import dataset as D  # noqa: E402

    orig_forward = Q.LearnsQuantize.forward.__func__

    def forward(cls, ctx, *args):
        out = orig_forward(cls, ctx, *args)
        for key in ("scale", "zp"):  # outputs kept on ctx: a cycle through the C++ graph (see module doc)
            if hasattr(ctx, key):
                setattr(ctx, key, getattr(ctx, key).detach())
        return out

    Q.LearnsQuantize.forward = classmethod(forward)

    orig_get_dataset = D.get_dataset

    def get_dataset(args, split, *a, **k):
        original_dataset, dataset, data, split_idx = orig_get_dataset(args, split, *a, **k)
        ei = original_dataset[0].edge_index
        print("#data " + json.dumps({
            "nodes": int(data.num_nodes), "directed_edges": int(ei.size(1)), "features": int(data.num_features),
            "classes": int(dataset.num_classes), "self_loops": int((ei[0] == ei[1]).sum()),
            "train": int(split_idx["train"].numel()), "valid": int(split_idx["valid"].numel()),
            "test": int(split_idx["test"].numel())}), flush=True)
        digest = {k: hashlib.sha256(v.sort().values.numpy().tobytes()).hexdigest()[:16] for k, v in split_idx.items()}
        print("#split " + json.dumps({"split": split, "sha256_16": digest}), flush=True)
        return original_dataset, dataset, data, split_idx

    D.get_dataset = get_dataset
    sys.argv = ["main.py"] + argv
    runpy.run_path(os.path.join(code, "main.py"), run_name="__main__")


def child_versions() -> None:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "torch_geometric", "numpy", "scipy", "scikit-learn", "pandas", "ogb"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    import torch_scatter
    import torch_sparse

    out["torch_scatter"] = torch_scatter.__version__
    out["torch_sparse"] = torch_sparse.__version__
    print(json.dumps(out))


def child_dump_cora(code: str, path: str) -> None:
    import types

    import torch

    sys.path.insert(0, code)
    os.chdir(code)
    import dataset as D  # noqa: E402

    args = types.SimpleNamespace(dataset="Cora", normalize_features=True, random_splits=1, ogb=False)
    original_dataset, _, _, _ = D.get_dataset(args, 0)
    d = original_dataset[0]
    torch.save({"x": d.x, "y": d.y, "edge_index": d.edge_index}, path)


# --------------------------------------------------------------------------- parent
def prepare_data(code: Path, data_dir: Path) -> None:
    raw = code.resolve().parent / "data" / "Cora" / "Cora" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in PLANETOID_FILES:
        src = data_dir / "cora" / name
        if not src.is_file():
            raise SystemExit(f"missing {src}")
        dst = raw / name
        if not dst.exists():
            dst.symlink_to(src)


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SHIM_DIR)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["OUTDATED_IGNORE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


def _limit_memory() -> None:
    """Address-space cap of the child (the machine is shared): a leak ends the run, not a neighbour."""
    import resource

    cap = int(float(os.environ.get("AUTHORS_SMP_MAX_GB", "10")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def parse_log(text: str) -> dict:
    epochs = []
    data = split = None
    final = {}
    for line in text.splitlines():
        m = EPOCH_RE.match(line)
        if m:
            epochs.append((int(m.group(3)), float(m.group(4)), float(m.group(5)), float(m.group(6)),
                           float(m.group(7))))
        elif line.startswith("#data "):
            data = json.loads(line[6:])
        elif line.startswith("#split "):
            split = json.loads(line[7:])
        else:
            for key in ("Highest Train", "Highest Valid", "Final Train", "Final Test"):
                if line.strip().startswith(key + ":"):
                    final[key] = float(line.split(":")[1])
    return {"epochs": epochs, "data": data, "split": split, "final": final}


def select(epochs: List[tuple]) -> dict:
    """The authors' Logger.print_statistics rule: the epoch of highest validation accuracy, ties
    broken by the highest train accuracy (the first such epoch)."""
    best_val = max(e[3] for e in epochs)
    tied = [e for e in epochs if e[3] == best_val]
    best = tied[0]
    for e in tied:
        if e[2] > best[2]:
            best = e
    return {"epoch": best[0], "train": best[2], "val": best[3], "test": best[4]}


def versions(python: str) -> dict:
    out = subprocess.run([python, __file__, "_versions"], capture_output=True, text=True, env=child_env(), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one(args, config: str, split: int, vers: dict) -> dict:
    source, cfg = CONFIGS[config]
    argv = _COMMON + cfg + ["--random_splits", str(split + 1)]
    cmd = [args.python, __file__, "_child", str(args.code), "--"] + argv
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), preexec_fn=_limit_memory)
    seconds = time.time() - t0
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
        (Path(args.logs) / f"{config}_split{split}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} split {split}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    log = parse_log(proc.stdout)
    ep = log["epochs"]
    if len(ep) != 200:
        raise RuntimeError(f"{config} split {split}: {len(ep)} epoch lines")
    sel = select(ep)
    if abs(sel["test"] - log["final"].get("Final Test", -1)) > 1e-6:
        raise RuntimeError(f"selection mismatch: {sel} vs printed {log['final']}")
    rec = {
        "source": "authors' code", "repo": REPO, "commit": COMMIT, "config": config, "config_source": source,
        "argv": ["main.py"] + argv, "split": split, "split_seed": SPLIT_SEEDS[split],
        "split_sha256_16": log["split"]["sha256_16"] if log["split"] else None,
        "model_seed": "fixed by the code: torch.manual_seed(1234567) in prop_part_QUANT.__init__",
        "test_acc": sel["test"], "val_acc": sel["val"], "train_acc": sel["train"], "best_epoch": sel["epoch"],
        "last_epoch_test_acc": ep[-1][4], "max_test_acc": max(e[4] for e in ep),
        "selection": "highest val acc, ties -> highest train acc (authors' Logger.print_statistics)",
        "data": log["data"], "seconds": round(seconds, 1), "versions": vers,
        "shims": {"torch_sparse": "benchmarks/authors_smp_shim", "torch_scatter": "benchmarks/authors_smp_shim"},
        "runtime_patch": "LearnsQuantize ctx.scale/ctx.zp detached after forward (memory-leak fix; values unchanged)",
        "host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if config in NOTEBOOK and split == 1:
        rec["notebook_split1"] = {"val_acc": NOTEBOOK[config][0], "test_acc": NOTEBOOK[config][1]}
    return rec


def parse_splits(text: str) -> List[int]:
    out: List[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def cmd_run(args) -> None:
    prepare_data(args.code, args.data)
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["config"], r["split"]))
    vers = versions(args.python)
    for config in args.config:
        for split in parse_splits(args.splits):
            if (config, split) in done:
                continue
            rec = run_one(args, config, split, vers)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"{config} split {split}: test {rec['test_acc']:.2f} val {rec['val_acc']:.2f} "
                  f"(epoch {rec['best_epoch']}, {rec['seconds']:.0f} s)", flush=True)


def cmd_summary(args) -> None:
    import statistics

    rows: Dict[str, List[dict]] = {}
    for line in Path(args.out).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["config"], []).append(r)
    for config, rs in rows.items():
        rs.sort(key=lambda r: r["split"])
        accs = [r["test_acc"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        print(f"{config}: n={len(accs)} test {statistics.mean(accs):.2f} ± {sd:.2f} (sample std)  "
              f"min {min(accs):.2f} max {max(accs):.2f}  per split: "
              + ", ".join(f"{r['split']}:{r['test_acc']:.1f}" for r in rs))


def cmd_verify_data(args) -> None:
    """Cora as the authors' code loads it (PyG Planetoid) against bench_suite's loader."""
    import tempfile

    import torch

    from bench_suite.data.datasets import load_dataset

    prepare_data(args.code, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cora.pt")
        subprocess.run([args.python, __file__, "_dump", str(args.code), path], env=child_env(), check=True)
        p = torch.load(path)
    g = load_dataset("cora", seed=0, data_dir=args.data)
    x = g.features.to_dense() if g.features.layout != torch.strided else g.features
    src, dst = g.graph.edges()
    suite_edges = set(zip(src.tolist(), dst.tolist()))
    pyg_edges = set(zip(p["edge_index"][0].tolist(), p["edge_index"][1].tolist()))
    report = {
        "pyg": {"nodes": int(p["x"].shape[0]), "features": int(p["x"].shape[1]), "classes": int(p["y"].max()) + 1,
                "directed_edges": int(p["edge_index"].shape[1])},
        "suite": g.summary(),
        "same_edge_set": suite_edges == pyg_edges,
        "same_labels": bool((g.labels == p["y"]).all()),
        "max_abs_feature_diff (both row-normalised)": float((x - p["x"]).abs().max()),
    }
    print(json.dumps(report, indent=1))


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        sep = argv.index("--")
        return child(argv[1], argv[sep + 1:])
    if argv and argv[0] == "_versions":
        return child_versions()
    if argv and argv[0] == "_dump":
        return child_dump_cora(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "verify-data"):
        p = sub.add_parser(name)
        p.add_argument("--code", type=Path, required=True, help="the authors' code, extracted at commit " + COMMIT)
        p.add_argument("--python", required=True, help="python of the venv with torch_geometric")
        p.add_argument("--data", type=Path, default=Path(os.environ.get("BENCH_SUITE_DATA", "../shared/datasets")))
        if name == "run":
            p.add_argument("--config", nargs="+", default=["int2-bt*-smp"], choices=sorted(CONFIGS))
            p.add_argument("--splits", default="0-9")
            p.add_argument("--out", default="results/reference/smp_authors.jsonl")
            p.add_argument("--logs", default=None, help="folder for the full stdout of each run")
    p = sub.add_parser("summary")
    p.add_argument("--out", default="results/reference/smp_authors.jsonl")
    args = ap.parse_args(argv)
    {"run": cmd_run, "verify-data": cmd_verify_data, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    main()
