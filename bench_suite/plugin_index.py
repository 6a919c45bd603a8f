"""A cached index of the registered plugins, so that ``bench-suite list`` need not import them.

Listing needs each entry's key, first doc line, parameters (defaults and ranges) and source
module, but reading them off the registries means importing every plugin, and with them torch
and dgl: seconds.  The index holds exactly those fields, taken from the registries after a full
import, in ``cache_dir()/plugin-index/`` (one file per installed copy of the package).

It is used only while its fingerprint matches.  The fingerprint covers the package and Python
versions, the entry points of the ``bench_suite.plugins`` group (name, target, distribution and
version) and the path and content of every ``.py`` file of ``bench_suite`` and of the top-level
packages those entry points name, so an edited, added or removed plugin file rebuilds the index.
Local ``--plugin`` modules are not indexed: listing with them imports everything, as before.
A plugin that takes its signature from a third-party package is covered only through that
package's distribution when it advertises the entry point itself.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Sequence

import bench_suite

#: bump when the index layout changes
INDEX_FORMAT = 1


def build_index() -> Dict[str, Any]:
    """``{registry name: {"kind", "entries": [{key, doc, source, params: [...]}]}}`` of the loaded registries."""
    from bench_suite.registry import REGISTRIES

    out: Dict[str, Any] = {}
    for name, reg in REGISTRIES.items():
        entries = []
        for key in reg.keys():
            entry = reg.entry(key)
            params = [{"name": p.name, "required": p.required, "default": None if p.required else repr(p.default),
                       "annotation": p.annotation,
                       "range": None if p.range is None else [p.range.low, p.range.high],
                       "text": p.describe()}
                      for p in reg.params(key)]
            entries.append({"key": key, "doc": entry.doc, "source": entry.source, "params": params})
        out[name] = {"kind": reg.kind, "entries": entries}
    return out


def _entry_points() -> List[List[str]]:
    from importlib.metadata import entry_points

    from bench_suite.registry import ENTRY_POINT_GROUP

    return sorted([ep.name, ep.value, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else ""]
                  for ep in entry_points(group=ENTRY_POINT_GROUP))


def _source_files(eps: Sequence[Sequence[str]]) -> List[Path]:
    """The ``.py`` files of ``bench_suite`` and of each entry point's top-level package (found, not imported)."""
    roots = [Path(bench_suite.__file__).resolve().parent]
    for _, value, _, _ in eps:
        top = value.split(":", 1)[0].split(".", 1)[0]
        spec = importlib.util.find_spec(top) if top != "bench_suite" else None
        if spec is None:
            continue
        if spec.submodule_search_locations:
            roots += [Path(p).resolve() for p in spec.submodule_search_locations]
        elif spec.origin and spec.origin.endswith(".py"):
            roots.append(Path(spec.origin).resolve())
    files = []
    for root in roots:
        files += [root] if root.is_file() else sorted(root.rglob("*.py"))
    return files


def fingerprint() -> str:
    """What the index depends on, hashed (see the module docstring)."""
    eps = _entry_points()
    h = hashlib.sha256(json.dumps([INDEX_FORMAT, bench_suite.__version__, platform.python_version(), eps]).encode())
    for path in _source_files(eps):
        h.update(str(path).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def index_path() -> Path:
    """This copy of the package's index file (copies in several checkouts do not overwrite each other)."""
    from bench_suite.cache import cache_dir

    where = hashlib.sha256(str(Path(bench_suite.__file__).resolve().parent).encode()).hexdigest()[:12]
    return cache_dir() / "plugin-index" / f"{where}.json"


def cached_index(current: str | None = None) -> Dict[str, Any] | None:
    """The stored index if its fingerprint is ``current`` (default: computed now), else None."""
    try:
        stored = json.loads(index_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("fingerprint") != (current or fingerprint()):
        return None
    return stored.get("registries")


def plugin_index(plugins: Sequence[str] = ()) -> Dict[str, Any]:
    """The index of every registered plugin: the cached one when current (and no ``--plugin`` modules),
    else built after importing every plugin and, without ``--plugin`` modules, stored for next time.

    The fingerprint is taken before the import, so a file edited while it runs leaves a stale
    fingerprint behind (the next call rebuilds), never a stale index under a current one.
    """
    from bench_suite.registry import load_all

    current = None if plugins else fingerprint()
    if current is not None:
        index = cached_index(current)
        if index is not None:
            return index
    load_all(plugins)
    index = build_index()
    if current is not None:
        _store(index, current)
    return index


def _store(index: Dict[str, Any], current: str) -> None:
    """Write the index; a cache that cannot be written only costs the next ``list`` its speed."""
    from bench_suite.record import write_json_atomic

    try:
        write_json_atomic(index_path(), {"fingerprint": current, "registries": index})
    except OSError:
        pass
