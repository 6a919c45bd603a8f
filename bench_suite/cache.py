"""Where bench_suite keeps what it can rebuild: processed graphs, downloads, the plugin index."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BENCH_SUITE_CACHE``, else ``$XDG_CACHE_HOME/bench_suite`` (default ``~/.cache/bench_suite``); created."""
    root = os.environ.get("BENCH_SUITE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bench_suite"
    )
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
