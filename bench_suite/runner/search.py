"""Random hyper-parameter search as part of a matrix: the ``search`` block.

Some methods' papers tune per setting by random search and publish only the best numbers (the
DropEdge authors, per backbone and depth: Rong et al., ICLR 2020, sec. 5 and appendix B).  A matrix
reproduces that protocol with::

    search:
      trials: 16            # settings drawn per entry of the matrix
      seed: 0               # the sampler's seed: the same trials every time
      space:
        lr: {loguniform: [0.001, 0.01]}
        dropout: {choice: [0.1, 0.3, 0.5, 0.8]}
        p: {uniform: [0.2, 0.95], when: {transform: dropedge}}

Every combination of the matrix (axes, includes) runs once per trial and seed, with the trial's
values set on it; a dimension with ``when`` applies only to combinations matching it (a list means
any of), and a key the combination sets itself is not searched for it.  Trial ``t`` draws the same
values for every combination (dimensions in sorted key order, all drawn whether they apply or not),
so trials are paired across combinations and adding a combination changes no other run.  Runs are
ordered trial by trial: the first trials of every combination finish first.

``bench-suite report`` on the store with ``--matrix`` of a search matrix ranks the trials of every
combination by mean validation score and writes the best as defaults rules
(``tables/search_best.yaml``, the format of :mod:`bench_suite.defaults`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

DIM_KINDS = ("loguniform", "uniform", "choice")
SEARCH_KEYS = ("trials", "seed", "space", "select")
MAX_TRIALS = 1000


class SearchError(ValueError):
    """A ``search`` block that is not valid; the message names the key and what is valid."""


@dataclass(frozen=True)
class Dim:
    key: str
    kind: str
    values: Tuple[Any, ...]                       # (lo, hi) for the continuous kinds
    when: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def draw(self, rng: np.random.RandomState) -> Any:
        if self.kind == "choice":
            return self.values[int(rng.randint(len(self.values)))]
        lo, hi = self.values
        if self.kind == "uniform":
            return round(float(rng.uniform(lo, hi)), 3)
        return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")  # three significant digits

    def applies(self, combo: Mapping[str, Any]) -> bool:
        return all(str(combo.get(k)) in wants for k, wants in self.when.items())


@dataclass(frozen=True)
class Search:
    trials: int
    seed: int
    space: Tuple[Dim, ...]
    select: str = "val_score"

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(d.key for d in self.space)

    def draws(self) -> List[Dict[str, Any]]:
        """Per trial, a value for every dimension (whether or not it applies to a combination)."""
        rng = np.random.RandomState(self.seed)
        return [{d.key: d.draw(rng) for d in self.space} for _ in range(self.trials)]

    def values_for(self, combo: Mapping[str, Any], draw: Mapping[str, Any]) -> Dict[str, Any]:
        """The trial's values that apply to ``combo`` (keys ``combo`` sets itself stay its own)."""
        return {d.key: draw[d.key] for d in self.space if d.key not in combo and d.applies(combo)}


def parse_search(raw: Any, where: str) -> Optional[Search]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SearchError(f"{where}: search must be a mapping with keys {', '.join(SEARCH_KEYS)}")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise SearchError(f"{where}: search key {key!r} is not valid; valid: {', '.join(SEARCH_KEYS)}")
    trials, seed = raw.get("trials"), raw.get("seed", 0)
    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_TRIALS:
        raise SearchError(f"{where}: search.trials={trials!r} is not valid; use an integer in 1..{MAX_TRIALS}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SearchError(f"{where}: search.seed={seed!r} is not valid; use a non-negative integer")
    select = raw.get("select", "val_score")
    if select != "val_score":
        raise SearchError(f"{where}: search.select={select!r} is not valid; valid: 'val_score' (the test score "
                          "never selects)")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise SearchError(f"{where}: search.space must be a non-empty mapping of spec key to a dimension "
                          f"({', '.join(DIM_KINDS)})")
    return Search(trials, seed, tuple(_dim(k, space[k], f"{where}: search.space.{k}") for k in sorted(space)), select)


def _dim(key: str, raw: Any, where: str) -> Dim:
    if not isinstance(raw, dict):
        raise SearchError(f"{where} must be a mapping with one of {', '.join(DIM_KINDS)} (and optionally when)")
    kinds = [k for k in raw if k in DIM_KINDS]
    extra = [k for k in raw if k not in DIM_KINDS and k != "when"]
    if len(kinds) != 1 or extra:
        raise SearchError(f"{where}={raw!r} is not valid; give exactly one of {', '.join(DIM_KINDS)}, "
                          "optionally with when")
    kind, values = kinds[0], raw[kinds[0]]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise SearchError(f"{where}.choice={values!r} is not valid; use a non-empty list of values")
    else:
        ok = (isinstance(values, list) and len(values) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
              and values[0] < values[1] and (kind == "uniform" or values[0] > 0))
        if not ok:
            bound = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
            raise SearchError(f"{where}.{kind}={values!r} is not valid; use [lo, hi] with {bound}")
        values = [float(v) for v in values]
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        raise SearchError(f"{where}.when={when!r} is not valid; use a mapping of spec key to value(s)")
    when_t = {str(k): tuple(str(x) for x in (v if isinstance(v, list) else [v])) for k, v in when.items()}
    return Dim(key, kind, tuple(values), when_t)


def expand(search: Optional[Search], combos: List[Dict[str, Any]]) -> List[Tuple[Optional[int], Dict[str, Any], Dict[str, Any]]]:
    """``(trial, combination, combination with the trial's values)``, trial by trial; ``(None, combo,
    combo)`` for each combination without a search."""
    if search is None:
        return [(None, c, c) for c in combos]
    draws = search.draws()
    return [(t, c, dict(c, **search.values_for(c, draws[t]))) for t in range(search.trials) for c in combos]
