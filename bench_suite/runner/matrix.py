"""Matrix files: a YAML description of many runs, expanded into validated run specs.

::

    name: smoke
    seeds: [0, 1]                 # list, or a count n meaning 0..n-1 (default 10)
    fixed: {epochs: 100}          # flat spec keys applied to every run
    axes:                         # cartesian product over the axes
      dataset: [csbm, cora]
      depth: [2, 8]
      quant: [{quant: fp32}, {quant: qlr, bits: [8, 4, 2]}]   # dicts: sub-axes, lists inside expand
    exclude: [{model: gcn, depth: 64}]     # drop combinations matching every key (a list = any of);
                                  # a rule naming `seed` drops those seeds of the runs it matches
                                  # (includes too): [{dataset: cora, seed: [3, 4]}]
    include: [{dataset: cora, model: gat, depth: 2}]   # extra combinations (get fixed + seeds too);
                                  # a matrix without axes is its includes alone
    defaults: {model: {gat: {lr: 0.005}}, dataset: {cora: {epochs: 200}}}
    kind: train                   # or speed: every run is a speed measurement of the integer engine
    search: {trials: 16, seed: 0, space: {lr: {loguniform: [0.001, 0.01]}}}   # random search: every
                                  # combination once per trial (bench_suite.runner.search)

A matrix of ``kind: speed`` expands into speed specs (:func:`bench_suite.spec.resolve_speed_spec`:
``graph``, ``model``, ``bits``, ``ranges``, ``repeats``, ...); the tuned default rules are for
training and do not apply to them.

Precedence, lowest first: tuned default rule files (:mod:`bench_suite.defaults`),
the matrix's ``defaults``, a search trial's values, ``fixed``, the axes, command-line
``key=value`` overrides (a key set by any of the last three is not searched).
Every combination is resolved with :func:`bench_suite.spec.resolve_run` before
anything runs, so a typo fails at once naming the file, the run and the valid choices.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import yaml

from bench_suite.defaults import apply_defaults
from bench_suite.registry import REGISTRIES, RegistryError, unknown_message
from bench_suite.runner.search import Search, SearchError, expand, parse_search
from bench_suite.record import KINDS, SPEED, TRAIN
from bench_suite.spec import RunSpec, SpecError, parse_assignments, parse_value, resolve_run
from bench_suite.yamlfile import load_yaml

MATRIX_KEYS = ("name", "description", "kind", "seeds", "fixed", "axes", "include", "exclude", "defaults", "search")
DEFAULT_SEEDS = tuple(range(10))
#: a matrix name is a folder name under ``--results``: a plain identifier, never a path
MATRIX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: flat keys whose values name a plugin, checked in ``defaults`` sections
_PLUGIN_KEYS = {"dataset": "datasets", "model": "models", "propagation": "propagations",
                "quant": "quantizers", "transform": "transforms"}


class MatrixError(SpecError):
    """A matrix file that is malformed; the message names the file and the key."""


def shipped_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "matrices"


def shipped_matrices() -> List[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def find_matrix(name_or_path: str | Path) -> Path:
    """A shipped matrix by name (``smoke``) or a YAML file path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"matrix file {str(p)!r} not found")
        return p
    q = shipped_dir() / f"{name_or_path}.yaml"
    if q.is_file():
        return q
    raise MatrixError(unknown_message("matrix", str(name_or_path), shipped_matrices())
                      + " (or give a path to a .yaml file)")


@dataclass
class Matrix:
    """A parsed matrix file."""

    name: str
    path: Path
    seeds: Tuple[int, ...] = DEFAULT_SEEDS
    fixed: Dict[str, Any] = field(default_factory=dict)
    axes: Dict[str, List[Any]] = field(default_factory=dict)
    include: List[Dict[str, Any]] = field(default_factory=list)
    exclude: List[Dict[str, Any]] = field(default_factory=list)
    defaults: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    kind: str = TRAIN
    search: Optional[Search] = None  # random hyper-parameter search (bench_suite.runner.search)

    @property
    def where(self) -> str:
        return f"matrix {self.path.name}"


def load_matrix(name_or_path: str | Path) -> Matrix:
    path = find_matrix(name_or_path)
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MatrixError(f"matrix {path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_matrix(raw, path)


def parse_matrix(raw: Any, path: Path) -> Matrix:
    where = f"matrix {path.name}"
    if not isinstance(raw, dict):
        raise MatrixError(f"{where}: the top level must be a mapping with keys {', '.join(MATRIX_KEYS)}")
    for key in raw:
        if key not in MATRIX_KEYS:
            raise MatrixError(unknown_message(f"top-level key of {where}", key, list(MATRIX_KEYS)))
    kind = raw.get("kind", TRAIN)
    if kind not in KINDS:
        raise MatrixError(f"{where}: kind={kind!r} is not valid; valid: {', '.join(KINDS)} (default {TRAIN})")
    seeds = raw.get("seeds", list(DEFAULT_SEEDS))
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise MatrixError(f"{where}: seeds={seeds!r} must be a non-empty list of integers or a count")
    fixed = _mapping(raw.get("fixed"), f"{where}: fixed")
    axes = _mapping(raw.get("axes"), f"{where}: axes")
    axes = {k: v if isinstance(v, list) else [v] for k, v in axes.items()}
    for k, v in axes.items():
        if not v:
            raise MatrixError(f"{where}: axis {k!r} is empty; give at least one value")
    include = _dict_list(raw.get("include"), f"{where}: include")
    exclude = _dict_list(raw.get("exclude"), f"{where}: exclude")
    defaults = _mapping(raw.get("defaults"), f"{where}: defaults")
    for key, per_value in defaults.items():
        per_value = _mapping(per_value, f"{where}: defaults.{key}")
        reg = _PLUGIN_KEYS.get(key)
        for value, settings in per_value.items():
            if reg:
                try:
                    REGISTRIES[reg].entry(str(value), f"{where}: defaults.{key}")
                except RegistryError as exc:
                    raise MatrixError(str(exc)) from None
            _mapping(settings, f"{where}: defaults.{key}.{value}")
    try:
        search = parse_search(raw.get("search"), where)
    except SearchError as exc:
        raise MatrixError(str(exc)) from None
    if search is not None and kind != TRAIN:
        raise MatrixError(f"{where}: a search block needs kind {TRAIN!r}, not {kind!r}")
    return Matrix(name=matrix_name(raw.get("name"), path), path=path, seeds=tuple(seeds), fixed=fixed, axes=axes,
                  include=include, exclude=exclude, defaults=defaults, description=str(raw.get("description", "")),
                  kind=kind, search=search)


def matrix_name(name: Any, path: Path) -> str:
    """The matrix's ``name:`` (else the file's stem), checked to be a plain identifier: records go
    to ``RESULTS/<name>/``, so a name with a separator or ``..`` would write outside ``--results``."""
    text = str(path.stem if name is None or name == "" else name)
    if not MATRIX_NAME.fullmatch(text) or ".." in text:
        source = f"name: in matrix {path}" if name not in (None, "") else f"the file name of matrix {path}"
        raise MatrixError(f"matrix name {text!r} (from {source}) is not valid: it names the folder RESULTS/<name>/, "
                          "so use letters, digits, '_', '-' and '.' only, starting with a letter or digit, "
                          "without '..'")
    return text


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MatrixError(f"{where} must be a mapping of key: value, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _dict_list(value: Any, where: str) -> List[Dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MatrixError(f"{where} must be a list of mappings, got {value!r}")
    return [{str(k): v for k, v in d.items()} for d in value]


def product_of(assignment: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``{a: [1, 2], b: 3}`` → ``[{a: 1, b: 3}, {a: 2, b: 3}]``; a list of dicts is a sub-axis."""
    choices: List[List[Dict[str, Any]]] = []
    for key, value in assignment.items():
        values = value if isinstance(value, list) else [value]
        opts: List[Dict[str, Any]] = []
        for v in values:
            if isinstance(v, dict):
                opts.extend(product_of(v))
            else:
                opts.append({key: v})
        choices.append(opts)
    out = []
    for combo in itertools.product(*choices):
        merged: Dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        out.append(merged)
    return out


def _matches(flat: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    for k, want in rule.items():
        wants = want if isinstance(want, list) else [want]
        if str(flat.get(k)) not in {str(w) for w in wants}:
            return False
    return True


def _matrix_defaults(m: Matrix, flat: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, per_value in m.defaults.items():
        for value, settings in per_value.items():
            if str(flat.get(key)) == str(value):
                out.update(settings)
    return out


def combinations(m: Matrix, overrides: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
    """The flat key=value mapping of every run of ``m``, in file order (before resolving)."""
    return [flat for _, _, flat in search_runs(m, overrides)]


def search_runs(m: Matrix, overrides: Optional[Mapping[str, Any]] = None) -> List[Tuple[Optional[int], Dict[str, Any], Dict[str, Any]]]:
    """``(trial, combination, flat)`` of every run of ``m``: the search trial (None without a ``search``
    block, :mod:`bench_suite.runner.search`), the matrix's combination before the trial's values and
    the seed, and the run's flat mapping."""
    overrides = {str(k): parse_value(v) for k, v in (overrides or {}).items()}
    # no axes: the fixed keys are one run, unless ``include`` lists the runs (a matrix of includes only)
    explicit = ([dict(m.fixed, **c) for c in product_of(m.axes)] if m.axes
                else [] if m.include else [dict(m.fixed)])
    keys = {k for c in explicit for k in c} | {"seed"}
    for rule in m.exclude:  # a typo in a rule's key would exclude nothing, silently
        for k in rule:
            if k not in keys:
                raise MatrixError(f"matrix {m.path}: exclude rule {rule} has key {k!r}, which no run of the "
                                  f"axes and fixed keys has; they have: {', '.join(sorted(keys))}")
    # rules naming a seed drop single runs once the seeds are known; the others whole combinations
    seeded = [r for r in m.exclude if "seed" in r]
    explicit = [c for c in explicit if not any(_matches(c, r) for r in m.exclude if "seed" not in r)]
    for inc in m.include:
        explicit.extend(dict(m.fixed, **c) for c in product_of(inc))
    flats = []
    for trial, base, combo in expand(m.search, [dict(c, **overrides) for c in explicit]):
        for seed in m.seeds:
            run = dict(combo)
            run.setdefault("seed", seed)
            if any(_matches(run, r) for r in seeded):
                continue
            flat = {**_matrix_defaults(m, run), **run}
            # the tuned defaults are training hyper-parameters; a speed spec has none of their keys
            flats.append((trial, base, dict(flat, kind=SPEED) if m.kind == SPEED else apply_defaults(flat)))
    return flats


def _selected(flat: Mapping[str, Any], only: Mapping[str, List[str]]) -> bool:
    """``flat`` has, for every key of ``only``, one of its values (``none`` matches an absent key)."""
    for key, wants in only.items():
        value = flat.get(key)
        if value is None:
            if not any(w.lower() in ("none", "null", "") for w in wants):
                return False
        elif not any(_same(value, parse_value(w)) for w in wants):
            return False
    return True


def _same(value: Any, want: Any) -> bool:
    """``0`` selects ``0.0`` and ``bt*`` selects ``bt*``: numbers compare as numbers, the rest as text."""
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(want, numbers) and not isinstance(value, bool):
        return float(value) == float(want)
    return str(value) == str(want)


def select_combinations(m: Matrix, flats: List[Dict[str, Any]], only: Mapping[str, List[str]],
                        where: str = "--only") -> List[int]:
    """The positions in ``flats`` (combinations of ``m``) that ``only`` selects (``{key: [values]}``,
    every key must match one value): a subset of the matrix with the same run ids.  A key no run
    has, or a selection of no run, is an error naming the values the matrix has."""
    for key, wants in only.items():
        if all(key not in f for f in flats):
            keys = sorted({k for f in flats for k in f})
            raise MatrixError(f"{where} {key}={','.join(wants)}: no run of {m.where} has key {key!r}; "
                              f"its runs have: {', '.join(keys)}")
        if not any(_selected(f, {key: wants}) for f in flats):
            values = sorted({str(f.get(key)) for f in flats})
            raise MatrixError(f"{where} {key}={','.join(wants)}: no run of {m.where} has that value; "
                              f"its values of {key}: {', '.join(values)}")
    picked = [i for i, f in enumerate(flats) if _selected(f, only)]
    if not picked:
        shown = " ".join(f"{k}={','.join(v)}" for k, v in only.items())
        raise MatrixError(f"{where} {shown}: each key matches some run of {m.where} but no run matches all")
    return picked


def parse_only(items: Iterable[str], where: str = "--only") -> Dict[str, List[str]]:
    """``["model=gcnii,jknet", "depth=64"]`` → ``{"model": ["gcnii", "jknet"], "depth": ["64"]}``."""
    out: Dict[str, List[str]] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise SpecError(f"{where} {item!r} is not KEY=VALUE[,VALUE...] (e.g. --only model=gcnii,jknet)")
        out.setdefault(k.strip(), []).extend(x.strip() for x in v.split(",") if x.strip())
    return out


def expand_matrix(m: Matrix | str | Path, overrides: Optional[Mapping[str, Any]] = None,
                  only: Optional[Mapping[str, List[str]]] = None) -> List[RunSpec]:
    """Every run of ``m`` as a validated :class:`RunSpec` (duplicates dropped, order kept);
    ``only`` keeps the runs it selects (:func:`select_combinations`)."""
    if not isinstance(m, Matrix):
        m = load_matrix(m)
    specs: List[RunSpec] = []
    seen, seen_flat = set(), set()
    flats = combinations(m, overrides)
    # messages number a run within the whole matrix, also when ``only`` picks a part of it
    picked = select_combinations(m, flats, only) if only else range(len(flats))
    for i in picked:
        flat = flats[i]
        key = json.dumps(flat, sort_keys=True, default=str)
        if key in seen_flat:  # e.g. an override collapsed an axis: resolve each distinct run once
            continue
        seen_flat.add(key)
        shown = ", ".join(f"{k}={v}" for k, v in flat.items())
        where = f"{m.where}, run #{i} {{{shown}}}"
        try:
            spec = resolve_run(flat, where)
        except RegistryError as exc:  # unknown plugin name: same family as a spec error
            raise MatrixError(str(exc)) from None
        if spec.run_id not in seen:
            seen.add(spec.run_id)
            specs.append(spec)
    return specs


def parse_overrides(items: Iterable[str], where: str = "command line") -> Dict[str, Any]:
    return {k: parse_value(v) for k, v in parse_assignments(items, where).items()}
