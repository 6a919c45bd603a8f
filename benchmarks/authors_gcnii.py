"""Run the GCNII authors' own full-supervised code on the geom-gcn graphs: a reference for bench_suite's GCNII.

Not part of bench_suite: nothing in the package or its tests imports this file.  It drives the
authors' ``full-supervised.py`` (repository chennnM/GCNII) in a separate interpreter, one process per
dataset and variant, and appends one JSON line per split to ``--out``.

Which code: ``full-supervised.py``, ``process.py``, ``utils.py`` and ``model.py`` of chennnM/GCNII at the
commit given by ``--commit`` (default: the one this was checked with), extracted with ``git archive``
from a mirror (``--mirror``, a bare or normal git directory).  Arguments: the dataset's line of the
authors' ``full.sh`` (``FULL_SH`` below), with ``--variant`` for GCNII*.

Two changes at run time, neither to a computed value: the script's device becomes the CPU (it hard-codes
``cuda:<dev>``; ``torch.cuda.manual_seed`` is then skipped: there is no CUDA generator), and its
per-epoch print is dropped (1,500 lines a split).  Everything else runs unchanged: the authors' seed
42, their loader, normalisation, model, optimiser, early stopping and checkpoint selection.

Data: the script reads ``new_data/<name>/out1_graph_edges.txt``, ``out1_node_feature_label.txt`` and
``splits/<name>_split_0.6_0.2_<k>.npz`` relative to its directory; they are linked from
``$BENCH_SUITE_DATA/geom-gcn``.  The geom-gcn files here hold Chameleon's edges only, so its feature
file is written from ``heterophilous-graphs/chameleon.npz`` (features and labels in node order; that
file's edges and 10 splits equal the geom-gcn ones, checked when it is written).

Usage (in bench_suite's venv: torch, numpy, scipy, networkx and scikit-learn are what the code imports)::

    python benchmarks/authors_gcnii.py --mirror /work/.mirror/chennnM+GCNII/repo/.git \\
        --datasets cornell texas wisconsin chameleon --out results/reference/gcnii_authors.jsonl
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
import tempfile
import time
from pathlib import Path

import numpy as np

COMMIT = "ca91f5686c4cd09cc1c6f98431a5d5b7e36acc92"
CODE_FILES = ("full-supervised.py", "process.py", "utils.py", "model.py")
#: the authors' full.sh, one line per dataset (their GCNII*-line adds --variant)
FULL_SH = {
    "chameleon": "--layer 8 --lamda 1.5 --alpha 0.2 --weight_decay 5e-4",
    "cornell": "--layer 16 --lamda 1 --weight_decay 1e-3",
    "texas": "--layer 32 --lamda 1.5 --weight_decay 1e-4",
    "wisconsin": "--layer 16 --lamda 1 --weight_decay 5e-4",
}
#: the run-time changes named in the docstring: (exact source line, replacement)
PATCHES = (
    ("device = torch.device(cudaid)", 'device = torch.device("cpu")'),
    ("torch.cuda.manual_seed(args.seed)", "pass  # no CUDA here"),
    ("        if(epoch+1)%1 == 0: ", "        if False: "),
)
SPLIT_LINE = re.compile(r"^(\d+) : ([0-9.]+)$")


def extract(mirror: Path, commit: str, dest: Path) -> str:
    """The authors' four files at ``commit`` into ``dest`` (patched); returns the full commit hash."""
    git = ["git", f"--git-dir={mirror}"]
    full = subprocess.run(git + ["rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
    for name in CODE_FILES:
        text = subprocess.run(git + ["show", f"{full}:{name}"], check=True, capture_output=True, text=True).stdout
        if name == "full-supervised.py":
            for old, new in PATCHES:
                if text.count(old) != 1:
                    raise SystemExit(f"authors_gcnii: {name} at {full[:12]} does not hold {old!r} once; not patched")
                text = text.replace(old, new)
        (dest / name).write_text(text)
    return full


def link_data(data_dir: Path, dest: Path, datasets: list[str]) -> None:
    """``new_data/<name>/`` and ``splits/`` under ``dest``, linked from the data directory."""
    geom = data_dir / "geom-gcn"
    (dest / "splits").symlink_to(geom / "splits")
    (dest / "pretrained").mkdir()
    for name in datasets:
        folder = dest / "new_data" / name
        folder.mkdir(parents=True)
        (folder / "out1_graph_edges.txt").symlink_to(geom / "new_data" / name / "out1_graph_edges.txt")
        features = geom / "new_data" / name / "out1_node_feature_label.txt"
        if features.is_file():
            (folder / "out1_node_feature_label.txt").symlink_to(features)
        else:
            write_features_from_npz(data_dir / "heterophilous-graphs" / f"{name}.npz", geom, name, folder)


def write_features_from_npz(npz: Path, geom: Path, name: str, folder: Path) -> None:
    """geom-gcn's feature file from the heterophilous-graphs npz, after checking that its edges and
    its 10 splits are the geom-gcn ones."""
    with np.load(npz, allow_pickle=False) as d:
        x, y, edges, train = d["node_features"], d["node_labels"], d["edges"], d["train_masks"]
    raw = np.loadtxt(geom / "new_data" / name / "out1_graph_edges.txt", skiprows=1, dtype=np.int64)
    raw = raw[raw[:, 0] != raw[:, 1]]
    pairs = lambda e: set(map(tuple, np.sort(e, 1).tolist()))  # noqa: E731
    if pairs(edges) != pairs(raw):
        raise SystemExit(f"authors_gcnii: {npz} and the geom-gcn edge list of {name} differ")
    for k in range(10):
        with np.load(geom / "splits" / f"{name}_split_0.6_0.2_{k}.npz") as s:
            if not np.array_equal(train[k].astype(bool), s["train_mask"].astype(bool)):
                raise SystemExit(f"authors_gcnii: {npz} split {k} is not geom-gcn's")
    with open(folder / "out1_node_feature_label.txt", "w") as f:
        f.write("node_id\tfeature\tlabel\n")
        for i in range(x.shape[0]):
            f.write(f"{i}\t{','.join(str(int(v)) for v in x[i])}\t{int(y[i])}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", type=Path, required=True, help="git directory of chennnM/GCNII")
    ap.add_argument("--commit", default=COMMIT)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BENCH_SUITE_DATA", "../shared/datasets")))
    ap.add_argument("--datasets", nargs="+", default=sorted(FULL_SH), choices=sorted(FULL_SH))
    ap.add_argument("--variants", nargs="+", default=["gcnii*"], choices=["gcnii", "gcnii*"])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    done = set()
    if args.out.is_file():
        done = {(r["dataset"], r["variant"]) for r in map(json.loads, args.out.read_text().splitlines()) if r}
    torch_version = subprocess.run([args.python, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="gcnii-ref-") as tmp:
        code = Path(tmp)
        commit = extract(args.mirror, args.commit, code)
        link_data(args.data_dir.resolve(), code, args.datasets)
        for name in args.datasets:
            for variant in args.variants:
                if (name, variant) in done:
                    continue
                cmd = [args.python, "-u", "full-supervised.py", "--data", name, *FULL_SH[name].split()]
                cmd += ["--variant"] if variant == "gcnii*" else []
                env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
                t0 = time.time()
                out = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"authors_gcnii: {' '.join(cmd[2:])} failed: {out.stderr.strip().splitlines()[-1]}")
                accs = [(int(m[1]), float(m[2])) for m in map(SPLIT_LINE.match, out.stdout.splitlines()) if m]
                row = {"dataset": name, "variant": variant, "args": " ".join(cmd[3:]), "code": f"chennnM/GCNII@{commit}",
                       "splits": [k for k, _ in accs], "test_acc": [a for _, a in accs],
                       "mean": round(float(np.mean([a for _, a in accs])), 2),
                       "std": round(float(np.std([a for _, a in accs], ddof=1)), 2),
                       "seconds": round(time.time() - t0, 1), "python": platform.python_version(),
                       "torch": torch_version,
                       "machine": platform.machine(), "finished": datetime.datetime.now(datetime.timezone.utc).isoformat()}
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} {variant}: {row['mean']} +- {row['std']} over {len(accs)} splits", flush=True)


if __name__ == "__main__":
    main()
