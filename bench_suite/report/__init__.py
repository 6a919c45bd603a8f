"""Reports rendered from the result store: aggregates, tables, figures, an index.

``render_report(["results/smoke"], "reports/smoke")`` reads only stored run
records and writes ``aggregates.csv``, ``tables/`` (Markdown, LaTeX, CSV),
``figures/`` (PNG) and ``README.md``.  The same records give the same bytes.
(Imported lazily, so ``bench-suite --help`` does not load pandas.)
"""
from __future__ import annotations

from typing import Any

__all__ = ["ReportResult", "render_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bench_suite.report import render

        return getattr(render, name)
    raise AttributeError(f"module 'bench_suite.report' has no attribute {name!r}")
