"""The report of a matrix's random search (:mod:`bench_suite.runner.search`): its trials ranked.

For every combination of a search matrix, the trials with a finished record, ranked by mean
validation score over their seeds (the test score is shown, never used to select).  The best
trial of each combination is also written as a defaults rule (``tables/search_best.yaml``, the
format of :mod:`bench_suite.defaults`): ``match`` is the combination, ``set`` the trial's
values, ``source`` says which search, trial and score chose it.  Copy the rules into a defaults
file to make a method's runs use them.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import yaml

from bench_suite.report.tables import Table

SHOW_TRIALS = 5  # trials listed per combination (the rest are counted)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _label(combo: Mapping[str, Any], varying: Sequence[str]) -> str:
    return ", ".join(f"{k}={_fmt(combo[k])}" for k in varying if k in combo) or "all"


def search_results(matrices: Sequence[str | Path], train_records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per search matrix and combination: its trials with their mean validation and test scores.

    ``[{"matrix", "combo", "varying", "trials": [{"trial", "values", "val", "test", "n", "seeds"}]}]``,
    trials best first (higher mean validation score; ties: the earlier trial).
    """
    from bench_suite.runner.matrix import load_matrix, search_runs
    from bench_suite.spec import resolve_run

    by_id = {r["run_id"]: r for r in train_records if r.get("status") == "ok" and "run_id" in r}
    out = []
    for name in matrices:
        m = load_matrix(name)
        if m.search is None:
            continue
        draws = m.search.draws()
        combos: Dict[str, Dict[str, Any]] = {}
        cells: Dict[Tuple[str, int], List[Mapping[str, Any]]] = defaultdict(list)
        for trial, base, flat in search_runs(m):
            key = repr(sorted(base.items()))
            combos.setdefault(key, base)
            rec = by_id.get(resolve_run(flat).run_id)
            if rec is not None:
                cells[(key, trial)].append(rec)
        keys = sorted({k for c in combos.values() for k in c})
        varying = [k for k in keys if len({repr(c.get(k)) for c in combos.values()}) > 1]
        for key, combo in combos.items():
            trials = []
            for t in range(m.search.trials):
                done = cells.get((key, t), [])
                if not done:
                    continue
                val = [float(r["metrics"]["val_score"]) for r in done]
                test = [float(r["metrics"]["test_score"]) for r in done]
                trials.append({"trial": t, "values": m.search.values_for(combo, draws[t]), "val": float(np.mean(val)),
                               "test": float(np.mean(test)), "n": len(done),
                               "seeds": sorted(int(r["spec"]["train"]["seed"]) for r in done)})
            trials.sort(key=lambda x: (-x["val"], x["trial"]))
            out.append({"matrix": m.name, "combo": combo, "varying": varying, "trials": trials,
                        "of": m.search.trials, "seeds": list(m.seeds)})
    return out


def search_tables(results: List[Dict[str, Any]]) -> List[Table]:
    tables = []
    for name in sorted({r["matrix"] for r in results}):
        rows, bold, notes = [], [], []
        mine = [r for r in results if r["matrix"] == name]
        keys = sorted({k for r in mine for t in r["trials"] for k in t["values"]})
        for r in mine:
            label = _label(r["combo"], r["varying"])
            if not r["trials"]:
                rows.append([label, "–", "0", "–", "–"] + ["–"] * len(keys))
                bold.append([False] * (5 + len(keys)))
                continue
            for i, t in enumerate(r["trials"][:SHOW_TRIALS]):
                rows.append([label if i == 0 else "", str(t["trial"]), str(t["n"]), f"{100 * t['val']:.1f}",
                             f"{100 * t['test']:.1f}"] + [_fmt(t["values"][k]) if k in t["values"] else "–" for k in keys])
                bold.append([False, i == 0, False, i == 0, False] + [False] * len(keys))
            left = len(r["trials"]) - SHOW_TRIALS
            if left > 0:
                notes.append(f"{label}: {left} more trials with records, not listed")
            missing = r["of"] - len(r["trials"])
            if missing:
                notes.append(f"{label}: {missing} of {r['of']} trials have no finished record yet")
        tables.append(Table(name=f"search_{name}".replace("-", "_"),
                            title=f"Random search of matrix {name!r}: trials ranked by mean validation score "
                                  f"(bold: the selected trial; the test score is shown, never used to select)",
                            header=["combination", "trial", "seeds", "val", "test"] + keys, rows=rows, bold=bold,
                            footnotes=notes, n_label_cols=2))
    return tables


def implied_keys_left_out(match: Mapping[str, Any]) -> Dict[str, Any]:
    """``match`` without the keys the defaults give anyway (a search fixed ``hidden: 128``, which the
    dataset's rule sets): a rule matches only keys a spec writes, so a rule naming ``hidden`` would miss
    every matrix that leaves the width to the defaults (:func:`bench_suite.defaults.defaults_for`)."""
    from bench_suite.defaults import defaults_for

    out = dict(match)
    for k in list(out):
        rest = {x: v for x, v in out.items() if x != k}
        implied = defaults_for(rest)
        if k in implied and str(implied[k]) == str(out[k]):
            del out[k]
    return out


def _rule(r: Dict[str, Any], t: Dict[str, Any], match: Dict[str, Any], what: str = "best") -> Dict[str, Any]:
    return {"match": match, "set": dict(t["values"]),
            "source": (f"suite's random search, matrix {r['matrix']} (bench_suite/runner/search.py): "
                       f"trial {t['trial']} of {len(r['trials'])} finished ({r['of']} drawn), {what} mean "
                       f"validation accuracy {100 * t['val']:.1f} over seeds {t['seeds']}")}


def _full_precision_only(values: Mapping[str, Any]) -> bool:
    """Whether a setting has an option no quantizer takes (``self_weight``, the DropEdge authors' withloop)."""
    return values.get("self_weight") is True


def best_rules(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The best trial of every combination as a defaults rule (:mod:`bench_suite.defaults`).

    A full-precision search's best trial serves every quantizer (quantization-aware training keeps the
    full-precision hyper-parameters), unless it sets an option only full precision has: then its rule
    matches ``quant: fp32`` (one key more, so it wins there), and the best trial without such an option
    gets a rule without ``quant`` for the quantized runs."""
    rules = []
    for r in results:
        if not r["trials"]:
            continue
        t = r["trials"][0]
        # "none" is how a matrix says a key is absent: the rule leaves it out (a rule that names the key,
        # more keys, wins where it is set), except ``transform: none``, which a spec without a transform
        # matches (defaults.IMPLICIT): the plain model's rule and the transform's never tie
        match = implied_keys_left_out({k: v for k, v in r["combo"].items()
                                       if k != "seed" and v is not None and (v != "none" or k == "transform")})
        if "quant" in match or not _full_precision_only(t["values"]):
            rules.append(_rule(r, t, match))
            continue
        rules.append(_rule(r, t, dict(match, quant="fp32")))
        quantizable = [u for u in r["trials"] if not _full_precision_only(u["values"])]
        if quantizable:
            rules.append(_rule(r, quantizable[0], match, "best quantizable (no self_weight)"))
    return rules


def write_best(results: List[Dict[str, Any]], out_dir: Path) -> List[Path]:
    rules = best_rules(results)
    if not rules:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "search_best.yaml"
    head = ("# The best trial of each combination of the search matrices, as defaults rules\n"
            "# (bench_suite/defaults.py).  Written by `bench-suite report`; copy rules into a defaults file.\n")
    path.write_text(head + yaml.safe_dump(rules, sort_keys=False, allow_unicode=True, width=120))
    return [path]
