"""Paper-style tables in Markdown, LaTeX (booktabs) and CSV from aggregated groups.

Cells read ``mean ± std`` (accuracies in percent); the best mean of a column is
bold; a group with failed or missing seeds carries a ``†`` and a footnote such as
``n=7/10: seeds 3,5 failed, 8 missing`` in every table that shows it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

DAGGER = "†"
EMPTY = "–"


@dataclass
class Table:
    """A rendered table: header, body cells, bold flags and footnotes."""

    name: str          # file stem, e.g. ``acc_by_bits_cora``
    title: str
    header: List[str]
    rows: List[List[str]]
    bold: List[List[bool]] = field(default_factory=list)
    footnotes: List[str] = field(default_factory=list)
    n_label_cols: int = 1

    def markdown(self) -> str:
        def cell(text: str, b: bool) -> str:
            return f"**{text}**" if b and text not in ("", EMPTY) else text

        lines = [f"**{self.title}**", "",
                 "| " + " | ".join(self.header) + " |",
                 "|" + "|".join([":---"] * self.n_label_cols + ["---:"] * (len(self.header) - self.n_label_cols)) + "|"]
        for row, bold in zip(self.rows, self._bold()):
            lines.append("| " + " | ".join(cell(c, b) for c, b in zip(row, bold))+ " |")
        if self.footnotes:
            lines.append("")
            lines.extend(f"{DAGGER} {f}  " for f in self.footnotes)
        return "\n".join(lines).rstrip() + "\n"

    def latex(self) -> str:
        def cell(text: str, b: bool) -> str:
            t = latex_escape(text)
            return f"\\textbf{{{t}}}" if b and text not in ("", EMPTY) else t

        spec = "l" * self.n_label_cols + "r" * (len(self.header) - self.n_label_cols)
        lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(self.title)}}}",
                 f"\\label{{tab:{self.name.replace('_', '-')}}}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(latex_escape(h) for h in self.header) + " \\\\", "\\midrule"]
        for row, bold in zip(self.rows, self._bold()):
            lines.append(" & ".join(cell(c, b) for c, b in zip(row, bold)) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.footnotes:
            lines.append("\\par\\smallskip\\footnotesize")
            lines.extend(f"{latex_escape(DAGGER + ' ' + f)}\\\\" for f in self.footnotes)
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        return pd.DataFrame(self.rows, columns=self.header).to_csv(index=False, lineterminator="\n")

    def _bold(self) -> List[List[bool]]:
        return self.bold or [[False] * len(r) for r in self.rows]

    def write(self, directory: Path) -> List[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.markdown()), ("tex", self.latex()), ("csv", self.csv())):
            p = directory / f"{self.name}.{ext}"
            p.write_text(text, encoding="utf-8")
            paths.append(p)
        return paths


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "×": r"$\times$", "−": r"$-$", DAGGER: r"$^\dagger$", EMPTY: "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


# --------------------------------------------------------------------------- cells

def is_fraction(metric: str) -> bool:
    """Accuracy, ROC-AUC and ``*_score`` (the dataset's metric, either of the two) lie in [0, 1]."""
    return metric.endswith(("_acc", "_roc_auc", "_score"))


def metric_scale(metric: str) -> float:
    """Fractions (accuracy, ROC-AUC) are stored in [0, 1] and shown in percent."""
    return 100.0 if is_fraction(metric) else 1.0


def higher_is_better(metric: str) -> bool:
    return is_fraction(metric)


def format_cell(row: pd.Series, metric: str) -> str:
    """``81.5 ± 0.6`` (``†`` when seeds are failed/missing; ``–`` when no seed succeeded)."""
    s = metric_scale(metric)
    if row["n"] == 0 or math.isnan(row["mean"]):
        text = EMPTY
    elif math.isnan(row["std"]):
        text = f"{row['mean'] * s:.1f}"
    else:
        text = f"{row['mean'] * s:.1f} ± {row['std'] * s:.1f}"
    return text + (DAGGER if not row["complete"] else "")


def _footnote(row: pd.Series) -> str:
    return f"{row['method']} {row['quantizer']} (L={row['depth']}): {row['note']}"


def _pivot_table(agg: pd.DataFrame, name: str, title: str, row_cols: Sequence[str], col_col: str,
                 col_order: Sequence, col_names: Dict, metric: str, row_header: Sequence[str]) -> Table:
    """Rows = unique ``row_cols`` tuples (sorted), columns = ``col_order`` of ``col_col``."""
    rows, bold_vals, foot = [], [], []
    keys = sorted({tuple(r) for r in agg[list(row_cols)].itertuples(index=False)}, key=_sort_key)
    by_cell = {(tuple(r[c] for c in row_cols), r[col_col]): r for _, r in agg.iterrows()}
    for key in keys:
        cells, vals = list(map(str, key)), []
        for col in col_order:
            r = by_cell.get((key, col))
            if r is None:
                cells.append("")
                vals.append(None)
                continue
            cells.append(format_cell(r, metric))
            vals.append(None if r["n"] == 0 else round(r["mean"] * metric_scale(metric), 1))
            if not r["complete"]:
                foot.append(_footnote(r))
        rows.append(cells)
        bold_vals.append(vals)
    bold = [[False] * len(row_cols) + [False] * len(col_order) for _ in rows]
    for j in range(len(col_order)):
        col_vals = [v[j] for v in bold_vals if v[j] is not None]
        if len(col_vals) < 2:
            continue
        best = max(col_vals) if higher_is_better(metric) else min(col_vals)
        for i, v in enumerate(bold_vals):
            bold[i][len(row_cols) + j] = v[j] == best
    header = list(row_header) + [col_names.get(c, str(c)) for c in col_order]
    return Table(name, title, header, rows, bold, sorted(set(foot), key=str), n_label_cols=len(row_cols))


def _sort_key(key):
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in key)


def bits_name(bits: int) -> str:
    return "FP32" if bits == 32 else f"INT{bits}"


def quant_family(quantizer: str) -> str:
    """``QLR INT2 BT*`` → ``QLR BT*`` (the bit width becomes the column)."""
    return " ".join(p for p in quantizer.split(" ") if not (p.startswith("INT") and p[3:].isdigit()))


def slug(text: str) -> str:
    out = "".join(c if c.isascii() and c.isalnum() else "-" for c in str(text).lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "x"


def bits_tables(agg: pd.DataFrame, metric: str = "test_score", depth: Optional[int] = None) -> List[Table]:
    """Per dataset: (method, quantizer family) × bit width at one depth per method.

    ``depth=None`` takes each method's shallowest depth present for that dataset (the
    conventional setting, e.g. a 2-layer GCN); a given ``depth`` fixes it for all.  A dataset
    run at one bit width only (an FP32 depth study) gets no table: it would be one column of
    the depth table.
    """
    data = agg[agg["metric"] == metric].copy()
    tables = []
    for dataset, sub in sorted(data.groupby("dataset"), key=lambda kv: kv[0]):
        if sub["bits"].nunique() < 2:
            continue
        if depth is None:
            shallow = sub.groupby("method")["depth"].transform("min")
            sub = sub[sub["depth"] == shallow]
            where = "each method at its shallowest depth"
        else:
            sub = sub[sub["depth"] == depth]
            where = f"depth {depth}"
        if sub.empty:
            continue
        sub = sub.assign(family=sub["quantizer"].map(quant_family))
        bits = sorted(set(sub["bits"]), key=lambda b: -b)
        t = _pivot_table(sub, f"acc_by_bits_{slug(dataset)}" + (f"_L{depth}" if depth else ""),
                         f"{dataset}: {metric} (%) by bit width, {where}" if metric_scale(metric) != 1
                         else f"{dataset}: {metric} by bit width, {where}",
                         ["method", "depth", "family"], "bits", bits, {b: bits_name(b) for b in bits},
                         metric, ["method", "depth", "quantizer"])
        tables.append(t)
    return tables


def depth_tables(agg: pd.DataFrame, metric: str = "test_score") -> List[Table]:
    """Per dataset and bit width: (method, quantizer) × depth."""
    data = agg[agg["metric"] == metric]
    tables = []
    for (dataset, bits), sub in sorted(data.groupby(["dataset", "bits"]), key=lambda kv: (kv[0][0], -kv[0][1])):
        depths = sorted(set(int(d) for d in sub["depth"]))
        unit = " (%)" if metric_scale(metric) != 1 else ""
        tables.append(_pivot_table(sub, f"acc_by_depth_{slug(dataset)}_{bits_name(bits).lower()}",
                                   f"{dataset}, {bits_name(bits)}: {metric}{unit} by depth",
                                   ["method", "quantizer"], "depth", depths, {d: f"L={d}" for d in depths},
                                   metric, ["method", "quantizer"]))
    return tables


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95):
    """Mean of ``a`` minus mean of ``b`` and its two-sided Welch t interval (scipy's unequal-variance
    t-test); the interval is NaN when either side has fewer than two values."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return d, float("nan"), float("nan")
    if x.std() == 0 and y.std() == 0:  # no spread: the difference is exact (scipy would give NaN)
        return d, d, d
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(level)
    return d, float(ci.low), float(ci.high)


def gap_tables(runs: pd.DataFrame, metric: str = "test_score") -> List[Table]:
    """Per dataset: (method, depth) × quantizer, each cell the quantized model's change from the
    same method at the same depth in FP32 (difference of the seed means, in points for accuracies)
    with its Welch 95% interval: how far from full precision each quantizer stays.  Only seeds that
    finished count; a cell names its seed counts when either side is short of the other."""
    col = f"metric.{metric}"
    if col not in runs or runs.empty:
        return []
    ok = runs[(runs["status"] == "ok") & runs[col].notna()]
    scale = metric_scale(metric)
    tables = []
    for dataset, sub in sorted(ok.groupby("dataset"), key=lambda kv: kv[0]):
        fp32 = {(m, int(d)): g[col].tolist() for (m, d), g in sub[sub["bits"] == 32].groupby(["method", "depth"])}
        has_base = pd.Series([(m, int(d)) in fp32 for m, d in zip(sub["method"], sub["depth"])], index=sub.index)
        quant = sub[(sub["bits"] != 32) & has_base]
        orphans = sorted({(str(m), int(d)) for m, d in sub[(sub["bits"] != 32) & ~has_base][["method", "depth"]]
                          .itertuples(index=False)}, key=_sort_key)
        if quant.empty:
            continue
        order = [q for _, q in sorted({(-int(b), str(q)) for b, q in zip(quant["bits"], quant["quantizer"])})]
        cells = {(m, int(d), q): g[col].tolist() for (m, d, q), g in quant.groupby(["method", "depth", "quantizer"])}
        rows = []
        for m, d in sorted({(m, d) for m, d, _ in cells}, key=_sort_key):
            base = fp32[(m, d)]
            row = [str(m), str(d), f"{scale * sum(base) / len(base):.1f}"]
            for q in order:
                vals = cells.get((m, d, q))
                if vals is None:
                    row.append("")
                    continue
                diff, lo, hi = welch_interval(vals, base)
                text = f"{scale * diff:+.1f}" + ("" if math.isnan(lo) else f" [{scale * lo:+.1f}, {scale * hi:+.1f}]")
                row.append(text + ("" if len(vals) == len(base) else f" (n={len(vals)}/{len(base)})"))
            rows.append(row)
        unit = " points" if scale != 1 else ""
        tables.append(Table(f"gap_to_fp32_{slug(dataset)}",
                            f"{dataset}: {metric} change from FP32 ({unit.strip() or 'difference'}, "
                            f"Welch 95% interval), same method and depth",
                            ["method", "depth", "FP32"] + order, rows,
                            footnotes=[f"{m} (L={d}): quantized runs but no finished FP32 run to compare with"
                                       for m, d in orphans], n_label_cols=2))
    return tables
