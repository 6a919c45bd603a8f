"""Untrusted files never run code: dataset pickles, npz object arrays, model files, the tensor cache."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bench_suite.data import datasets as D
from bench_suite.data.datasets import load_dataset
from bench_suite.data.errors import DatasetFileError
from bench_suite.restricted_unpickle import UnsafePickleError, load_npz, restricted_load

PLANETOID_PICKLES = ("x", "y", "tx", "ty", "allx", "ally", "graph")


class Payload:
    """Unpickling this runs ``touch <marker>`` through ``os.system`` (pickled as ``posix.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_SUITE_TRACEBACK", raising=False)
    D.clear_memory_cache()
    yield tmp_path / "cache"
    D.clear_memory_cache()


def link_real_files(data_dir: Path, target: Path, folder: str) -> Path:
    """``target/folder`` holding symlinks to every file of the real ``data_dir/folder``."""
    (target / folder).mkdir(parents=True)
    for f in (data_dir / folder).iterdir():
        (target / folder / f.name).symlink_to(f)
    return target / folder


def poisoned_planetoid(data_dir: Path, tmp_path: Path) -> tuple:
    """A data directory whose ``cora/ind.cora.x`` runs a payload; the other files are the real ones."""
    data, marker = tmp_path / "data", tmp_path / "PAYLOAD_RAN"
    folder = link_real_files(data_dir, data, "cora")
    (folder / "ind.cora.x").unlink()
    with open(folder / "ind.cora.x", "wb") as fh:
        pickle.dump(Payload(marker), fh, protocol=2)
    return data, folder / "ind.cora.x", marker


def poisoned_npz(real: Path, path: Path, marker: Path, key: str) -> None:
    """``real``'s arrays with ``key`` replaced by an object array whose pickle runs a payload."""
    with np.load(real, allow_pickle=True) as f:  # the published file: trusted
        arrays = dict(f)
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    arrays[key] = evil
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


# -- the real files need only the allowed globals, and read back the same ------------------


def _same(a, b) -> bool:
    if sp.issparse(a):
        return sp.issparse(b) and type(a) is type(b) and a.shape == b.shape and (a != b).nnz == 0
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_real_planetoid_pickles_read_as_pickle_reads_them(data_dir, name):
    for part in PLANETOID_PICKLES:
        path = data_dir / name / f"ind.{name}.{part}"
        with open(path, "rb") as fh:
            ours = restricted_load(fh, encoding="latin1")
        with open(path, "rb") as fh:
            plain = pickle.load(fh, encoding="latin1")
        assert _same(ours, plain), path


@pytest.mark.parametrize("rel", ["coauthor_cs/ms_academic_cs.npz", "coauthor_physics/ms_academic_phy.npz",
                                 "amazon_photo/amazon_electronics_photo.npz"])
def test_real_npz_reads_as_np_load_reads_it(data_dir, rel):
    ours = load_npz(data_dir / rel)
    with np.load(data_dir / rel, allow_pickle=True) as f:
        plain = dict(f)
    assert sorted(ours) == sorted(plain)
    for key in plain:
        assert _same(ours[key], plain[key]), key
    if "ms_academic" in rel:
        assert ours["class_names"].dtype == object and len(ours["class_names"]) > 1


@pytest.mark.parametrize("dataset,dgl_class", [("cora", "CoraGraphDataset"), ("coauthor-cs", "CoauthorCSDataset")])
def test_dataset_identical_to_dgl_unrestricted(data_dir, fresh_cache, tmp_path, dataset, dgl_class):
    """The suite's restricted load gives exactly what DGL's own (unrestricted) reader builds."""
    import dgl

    ours = load_dataset(dataset, seed=0, data_dir=data_dir)
    cls = getattr(dgl.data, dgl_class)
    source = D.DATASETS.get(dataset)(data_dir=data_dir)._locate()
    raw_dir = tmp_path / "plain"
    D.link_layout(D.dgl_raw_path(cls, raw_dir), source.files)
    g = cls(raw_dir=str(raw_dir), verbose=False)[0]
    src, dst = g.edges()
    assert torch.equal(ours.features, g.ndata["feat"].float())
    expected_graph = D.symmetric_graph(src, dst, g.num_nodes())
    assert all(torch.equal(a, b) for a, b in zip(ours.graph.edges(), expected_graph.edges()))
    labelled = ours.labels >= 0
    assert torch.equal(ours.labels[labelled], g.ndata["label"][labelled])
    if "train_mask" in g.ndata:
        assert torch.equal(ours.train_mask, g.ndata["train_mask"].bool())
        assert torch.equal(ours.test_mask, g.ndata["test_mask"].bool())


# -- poisoned files are refused, the payload never runs ---------------------------------------


def test_poisoned_planetoid_pickle_is_refused(data_dir, fresh_cache, tmp_path):
    data, bad, marker = poisoned_planetoid(data_dir, tmp_path)
    with pytest.raises(UnsafePickleError) as exc:
        load_dataset("cora", data_dir=data)
    assert not marker.exists(), "the payload ran"
    msg = str(exc.value)
    assert "\n" not in msg and str(bad) in msg and "posix.system" in msg and "'cora'" in msg
    assert isinstance(exc.value, ValueError)


def test_poisoned_gnn_benchmark_npz_is_refused(data_dir, fresh_cache, tmp_path):
    data, marker = tmp_path / "data", tmp_path / "PAYLOAD_RAN"
    bad = data / "coauthor_cs" / "ms_academic_cs.npz"
    poisoned_npz(data_dir / "coauthor_cs/ms_academic_cs.npz", bad, marker, "class_names")
    with pytest.raises(UnsafePickleError) as exc:
        load_dataset("coauthor-cs", data_dir=data)
    assert not marker.exists(), "the payload ran"
    msg = str(exc.value)
    assert "\n" not in msg and str(bad) in msg and "class_names" in msg and "posix.system" in msg


def test_poisoned_heterophilous_npz_is_refused(data_dir, fresh_cache, tmp_path):
    """The heterophilous loader calls np.load without allow_pickle: an object array is refused."""
    data, marker = tmp_path / "data", tmp_path / "PAYLOAD_RAN"
    bad = data / "heterophilous-graphs" / "chameleon.npz"
    poisoned_npz(data_dir / "heterophilous-graphs/chameleon.npz", bad, marker, "node_labels")
    with pytest.raises(DatasetFileError, match="allow_pickle"):
        load_dataset("chameleon", data_dir=data)
    assert not marker.exists(), "the payload ran"


def test_cli_refuses_poisoned_file_in_one_line(data_dir, fresh_cache, tmp_path, capsys):
    from bench_suite.cli import main

    data, bad, marker = poisoned_planetoid(data_dir, tmp_path)
    assert main(["train", "--data-dir", str(data), "dataset=cora", "model=gcn", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the payload ran"
    assert err.count("\n") == 1 and str(bad) in err and "posix.system" in err and "Traceback" not in err


def test_poisoned_integer_model_file_is_refused(tmp_path):
    from bench_suite.engine.intmodel import load

    path, marker = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    torch.save({"kind": "gcn", "state": Payload(marker)}, path)
    with pytest.raises(UnsafePickleError) as exc:
        load(path)
    assert not marker.exists(), "the payload ran"
    assert str(path) in str(exc.value) and "posix.system" in str(exc.value)


def test_poisoned_tensor_cache_entry_is_ignored(tmp_path):
    from bench_suite.data.files import load_tensors

    path, marker = tmp_path / "cora-0123.pt", tmp_path / "PAYLOAD_RAN"
    torch.save({"features": Payload(marker)}, path)
    assert load_tensors(path) is None  # rebuilt from the dataset files instead
    assert not marker.exists(), "the payload ran"
