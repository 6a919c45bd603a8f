"""OGB node-property-prediction datasets through ogb's own ``DglNodePropPredDataset``.

OGB reads ``<root>/<dir_name>/raw/*.csv.gz`` and ``<root>/<dir_name>/split/<split>/*.csv.gz``
(``dir_name`` is the name with ``-`` replaced by ``_``, e.g. ``ogbn_arxiv``), writes
``<root>/<dir_name>/processed/`` and downloads only when ``raw/edge.csv.gz`` is absent.
It asks on stdin when the folder lacks ``RELEASE_v<version>.txt``, so that file is
written into the layout first.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import List
from unittest import mock

import pandas as pd
import torch

from bench_suite.restricted_unpickle import ModuleOverride


def ogb_meta(name: str) -> pd.Series:
    """The column of ogb's ``nodeproppred/master.csv`` for ``name``."""
    import ogb.nodeproppred

    master = pd.read_csv(
        os.path.join(os.path.dirname(ogb.nodeproppred.__file__), "master.csv"),
        index_col=0,
        keep_default_na=False,
    )
    if name not in master:
        raise ValueError(f"unknown OGB node dataset {name!r}; ogb knows {', '.join(master.keys())}")
    return master[name]


def ogb_dir_name(name: str) -> str:
    """OGB's folder name for ``name`` (``ogbn-arxiv`` -> ``ogbn_arxiv``)."""
    return "_".join(name.split("-"))


def ogb_expected_files(name: str) -> List[str]:
    """The files OGB reads for a homogeneous CSV dataset, relative to its folder."""
    meta = ogb_meta(name)
    if meta["binary"] == "True" or meta["is hetero"] == "True":
        raise ValueError(f"{name}: only homogeneous CSV-format OGB datasets are supported")
    files = ["raw/edge.csv.gz", "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz", "raw/node-label.csv.gz"]
    if meta["has_node_attr"] == "True":
        files.append("raw/node-feat.csv.gz")
    if meta["has_edge_attr"] == "True":
        files.append("raw/edge-feat.csv.gz")
    for key in ("additional node files", "additional edge files"):
        if meta[key] != "None":
            files += [f"raw/{f}.csv.gz" for f in meta[key].split(",")]
    files += [f"split/{meta['split']}/{part}.csv.gz" for part in ("train", "valid", "test")]
    return files


def _refuse_download(url: str) -> bool:
    raise RuntimeError(f"OGB wanted to download {url}, but downloads are not allowed")


def open_ogb(name: str, root: Path, allow_download: bool):
    """``DglNodePropPredDataset(name, root)``, never prompting on stdin.

    With ``allow_download`` the size confirmation OGB asks for (files > 1 GB) is
    answered yes, since the user asked for downloads; without it any download
    attempt raises instead of OGB's ``exit(-1)``.
    """
    from ogb.nodeproppred import dataset_dgl

    meta = ogb_meta(name)
    folder = root / ogb_dir_name(name)
    if folder.is_dir():
        release = folder / f"RELEASE_v{meta['version']}.txt"
        if not release.exists():
            release.touch()
    decide = (lambda url: True) if allow_download else _refuse_download
    # OGB reads a ``split/<split>/split_dict.pt`` shortcut with a plain torch.load when one
    # exists: a dict of index tensors, which ``weights_only=True`` reads without running code
    safe_torch = ModuleOverride(torch, load=functools.partial(torch.load, weights_only=True))
    with mock.patch.object(dataset_dgl, "decide_download", decide), mock.patch.object(dataset_dgl, "torch", safe_torch):
        return dataset_dgl.DglNodePropPredDataset(name=name, root=str(root))
