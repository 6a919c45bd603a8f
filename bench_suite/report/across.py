"""The comparison across datasets: ranks of the quantizers, their gap to FP32 per dataset, and
the gap against depth on homophilous and heterophilous graphs.

Rendered when the quantized runs of the records cover at least :data:`MIN_DATASETS` datasets (a store
whose other datasets hold FP32 runs only has nothing to compare there), the way benchmark papers
compare methods over many data sets (Demšar, JMLR 7, 2006):

* a *block* is one dataset × method (architecture) × depth; a quantizer's score in a block is the
  mean over its finished seeds of the dataset's own metric (``test_score``: accuracy, or ROC-AUC
  where the dataset is scored so), in percent;
* within a block the compared quantizers are ranked, 1 the best, ties sharing the average of the
  ranks they span; the average rank over blocks orders them.  Only blocks holding every compared
  quantizer count (a quantizer with no finished seed in a block drops the block; the section says
  how many);
* the Friedman test asks whether the average ranks differ more than chance would; the Nemenyi
  post-hoc test calls two quantizers different when their average ranks differ by at least the
  critical difference CD = q_α·sqrt(k(k+1)/(6N)), q_α the studentized range quantile over √2
  (Demšar's Table 5); the critical-difference diagram joins quantizers closer than CD.  The
  pairwise Wilcoxon signed-rank tests on the block scores, Holm-corrected, are listed too
  (Benavoli et al., JMLR 17, 2016, prefer them to Nemenyi's);
* the gap to FP32 of a quantized model is its block score minus the same method's FP32 score at
  the same depth on the same dataset, in points.

The statistics are scipy's (``friedmanchisquare``, ``wilcoxon``, ``studentized_range``): no other
dependency.  Everything is computed from the records alone, sorted before use, and formatted with
fixed precision, so the same records give byte-identical tables; the figures use the report's
fixed Matplotlib settings (:mod:`bench_suite.report.figures`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench_suite.report.aggregate import OK
from bench_suite.report.tables import Table, higher_is_better, metric_scale, quant_family, slug

#: the section renders only when quantized runs cover at least this many datasets
MIN_DATASETS = 3
ALPHA = 0.05
#: datasets whose edges mostly join nodes of the same class, and those whose edges mostly do not
#: (Platonov et al., ICLR 2023; Pei et al., ICLR 2020): the two groups of the depth figure
HOMOPHILOUS = ("cora", "citeseer", "pubmed", "amazon-photo", "amazon-computers", "coauthor-cs",
               "coauthor-physics", "ogbn-arxiv", "ogbn-products")
HETEROPHILOUS = ("chameleon", "squirrel", "actor", "cornell", "texas", "wisconsin", "minesweeper",
                 "tolokers")
BLOCK = ["dataset", "method", "depth"]


# --------------------------------------------------------------------------- statistics

def block_ranks(scores: pd.DataFrame, higher: bool = True) -> pd.DataFrame:
    """Rank the columns (methods) within each row (block): 1 the best, ties the average of the
    ranks they span (``scipy.stats.rankdata(method="average")``)."""
    from scipy.stats import rankdata

    values = scores.to_numpy(dtype=float)
    ranks = rankdata(-values if higher else values, method="average", axis=1)
    return pd.DataFrame(ranks, index=scores.index, columns=scores.columns)


def friedman(scores: pd.DataFrame) -> Tuple[float, float]:
    """Friedman's χ² (with scipy's correction for ties) and its p-value, over the rows (blocks) of
    ``scores``; NaN for fewer than three methods or two blocks, or when every block is one tie."""
    from scipy.stats import friedmanchisquare

    if scores.shape[1] < 3 or scores.shape[0] < 2:
        return float("nan"), float("nan")
    if all(len(set(row)) == 1 for row in scores.itertuples(index=False)):
        return float("nan"), float("nan")
    res = friedmanchisquare(*[scores[c].to_numpy(dtype=float) for c in scores.columns])
    return float(res.statistic), float(res.pvalue)


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """q_α of the Nemenyi test for ``k`` methods: the studentized range quantile (infinite degrees
    of freedom) over √2, the value Demšar (2006) tabulates (k = 4, α = 0.05: 2.569)."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(1 - alpha, k, math.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """The Nemenyi critical difference of average ranks: q_α·sqrt(k(k+1)/(6N))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def cliques(avg_ranks: pd.Series, cd: float) -> List[Tuple[str, ...]]:
    """Maximal groups of methods, consecutive in rank order, whose average ranks span less than
    ``cd`` (no pair within is significantly different): the bars of a critical-difference diagram.
    Groups of one method are left out."""
    order = avg_ranks.sort_values(kind="stable")
    names, ranks = list(order.index), order.to_numpy(dtype=float)
    spans = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return [tuple(names[a:b + 1]) for a, b in spans]


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m − i + 1), made
    non-decreasing in that order and capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for i, idx in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired scores (1.0 when every pair is equal): the
    exact distribution for up to 50 pairs without zero or tied differences, else the normal
    approximation with scipy's corrections for ties and zeros (scipy's own choice for small samples
    with ties, a permutation test, takes seconds a pair)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.all(d == 0):
        return 1.0
    nonzero = np.abs(d[d != 0])
    exact = len(nonzero) == len(d) <= 50 and len(np.unique(nonzero)) == len(nonzero)
    return float(wilcoxon(d, method="exact" if exact else "approx").pvalue)


@dataclass
class RankComparison:
    """Average ranks of ``k`` methods over ``n`` complete blocks, with the tests on them."""

    name: str                     # e.g. ``INT4`` or ``all``
    avg_ranks: pd.Series          # method -> average rank, best first
    n: int                        # blocks compared
    dropped: int                  # blocks left out for lacking a method
    statistic: float
    pvalue: float
    cd: float
    cliques: List[Tuple[str, ...]]
    pairwise: pd.DataFrame        # a, b, rank_diff, nemenyi, wilcoxon_p, holm_p
    wins: pd.Series = field(default_factory=pd.Series)  # method -> blocks where it ranks first (ties shared)

    @property
    def k(self) -> int:
        return len(self.avg_ranks)


def compare(name: str, scores: pd.DataFrame, higher: bool = True, alpha: float = ALPHA) -> Optional[RankComparison]:
    """Rank the columns of ``scores`` (blocks × methods, NaN where a block lacks a method) over its
    complete rows; None for fewer than two methods or two complete blocks."""
    complete = scores.dropna()
    if scores.shape[1] < 2 or len(complete) < 2:
        return None
    ranks = block_ranks(complete, higher)
    avg = ranks.mean().sort_values(kind="stable")
    k, n = complete.shape[1], len(complete)
    cd = critical_difference(k, n, alpha)
    firsts = ranks.eq(ranks.min(axis=1), axis=0)
    wins = firsts.div(firsts.sum(axis=1), axis=0).sum()
    rows = []
    methods = list(avg.index)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            rows.append({"a": a, "b": b, "rank_diff": float(avg[b] - avg[a]),
                         "wilcoxon_p": wilcoxon_p(complete[a].to_numpy(), complete[b].to_numpy())})
    pairwise = pd.DataFrame(rows, columns=["a", "b", "rank_diff", "wilcoxon_p"])
    pairwise["nemenyi"] = pairwise["rank_diff"] >= cd
    pairwise["holm_p"] = holm(pairwise["wilcoxon_p"]) if len(pairwise) else []
    stat, p = friedman(complete)
    return RankComparison(name, avg, n, len(scores) - n, stat, p, cd, cliques(avg, cd), pairwise,
                          wins.reindex(methods))


# --------------------------------------------------------------------------- frames

def block_scores(runs: pd.DataFrame, metric: str = "test_score") -> pd.DataFrame:
    """Per block and quantizer: the mean over finished seeds of ``metric`` (in percent for
    fractions) and the number of seeds; columns dataset, method, depth, quantizer, bits, family,
    score, n."""
    col = f"metric.{metric}"
    cols = BLOCK + ["quantizer", "bits", "family", "score", "n"]
    if col not in runs or runs.empty:
        return pd.DataFrame(columns=cols)
    ok = runs[(runs["status"] == OK) & runs[col].notna()]
    g = ok.groupby(BLOCK + ["quantizer", "bits"], sort=True)[col]
    out = pd.concat([g.mean().rename("score") * metric_scale(metric), g.size().rename("n")], axis=1).reset_index()
    out["depth"] = out["depth"].astype(int)
    out["bits"] = out["bits"].astype(int)
    out["family"] = out["quantizer"].map(quant_family)
    return out[cols]


def dataset_group(dataset: str) -> str:
    """``homophilous``, ``heterophilous`` or ``other`` (a label's disambiguating suffix ignored)."""
    name = str(dataset).split(" [", 1)[0]
    return "homophilous" if name in HOMOPHILOUS else "heterophilous" if name in HETEROPHILOUS else "other"


def dataset_order(datasets: Sequence[str]) -> List[str]:
    """Homophilous datasets first, then heterophilous ones, each in the order of their tuple, then
    any other dataset by name."""
    known = {d: i for i, d in enumerate(HOMOPHILOUS + HETEROPHILOUS)}

    def key(d: str):
        name = str(d).split(" [", 1)[0]
        return (known.get(name, len(known)), str(d))
    return sorted(set(datasets), key=key)


def quantizer_order(frame: pd.DataFrame, col: str = "quantizer") -> List[str]:
    """Labels of ``col``, widest bit width first, then by name."""
    return [q for _, q in sorted({(-int(b), str(q)) for b, q in zip(frame["bits"], frame[col])})]


def rank_comparisons(scores: pd.DataFrame, higher: bool = True, alpha: float = ALPHA) -> List[RankComparison]:
    """The quantizers at each bit width (by family: QAT, DQ, QLR, QLR BT*, ...), then every
    quantizer and bit width together with FP32 as a reference (``all``)."""
    comps = []
    quant = scores[scores["bits"] != 32]
    for bits in sorted(set(int(b) for b in quant["bits"]), reverse=True):
        sub = quant[quant["bits"] == bits]
        wide = sub.pivot_table(index=BLOCK, columns="family", values="score", aggfunc="mean", sort=True)
        c = compare(f"INT{bits}", wide, higher, alpha)
        if c is not None:
            comps.append(c)
    if scores["quantizer"].nunique() > 2:
        wide = scores.pivot_table(index=BLOCK, columns="quantizer", values="score", aggfunc="mean", sort=True)
        c = compare("all", wide[quantizer_order(scores)], higher, alpha)
        if c is not None:
            comps.append(c)
    return comps


def gap_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Per block and quantized model: its score minus the same block's FP32 score (points), and the
    dataset's group; blocks without an FP32 score are left out."""
    fp32 = scores[scores["bits"] == 32][BLOCK + ["score"]].rename(columns={"score": "fp32"})
    q = scores[scores["bits"] != 32].merge(fp32, on=BLOCK, how="inner")
    q["gap"] = q["score"] - q["fp32"]
    q["group"] = q["dataset"].map(dataset_group)
    return q.sort_values(BLOCK + ["bits", "quantizer"], ascending=[True, True, True, False, True]).reset_index(drop=True)


def dataset_gaps(gaps: pd.DataFrame) -> pd.DataFrame:
    """Datasets × quantizer: the mean over the dataset's blocks (methods × depths) of the gap to FP32."""
    wide = gaps.pivot_table(index="dataset", columns="quantizer", values="gap", aggfunc="mean")
    return wide.reindex(index=dataset_order(gaps["dataset"]), columns=quantizer_order(gaps))


def group_depth_gaps(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per group (homophilous / heterophilous), method, depth and quantizer: the mean over the
    group's datasets of the gap to each dataset's FP32 at that depth, and how many datasets."""
    known = gaps[gaps["group"] != "other"]
    cols = ["group", "method", "depth", "quantizer", "bits", "gap", "datasets"]
    if known.empty:
        return pd.DataFrame(columns=cols)
    g = known.groupby(["group", "method", "depth", "quantizer", "bits"], sort=True)["gap"]
    out = pd.concat([g.mean(), g.size().rename("datasets")], axis=1).reset_index()
    return out[cols]


# --------------------------------------------------------------------------- tables

def _num(x: float, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _comparison_title(c: RankComparison, metric: str) -> str:
    what = (f"{c.name}: average rank of each quantizer" if c.name != "all"
            else "All bit widths: average rank of each quantizer and FP32")
    p = _p(c.pvalue)
    test = (f"Friedman χ² = {_num(c.statistic, '.2f')}, p {p.replace('<', '< ') if p.startswith('<') else '= ' + p}"
            if not math.isnan(c.statistic)
            else "Friedman test: not applicable with two methods (see the Wilcoxon test)" if c.k < 3
            else "Friedman test: not applicable (every block a tie)")
    return (f"{what} over {c.n} blocks (dataset × method × depth, {metric}); {test}; "
            f"Nemenyi CD (α = {ALPHA:g}) = {c.cd:.3f}")


def rank_table(c: RankComparison, metric: str) -> Table:
    best = c.avg_ranks.index[0]
    holm_vs_best = {(r.b if r.a == best else r.a): r.holm_p for r in c.pairwise.itertuples() if best in (r.a, r.b)}
    rows, bold = [], []
    for m, r in c.avg_ranks.items():
        rows.append([str(m), f"{r:.3f}", f"{c.wins[m]:.1f}", "–" if m == best else _p(holm_vs_best.get(m)),
                     "–" if m == best else ("yes" if r - c.avg_ranks[best] >= c.cd else "no")])
        bold.append([False, m == best, False, False, False])
    notes = [f"{c.dropped} block(s) left out: a compared quantizer had no finished seed there"] if c.dropped else []
    return Table(f"across_ranks_{slug(c.name)}", _comparison_title(c, metric),
                 ["quantizer", "average rank", "blocks won", "Wilcoxon–Holm p vs best", "Nemenyi: differs from best"],
                 rows, bold, notes)


def pairwise_table(c: RankComparison) -> Table:
    rows = [[str(r.a), str(r.b), f"{r.rank_diff:.3f}", "yes" if r.nemenyi else "no", _p(r.wilcoxon_p), _p(r.holm_p)]
            for r in c.pairwise.itertuples()]
    return Table(f"across_pairwise_{slug(c.name)}",
                 f"{c.name}: every pair, the better-ranked first; Nemenyi at α = {ALPHA:g} (CD = {c.cd:.3f}); "
                 f"Wilcoxon signed-rank over the {c.n} blocks' scores, Holm-corrected over the {len(rows)} pairs",
                 ["better", "worse", "rank difference", "Nemenyi significant", "Wilcoxon p", "Holm p"], rows,
                 n_label_cols=2)


def dataset_gap_table(wide: pd.DataFrame, metric: str) -> Table:
    rows = [[str(d), dataset_group(d)] + [_num(v, "+.1f") for v in wide.loc[d]] for d in wide.index]
    return Table("across_gap_to_fp32", f"Gap to FP32 per dataset: {metric} of each quantizer minus FP32's, "
                                       "same method and depth, mean over the dataset's methods and depths (points)",
                 ["dataset", "group"] + [str(q) for q in wide.columns], rows, n_label_cols=2)


def group_depth_table(frame: pd.DataFrame, metric: str) -> Table:
    order = quantizer_order(frame)
    cells = {(g, m, int(d), q): (gap, n) for g, m, d, q, gap, n in
             frame[["group", "method", "depth", "quantizer", "gap", "datasets"]].itertuples(index=False)}
    keys = sorted({(g, m, int(d)) for g, m, d, _ in cells}, key=lambda k: (k[0] != "homophilous", k[1], k[2]))
    rows = []
    for g, m, d in keys:
        row = [g, str(m), str(d)]
        for q in order:
            v = cells.get((g, m, d, q))
            row.append("" if v is None else f"{v[0]:+.1f} ({v[1]})")
        rows.append(row)
    return Table("across_depth_groups", f"Gap to FP32 against depth, by group: mean over the group's datasets of "
                                        f"{metric} minus the dataset's FP32 at the same method and depth "
                                        "(points; in brackets, how many datasets)",
                 ["group", "method", "depth"] + order, rows, n_label_cols=3)


# --------------------------------------------------------------------------- figures

def cd_diagram(c: RankComparison, path: Path, title: str):
    """A critical-difference diagram (Demšar 2006, Fig. 1): the rank axis with rank 1 on the left,
    each method hung from its average rank, the CD as a bar above the axis, and thick bars joining
    the methods not significantly different (:func:`cliques`)."""
    from bench_suite.report.figures import Figure, _mpl, _save

    plt, _ = _mpl()
    names, ranks = list(c.avg_ranks.index), c.avg_ranks.to_numpy(dtype=float)
    k = len(names)
    lo, hi = 1.0, float(max(k, 2))
    span = hi - lo
    n_left = (k + 1) // 2
    step, bar0, bar_step = 0.28, 0.22, 0.11
    first = bar0 + bar_step * len(c.cliques) + 0.1
    depth = first + step * max(n_left, k - n_left)
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.75 * depth))
    ax.set_axis_off()
    right_end = max(hi, lo + c.cd)
    ax.set_xlim(lo - 0.75 * span, right_end + 0.75 * span)
    ax.set_ylim(depth + 0.1, -0.75)
    ax.hlines(0, lo, hi, color="black", linewidth=1.0)
    for t in range(1, int(hi) + 1):
        ax.vlines(t, -0.06, 0, color="black", linewidth=1.0)
        ax.text(t, -0.1, str(t), ha="center", va="bottom", fontsize=9)
    for t in np.arange(1.5, hi, 1.0):
        ax.vlines(t, -0.03, 0, color="black", linewidth=0.6)
    ax.hlines(-0.5, lo, lo + c.cd, color="black", linewidth=1.2)
    ax.vlines([lo, lo + c.cd], -0.54, -0.46, color="black", linewidth=1.2)
    ax.text(lo + c.cd / 2, -0.56, f"CD = {c.cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, clique in enumerate(c.cliques):
        xs = [c.avg_ranks[m] for m in clique]
        y = bar0 + bar_step * i
        ax.hlines(y, min(xs) - 0.03, max(xs) + 0.03, color="black", linewidth=3.0)
    for i, (m, r) in enumerate(zip(names[:n_left], ranks[:n_left])):
        y = first + step * i
        ax.vlines(r, 0, y, color="black", linewidth=0.8)
        ax.hlines(y, lo - 0.1 * span, r, color="black", linewidth=0.8)
        ax.text(lo - 0.12 * span, y, f"{m} ({r:.2f})", ha="right", va="center", fontsize=9)
    right = list(zip(names[n_left:], ranks[n_left:]))[::-1]
    for i, (m, r) in enumerate(right):
        y = first + step * i
        ax.vlines(r, 0, y, color="black", linewidth=0.8)
        ax.hlines(y, r, hi + 0.1 * span, color="black", linewidth=0.8)
        ax.text(hi + 0.12 * span, y, f"({r:.2f}) {m}", ha="left", va="center", fontsize=9)
    ax.set_title(title)
    _save(fig, path)
    caption = (f"Average rank over {c.n} blocks (dataset × method × depth), 1 the best. Thick bars join "
               f"quantizers whose average ranks differ by less than the Nemenyi critical difference "
               f"(CD = {c.cd:.2f}, α = {ALPHA:g}): not significantly different.")
    return Figure(path, title, caption)


def gap_heatmap(wide: pd.DataFrame, path: Path, metric: str):
    """Datasets × quantizer heat map of the gap to FP32 (points), diverging at 0, annotated."""
    from bench_suite.report.figures import Figure, _mpl, _save

    plt, sns = _mpl()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * wide.shape[1], 1.2 + 0.38 * wide.shape[0]))
    data = wide.astype(float)
    vmax = float(np.nanmax(np.abs(data.to_numpy()))) if np.isfinite(data.to_numpy()).any() else 1.0
    sns.heatmap(data, ax=ax, cmap="RdBu", center=0.0, vmin=-max(vmax, 1e-9), vmax=max(vmax, 1e-9), annot=True,
                fmt="+.1f", annot_kws={"fontsize": 7}, mask=data.isna(), linewidths=0.5, linecolor="white",
                cbar_kws={"label": "points vs FP32"})
    groups = [dataset_group(d) for d in wide.index]
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i, color="black", linewidth=1.2)
    ax.grid(False)
    ax.set(xlabel="quantizer", ylabel="dataset")
    title = f"Gap to FP32 per dataset ({metric}, points)"
    ax.set_title(title)
    _save(fig, path)
    return Figure(path, title, "Each cell: the quantizer's score minus FP32's for the same method and depth, "
                               "averaged over the dataset's methods and depths; homophilous datasets above the "
                               "line, heterophilous below; numbers in tables/across_gap_to_fp32.csv.")


def group_depth_figure(frame: pd.DataFrame, path: Path, metric: str):
    """One panel per group (rows) and method (columns): x the depth, one line per quantizer."""
    from bench_suite.report.figures import Figure, _depth_axis, _legend, _mpl, _save, palette

    plt, sns = _mpl()
    groups = [g for g in ("homophilous", "heterophilous") if g in set(frame["group"])]
    methods = sorted(set(frame["method"]))
    order = quantizer_order(frame)
    colors = palette(order)
    fig, axes = plt.subplots(len(groups), len(methods), figsize=(3.6 * len(methods) + 1.8, 3.2 * len(groups)),
                             sharey=True, squeeze=False)
    for i, g in enumerate(groups):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            sub = frame[(frame["group"] == g) & (frame["method"] == m)].sort_values(["quantizer", "depth"])
            if len(sub):
                sns.lineplot(data=sub, x="depth", y="gap", hue="quantizer", hue_order=order, palette=colors,
                             style="quantizer", style_order=order, markers=True, dashes=False, errorbar=None,
                             ax=ax, legend=(i == 0 and j == len(methods) - 1))
                _depth_axis(ax, sub["depth"].tolist())
            ax.axhline(0.0, color="grey", linestyle="--", linewidth=1.0)
            ax.set(title=f"{g}: {m}", xlabel="depth (log2 scale)" if i == len(groups) - 1 else "",
                   ylabel="gap to FP32 (points)" if j == 0 else "")
    _legend(axes[0][-1], 99)
    title = f"Gap to FP32 against depth, homophilous and heterophilous datasets ({metric})"
    fig.suptitle(title)
    _save(fig, path)
    return Figure(path, title, "Mean over each group's datasets of the quantized model's score minus the "
                               "dataset's FP32 score for the same method and depth (dashed: no gap); numbers in "
                               "tables/across_depth_groups.csv.")


# --------------------------------------------------------------------------- section

@dataclass
class AcrossSection:
    """The tables, figures (drawn by :meth:`draw`) and README text of the across-dataset section."""

    metric: str
    datasets: List[str]
    comparisons: List[RankComparison]
    gaps: pd.DataFrame
    dataset_gaps: pd.DataFrame
    depth_gaps: pd.DataFrame
    tables: List[Table] = field(default_factory=list)

    def draw(self, directory: Path) -> list:
        figs = [cd_diagram(c, directory / f"across_cd_{slug(c.name)}.png",
                           f"Critical difference: {c.name if c.name != 'all' else 'all bit widths and FP32'}")
                for c in self.comparisons]
        if not self.dataset_gaps.empty:
            figs.append(gap_heatmap(self.dataset_gaps, directory / "across_gap_heatmap.png", self.metric))
        if not self.depth_gaps.empty:
            figs.append(group_depth_figure(self.depth_gaps, directory / "across_depth_groups.png", self.metric))
        return figs

    def markdown(self, figures: Sequence, out: Path) -> List[str]:
        """The README section; ``figures`` as :meth:`draw` returned them (none without figures)."""
        groups = {g: [d for d in self.datasets if dataset_group(d) == g]
                  for g in ("homophilous", "heterophilous", "other")}
        lines = ["## Across datasets", "",
                 f"{len(self.datasets)} datasets: " + "; ".join(f"{g} ({len(ds)}): {', '.join(ds)}"
                                                                for g, ds in groups.items() if ds) + ".", "",
                 "A block is one dataset × method × depth; a quantizer's score in a block is the mean over its "
                 f"finished seeds of `{self.metric}` (each dataset's own metric). Within a block the quantizers are "
                 "ranked (1 the best, ties share the average rank); a block counts only if it holds every compared "
                 "quantizer. The Friedman test (scipy) asks whether the average ranks differ beyond chance; the "
                 "Nemenyi test calls two quantizers different when their average ranks differ by at least the "
                 "critical difference CD = q_α·sqrt(k(k+1)/(6N)) (Demšar 2006); the pairwise Wilcoxon signed-rank "
                 "tests, Holm-corrected, are the stricter check (Benavoli et al. 2016). Blocks won: blocks where "
                 "the quantizer ranks first (a tie shares the block).", ""]
        by_path = {Path(f.path).name: f for f in figures}
        if not self.comparisons:
            lines += ["No bit width has two quantizers in two complete blocks: no ranks.", ""]
        tables = {t.name: t for t in self.tables}
        for c in self.comparisons:
            lines += [f"### {c.name if c.name != 'all' else 'All bit widths, FP32 included'}", ""]
            for name in (f"across_ranks_{slug(c.name)}", f"across_pairwise_{slug(c.name)}"):
                t = tables[name]
                lines += [t.markdown(), f"[Markdown](tables/{name}.md) · [LaTeX](tables/{name}.tex) · "
                                        f"[CSV](tables/{name}.csv)", ""]
            lines += _figure_lines(by_path.get(f"across_cd_{slug(c.name)}.png"), out)
        for name, head, fig in (("across_gap_to_fp32", "### Gap to FP32 per dataset", "across_gap_heatmap.png"),
                                ("across_depth_groups", "### Gap to FP32 against depth: homophilous and "
                                                        "heterophilous datasets", "across_depth_groups.png")):
            if name not in tables:
                continue
            t = tables[name]
            lines += [head, "", t.markdown(),
                      f"[Markdown](tables/{name}.md) · [LaTeX](tables/{name}.tex) · [CSV](tables/{name}.csv)", ""]
            lines += _figure_lines(by_path.get(fig), out)
        return lines


def _figure_lines(fig, out: Path) -> List[str]:
    if fig is None:
        return []
    return [f"![{fig.title}]({Path(fig.path).relative_to(out).as_posix()})", "", fig.caption, ""]


def across_section(runs: pd.DataFrame, metric: str = "test_score",
                   min_datasets: int = MIN_DATASETS) -> Optional[AcrossSection]:
    """The across-dataset analysis of ``runs`` (:func:`bench_suite.report.aggregate.runs_frame`), or
    None when its finished quantized runs cover fewer than ``min_datasets`` datasets."""
    scores = block_scores(runs, metric)
    datasets = dataset_order(scores.loc[scores["bits"] != 32, "dataset"])
    if len(datasets) < min_datasets:
        return None
    quantized_blocks = scores.loc[scores["bits"] != 32, BLOCK].drop_duplicates()
    scores = scores.merge(quantized_blocks, on=BLOCK, how="inner")  # an FP32-only block compares nothing
    higher = higher_is_better(metric)
    comps = rank_comparisons(scores, higher)
    gaps = gap_frame(scores)
    wide = dataset_gaps(gaps) if len(gaps) else pd.DataFrame()
    depth = group_depth_gaps(gaps) if len(gaps) else pd.DataFrame()
    tables = [t for c in comps for t in (rank_table(c, metric), pairwise_table(c))]
    if not wide.empty:
        tables.append(dataset_gap_table(wide, metric))
    if not depth.empty:
        tables.append(group_depth_table(depth, metric))
    return AcrossSection(metric, datasets, comps, gaps, wide, depth, tables)
