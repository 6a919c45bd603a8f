"""File plumbing for the loaders: fingerprints, symlinked layouts, locks, a tensor cache.

Nothing here copies a dataset file: DGL's and OGB's loaders are pointed at a
folder in the cache directory that holds symlinks, under the names they expect,
to the files in the data directory.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Optional

import torch


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
