"""The node-classification datasets, registered in :data:`bench_suite.registry.DATASETS`.

Every dataset is read by DGL's or OGB's own loader (or, for chameleon/squirrel, a
small loader over the heterophilous-graphs npz files), from files in a data
directory (``--data-dir DIR`` or ``$BENCH_SUITE_DATA``).  The loaders are pointed at
a folder in :func:`~bench_suite.cache.cache_dir` holding symlinks, under the
names they expect, to the real files; nothing is copied.  A missing file raises
:class:`~bench_suite.data.errors.DatasetNotFoundError` before any work is done,
unless downloads are allowed (``download=True`` or ``$BENCH_SUITE_DOWNLOAD=1``), in
which case DGL/OGB download into ``cache_dir()/downloads``.

==================================  =====================================================
key                                 split parameters
==================================  =====================================================
cora, citeseer, pubmed              ``split="public"`` (Planetoid masks) or ``"random"``
                                    (20 per class / 500 / 1000, drawn from the run seed)
amazon-photo, amazon-computers,     random: 20 per class train, 30 per class val, rest
coauthor-cs, coauthor-physics       test, drawn from the run seed
chameleon, squirrel, actor,         ``split_index=0..9`` picks one of the 10 shipped
cornell, texas, wisconsin,          splits; ``None`` (default) uses ``seed % 10`` so
minesweeper, tolokers               runs with seeds 0..9 cover all ten
ogbn-arxiv, ogbn-products           the official OGB split
csbm                                generated (see :class:`CSBM`); 20 per class / 500 /
                                    rest, drawn from the run seed
==================================  =====================================================

Every dataset takes ``row_normalize`` (default False): True divides each feature row by its sum
(the ``preprocess_features`` of the GCN and GCNII authors' code; Planetoid's features come
row-normalised from DGL already).  And ``sparse_features`` (default False): True gives the features as a
torch CSR tensor (:mod:`bench_suite.sparse`), which models that declare ``sparse_input``
keep sparse up to their first product — the same results as the dense features up to
float rounding, far faster for bag-of-words inputs (Planetoid, Amazon, Coauthor,
geom-gcn).  Dense is the default, so specs that leave it unset keep their run ids
(:data:`bench_suite.spec.UNVERSIONED_DEFAULTS`).

The built graph of a dataset is cached: DGL and OGB keep their processed files
in the layout folder, the other loaders in ``cache_dir()/processed`` (keyed by the
source files' paths, sizes and mtimes), and the last few graphs stay in memory.
The tensors of a :class:`GraphData` are shared between loads of the same dataset
in one process: treat them as read-only.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Hashable, Optional, Tuple

import dgl
import numpy as np
import torch

from bench_suite.cache import cache_dir
from bench_suite.data.base import DOWNLOAD_ENV, GraphData, resolve_data_dir
from bench_suite.data.csbm import generate_csbm
from bench_suite.data.errors import DatasetFileError, DatasetNotFoundError
from bench_suite.data.files import (
    file_lock,
    fingerprint,
    link_layout,
    load_tensors,
    restricted_dgl_readers,
    save_tensors,
)
from bench_suite.data.ogb import ogb_dir_name, ogb_expected_files, open_ogb
from bench_suite.data.splits import Masks, fixed_split, index_to_mask, random_split
from bench_suite.registry import DATASETS
from bench_suite.restricted_unpickle import UnsafePickleError
from bench_suite.sparse import to_csr

__all__ = [
    "DatasetFileError",
    "DatasetNotFoundError",
    "NodeDataset",
    "CSBM",
    "load_dataset",
    "clear_memory_cache",
    "symmetric_graph",
    "dgl_raw_path",
]

#: bump when the layout of cached tensors changes
CACHE_VERSION = 1
#: how many built graphs stay in memory per process
MEMORY_CACHE_SIZE = 4
HETEROPHILOUS_URL = "https://github.com/yandex-research/heterophilous-graphs/raw/main/data/"


def load_dataset(
    name: str,
    seed: int = 0,
    data_dir: Optional[str | os.PathLike] = None,
    download: bool = False,
    **params: Any,
) -> GraphData:
    """Load registered dataset ``name`` with the split for run ``seed``."""
    dataset = DATASETS.create(name, data_dir=resolve_data_dir(data_dir), download=download, **params)
    return dataset.load(seed)


def download_allowed(flag: bool) -> bool:
    """``flag``, or ``$BENCH_SUITE_DOWNLOAD`` set to 1/true/yes/on."""
    return bool(flag) or os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def symmetric_graph(src: Any, dst: Any, num_nodes: int) -> dgl.DGLGraph:
    """An undirected simple DGL graph: both directions of each edge, no self-loops, no duplicates."""
    src = torch.as_tensor(src, dtype=torch.int64)
    dst = torch.as_tensor(dst, dtype=torch.int64)
    keep = src != dst
    return dgl.to_bidirected(dgl.graph((src[keep], dst[keep]), num_nodes=num_nodes))


def dgl_raw_path(cls: type, raw_dir: Path) -> Path:
    """The folder (``raw_path``) where DGL dataset class ``cls`` looks for its files.

    DGL names it ``<dataset name>_<hash of the download url>``; a subclass whose
    ``_load`` does nothing lets DGL compute it without touching any file.
    """
    probe = type(f"_Probe{cls.__name__}", (cls,), {"_load": lambda self: None})
    return Path(probe(raw_dir=str(raw_dir), verbose=False).raw_path)


# -- building blocks -------------------------------------------------------------


@dataclass
class _Base:
    """A dataset without a chosen split: the graph, features, labels and shipped masks."""

    graph: dgl.DGLGraph
    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    masks: Optional[Masks] = None  # shipped split(s): [N] or [N, K] bool each
    _csr: Optional[torch.Tensor] = field(default=None, init=False, repr=False)
    _row_normalized: Optional["_Base"] = field(default=None, init=False, repr=False)

    def csr_features(self) -> torch.Tensor:
        """The features as a CSR tensor (built once per built graph)."""
        if self._csr is None:
            self._csr = to_csr(self.features)
        return self._csr

    def features_as(self, sparse: bool, row_normalize: bool) -> torch.Tensor:
        """The features, row-normalised if asked (each row divided by its sum, a row summing to 0
        left as it is: GCN's and GCNII's ``preprocess_features``), dense or CSR; built once."""
        if not row_normalize:
            return self.csr_features() if sparse else self.features
        if self._row_normalized is None:
            rowsum = self.features.sum(1, keepdim=True)
            self._row_normalized = replace(self, features=self.features / torch.where(rowsum == 0, 1.0, rowsum))
        return self._row_normalized.features_as(sparse, False)

    def to_tensors(self) -> Dict[str, torch.Tensor]:
        src, dst = self.graph.edges()
        out = {
            "src": src,
            "dst": dst,
            "num_nodes": torch.tensor(self.graph.num_nodes()),
            "features": self.features,
            "labels": self.labels,
            "num_classes": torch.tensor(self.num_classes),
        }
        if self.masks is not None:
            out.update(zip(("train", "val", "test"), self.masks))
        return out

    @classmethod
    def from_tensors(cls, t: Dict[str, torch.Tensor]) -> "_Base":
        graph = dgl.graph((t["src"], t["dst"]), num_nodes=int(t["num_nodes"]))
        masks = (t["train"], t["val"], t["test"]) if "train" in t else None
        return cls(graph, t["features"], t["labels"], int(t["num_classes"]), masks)


@dataclass(frozen=True)
class _Source:
    """Where a dataset's files are.

    ``files`` maps the name the loader expects to a real file (empty when the
    loader downloads into ``download_dir`` itself); ``key`` identifies the content
    for the caches.
    """

    files: Dict[str, Path]
    key: str
    download_dir: Optional[Path] = None


class _LRU:
    """A small thread-safe least-recently-used cache of built datasets."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: "OrderedDict[Hashable, _Base]" = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], _Base]) -> _Base:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_MEMORY = _LRU(MEMORY_CACHE_SIZE)


def clear_memory_cache() -> None:
    """Forget the in-memory graphs (the next load reads the disk cache)."""
    _MEMORY.clear()


# -- loader families -------------------------------------------------------------


class NodeDataset:
    """Base of every dataset: ``_build`` makes the graph once, ``load(seed)`` adds the split."""

    #: registry key
    name: ClassVar[str] = ""
    #: name the underlying loader expects -> path under the data directory
    files: ClassVar[Dict[str, str]] = {}
    #: cache the built graph in cache_dir()/processed (loaders that do not cache themselves)
    disk_cache: ClassVar[bool] = False
    #: subfolder of cache_dir()/downloads that DGL/OGB download into
    _download_family: ClassVar[str] = "dgl"
    #: the metric the dataset's literature reports (:data:`bench_suite.train.METRICS`)
    metric: ClassVar[str] = "accuracy"

    def __init__(self, data_dir: Optional[str | os.PathLike] = None, download: bool = False,
                 sparse_features: bool = False, row_normalize: bool = False) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.download = download_allowed(download)
        self.sparse_features = bool(sparse_features)
        if not isinstance(row_normalize, bool):
            raise ValueError(f"{self.name}: row_normalize={row_normalize!r} is not valid; use true or false")
        self.row_normalize = row_normalize

    def load(self, seed: int) -> GraphData:
        """The dataset with the split for run ``seed``."""
        source = self._locate()
        key = (type(self).__qualname__, source.key, self._base_params())
        base = _MEMORY.get_or_build(key, lambda: self._checked_build(source))
        (train, val, test), split, info = self._split(base, seed)
        return GraphData(
            name=self.name,
            graph=base.graph,
            features=base.features_as(self.sparse_features, self.row_normalize),
            labels=base.labels,
            train_mask=train,
            val_mask=val,
            test_mask=test,
            num_classes=base.num_classes,
            split=split,
            info=info,
            metric=self.metric,
        )

    # -- hooks --------------------------------------------------------------
    def expected_files(self) -> Dict[str, str]:
        """Name the loader expects -> path relative to the data directory."""
        return dict(self.files)

    def _base_params(self) -> Tuple[Any, ...]:
        """Constructor parameters that change the built graph (not just the split)."""
        return ()

    def _build(self, source: _Source) -> _Base:
        raise NotImplementedError

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        raise NotImplementedError

    def _download_source(self) -> _Source:
        """Where the loader downloads to (the default: DGL/OGB download themselves)."""
        folder = cache_dir() / "downloads" / self._download_family
        return _Source({}, f"download:{folder}", folder)

    def check_files(self) -> None:
        """Raise :class:`DatasetNotFoundError` now if the files are missing (stat only, no loading)."""
        self._locate()

    def check_readable(self) -> None:
        """Read the files once now, filling the loaders' caches: a missing, truncated or refused file
        raises here (:class:`DatasetNotFoundError`, :class:`DatasetFileError`, ``UnsafePickleError``)
        instead of in every run.  A generated dataset has nothing to check."""
        source = self._locate()
        if source.files or source.download_dir is not None:
            self._checked_build(source)

    # -- shared machinery ---------------------------------------------------
    def _locate(self) -> _Source:
        """Find every expected file, or fall back to downloading, or raise; cheap (stat only)."""
        expected = self.expected_files()
        if self.data_dir is not None:
            found = {name: self.data_dir / rel for name, rel in expected.items()}
            missing = [rel for name, rel in expected.items() if not found[name].is_file()]
            if not missing:
                return _Source(found, fingerprint(found.values(), self.name, CACHE_VERSION))
        else:
            missing = list(expected.values())
        if self.download:
            return self._download_source()
        raise DatasetNotFoundError(self.name, missing, self.data_dir)

    def _checked_build(self, source: _Source) -> _Base:
        """:meth:`_cached_build`, turning a loader's failure on local files into a clear error."""
        try:
            return self._cached_build(source)
        except DatasetNotFoundError:
            raise
        except UnsafePickleError as exc:  # already one line naming the file and the global
            raise UnsafePickleError(exc.path, exc.global_name, exc.allowed, context=f"dataset {self.name!r}") from None
        except Exception as exc:  # noqa: BLE001 - any loader failure on files the user pointed us at
            if not source.files:
                raise
            rel = sorted(self.expected_files().values())
            raise DatasetFileError(self.name, rel, self.data_dir, f"{type(exc).__name__}: {exc}") from exc

    def _cached_build(self, source: _Source) -> _Base:
        if not (self.disk_cache and source.files):
            return self._build(source)
        path = cache_dir() / "processed" / f"{self.name}-{source.key}.pt"
        stored = load_tensors(path)
        if stored is not None:
            return _Base.from_tensors(stored)
        base = self._build(source)
        save_tensors(path, base.to_tensors())
        return base


class _DGLDataset(NodeDataset):
    """Read by DGL's own dataset class ``dgl.data.<dgl_class>`` from a symlinked raw folder."""

    dgl_class: ClassVar[str] = ""

    def _build(self, source: _Source) -> _Base:
        cls = getattr(dgl.data, self.dgl_class)
        if source.download_dir is not None:
            raw_dir = source.download_dir
        else:
            raw_dir = cache_dir() / "dgl" / f"{self.name}-{source.key}"
            link_layout(dgl_raw_path(cls, raw_dir), source.files)
        with file_lock(raw_dir / ".lock"), restricted_dgl_readers():
            ds = cls(raw_dir=str(raw_dir), verbose=False)
        g = ds[0]
        masks = None
        if "train_mask" in g.ndata:
            masks = tuple(g.ndata[k].bool() for k in ("train_mask", "val_mask", "test_mask"))
        src, dst = g.edges()
        return _Base(
            symmetric_graph(src, dst, g.num_nodes()),
            g.ndata["feat"].float(),
            g.ndata["label"].long(),
            int(ds.num_classes),
            masks,
        )


class _FixedSplits(NodeDataset):
    """Ten shipped splits; ``split_index=None`` picks ``seed % 10``."""

    def __init__(
        self,
        data_dir: Optional[str | os.PathLike] = None,
        download: bool = False,
        split_index: Optional[int] = None,
        sparse_features: bool = False,
        row_normalize: bool = False,
    ) -> None:
        super().__init__(data_dir, download, sparse_features, row_normalize)
        if split_index is not None and not 0 <= int(split_index) < 10:
            raise ValueError(f"{self.name}: split_index must be in 0..9 or None, got {split_index}")
        self.split_index = None if split_index is None else int(split_index)

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        assert base.masks is not None
        k = self.split_index if self.split_index is not None else seed % base.masks[0].shape[1]
        return fixed_split(*base.masks, k), "fixed", {"split_index": k}


class _Planetoid(_DGLDataset):
    """Planetoid citation graph through DGL (features row-normalised by DGL)."""

    def __init__(
        self,
        data_dir: Optional[str | os.PathLike] = None,
        download: bool = False,
        split: str = "public",
        sparse_features: bool = False,
        row_normalize: bool = False,
    ) -> None:
        super().__init__(data_dir, download, sparse_features, row_normalize)
        if split not in ("public", "random"):
            raise ValueError(f"{self.name}: split must be 'public' or 'random', got {split!r}")
        self.split = split

    def _build(self, source: _Source) -> _Base:
        base = super()._build(source)
        # CiteSeer's isolated test-range nodes have no label (DGL gives them 0): mark them -1.
        test = base.masks[2]
        idx = torch.nonzero(test).view(-1)
        unlabelled = torch.zeros_like(test)
        unlabelled[int(idx.min()) : int(idx.max()) + 1] = True
        unlabelled &= ~test
        base.labels = base.labels.clone()
        base.labels[unlabelled] = -1
        return base

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        if self.split == "public":
            return base.masks, "public", {}
        return random_split(base.labels, seed, 20, num_val=500, num_test=1000), "random", {"seed": seed}


class _GNNBenchmark(_DGLDataset):
    """Amazon/Coauthor graphs (Shchur et al.); random split 20 / 30 per class / rest."""

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        return random_split(base.labels, seed, 20, val_per_class=30), "random", {"seed": seed}


class _DGLFixedSplits(_FixedSplits, _DGLDataset):
    """Read by DGL (geom-gcn raw layout or heterophilous npz); DGL does not cache these."""

    disk_cache = True


class _HeterophilousNpz(_FixedSplits):
    """Read directly from a heterophilous-graphs ``<name>.npz`` file."""

    disk_cache = True

    def _download_source(self) -> _Source:
        root = cache_dir() / "downloads"
        files = {}
        for name, rel in self.expected_files().items():
            path = root / rel
            if not path.is_file():
                dgl.data.utils.download(HETEROPHILOUS_URL + Path(rel).name, path=str(path))
            files[name] = path
        return _Source(files, fingerprint(files.values(), self.name, CACHE_VERSION))

    def _build(self, source: _Source) -> _Base:
        with np.load(source.files["data.npz"]) as d:
            edges = torch.from_numpy(d["edges"])
            labels = torch.from_numpy(d["node_labels"]).long()
            masks = tuple(torch.from_numpy(d[f"{k}_masks"].T.copy()).bool() for k in ("train", "val", "test"))
            features = torch.from_numpy(d["node_features"]).float()
        graph = symmetric_graph(edges[:, 0], edges[:, 1], labels.shape[0])
        return _Base(graph, features, labels, int(labels.max()) + 1, masks)


class _OGBDataset(NodeDataset):
    """Read by ogb's ``DglNodePropPredDataset`` from a symlinked ``<root>/<ogbn_name>/`` folder."""

    _download_family = "ogb"

    def expected_files(self) -> Dict[str, str]:
        folder = ogb_dir_name(self.name)
        return {f"{folder}/{f}": f"{folder}/{f}" for f in ogb_expected_files(self.name)}

    def _build(self, source: _Source) -> _Base:
        if source.download_dir is not None:
            root = source.download_dir
        else:
            root = link_layout(cache_dir() / "ogb" / f"{self.name}-{source.key}", source.files)
        with file_lock(root / ".lock"):
            ds = open_ogb(self.name, root, allow_download=self.download)
        g, labels = ds[0]
        n = g.num_nodes()
        split = ds.get_idx_split()
        masks = tuple(index_to_mask(split[k], n) for k in ("train", "valid", "test"))
        src, dst = g.edges()
        return _Base(symmetric_graph(src, dst, n), g.ndata["feat"].float(), labels.view(-1).long(), int(ds.num_classes), masks)

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        return base.masks, "public", {}


# -- the registered datasets -----------------------------------------------------

_PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def _planetoid_files(name: str, dgl_name: str) -> Dict[str, str]:
    return {f"ind.{dgl_name}.{p}": f"{name}/ind.{name}.{p}" for p in _PLANETOID_PARTS}


def _geom_gcn_files(name: str, dgl_name: str) -> Dict[str, str]:
    files = {f: f"geom-gcn/new_data/{name}/{f}" for f in ("out1_node_feature_label.txt", "out1_graph_edges.txt")}
    for k in range(10):
        files[f"{dgl_name}_split_0.6_0.2_{k}.npz"] = f"geom-gcn/splits/{name}_split_0.6_0.2_{k}.npz"
    return files


def _register(key: str, family: type, doc: str, **attrs: Any) -> type:
    cls = type(key.title().replace("-", ""), (family,), {"name": key, "__doc__": doc, "__module__": __name__, **attrs})
    return DATASETS.register(key, cls)


_register("cora", _Planetoid, "Cora citation graph (Planetoid; DGL CoraGraphDataset).",
          dgl_class="CoraGraphDataset", files=_planetoid_files("cora", "cora_v2"))
_register("citeseer", _Planetoid, "CiteSeer citation graph (Planetoid; DGL CiteseerGraphDataset).",
          dgl_class="CiteseerGraphDataset", files=_planetoid_files("citeseer", "citeseer"))
_register("pubmed", _Planetoid, "PubMed citation graph (Planetoid; DGL PubmedGraphDataset).",
          dgl_class="PubmedGraphDataset", files=_planetoid_files("pubmed", "pubmed"))

for _key, _cls, _dgl_name, _rel in (
    ("amazon-photo", "AmazonCoBuyPhotoDataset", "amazon_co_buy_photo", "amazon_photo/amazon_electronics_photo.npz"),
    ("amazon-computers", "AmazonCoBuyComputerDataset", "amazon_co_buy_computer",
     "amazon_computers/amazon_electronics_computers.npz"),
    ("coauthor-cs", "CoauthorCSDataset", "coauthor_cs", "coauthor_cs/ms_academic_cs.npz"),
    ("coauthor-physics", "CoauthorPhysicsDataset", "coauthor_physics", "coauthor_physics/ms_academic_phy.npz"),
):
    _register(_key, _GNNBenchmark, f"{_key} co-purchase/co-authorship graph (DGL {_cls}).",
              dgl_class=_cls, files={f"{_dgl_name}.npz": _rel})

for _key, _cls, _name in (
    ("actor", "ActorDataset", "film"),
    ("cornell", "CornellDataset", "cornell"),
    ("texas", "TexasDataset", "texas"),
    ("wisconsin", "WisconsinDataset", "wisconsin"),
):
    _register(_key, _DGLFixedSplits, f"{_key} (geom-gcn raw files; DGL {_cls}); 10 fixed 60/20/20 splits.",
              dgl_class=_cls, files=_geom_gcn_files(_name, _key))

# Binary and imbalanced: Platonov et al., ICLR 2023 (sec. 3) report ROC-AUC for them.
for _key, _cls in (("minesweeper", "MinesweeperDataset"), ("tolokers", "TolokersDataset")):
    _register(_key, _DGLFixedSplits, f"{_key} (heterophilous-graphs npz; DGL {_cls}); 10 fixed splits; ROC-AUC.",
              dgl_class=_cls, files={f"{_key}.npz": f"heterophilous-graphs/{_key}.npz"}, metric="roc_auc")

for _key in ("chameleon", "squirrel"):
    _register(_key, _HeterophilousNpz, f"{_key} (heterophilous-graphs npz); the 10 geom-gcn splits.",
              files={"data.npz": f"heterophilous-graphs/{_key}.npz"})

for _key in ("ogbn-arxiv", "ogbn-products"):
    _register(_key, _OGBDataset, f"{_key} (OGB raw CSV layout <data-dir>/{ogb_dir_name(_key)}/); official split.")


@DATASETS.register("csbm")
class CSBM(NodeDataset):
    """Contextual stochastic block model, generated (no files).

    The graph, features and labels depend only on the parameters and
    ``graph_seed``, so every run seed sees the same graph; the split (20 per class
    / 500 / rest, clipped on small graphs) is drawn from the run seed.  See
    :func:`bench_suite.data.csbm.generate_csbm`.
    """

    name = "csbm"

    def __init__(
        self,
        data_dir: Optional[str | os.PathLike] = None,
        download: bool = False,
        nodes: int = 1000,
        classes: int = 4,
        avg_degree: float = 8.0,
        homophily: float = 0.8,
        feature_dim: int = 64,
        signal: float = 1.0,
        graph_seed: int = 0,
        sparse_features: bool = False,
        row_normalize: bool = False,
    ) -> None:
        super().__init__(data_dir, download, sparse_features, row_normalize)
        self.params = dict(nodes=int(nodes), classes=int(classes), avg_degree=float(avg_degree),
                           homophily=float(homophily), feature_dim=int(feature_dim), signal=float(signal))
        self.graph_seed = int(graph_seed)

    def _locate(self) -> _Source:
        return _Source({}, "generated")

    def _base_params(self) -> Tuple[Any, ...]:
        return tuple(sorted(self.params.items())) + (("graph_seed", self.graph_seed),)

    def _build(self, source: _Source) -> _Base:
        src, dst, x, y = generate_csbm(**self.params, seed=self.graph_seed)
        graph = symmetric_graph(src, dst, self.params["nodes"])
        return _Base(graph, torch.from_numpy(x), torch.from_numpy(y), self.params["classes"])

    def _split(self, base: _Base, seed: int) -> Tuple[Masks, str, Dict[str, Any]]:
        masks = random_split(base.labels, seed, 20, num_val=500)
        info = {"seed": seed, "graph_seed": self.graph_seed, "homophily": self.params["homophily"]}
        return masks, "random", info
