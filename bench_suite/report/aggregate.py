"""Stored run records → tidy pandas frames and per-group statistics.

The unit of aggregation is a *group*: everything in a run spec but the seed
(METHOD.md §10: mean, unbiased std, 95% t-interval over seeds).  The seeds a
group should have are the union of the seeds seen in its matrix (the directory
its records live in) unless given explicitly; missing and failed seeds are kept
in the frame so every table can flag them instead of averaging silently.

Records from older or newer plugins may lack fields: everything is read with
``.get`` and flattened with :func:`pandas.json_normalize`.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import pandas as pd

from bench_suite.bits import FP32_BITS
from bench_suite.record import OK, TRAIN, group_key, iter_records, method_label, quantizer_label, record_kind, record_status
#: Columns naming one group in every frame, in display order.
GROUP_COLS = ["dataset", "method", "quantizer", "bits", "depth"]
STAT_COLS = ["n", "expected", "mean", "std", "ci95_low", "ci95_high", "min", "max"]


@dataclass
class Store:
    """Records read from one or more result directories."""

    roots: List[str]
    train: List[Dict[str, Any]] = field(default_factory=list)
    speed: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def empty(self) -> bool:
        return not self.train and not self.speed


def load_store(roots: Sequence[str | Path]) -> Store:
    """Read every record under ``roots`` (:func:`bench_suite.record.iter_records`: ``*.json``,
    recursively, sorted paths), judged by :func:`bench_suite.record.record_problem` as ``run`` and
    ``status`` judge them.

    A record's *matrix* is the name of the directory holding it, its *root* the one of ``roots``
    it was found under.  Files that are not records (manifests, partial writes) are listed in
    ``Store.skipped`` with the reason.
    """
    store = Store(roots=[str(r) for r in roots])
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"results directory {str(root)!r} does not exist; "
                                    f"pass directories written by `bench-suite run` (e.g. results/smoke)")
        for path, rec, problem in iter_records(root):
            if rec is None:
                store.skipped.append((str(path), problem))
                continue
            rec = dict(rec)
            rec["_matrix"] = path.parent.name
            rec["_path"] = str(path)
            rec["_root"] = str(root)
            (store.train if record_kind(rec) == TRAIN else store.speed).append(rec)
    return store


def short_hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _flat_params(spec: Dict[str, Any]) -> Dict[str, Any]:
    flat = pd.json_normalize(json.loads(group_key(spec)), sep=".").iloc[0].to_dict()
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v for k, v in flat.items()}


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) >= 1 else f"{v:g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _disambiguate(groups: pd.DataFrame, params: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """Append the spec keys that tell apart groups sharing dataset/method/quantizer/depth.

    A key is added to the label it belongs to (``dataset.*`` → dataset, ``quant.*`` →
    quantizer, anything else → method), for every group of that label, so labels stay
    consistent across depths; keys that merely vary without a collision are not shown.
    """
    ds_keys: Dict[str, set] = {}
    q_keys: Dict[str, set] = {}
    m_keys: Dict[str, set] = {}
    ignore = {"model.depth", "quant.bits", "quant.name", "model.name", "dataset.name"}
    for _, clash in groups.groupby(GROUP_COLS, dropna=False):
        if len(clash) < 2:
            continue
        ps = [params[g] for g in clash["group"]]
        keys = sorted({k for p in ps for k in p} - ignore)
        differing = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in ps}) > 1]
        for k in differing:
            if k.startswith("dataset."):
                ds_keys.setdefault(clash["dataset"].iloc[0], set()).add(k)
            elif k.startswith("quant."):
                q_keys.setdefault(clash["quantizer"].iloc[0], set()).add(k)
            else:
                m_keys.setdefault(clash["method"].iloc[0], set()).add(k)

    def suffix(g: str, keys: Iterable[str]) -> str:
        p = params[g]
        parts = [f"{k.split('.', 1)[1] if k.count('.') else k}={_fmt_value(p.get(k))}" for k in sorted(keys)]
        return f" [{', '.join(parts)}]" if parts else ""

    out = groups.copy()
    for col, table in (("dataset", ds_keys), ("quantizer", q_keys), ("method", m_keys)):
        out[col] = [lab + suffix(g, table.get(lab, ())) for lab, g in zip(groups[col], groups["group"])]
    return out


# --------------------------------------------------------------------------- frames

RUN_COLS = ["run_id", "group_key", "group"] + GROUP_COLS + ["quant_name", "seed", "status", "error", "matrix",
                                                           "finished", "git_commit", "cpu", "host",
                                                           "torch_threads", "versions", "layers", "extra"]


def _group_cols(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The group columns of a spec, before :func:`group_labels` tells colliding groups apart."""
    return {"dataset": str((spec.get("dataset") or {}).get("name", "?")),
            "method": method_label(spec),
            "quantizer": quantizer_label(spec),
            "bits": int((spec.get("quant") or {}).get("bits", FP32_BITS) or FP32_BITS),
            "depth": int((spec.get("model") or {}).get("depth", 0) or 0)}


def group_labels(keys: Iterable[str]) -> pd.DataFrame:
    """Per group key (:func:`group_key`): ``group`` (its short hash) and the group columns, the labels
    carrying the spec keys that tell apart groups sharing dataset/method/quantizer/depth.

    Labels depend on which groups are shown together: pass every key of one table at once.
    """
    keys = sorted(set(keys))
    specs = {short_hash(k): json.loads(k) for k in keys}
    groups = pd.DataFrame([{"group": g, **_group_cols(s)} for g, s in specs.items()], columns=["group"] + GROUP_COLS)
    return _disambiguate(groups, {g: _flat_params(s) for g, s in specs.items()})


def _run_rows(store: Store, seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """One row per training record of ``store`` (duplicates kept), plus its ``root`` and the ``_ok`` flag."""
    rows = []
    for rec in store.train:
        spec = rec.get("spec") or {}
        train = spec.get("train") or {}
        env = rec.get("env") or {}
        metrics = rec.get("metrics") or {}
        row = {
            "run_id": rec.get("run_id") or short_hash(json.dumps(spec, sort_keys=True), 16),
            "group_key": group_key(spec),
            **_group_cols(spec),
            "quant_name": str((spec.get("quant") or {}).get("name", "fp32")),
            "seed": int(train.get("seed", 0)),
            "status": record_status(rec),
            "error": rec.get("error"),
            "matrix": rec.get("_matrix", ""),
            "root": rec.get("_root", ""),
            "finished": str(rec.get("finished") or ""),
            "git_commit": str(env.get("git_commit") or "unknown"),
            "cpu": str(env.get("cpu") or "unknown"),
            "host": str(env.get("host") or "unknown"),
            "torch_threads": env.get("torch_threads"),
            "versions": json.dumps(env.get("versions") or {}, sort_keys=True),
            "layers": rec.get("layers") or [],
            "extra": rec.get("extra") if isinstance(rec.get("extra"), dict) else {},
        }
        for k, v in sorted(metrics.items()):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[f"metric.{k}"] = float(v)
        for split in ("train", "val", "test"):  # records from before per-dataset metrics held accuracy only
            if f"{split}_score" not in metrics and isinstance(metrics.get(f"{split}_acc"), (int, float)):
                row[f"metric.{split}_score"] = float(metrics[f"{split}_acc"])
        rows.append(row)
    df = pd.DataFrame(rows)
    if rows and seeds is not None:
        df = df[df["seed"].isin(list(seeds))]
    return df


def _dedupe(df: pd.DataFrame) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): one row per run id, an ``ok`` record first, then the newest finished, then the
    first matrix by name, then the first read (the store given first); ``dropped`` holds the other copies."""
    df = df.assign(_ok=(df["status"] == OK).astype(int))
    df = df.sort_values(["run_id", "_ok", "finished", "matrix"], ascending=[True, False, False, True])
    dup = df.duplicated("run_id")
    return df[~dup].drop(columns="_ok"), df[dup].drop(columns="_ok")


def duplicate_runs(store: Store, seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """The copies :func:`runs_frame` drops (a run id found more than once): ``run_id``, ``root`` and
    ``matrix`` of each dropped copy, ``kept_root`` and ``kept_matrix`` of the copy kept."""
    cols = ["run_id", "root", "matrix", "kept_root", "kept_matrix"]
    df = _run_rows(store, seeds)
    if df.empty:
        return pd.DataFrame(columns=cols)
    kept, dropped = _dedupe(df)
    kept = kept[["run_id", "root", "matrix"]].rename(columns={"root": "kept_root", "matrix": "kept_matrix"})
    return dropped[["run_id", "root", "matrix"]].merge(kept, on="run_id", how="left")[cols].reset_index(drop=True)


def runs_frame(store: Store, seeds: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """One row per training run (deduplicated by run id: an ``ok`` record wins, then the newest; the
    copies dropped are :func:`duplicate_runs`).

    Columns: the group columns, ``group`` (id), ``seed``, ``status``, ``error``, ``matrix``,
    ``finished``, env fields and one ``metric.<name>`` column per numeric metric.
    """
    df = _run_rows(store, seeds)
    if df.empty:
        return pd.DataFrame(columns=RUN_COLS)
    df, _ = _dedupe(df)
    df["group"] = [short_hash(k) for k in df["group_key"]]
    labels = group_labels(df["group_key"])
    df = df.drop(columns=["dataset", "method", "quantizer"]).merge(
        labels[["group", "dataset", "method", "quantizer"]], on="group", how="left")
    metric_cols = sorted(c for c in df.columns if c.startswith("metric."))
    df = df[RUN_COLS + metric_cols]
    return df.sort_values(GROUP_COLS + ["seed", "run_id"]).reset_index(drop=True)


def t_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaN for fewer than two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    m = float(x.mean())
    return m - half, m + half


def _seed_list(seeds: Iterable[int]) -> str:
    return ",".join(str(s) for s in sorted(seeds))


def completeness_note(n: int, expected: int, failed: Sequence[int], missing: Sequence[int]) -> str:
    """``n=7/10: seeds 3,5 failed, 8 missing`` (empty when complete)."""
    if not failed and not missing:
        return ""
    parts = [f"{_seed_list(seeds)} {what}" for seeds, what in ((failed, "failed"), (missing, "missing")) if seeds]
    word = "seeds" if len(failed) + len(missing) > 1 else "seed"
    return f"n={n}/{expected}: {word} " + ", ".join(parts)


def group_status(runs: pd.DataFrame, seeds: Optional[Sequence[int]] = None,
                 expected_by_group: Optional[Mapping[str, Set[int]]] = None) -> pd.DataFrame:
    """Per group: expected, ok, failed and missing seeds and the completeness note.

    Expected seeds: ``seeds`` if given; else the group's seeds in its matrix (``expected_by_group``,
    from the matrix files); else the union of the seeds seen in the group's matrices.
    """
    cols = ["group"] + GROUP_COLS + ["quant_name", "matrix", "expected", "seeds_ok", "seeds_failed",
                                     "seeds_missing", "complete", "note"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    per_matrix = runs.groupby("matrix")["seed"].agg(lambda s: set(int(v) for v in s)).to_dict()
    rows = []
    for g, sub in runs.groupby("group", sort=True):
        matrices = sorted(set(sub["matrix"]))
        if seeds is not None:
            expected = set(int(s) for s in seeds)
        elif expected_by_group and g in expected_by_group:
            expected = set(expected_by_group[g])
        else:
            expected = set().union(*(per_matrix[m] for m in matrices))
        ok = set(int(s) for s in sub.loc[sub["status"] == OK, "seed"])
        failed = set(int(s) for s in sub.loc[sub["status"] != OK, "seed"]) - ok
        missing = expected - ok - failed
        first = sub.iloc[0]
        rows.append({
            "group": g, **{c: first[c] for c in GROUP_COLS}, "quant_name": first["quant_name"],
            "matrix": ",".join(matrices), "expected": len(expected),
            "seeds_ok": _seed_list(ok), "seeds_failed": _seed_list(failed), "seeds_missing": _seed_list(missing),
            "complete": not failed and not missing,
            "note": completeness_note(len(ok), len(expected), sorted(failed), sorted(missing)),
        })
    return pd.DataFrame(rows, columns=cols)


def aggregate(runs: pd.DataFrame, seeds: Optional[Sequence[int]] = None,
              expected_by_group: Optional[Mapping[str, Set[int]]] = None) -> pd.DataFrame:
    """Long table: one row per (group, metric) with n, mean, std (ddof=1), 95% t-CI, min, max.

    Only ``ok`` runs enter the statistics; ``expected``, the failed/missing seeds and
    the ``note`` say what is absent.  Groups with no ok run still get a row (n=0).
    """
    status = group_status(runs, seeds, expected_by_group)
    metric_cols = sorted(c for c in runs.columns if c.startswith("metric."))
    out_cols = ["group"] + GROUP_COLS + ["metric"] + STAT_COLS + [
        "complete", "seeds_ok", "seeds_failed", "seeds_missing", "note", "matrix", "quant_name"]
    if status.empty:
        return pd.DataFrame(columns=out_cols)
    ok = runs[runs["status"] == OK]
    rows = []
    for _, st in status.iterrows():
        sub = ok[ok["group"] == st["group"]]
        for col in metric_cols or ["metric.test_score"]:
            vals = sub[col].dropna().to_numpy(dtype=float) if col in sub else np.array([])
            n = len(vals)
            lo, hi = t_interval(vals)
            rows.append({
                **{c: st[c] for c in ["group"] + GROUP_COLS}, "metric": col.split(".", 1)[1],
                "n": n, "expected": st["expected"],
                "mean": float(vals.mean()) if n else float("nan"),
                "std": float(vals.std(ddof=1)) if n > 1 else float("nan"),
                "ci95_low": lo, "ci95_high": hi,
                "min": float(vals.min()) if n else float("nan"),
                "max": float(vals.max()) if n else float("nan"),
                **{c: st[c] for c in ["complete", "seeds_ok", "seeds_failed", "seeds_missing", "note",
                                      "matrix", "quant_name"]},
            })
    agg = pd.DataFrame(rows, columns=out_cols)
    return agg.sort_values(GROUP_COLS + ["metric", "group"]).reset_index(drop=True)


def layers_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-layer oversmoothing metrics of ok runs: group columns, seed, layer, dirichlet,
    dirichlet_normalized (scale-free), mad; a metric a record lacks is NaN."""
    cols = ["group"] + GROUP_COLS + ["seed", "layer", "dirichlet", "dirichlet_normalized", "mad"]
    rows = []
    for _, r in runs[runs["status"] == OK].iterrows():
        for i, lay in enumerate(r["layers"] or []):
            if not isinstance(lay, dict):
                continue
            rows.append({"group": r["group"], **{c: r[c] for c in GROUP_COLS}, "seed": r["seed"],
                         "layer": int(lay.get("layer", i)),
                         **{k: float(lay[k]) if lay.get(k) is not None else np.nan
                            for k in ("dirichlet", "dirichlet_normalized", "mad")}})
    return pd.DataFrame(rows, columns=cols)


def smp_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """SMP's constraint per propagation step of ok runs that recorded it (``extra``: the multiplier
    ``smp_lambda``, the smoothness ``smp_T`` = T(Δ_k) and the budget ``smp_budget`` = c·|E| of the
    model's last forward pass, the selected model in eval mode): group columns, seed, step
    (1-based), lambda, T, budget and T / budget."""
    cols = ["group"] + GROUP_COLS + ["seed", "step", "lambda", "T", "budget", "T_over_budget"]
    rows = []
    for _, r in runs[runs["status"] == OK].iterrows():
        extra = r["extra"] if isinstance(r.get("extra"), dict) else {}
        lams, ts, budget = extra.get("smp_lambda"), extra.get("smp_T"), extra.get("smp_budget")
        if not lams or not ts or budget is None:
            continue
        for k, (lam, t) in enumerate(zip(lams, ts), start=1):
            rows.append({"group": r["group"], **{c: r[c] for c in GROUP_COLS}, "seed": r["seed"], "step": k,
                         "lambda": float(lam), "T": float(t), "budget": float(budget),
                         "T_over_budget": float(t) / float(budget) if budget else np.nan})
    return pd.DataFrame(rows, columns=cols)
