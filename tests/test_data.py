"""Datasets: DGL/OGB loaders over the offline data directory, splits, CSBM, errors, caches."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench_suite.data import datasets as D
from bench_suite.data.base import GraphData
from bench_suite.data.csbm import generate_csbm
from bench_suite.data.datasets import load_dataset
from bench_suite.data.errors import DatasetNotFoundError
from bench_suite.registry import DATASETS, RegistryError


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Every processed file of this module goes to a fresh cache directory."""
    old = os.environ.get("BENCH_SUITE_CACHE")
    os.environ["BENCH_SUITE_CACHE"] = str(tmp_path_factory.mktemp("bench_cache"))
    D.clear_memory_cache()
    yield Path(os.environ["BENCH_SUITE_CACHE"])
    D.clear_memory_cache()
    if old is None:
        os.environ.pop("BENCH_SUITE_CACHE", None)
    else:
        os.environ["BENCH_SUITE_CACHE"] = old


def assert_valid(d: GraphData) -> None:
    """The GraphData contract: symmetric simple graph, dtypes, disjoint labelled masks."""
    g, n = d.graph, d.num_nodes
    src, dst = (t.numpy() for t in g.edges())
    assert not (src == dst).any(), "self-loop"
    fwd, rev = np.sort(src * n + dst), np.sort(dst * n + src)
    assert (np.diff(fwd) > 0).all(), "duplicate edge"
    assert np.array_equal(fwd, rev), "graph not symmetric"
    assert d.features.dtype == torch.float32 and d.features.shape[0] == n
    assert d.labels.dtype == torch.int64 and d.labels.shape == (n,)
    masks = (d.train_mask, d.val_mask, d.test_mask)
    for m in masks:
        assert m.dtype == torch.bool and m.shape == (n,) and m.any()
        assert bool((d.labels[m] >= 0).all()) and bool((d.labels[m] < d.num_classes).all())
    assert not bool((masks[0] & masks[1]).any() or (masks[0] & masks[2]).any() or (masks[1] & masks[2]).any())


def sizes(d: GraphData) -> tuple:
    return int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())


# -- registry ----------------------------------------------------------------------


def test_all_datasets_registered():
    expected = {
        "cora", "citeseer", "pubmed", "amazon-photo", "amazon-computers", "coauthor-cs",
        "coauthor-physics", "chameleon", "squirrel", "actor", "cornell", "texas", "wisconsin",
        "minesweeper", "tolokers", "ogbn-arxiv", "ogbn-products", "csbm",
    }
    assert expected <= set(DATASETS.keys())
    assert {p.name for p in DATASETS.params("cora")} == {"split", "sparse_features", "row_normalize"}
    assert {p.name for p in DATASETS.params("texas")} == {"split_index", "sparse_features", "row_normalize"}
    assert all({"sparse_features", "row_normalize"} <= {p.name for p in DATASETS.params(k)} for k in DATASETS.keys())


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(RegistryError) as exc:
        load_dataset("coraa")
    msg = str(exc.value)
    assert "'coraa'" in msg and "citeseer" in msg and "csbm" in msg and "Did you mean 'cora'" in msg


def test_unknown_dataset_parameter_rejected():
    with pytest.raises(RegistryError, match="split_index"):
        load_dataset("cora", split_index=3)


# -- Planetoid -----------------------------------------------------------------------


def test_cora_public(data_dir):
    d = load_dataset("cora", seed=0, data_dir=data_dir)
    assert_valid(d)
    assert d.num_nodes == 2708
    assert d.graph.num_edges() == 10556  # 5278 undirected edges, both directions
    assert d.num_features == 1433 and d.num_classes == 7
    assert sizes(d) == (140, 500, 1000)
    assert torch.equal(d.train_mask.nonzero().view(-1), torch.arange(140))  # Planetoid: first 140 nodes
    assert d.split == "public"


def test_cora_second_load_is_cached(data_dir):
    load_dataset("cora", data_dir=data_dir)
    D.clear_memory_cache()
    t = time.perf_counter()
    d = load_dataset("cora", data_dir=data_dir)  # DGL's processed files in the layout folder
    assert time.perf_counter() - t < 2.0
    assert d.num_nodes == 2708
    t = time.perf_counter()
    again = load_dataset("cora", seed=5, data_dir=data_dir)
    assert time.perf_counter() - t < 0.05  # in-memory
    assert again.graph is d.graph


def test_citeseer(data_dir):
    d = load_dataset("citeseer", data_dir=data_dir)
    assert_valid(d)
    assert d.num_nodes == 3327 and d.num_classes == 6 and d.num_features == 3703
    assert sizes(d) == (120, 500, 1000)
    assert int((d.labels == -1).sum()) == 15  # isolated test-range nodes without a label
    r = load_dataset("citeseer", seed=3, data_dir=data_dir, split="random")
    assert_valid(r)  # the unlabelled nodes never enter a random split
    assert sizes(r) == (120, 500, 1000)


def test_random_split_sizes_and_determinism(data_dir):
    a = load_dataset("cora", seed=1, data_dir=data_dir, split="random")
    b = load_dataset("cora", seed=1, data_dir=data_dir, split="random")
    c = load_dataset("cora", seed=2, data_dir=data_dir, split="random")
    assert_valid(a)
    assert sizes(a) == (140, 500, 1000) and a.split == "random"
    assert torch.bincount(a.labels[a.train_mask], minlength=7).tolist() == [20] * 7
    for m in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(a, m), getattr(b, m))
        assert not torch.equal(getattr(a, m), getattr(c, m))
    public = load_dataset("cora", seed=1, data_dir=data_dir)
    assert not torch.equal(a.train_mask, public.train_mask)


def test_pubmed_missing_offline(data_dir, private_cache):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("pubmed", data_dir=data_dir)
    msg = str(exc.value)
    assert "'pubmed'" in msg and "pubmed/ind.pubmed.allx" in msg and str(data_dir) in msg
    assert not any(p.name.startswith("pubmed") for p in (private_cache / "dgl").glob("*"))


# -- Amazon / Coauthor ----------------------------------------------------------------


def test_amazon_photo_random_split(data_dir):
    d = load_dataset("amazon-photo", seed=0, data_dir=data_dir)
    assert_valid(d)
    assert d.num_nodes == 7650 and d.num_classes == 8 and d.num_features == 745
    assert sizes(d) == (160, 240, 7650 - 400)
    assert torch.bincount(d.labels[d.val_mask], minlength=8).tolist() == [30] * 8
    other = load_dataset("amazon-photo", seed=1, data_dir=data_dir)
    assert not torch.equal(d.train_mask, other.train_mask)


# -- fixed-split datasets ----------------------------------------------------------------


def _ten_distinct_splits(name: str, data_dir: Path, n: int) -> list:
    splits = [load_dataset(name, seed=0, data_dir=data_dir, split_index=k) for k in range(10)]
    for d in splits:
        assert_valid(d)
        assert d.num_nodes == n
    trains = {tuple(d.train_mask.nonzero().view(-1).tolist()) for d in splits}
    assert len(trains) == 10
    by_seed = load_dataset(name, seed=13, data_dir=data_dir)  # split_index=None -> seed % 10
    assert by_seed.info["split_index"] == 3 and torch.equal(by_seed.train_mask, splits[3].train_mask)
    return splits


def test_row_normalize_divides_each_row_by_its_sum_dense_and_sparse(data_dir):
    """The GCN/GCNII authors' preprocess_features: each row over its sum, an all-zero row kept."""
    raw = load_dataset("texas", data_dir=data_dir, seed=0).features
    norm = load_dataset("texas", data_dir=data_dir, seed=0, row_normalize=True).features
    csr = load_dataset("texas", data_dir=data_dir, seed=0, row_normalize=True, sparse_features=True).features
    sums = raw.sum(1)
    assert float(sums.max()) > 1.0  # binary bag-of-words: the raw rows are not normalised
    nz = sums > 0
    torch.testing.assert_close(norm.sum(1)[nz], torch.ones(int(nz.sum())))
    torch.testing.assert_close(norm[nz], raw[nz] / sums[nz].unsqueeze(1))
    assert torch.equal(norm[~nz], raw[~nz])
    assert torch.equal(csr.to_dense(), norm)
    assert torch.equal(load_dataset("texas", data_dir=data_dir, seed=0).features, raw)  # the shared base untouched


def test_texas_ten_splits(data_dir):
    splits = _ten_distinct_splits("texas", data_dir, 183)
    assert splits[0].num_classes == 5 and splits[0].num_features == 1703
    ref = np.load(data_dir / "geom-gcn/splits/texas_split_0.6_0.2_7.npz")
    assert torch.equal(splits[7].test_mask, torch.from_numpy(ref["test_mask"]).bool())


def test_chameleon_ten_splits_and_disk_cache(data_dir, private_cache):
    splits = _ten_distinct_splits("chameleon", data_dir, 2277)
    assert splits[0].num_classes == 5 and splits[0].num_features == 2325
    ref = np.load(data_dir / "geom-gcn/splits/chameleon_split_0.6_0.2_4.npz")
    assert torch.equal(splits[4].train_mask, torch.from_numpy(ref["train_mask"]).bool())
    assert list((private_cache / "processed").glob("chameleon-*.pt"))
    D.clear_memory_cache()
    again = load_dataset("chameleon", seed=4, data_dir=data_dir)
    assert torch.equal(again.graph.edges()[0], splits[4].graph.edges()[0])
    assert torch.equal(again.features, splits[4].features)


def test_split_index_out_of_range(data_dir):
    with pytest.raises(ValueError, match="split_index"):
        load_dataset("texas", data_dir=data_dir, split_index=10)


# -- CSBM ---------------------------------------------------------------------------


@pytest.mark.parametrize("h", [0.1, 0.5, 0.9])
def test_csbm_homophily_and_degree(h):
    d = load_dataset("csbm", seed=0, nodes=2000, homophily=h, avg_degree=10.0)
    assert_valid(d)
    src, dst = d.graph.edges()
    assert abs(float((d.labels[src] == d.labels[dst]).float().mean()) - h) < 0.05
    assert abs(d.graph.num_edges() / 2000 - 10.0) < 0.5
    assert sizes(d) == (80, 500, 2000 - 580)


def test_csbm_determinism():
    a = load_dataset("csbm", seed=0, nodes=500)
    b = load_dataset("csbm", seed=1, nodes=500)
    D.clear_memory_cache()
    c = load_dataset("csbm", seed=0, nodes=500)
    other = load_dataset("csbm", seed=0, nodes=500, graph_seed=1)
    assert torch.equal(a.graph.edges()[0], c.graph.edges()[0]) and torch.equal(a.features, c.features)
    assert torch.equal(a.graph.edges()[1], b.graph.edges()[1])  # graph fixed across run seeds
    assert torch.equal(a.train_mask, c.train_mask) and not torch.equal(a.train_mask, b.train_mask)
    assert not torch.equal(a.labels, other.labels)  # graph_seed changes the graph
    assert sizes(a) == (80, 280, 140)  # 500 val clipped to two thirds of the 420 left


def test_csbm_features_carry_signal_and_is_fast():
    t = time.perf_counter()
    src, dst, x, y = generate_csbm(10000, 4, 8.0, 0.8, 64, 1.0, seed=0)
    assert time.perf_counter() - t < 1.0
    assert x.dtype == np.float32 and bool((src < dst).all())
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    assert np.allclose(np.linalg.norm(means, axis=1), 1.0, atol=0.1)  # unit class means, signal 1
    with pytest.raises(ValueError):
        generate_csbm(10, 1, 2.0, 0.5, 4, 1.0, seed=0)


# -- OGB raw layout -------------------------------------------------------------------


def _write_csv(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, header=False, index=False, compression="gzip")


def test_ogbn_arxiv_raw_layout(tmp_path, private_cache):
    n, f, rng = 50, 6, np.random.default_rng(0)
    edges = rng.integers(0, n, (120, 2))
    root = tmp_path / "data" / "ogbn_arxiv"
    feats = rng.standard_normal((n, f)).astype(np.float32)
    labels = rng.integers(0, 40, (n, 1))
    _write_csv(root / "raw/edge.csv.gz", edges)
    _write_csv(root / "raw/num-node-list.csv.gz", np.array([[n]]))
    _write_csv(root / "raw/num-edge-list.csv.gz", np.array([[len(edges)]]))
    _write_csv(root / "raw/node-feat.csv.gz", feats)
    _write_csv(root / "raw/node-label.csv.gz", labels)
    _write_csv(root / "raw/node_year.csv.gz", rng.integers(2000, 2020, (n, 1)))
    perm = rng.permutation(n)
    for part, idx in (("train", perm[:30]), ("valid", perm[30:40]), ("test", perm[40:])):
        _write_csv(root / f"split/time/{part}.csv.gz", idx[:, None])

    d = load_dataset("ogbn-arxiv", data_dir=tmp_path / "data")
    assert_valid(d)
    assert d.num_nodes == n and d.num_classes == 40 and sizes(d) == (30, 10, 10)
    undirected = {(min(u, v), max(u, v)) for u, v in edges.tolist() if u != v}
    assert d.graph.num_edges() == 2 * len(undirected)
    assert torch.allclose(d.features, torch.from_numpy(feats), atol=1e-5)
    assert torch.equal(d.labels, torch.from_numpy(labels[:, 0]))
    assert torch.equal(d.test_mask.nonzero().view(-1), torch.from_numpy(np.sort(perm[40:])))
    processed = list((private_cache / "ogb").glob("ogbn-arxiv-*/ogbn_arxiv/processed/dgl_data_processed"))
    assert len(processed) == 1  # OGB processed it in the cache layout, not in the data directory
    assert not (root / "processed").exists()


# -- errors ---------------------------------------------------------------------------


def test_missing_files_error_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("cora", data_dir=tmp_path)
    err = exc.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    assert "'cora'" in msg and "cora/ind.cora.x" in msg and "cora/ind.cora.test.index" in msg
    assert str(tmp_path) in msg and "--data-dir" in msg and "BENCH_SUITE_DATA" in msg and "--download" in msg


def test_missing_files_error_for_npz_and_ogb(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="heterophilous-graphs/chameleon.npz"):
        load_dataset("chameleon", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="ogbn_arxiv/split/time/train.csv.gz"):
        load_dataset("ogbn-arxiv", data_dir=tmp_path)


def test_no_data_dir_error(monkeypatch):
    monkeypatch.delenv("BENCH_SUITE_DATA", raising=False)
    monkeypatch.delenv("BENCH_SUITE_DOWNLOAD", raising=False)
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("texas")
    msg = str(exc.value)
    assert "no data directory" in msg and "geom-gcn/new_data/texas/out1_graph_edges.txt" in msg
    assert exc.value.directory is None


@pytest.mark.parametrize("dataset,files", [
    ("cora", [f"cora/ind.cora.{s}" for s in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")]),
    ("amazon-photo", ["amazon_photo/amazon_electronics_photo.npz"]),
])
def test_malformed_files_give_a_clear_error(tmp_path, monkeypatch, dataset, files):
    """Files that exist but are garbage: a DatasetFileError naming dataset, files and directory."""
    from bench_suite.data.errors import DatasetFileError

    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    for rel in files:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"this is not a dataset file\n")
    D.clear_memory_cache()
    with pytest.raises(DatasetFileError) as exc:
        load_dataset(dataset, data_dir=data)
    msg = str(exc.value)
    assert repr(dataset) in msg and files[0] in msg and str(data) in msg and "could not be read" in msg
    assert isinstance(exc.value, ValueError) and exc.value.__cause__ is not None


def test_cli_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, capsys):
    """Every kind of bad input on the command line: exit 2 and one clear line, no traceback."""
    from bench_suite.cli import main

    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    (tmp_path / "cora").mkdir()
    (tmp_path / "cora" / "ind.cora.x").write_bytes(b"garbage")
    cases = [
        (["train", "dataset=coraa", "model=gcn"], "unknown dataset 'coraa'"),
        (["train", "dataset=csbm", "model=gnc"], "Did you mean 'gcn'"),
        (["train", "dataset=csbm", "model=gcn", "depht=2"], "depht"),
        (["train", "dataset=csbm", "model=gcn", "depth=0"], "depth"),
        (["train", "dataset=csbm", "model=gcn", "depth=-3"], "depth"),
        (["train", "dataset=csbm", "model=gcn", "depth=deep"], "depth"),
        (["train", "--data-dir", str(tmp_path), "dataset=cora", "model=gcn"], "ind.cora.tx"),
        (["train", "dataset=cora", "model=gcn", "split=randm"], "randm"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
