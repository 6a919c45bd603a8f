"""File plumbing for the loaders: fingerprints, symlinked layouts, locks, a tensor cache.

Nothing here copies a dataset file: DGL's and OGB's loaders are pointed at a
folder in the cache directory that holds symlinks, under the names they expect,
to the files in the data directory.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional
from unittest import mock

import numpy as np
import torch

from bench_suite.restricted_unpickle import ModuleOverride, restricted_load, restricted_np_load


def fingerprint(paths: Iterable[Path], *extra: object) -> str:
    """A short hash of each file's resolved path, size and mtime (plus ``extra``)."""
    h = hashlib.sha1()
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:16]


def link_layout(folder: Path, files: Mapping[str, Path]) -> Path:
    """Make ``folder/<name>`` a symlink to ``files[name]`` for every name; return ``folder``.

    Names may contain subfolders.  Links are replaced atomically, so concurrent
    processes building the same layout do not trip over each other.
    """
    for name, target in files.items():
        link = folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        target = Path(target).resolve()
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return folder


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: held while DGL's readers are patched, so threads of one process patch and restore in turn
_PATCH_LOCK = threading.RLock()


def _planetoid_pickle_load(fh) -> Any:
    """What DGL's ``citation_graph._pickle_load`` does (latin-1 Python-2 pickles), restricted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return restricted_load(fh, encoding="latin1")


def _restricted_load_info(path: str) -> Any:
    """DGL's ``load_info`` (the ``info.pkl`` next to its processed graph), restricted."""
    with open(path, "rb") as fh:
        return restricted_load(fh)


@contextmanager
def restricted_dgl_readers() -> Iterator[None]:
    """While it lasts, DGL's dataset classes read pickles only through the restricted unpickler.

    DGL opens the Planetoid ``ind.*`` files with ``pickle.load`` and the Amazon/Coauthor
    npz with ``np.load(allow_pickle=True)``; both can run code from a replaced file.  The
    module globals those readers use are swapped for
    :mod:`bench_suite.restricted_unpickle`'s (same results on the real files), so a file
    that needs any other global raises :class:`~bench_suite.restricted_unpickle.UnsafePickleError`.
    The geom-gcn and heterophilous readers call ``np.load`` without ``allow_pickle`` and
    need nothing.
    """
    import dgl.data.citation_graph as citation
    import dgl.data.gnn_benchmark as gnn_benchmark

    with _PATCH_LOCK, ExitStack() as stack:
        stack.enter_context(mock.patch.object(citation, "_pickle_load", _planetoid_pickle_load))
        stack.enter_context(mock.patch.object(citation, "load_info", _restricted_load_info))
        stack.enter_context(mock.patch.object(gnn_benchmark, "np", ModuleOverride(np, load=restricted_np_load)))
        yield


def save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    """``torch.save`` to a temporary name, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(tensors, tmp)
    os.replace(tmp, path)


def load_tensors(path: Path) -> Optional[Dict[str, torch.Tensor]]:
    """The dict saved by :func:`save_tensors`, or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a corrupt or foreign cache entry is rebuilt, never fatal
        return None
