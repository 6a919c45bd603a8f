"""Reports rendered from the result store: aggregates, tables, figures, an index.

``render_report(["results/smoke"], "reports/smoke")`` reads only stored run
records and writes ``aggregates.csv``, ``tables/`` (Markdown, LaTeX, CSV),
``figures/`` (PNG) and ``README.md``.  The same records give the same bytes.
"""
from __future__ import annotations

from bench_suite.report.render import ReportResult, render_report

__all__ = ["ReportResult", "render_report"]
