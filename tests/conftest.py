"""Shared fixtures: the offline data directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb (imported by dgl) checks PyPI for updates


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$BENCH_SUITE_DATA``, else ``../shared/datasets`` next to the project.

    A directory named by ``$BENCH_SUITE_DATA`` (as `make test` and CI set it) must exist: a
    wrong path fails the tests instead of silently skipping every real-data test.  Without
    the variable, a missing default directory skips them.
    """
    env = os.environ.get("BENCH_SUITE_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if not path.is_dir():
        if env:
            pytest.fail(f"BENCH_SUITE_DATA={env!r} is not a directory")
        pytest.skip(f"dataset directory {path} not found (set BENCH_SUITE_DATA)")
    return path.resolve()
