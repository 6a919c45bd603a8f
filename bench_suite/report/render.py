"""Render a whole report directory from a result store (the ``report`` subcommand's work)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

import pandas as pd

from bench_suite.record import SPEED, TRAIN, group_key, method_label, quantizer_label
from bench_suite.report.across import across_section
from bench_suite.report.aggregate import (Store, aggregate, duplicate_runs, group_status, layers_frame, load_store,
                                          runs_frame, short_hash, smp_frame)
from bench_suite.report.compare import Comparison, compare_stores
from bench_suite.report.reproduce import reproduction_tables
from bench_suite.report.tables import bits_tables, depth_tables, gap_tables

if TYPE_CHECKING:
    from bench_suite.spec import RunSpec

DEPTH_NOTE = ("Tables by bit width show each method at its shallowest depth in the records "
              "(the conventional setting: a 2-layer GCN, the smallest K of a decoupled model); "
              "`--depth N` fixes one depth for all methods.")


@dataclass
class ReportResult:
    """What was written (paths relative to the output directory) and what is incomplete."""

    out: Path
    files: List[str] = field(default_factory=list)
    n_train: int = 0
    n_speed: int = 0
    incomplete_groups: int = 0
    not_run: int = 0
    #: copies of a run id dropped from the records read (:func:`duplicate_runs`), and from ``against``'s
    duplicates: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicates_against: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparison: Optional[Comparison] = None


NOT_RUN_COLUMNS = ["matrix", "dataset", "method", "quantizer", "depth", "runs"]


def not_run(matrices: Sequence[str | Path], store: Store) -> pd.DataFrame:
    """Runs of ``matrices`` (shipped names or YAML paths) that have no record in ``store``, per group.

    A group that has no record at all never shows up in the aggregates; this is how the
    report still says it is missing.
    """
    return _not_run(_matrix_specs(matrices), store)


def matrix_seeds(matrices: Sequence[str | Path]) -> Dict[str, Set[int]]:
    """Per group id (spec without the seed), the seeds ``matrices`` run it with: a matrix may run some
    groups with fewer seeds (smoke's Cora runs have seed 0 only), which are then not 'missing' seeds."""
    return _seeds_by_group(_matrix_specs(matrices))


def _matrix_specs(matrices: Sequence[str | Path]) -> List[Tuple[str, "RunSpec"]]:
    """(matrix name, spec) of every run of ``matrices``, expanded once."""
    from bench_suite.runner.matrix import expand_matrix, load_matrix

    out = []
    for m in matrices:
        matrix = load_matrix(m)
        out.extend((matrix.name, s) for s in expand_matrix(matrix))
    return out


def _not_run(specs, store: Store) -> pd.DataFrame:
    have = {r.get("run_id") for r in store.train + store.speed}
    rows = [{"matrix": name, "dataset": (s.data.get("dataset") or s.data.get("graph") or {}).get("name", "?"),
             "method": method_label(s.data) + (" (speed)" if s.kind == SPEED else ""),
             "quantizer": quantizer_label(s.data), "depth": int(s.data["model"].get("depth", 0) or 0)}
            for name, s in specs if s.run_id not in have]
    if not rows:
        return pd.DataFrame(columns=NOT_RUN_COLUMNS)
    df = pd.DataFrame(rows)
    return df.groupby(NOT_RUN_COLUMNS[:-1], sort=True).size().rename("runs").reset_index()


def _seeds_by_group(specs) -> Dict[str, Set[int]]:
    out: Dict[str, Set[int]] = {}
    for _, s in specs:
        if s.kind == TRAIN:  # the groups of training runs; speed measurements are tables of their own
            out.setdefault(short_hash(group_key(s.data)), set()).add(s.seed)
    return out


def render_report(results: Sequence[str | Path], out: str | Path, seeds: Optional[Sequence[int]] = None,
                  depth: Optional[int] = None, metric: str = "test_score", command: Optional[str] = None,
                  figures: bool = True, matrices: Sequence[str | Path] = (),
                  against: Sequence[str | Path] = ()) -> ReportResult:
    """Read records under ``results`` and write the report into ``out`` (its generated parts replaced).

    ``matrices``: matrices the records belong to; their runs without a record are listed as not run.
    ``against``: another store to compare with, group by group (``tables/comparison.*`` and a section
    of the README).
    """
    from bench_suite.env import git_commit
    from bench_suite.report.index import write_index
    from bench_suite.report.speed import breakdown_tables, speed_frame, speed_tables

    out = Path(out)
    store = load_store(results)
    runs = runs_frame(store, seeds)
    specs = _matrix_specs(matrices)  # expanded once: listed as not run, and each group's expected seeds
    pending = _not_run(specs, store)
    expected = _seeds_by_group(specs) if matrices else None
    status = group_status(runs, seeds, expected)
    agg = aggregate(runs, seeds, expected)
    for sub in ("tables", "figures"):
        shutil.rmtree(out / sub, ignore_errors=True)  # stale files of an earlier render
    out.mkdir(parents=True, exist_ok=True)
    written = []
    agg_path = out / "aggregates.csv"
    agg.to_csv(agg_path, index=False, lineterminator="\n", float_format="%.10g")
    written.append(agg_path)

    tables = (reproduction_tables(runs, metric) + bits_tables(agg, metric, depth) + depth_tables(agg, metric)
              + gap_tables(runs, metric))
    speed = speed_tables(speed_frame(store)) + breakdown_tables(store)
    comparison, dups_against = None, pd.DataFrame()
    if against:
        store_b = load_store(against)
        comparison = compare_stores(runs, runs_frame(store_b, seeds), results, against, metric)
        dups_against = duplicate_runs(store_b, seeds)
    across = across_section(runs, metric)  # None below three datasets
    for t in tables + speed + ([comparison.table] if comparison else []) + (across.tables if across else []):
        written += t.write(out / "tables")
    figs = []
    if figures and not runs.empty:
        from bench_suite.report.figures import (bitwidth_figures, depth_figures, method_figures, oversmoothing_figures,
                                                smp_figures)

        figs = (depth_figures(runs, out / "figures", metric) + method_figures(runs, out / "figures", metric)
                + bitwidth_figures(runs, out / "figures", metric)
                + oversmoothing_figures(layers_frame(runs), out / "figures")
                + smp_figures(smp_frame(runs), out / "figures"))
        written += [f.path for f in figs]
    across_figs = across.draw(out / "figures") if across and figures and not runs.empty else []
    written += [f.path for f in across_figs]
    note = DEPTH_NOTE if depth is None else f"Tables by bit width show every method at depth {depth}."
    cmd = command or "bench-suite report " + " ".join(map(str, results)) + f" --out {out}"
    written.append(write_index(out, store, runs, status, tables, speed, figs, cmd, git_commit(), note,
                               pending, comparison, across.markdown(across_figs, out) if across else ()))
    return ReportResult(out, sorted(p.relative_to(out).as_posix() for p in written), len(store.train),
                        len(store.speed), int((~status["complete"].astype(bool)).sum()) if len(status) else 0,
                        int(pending["runs"].sum()) if len(pending) else 0,
                        duplicate_runs(store, seeds), dups_against, comparison)
