"""Plugin registries: one small typed registry per kind of plugin.

Modelled on timm's model registry and GraphGym's register module: explicit string
keys, decorator or call form, a duplicate key is an error, an unknown key is an
error that lists the valid keys and suggests the closest one.  Every plugin is a
class (or factory function) configured only through explicit keyword arguments, so
a spec's keys can be checked against its signature before anything runs.

Discovery is explicit:

* built-ins are imported by ``bench_suite`` itself;
* installed packages register through the entry-point group ``bench_suite.plugins``
  (each entry point names a module, or a callable taking no arguments);
* local code is imported with ``--plugin some.module`` on the command line.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import typing
from dataclasses import dataclass, is_dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

ENTRY_POINT_GROUP = "bench_suite.plugins"


class RegistryError(KeyError):
    """An unknown or duplicate plugin key, or bad plugin parameters."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric parameter: ``low <= value <= high`` (None: no bound).

    A plugin declares one on a constructor keyword with ``Annotated[int, Range(1, None)]``;
    parameters with a conventional name get :data:`COMMON_RANGES` without declaring anything.
    ``None`` as a value (an optional parameter left unset) is always accepted.
    """

    low: Optional[float] = None
    high: Optional[float] = None

    def __contains__(self, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value is None  # a wrong type is reported by the type check, not here
        if math.isnan(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f">= {self.low:g}" if self.low is not None else "any number"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in {self.low:g}..{self.high:g}"


#: Ranges of parameter names that mean the same in every plugin (and the training protocol),
#: so a plugin's ``hidden`` or an executor's ``workers`` is checked without declaring it.
COMMON_RANGES: Dict[str, Range] = {
    "hidden": Range(1), "heads": Range(1), "mlp_layers": Range(1),
    "dropout": Range(0, 1), "attn_dropout": Range(0, 1),
    "workers": Range(0), "threads": Range(0), "cpus_per_task": Range(1), "time_min": Range(1),
}


def range_message(name: str, value: Any, rng: Range, where: str = "", owner: str = "") -> str:
    """``hidden=0 (from …) is out of range for model 'gcn': use a value >= 1``."""
    loc = f" (from {where})" if where else ""
    of = f" for {owner}" if owner else ""
    return f"{name}={value!r}{loc} is out of range{of}: use a value {rng.describe()}"


def declared_ranges(obj: Callable[..., Any]) -> Dict[str, Range]:
    """``keyword -> Range`` of ``obj``'s constructor (or function) keywords: an ``Annotated[…, Range]``
    on the keyword wins, else :data:`COMMON_RANGES` by name."""
    target = obj.__init__ if inspect.isclass(obj) and not is_dataclass(obj) else obj
    try:
        names = [p.name for p in inspect.signature(target).parameters.values()]
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: no declared ranges
        hints = {}
    out = {}
    for name in names:
        declared = [m for m in getattr(hints.get(name), "__metadata__", ()) if isinstance(m, Range)]
        rng = declared[0] if declared else COMMON_RANGES.get(name)
        if rng is not None:
            out[name] = rng
    return out


@dataclass(frozen=True)
class Param:
    """One constructor keyword of a plugin."""

    name: str
    default: Any
    annotation: str
    range: Optional[Range] = None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        valid = f", {self.range.describe()}" if self.range is not None else ""
        if self.required:
            return f"{self.name} (required{valid})"
        return f"{self.name}={self.default!r}" + (f" ({self.range.describe()})" if self.range is not None else "")


@dataclass(frozen=True)
class Entry:
    key: str
    obj: Callable[..., Any]
    kind: str
    source: str  # module that registered it

    @property
    def doc(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """A mapping from string keys to plugin classes of one kind.

    ``context_args`` are constructor arguments the framework supplies itself
    (input width, number of classes, the quantizer factory, ...); they are not
    user-settable spec keys.
    """

    def __init__(self, kind: str, context_args: Tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.context_args = tuple(context_args)
        self._entries: Dict[str, Entry] = {}

    # -- registration -------------------------------------------------------
    def register(self, key: str, obj: Optional[Callable[..., Any]] = None):
        """Register ``obj`` under ``key``; usable as ``@REG.register("name")``."""
        if not isinstance(key, str) or not key:
            raise RegistryError(f"{self.kind} key must be a non-empty string, got {key!r}")

        def _do(o: Callable[..., Any]) -> Callable[..., Any]:
            if key in self._entries:
                prev = self._entries[key]
                raise RegistryError(
                    f"duplicate {self.kind} key {key!r}: already registered by "
                    f"{prev.source} ({prev.obj.__qualname__}), now again by "
                    f"{getattr(o, '__module__', '?')} ({getattr(o, '__qualname__', o)})"
                )
            _check_keyword_only_config(self.kind, key, o, self.context_args)
            self._entries[key] = Entry(key, o, self.kind, getattr(o, "__module__", "?"))
            return o

        return _do(obj) if obj is not None else _do

    def unregister(self, key: str) -> None:
        """Remove a key (used by tests that plant temporary plugins)."""
        self._entries.pop(key, None)

    # -- lookup -------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> List[str]:
        return sorted(self._entries)

    def entry(self, key: str, where: str = "") -> Entry:
        try:
            return self._entries[key]
        except KeyError:
            raise RegistryError(unknown_message(self.kind, key, self.keys(), where)) from None

    def get(self, key: str, where: str = "") -> Callable[..., Any]:
        return self.entry(key, where).obj

    def params(self, key: str) -> List[Param]:
        """The user-settable constructor keywords of plugin ``key``."""
        return plugin_params(self.get(key), self.context_args)

    def check_params(self, key: str, params: Mapping[str, Any], where: str = "") -> None:
        """Raise if ``params`` has a key the plugin does not accept, or a value outside its range."""
        valid = {p.name: p for p in self.params(key)}
        for name, value in params.items():
            if name not in valid:
                raise RegistryError(
                    unknown_message(f"parameter of {self.kind} {key!r}", name, sorted(valid), where)
                )
            rng = valid[name].range
            if rng is not None and value not in rng:
                raise RegistryError(range_message(name, value, rng, where, f"{self.kind} {key!r}"))

    def create(self, key: str, /, *, where: str = "", **kwargs: Any) -> Any:
        obj = self.get(key, where)
        user = {k: v for k, v in kwargs.items() if k not in self.context_args}
        self.check_params(key, user, where)
        return obj(**kwargs)


def unknown_message(kind: str, key: object, valid: List[str], where: str = "") -> str:
    loc = f" (from {where})" if where else ""
    msg = f"unknown {kind} {key!r}{loc}; valid: {', '.join(valid) if valid else '(none registered)'}"
    close = closest(str(key), valid)
    if close:
        msg += f". Did you mean {close!r}?"
    return msg


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): a swap of two
    neighbouring letters counts as one edit, so ``gnc`` is one edit from ``gcn``."""
    prev2: List[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The valid choice nearest to ``word`` by edit distance (ties broken by
    difflib's similarity), or None when nothing is within half the word's length."""
    word_l = word.lower()
    best = None
    for c in choices:
        d = edit_distance(word_l, c.lower())
        ratio = difflib.SequenceMatcher(None, word_l, c.lower()).ratio()
        key = (d, -ratio, c)
        if d <= max(1, len(word) // 2) and (best is None or key < best):
            best = key
    return best[2] if best else None


def plugin_params(obj: Callable[..., Any], context_args: Tuple[str, ...] = ()) -> List[Param]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    ranges = declared_ranges(obj)
    out = []
    for p in sig.parameters.values():
        if p.name in ("self",) or p.name in context_args:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        out.append(Param(p.name, p.default, "" if ann is inspect.Parameter.empty else str(ann), ranges.get(p.name)))
    return out


def _check_keyword_only_config(kind: str, key: str, obj: Callable[..., Any], context_args) -> None:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise RegistryError(
                f"{kind} {key!r} ({getattr(obj, '__qualname__', obj)}) takes *{p.name}; plugins must "
                "be configured only through explicit keyword arguments so specs can be validated"
            )


# -- the registries ---------------------------------------------------------
#: datasets: ``cls(data_dir=..., download=..., **params)`` -> object with ``.load(seed)``
DATASETS = Registry("dataset", context_args=("data_dir", "download"))
#: models: ``cls(in_dim, num_classes, depth, quant, **params)`` -> ``torch.nn.Module``
MODELS = Registry("model", context_args=("in_dim", "num_classes", "depth", "quant"))
#: propagations for decoupled models: ``cls(depth, quant, **params)``
PROPAGATIONS = Registry("propagation", context_args=("depth", "quant"))
#: quantizers: ``cls(bits, role, **params)`` -> ``torch.nn.Module``
QUANTIZERS = Registry("quantizer", context_args=("bits", "role"))
#: executors for the runner: ``cls(**params)``
EXECUTORS = Registry("executor")
#: graph transforms applied during training (DropEdge, ...): ``cls(**params)``
TRANSFORMS = Registry("transform")

REGISTRIES: Dict[str, Registry] = {
    "datasets": DATASETS,
    "models": MODELS,
    "propagations": PROPAGATIONS,
    "quantizers": QUANTIZERS,
    "executors": EXECUTORS,
    "transforms": TRANSFORMS,
}

_loaded_modules: set = set()
_entry_points_loaded = False


def registry(kind: str) -> Registry:
    key = kind if kind in REGISTRIES else kind + "s"
    if key not in REGISTRIES:
        raise RegistryError(unknown_message("plugin kind", kind, sorted(REGISTRIES)))
    return REGISTRIES[key]


def load_plugin_module(name: str) -> None:
    """Import a local plugin module (``--plugin some.module``) once."""
    if name in _loaded_modules:
        return
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise RegistryError(f"cannot import plugin module {name!r} (from --plugin): {exc}") from exc
    _loaded_modules.add(name)


def load_entry_points() -> None:
    """Import every module advertised in the ``bench_suite.plugins`` entry-point group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _loaded_modules:
            continue
        obj = ep.load()
        _loaded_modules.add(ep.value)
        if callable(obj) and not inspect.ismodule(obj):
            obj()


def load_all(plugins: Tuple[str, ...] | List[str] = ()) -> None:
    """Built-ins, entry points, then ``--plugin`` modules (in that order)."""
    import bench_suite.builtins  # noqa: F401  (registers the built-in plugins)

    load_entry_points()
    for mod in plugins:
        load_plugin_module(mod)
