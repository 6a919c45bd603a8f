"""``<out>/README.md``: the index of a rendered report.

It shows every table (inline, with links to its LaTeX and CSV forms) and every
figure, the command and git commits behind them, the environment the records
were produced in, and a "missing / failed" section.  No rendering timestamp:
only times recorded in the records appear, so the index is deterministic.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import pandas as pd

from bench_suite.record import OK
from bench_suite.report.aggregate import Store
from bench_suite.report.compare import Comparison
from bench_suite.report.figures import Figure
from bench_suite.report.tables import Table


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _table_block(t: Table) -> List[str]:
    return [t.markdown(), f"[Markdown](tables/{t.name}.md) · [LaTeX](tables/{t.name}.tex) · [CSV](tables/{t.name}.csv)",
            ""]


def _counts(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "0 training runs"
    c = runs["status"].value_counts().sort_index()
    return f"{len(runs)} training runs (" + ", ".join(f"{n} {s}" for s, n in c.items()) + ")"


def _comparison_section(c: Comparison) -> List[str]:
    lines = ["## Comparison with another result store", "",
             f"- A (this report): {', '.join(f'`{r}`' for r in c.roots_a)}",
             f"- B (`--against`): {', '.join(f'`{r}`' for r in c.roots_b)}",
             f"- {c.count('both')} groups in both, {c.count('A')} only in A, {c.count('B')} only in B "
             "(a group: the spec without the seed)", "",
             "Cells: mean over the finished seeds of each store and their count; A − B, the difference of the "
             "means, with its Welch 95% interval (– when a side has fewer than two seeds).", ""]
    return lines + _table_block(c.table)


def write_index(out: Path, store: Store, runs: pd.DataFrame, status: pd.DataFrame, tables: Sequence[Table],
                speed: Sequence[Table], figures: Sequence[Figure], command: str, commit: str,
                table_note: str, not_run: pd.DataFrame | None = None, comparison: Comparison | None = None,
                across: Sequence[str] = ()) -> Path:
    """Write ``out/README.md`` and return its path (``across``: the across-dataset section's lines)."""
    newest = max([str(r.get("finished") or r.get("timestamp") or "") for r in store.train + store.speed] + [""])
    lines = ["# Benchmark report", "",
             "Rendered by `bench-suite report` from stored run records only; regenerate it, do not edit it.", "",
             f"- command: `{command}`",
             f"- rendered at git commit: `{commit}`",
             f"- records read from: {', '.join(f'`{r}`' for r in store.roots)}",
             f"- {_counts(runs)}; {len(store.speed)} speed records",
             f"- newest record finished: {newest or 'n/a'}", ""]
    if store.empty:
        lines += ["**No records found.** Nothing to aggregate: run a matrix first "
                  "(`bench-suite run smoke`), then render again.", ""]
    lines += ["## Files", "", "- [aggregates.csv](aggregates.csv): per group (spec without the seed) and metric: "
              "n, expected seeds, mean, unbiased std, 95% t-interval, min, max, missing/failed seeds", ""]

    lines += ["## Accuracy tables", ""]
    if tables:
        lines += [table_note, "",
                  "Cells: mean ± unbiased std over seeds; bold: best in its column; "
                  "† a group with failed or missing seeds (footnote says which).", ""]
        lines += [line for t in tables for line in _table_block(t)]
    else:
        lines += ["No training records: no accuracy tables.", ""]

    lines += list(across)

    if comparison is not None:
        lines += _comparison_section(comparison)

    lines += ["## Speed and size", ""]
    if speed:
        lines += [line for t in speed for line in _table_block(t)]
    else:
        lines += ["No speed records (a matrix of kind speed, or `bench-suite speed --results`, writes them): "
                  "no speed tables.", ""]

    lines += ["## Figures", ""]
    if figures:
        for f in figures:
            lines += [f"### {f.title}", "", f"![{f.title}]({_rel(f.path, out)})", "", f.caption, ""]
    else:
        lines += ["No figures (no successful training runs).", ""]

    lines += ["## Missing / failed", ""]
    bad = status[~status["complete"].astype(bool)] if not status.empty else status
    if len(bad):
        lines += ["| dataset | method | quantizer | depth | seeds | failed | missing |",
                  "|:---|:---|:---|---:|:---|:---|:---|"]
        for r in bad.itertuples():
            lines.append(f"| {r.dataset} | {r.method} | {r.quantizer} | {r.depth} | {r.note.split(':')[0]} | "
                         f"{r.seeds_failed or '–'} | {r.seeds_missing or '–'} |")
        lines.append("")
        errs = runs[runs["status"] != OK] if not runs.empty else runs
        if len(errs):
            lines += ["Errors of failed runs:", ""]
            for r in errs.itertuples():
                msg = str(r.error or "no error message").strip().splitlines()
                lines.append(f"- `{r.run_id}` {r.dataset} {r.method} {r.quantizer} L={r.depth} seed {r.seed} "
                             f"({r.status}): {msg[-1] if msg else ''}")
            lines.append("")
    elif store.empty:
        lines += ["Everything is missing: the store holds no records.", ""]
    else:
        lines += ["None: every group has all its expected seeds.", ""]
    if not_run is not None and len(not_run):
        lines += [f"Not run yet: {int(not_run['runs'].sum())} runs of the matrix without a record "
                  "(`bench-suite run MATRIX` resumes them):", "",
                  "| matrix | dataset | method | quantizer | depth | runs |", "|:---|:---|:---|:---|---:|---:|"]
        for r in not_run.itertuples():
            lines.append(f"| {r.matrix} | {r.dataset} | {r.method} | {r.quantizer} | {r.depth} | {r.runs} |")
        lines.append("")
    if store.skipped:
        lines += ["Files skipped (not run records):", ""]
        lines += [f"- `{p}`: {why}" for p, why in sorted(store.skipped)]
        lines.append("")
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
