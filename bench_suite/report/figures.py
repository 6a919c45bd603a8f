"""Figures: accuracy vs depth (per bit width, per method), accuracy by bit width (methods
run at a single depth), per-layer oversmoothing, and SMP's constraint (λ_k, T(Δ_k)) per step.

Matplotlib runs on the Agg backend with fixed rcParams, and PNG metadata is
stripped, so the same records give byte-identical files.  Bands are the same
95% t-intervals over seeds as the tables (:func:`aggregate.t_interval`), not
bootstrap intervals, so figures and tables agree and no randomness is involved.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from bench_suite.record import OK
from bench_suite.report.aggregate import t_interval
from bench_suite.report.tables import bits_name, is_fraction, metric_scale, quant_family, slug

DPI = 120
DEEP = 16  # oversmoothing figures for models at least this deep
RC = {
    "figure.figsize": (7.5, 4.2), "figure.dpi": DPI, "savefig.dpi": DPI, "font.family": "DejaVu Sans",
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "bench_suite", "path.simplify": True,
}
PNG_METADATA = {"Software": None, "Creation Time": None, "Author": None, "Title": None, "Description": None}


@dataclass
class Figure:
    path: Path
    title: str
    caption: str


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    matplotlib.rcdefaults()
    matplotlib.rcParams.update(RC)
    return plt, sns


def palette(labels: Sequence[str]) -> Dict[str, tuple]:
    """A fixed colour per label (sorted), shared by every figure of a report."""
    import seaborn as sns

    labels = sorted(set(labels))
    colors = sns.color_palette("tab10" if len(labels) <= 10 else "tab20", max(len(labels), 1))
    return {lab: colors[i % len(colors)] for i, lab in enumerate(labels)}


def _ci(values) -> tuple:
    return t_interval(list(values))


def _band(metric: str):
    """The band function for ``metric``: an accuracy's t-interval is clipped to [0, 100] (with 3 seeds
    it is ±4.3 std wide and otherwise reaches below 0%)."""
    if not is_fraction(metric):
        return _ci

    def clipped(values) -> tuple:
        lo, hi = _ci(values)
        return max(lo, 0.0), min(hi, 100.0)

    return clipped


def _band_note(metric: str) -> str:
    return "bands: 95% t-interval" + (" (clipped to [0, 100])" if is_fraction(metric) else "")


def _geo_mean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def _depth_axis(ax, depths: Sequence[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ds = sorted(set(int(d) for d in depths))
    ax.xaxis.set_major_locator(FixedLocator(ds))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(d) for d in ds])
    if len(ds) == 1:
        ax.set_xlim(ds[0] / 1.5, ds[0] * 1.5)


def _legend(ax, n_entries: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if n_entries > 6:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(handles, labels, loc="best", frameon=True)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata=PNG_METADATA, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _ok_runs(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    col = f"metric.{metric}"
    if col not in runs:
        return runs.iloc[0:0].assign(value=[])
    ok = runs[(runs["status"] == OK) & runs[col].notna()].copy()
    ok["value"] = ok[col] * metric_scale(metric)
    return ok


def _by_bits(df: pd.DataFrame) -> List[str]:
    """Quantizer labels, widest bit width first (FP32, INT8, INT4, INT2, then variants)."""
    pairs = {(int(b), str(q)) for b, q in zip(df["bits"], df["quantizer"])}
    return [q for _, q in sorted(pairs, key=lambda bq: (-bq[0], bq[1]))]


def _ylabel(metric: str) -> str:
    return f"{metric.replace('_', ' ')} (%)" if is_fraction(metric) else metric.replace("_", " ")


def depth_figures(runs: pd.DataFrame, out: Path, metric: str = "test_score") -> List[Figure]:
    """Per dataset and bit width: one line per (method, quantizer); in the quantized
    figures the same methods in FP32 are dashed.  FP32 gets its own figure (the depth
    study of the full-precision models)."""
    plt, sns = _mpl()
    ok = _ok_runs(runs, metric)
    colors = palette(ok["method"]) if len(ok) else {}
    figs = []
    for dataset, sub in sorted(ok.groupby("dataset"), key=lambda kv: kv[0]):
        fp32 = sub[sub["bits"] == 32]
        for bits in sorted(set(sub["bits"]), reverse=True):
            q = sub[sub["bits"] == bits].sort_values(["method", "quantizer", "depth", "seed"])
            if _single_depth(q):  # no line to draw: bitwidth_figures shows these methods
                continue
            fig, ax = plt.subplots()
            styles = _by_bits(q)
            sns.lineplot(data=q, x="depth", y="value", hue="method", style="quantizer", style_order=styles,
                         hue_order=sorted(set(q["method"])), palette=colors, markers=True, dashes=False,
                         errorbar=_band(metric), err_style="band", ax=ax)
            ref = fp32[fp32["method"].isin(set(q["method"]))].sort_values(["method", "depth", "seed"])
            if bits != 32 and len(ref):  # the FP32 figure needs no FP32 reference
                sns.lineplot(data=ref, x="depth", y="value", hue="method", palette=colors, errorbar=None,
                             linestyle="--", linewidth=1.0, alpha=0.8, legend=False, ax=ax)
                ax.plot([], [], color="grey", linestyle="--", label="FP32 (same method)")
            _depth_axis(ax, q["depth"].tolist() + ref["depth"].tolist())
            title = f"{dataset}: {_ylabel(metric)} vs depth at {bits_name(bits)}"
            ax.set(title=title, xlabel="depth (layers / propagation steps, log2 scale)", ylabel=_ylabel(metric))
            _legend(ax, len(set(q["method"])) + len(styles) + 3)
            path = out / f"depth_{slug(dataset)}_{bits_name(bits).lower()}.png"
            _save(fig, path)
            figs.append(Figure(path, title, f"Lines: mean over seeds; {_band_note(metric)}"
                                            + ("." if bits == 32 else "; dashed: the same method in FP32.")))
    return figs


def method_figures(runs: pd.DataFrame, out: Path, metric: str = "test_score") -> List[Figure]:
    """Per dataset and method with at least two quantizers: one line per quantizer (bit widths
    compared), FP32 dashed."""
    plt, sns = _mpl()
    ok = _ok_runs(runs, metric)
    qcolors = palette(ok["quantizer"]) if len(ok) else {}
    figs = []
    for (dataset, method), sub in sorted(ok.groupby(["dataset", "method"]), key=lambda kv: kv[0]):
        if _single_depth(sub):  # bitwidth_figures shows it
            continue
        if sub["quantizer"].nunique() < 2:  # one line: depth_figures already draws it with the other methods
            continue
        sub = sub.sort_values(["quantizer", "depth", "seed"])
        order = _by_bits(sub)
        fig, ax = plt.subplots()
        sns.lineplot(data=sub, x="depth", y="value", hue="quantizer", hue_order=order, palette=qcolors,
                     style="quantizer", style_order=order, markers=True,
                     dashes={q: (4, 2) if q == "FP32" else "" for q in order},
                     errorbar=_band(metric), err_style="band", ax=ax)
        _depth_axis(ax, sub["depth"].tolist())
        title = f"{dataset} / {method}: {_ylabel(metric)} vs depth by bit width"
        ax.set(title=title, xlabel="depth (layers / propagation steps, log2 scale)", ylabel=_ylabel(metric))
        _legend(ax, len(order))
        path = out / f"bits_{slug(dataset)}_{slug(method)}.png"
        _save(fig, path)
        figs.append(Figure(path, title, f"Lines: mean over seeds; {_band_note(metric)}; dashed: FP32."))
    return figs


def _single_depth(df: pd.DataFrame) -> bool:
    """True if no method in ``df`` has two depths (a depth figure would be isolated dots)."""
    return len(df) == 0 or int(df.groupby("method")["depth"].nunique().max()) < 2


def bitwidth_figures(runs: pd.DataFrame, out: Path, metric: str = "test_score") -> List[Figure]:
    """Per dataset and method run at a single depth (a quantizer study: GCN-2, APPNP-10) with at
    least two bit widths: x the bit width, one line per quantizer family, FP32 a dashed line."""
    plt, sns = _mpl()
    ok = _ok_runs(runs, metric)
    figs = []
    for (dataset, method), sub in sorted(ok.groupby(["dataset", "method"]), key=lambda kv: kv[0]):
        if not _single_depth(sub) or sub["bits"].nunique() < 2:
            continue
        depth = int(sub["depth"].iloc[0])
        sub = sub.assign(family=sub["quantizer"].map(quant_family),
                         width=[bits_name(int(b)) for b in sub["bits"]]).sort_values(["family", "bits", "seed"])
        q = sub[sub["bits"] != 32]
        widths = [bits_name(b) for b in sorted(set(int(b) for b in q["bits"]), reverse=True)]
        families = sorted(set(q["family"]))
        fig, ax = plt.subplots()
        if len(q):
            sns.pointplot(data=q, x="width", y="value", hue="family", order=widths, hue_order=families,
                          palette=palette(families), errorbar=_band(metric),
                          dodge=0.35 if len(families) > 1 else False, capsize=0.08,  # seaborn divides by n−1
                          err_kws={"linewidth": 1.0}, markersize=4, linewidth=1.2, ax=ax)
        fp32 = sub[sub["bits"] == 32]["value"]
        if len(fp32):
            ax.axhline(float(fp32.mean()), color="grey", linestyle="--", linewidth=1.0,
                       label=f"FP32 ({float(fp32.mean()):.1f})")
        title = f"{dataset} / {method} (depth {depth}): {_ylabel(metric)} by bit width"
        ax.set(title=title, xlabel="bit width", ylabel=_ylabel(metric))
        _legend(ax, len(families) + 1)
        path = out / f"bitwidth_{slug(dataset)}_{slug(method)}_L{depth}.png"
        _save(fig, path)
        figs.append(Figure(path, title, f"Points: mean over seeds; error bars: 95% t-interval"
                                        f"{' (clipped to [0, 100])' if is_fraction(metric) else ''}; "
                                        "dashed: FP32 mean."))
    return figs


def oversmoothing_figures(layers: pd.DataFrame, out: Path, min_depth: int = DEEP) -> List[Figure]:
    """Per dataset, deep depth and bit width: Dirichlet energy, its scale-free form and MAD
    per layer, one line per method (mean over seeds; geometric mean for the energies).

    No confidence bands: with a few seeds the t-interval of a per-layer value spans orders
    of magnitude and hides the lines; the spread is in the aggregates."""
    plt, sns = _mpl()
    deep = layers[layers["depth"] >= min_depth].copy()
    figs = []
    if deep.empty:
        return figs
    colors = palette(deep["method"])
    panels = [("dirichlet", "Dirichlet energy", "tr(XᵀL̃X)/n", True),
              ("dirichlet_normalized", "scale-free energy", "tr(XᵀL̃X)/‖X‖²", True),
              ("mad", "MAD (mean cosine distance to neighbours)", "MAD", False)]
    for (dataset, depth, bits), sub in sorted(deep.groupby(["dataset", "depth", "bits"]), key=lambda kv: kv[0]):
        sub = sub.sort_values(["method", "quantizer", "layer", "seed"])
        sub["series"] = sub["method"] + " · " + sub["quantizer"]
        order = sorted(set(sub["series"]))
        series_colors = {k: colors[k.split(" · ")[0]] for k in order}
        dashes = {k: "" if k.split(" · ")[1] == order[0].split(" · ")[1] else (4, 2) for k in order}
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, (col, name, formula, log) in zip(axes, panels):
            data = sub[sub[col] > 0] if log else sub[sub[col].notna()]
            if data.empty:
                ax.set_axis_off()
                continue
            sns.lineplot(data=data, x="layer", y=col, hue="series", hue_order=order, palette=series_colors,
                         style="series", style_order=order, dashes=dashes,
                         estimator=_geo_mean if log else "mean", errorbar=None, ax=ax, legend=ax is axes[-1])
            if log:
                ax.set_yscale("log")
            ax.set(title=name if formula == "MAD" else f"{name} {formula}", xlabel="layer",
                   ylabel=formula + (" (log scale)" if log else ""))
        _legend(axes[-1], 99)
        title = f"{dataset}: oversmoothing per layer at depth {int(depth)}, {bits_name(int(bits))}"
        fig.suptitle(title)
        path = out / f"oversmoothing_{slug(dataset)}_L{int(depth)}_{bits_name(int(bits)).lower()}.png"
        _save(fig, path)
        figs.append(Figure(path, title, "Per layer of the model selected at its best validation epoch: "
                                        "energies as the geometric mean over seeds (non-positive values "
                                        "omitted), MAD as the mean; no bands (see aggregates for spread)."))
    return figs


def smp_figures(smp: pd.DataFrame, out: Path, min_depth: int = 8) -> List[Figure]:
    """Per dataset and depth (K ≥ ``min_depth``): SMP's constraint at work, per propagation step,
    one line per SMP variant and quantizer: the multiplier λ_k (mean over seeds) and the
    smoothness T(Δ_k) over its budget c·|E| (geometric mean; the constraint is T ≤ budget, the
    dashed line at 1)."""
    plt, sns = _mpl()
    deep = smp[smp["depth"] >= min_depth].copy()
    figs = []
    if deep.empty:
        return figs
    for (dataset, depth), sub in sorted(deep.groupby(["dataset", "depth"]), key=lambda kv: kv[0]):
        sub = sub.sort_values(["method", "quantizer", "step", "seed"])
        sub["series"] = sub["method"] + " · " + sub["quantizer"]
        order = sorted(set(sub["series"]))
        colors = palette(order)
        fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(12, 4.2))
        sns.lineplot(data=sub, x="step", y="lambda", hue="series", hue_order=order, palette=colors,
                     estimator="mean", errorbar=None, ax=ax_l, legend=False)
        ax_l.axhline(0.0, color="grey", linewidth=0.8)
        ax_l.set(title="multiplier λ_k", xlabel="propagation step k", ylabel="λ_k (mean over seeds)")
        ratio = sub[sub["T_over_budget"] > 0]
        sns.lineplot(data=ratio, x="step", y="T_over_budget", hue="series", hue_order=order, palette=colors,
                     estimator=_geo_mean, errorbar=None, ax=ax_t)
        ax_t.axhline(1.0, color="grey", linestyle="--", linewidth=1.0, label="budget c·|E|")
        ax_t.set_yscale("log")
        ax_t.set(title="smoothness T(Δ_k) / budget c·|E|", xlabel="propagation step k",
                 ylabel="T(Δ_k) / c·|E| (log scale, geometric mean)")
        _legend(ax_t, 99)
        title = f"{dataset}: SMP's constraint per step at K = {int(depth)}"
        fig.suptitle(title)
        path = out / f"smp_constraint_{slug(dataset)}_K{int(depth)}.png"
        _save(fig, path)
        figs.append(Figure(path, title, "The selected model (best validation epoch) in eval mode. The "
                                        "multiplier rises while T(Δ_k) is under the budget and falls when it "
                                        "is over; a negative λ (SMP as written) roughens X instead of "
                                        "smoothing it."))
    return figs
