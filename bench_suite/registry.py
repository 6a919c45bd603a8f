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
* local code is imported with ``--plugin some.module`` (found on ``sys.path``, then in the
  current folder) or ``--plugin path/to/file.py`` on the command line.

A plugin that fails to import is named in one warning line and left out
(:func:`load_failures`); the error of a key it would have registered names it too.
Each entry knows the module that registered it, and :func:`provenance` says which
distribution and version (or, for a plugin outside any distribution, which file and
its SHA-256) that module came from: records keep it, and the run id of a spec that
uses a third-party plugin depends on it (:func:`spec_plugins`).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import sys
import typing
from dataclasses import dataclass, is_dataclass
from pathlib import Path
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
    plugin: str = ""  # the plugin being loaded when it was registered ("" outside a plugin load)

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
        # the module whose code calls register (decorator or call form): the one that owns the key,
        # even when it registers a class defined elsewhere
        caller = sys._getframe(1).f_globals.get("__name__", "?")

        def _do(o: Callable[..., Any]) -> Callable[..., Any]:
            if key in self._entries:
                prev = self._entries[key]
                raise RegistryError(
                    f"duplicate {self.kind} key {key!r}: already registered by module {prev.source}"
                    f"{_plugin_note(prev.plugin)} ({prev.obj.__qualname__}), now again by module {caller}"
                    f"{_plugin_note(_loading[-1] if _loading else '')} ({getattr(o, '__qualname__', o)})"
                )
            _check_keyword_only_config(self.kind, key, o, self.context_args)
            self._entries[key] = Entry(key, o, self.kind, caller, _loading[-1] if _loading else "")
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
    if _failed:  # the key may be one the broken plugin would have registered
        msg += "; not loaded: " + "; ".join(f"{name}, which failed ({err})" for name, err in _failed.items())
    return msg


def _plugin_note(plugin: str) -> str:
    return f" (loading {plugin})" if plugin else ""


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
#: the plugins being imported now (innermost last): entries registered meanwhile belong to it
_loading: List[str] = []
#: plugin description -> one-line error, for plugins that failed to load (left out)
_failed: Dict[str, str] = {}
#: failures already shown to the user (a warning or an error naming them)
_reported: set = set()


def registry(kind: str) -> Registry:
    key = kind if kind in REGISTRIES else kind + "s"
    if key not in REGISTRIES:
        raise RegistryError(unknown_message("plugin kind", kind, sorted(REGISTRIES)))
    return REGISTRIES[key]


def is_plugin_path(ref: str) -> bool:
    """``--plugin`` names a file (``./my_plugin.py``, ``plugins/x.py``) rather than a module."""
    return ref.endswith(".py") or os.sep in ref or (os.altsep is not None and os.altsep in ref)


def plugin_refs(refs: Iterable[str]) -> List[str]:
    """``--plugin`` values as a worker elsewhere can load them: a file as its absolute path."""
    return [str(Path(r).expanduser().resolve()) if is_plugin_path(r) else r for r in refs]


def one_line_error(exc: BaseException) -> str:
    """``Type: message`` with the message's line breaks folded, for one-line reports."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load(description: str, importer: Callable[[], Any]) -> bool:
    """Run ``importer`` as plugin ``description``; on any error remove what it registered, remember
    the failure (:func:`load_failures`) and return False: the other plugins and commands go on."""
    before = {kind: set(reg._entries) for kind, reg in REGISTRIES.items()}
    _loading.append(description)
    try:
        importer()
        return True
    except Exception as exc:  # noqa: BLE001 - any error of third-party code: name it, go on without it
        for kind, reg in REGISTRIES.items():
            for key in set(reg._entries) - before[kind]:
                reg.unregister(key)
        _failed[description] = one_line_error(exc)
        return False
    finally:
        _loading.pop()


def _import_file(path: Path) -> None:
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined there pickle by reference, like any module's
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _import_module(name: str) -> None:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `--plugin module` from the current folder, also for the console script
    importlib.import_module(name)


def load_plugin_module(ref: str) -> None:
    """Import a local plugin once: a module name (``--plugin some.module``) or a file (``--plugin ./x.py``).
    A failure is remembered and reported (:func:`load_failures`), not raised."""
    if is_plugin_path(ref):
        path = Path(ref).expanduser().resolve()
        key = str(path)
        if key in _loaded_modules:
            return
        if not path.is_file():
            _failed[f"--plugin {ref}"] = f"FileNotFoundError: no such file {str(path)!r}"
            return
        ok = _load(f"--plugin {ref}", lambda: _import_file(path))
    else:
        key = ref
        if key in _loaded_modules:
            return
        ok = _load(f"--plugin {ref}", lambda: _import_module(ref))
    if ok:
        _loaded_modules.add(key)


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
        dist = getattr(ep, "dist", None)
        where = f" of distribution {dist.name} {dist.version}" if dist is not None else ""
        if _load(f"entry point {ep.name!r} ({ep.value}{where})", lambda ep=ep: _call_entry_point(ep.load())):
            _loaded_modules.add(ep.value)


def _call_entry_point(obj: Any) -> None:
    if callable(obj) and not inspect.ismodule(obj):
        obj()


def load_failures() -> Dict[str, str]:
    """``plugin description -> error`` of every plugin that failed to load in this process."""
    return dict(_failed)


def report_load_failures(file=None, skip_named_in: str = "") -> None:
    """One warning line per failed plugin not reported yet (nor named in ``skip_named_in``, an error
    message about to be shown)."""
    for name, err in _failed.items():
        if name in _reported or name in skip_named_in:
            continue
        _reported.add(name)
        print(f"bench-suite: warning: plugin {name} failed to load and is left out: {err}",
              file=file or sys.stderr)


# -- provenance ---------------------------------------------------------------
CORE_PACKAGES = ("bench_suite", "baselines")


def is_core(entry: Entry) -> bool:
    """Registered by the suite itself or its ``baselines`` plugin package."""
    return entry.source.split(".")[0] in CORE_PACKAGES


@functools.lru_cache(maxsize=None)
def _distributions() -> Dict[str, List[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


@functools.lru_cache(maxsize=None)
def _module_provenance(module: str) -> Tuple[Tuple[str, Any], ...]:
    from importlib.metadata import PackageNotFoundError, version

    top = module.split(".")[0]
    if top in CORE_PACKAGES:
        import bench_suite

        return (("distribution", "bench-suite"), ("version", bench_suite.__version__))
    for dist in _distributions().get(top, []):
        try:
            return (("distribution", dist), ("version", version(dist)))
        except PackageNotFoundError:
            continue
    path = getattr(sys.modules.get(module), "__file__", None)
    if path and os.path.isfile(path):
        return (("module", module), ("file", str(path)))
    return (("module", module),)


def _sha256(path: str) -> str:
    st = os.stat(path)
    return _sha256_of(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def provenance(entry: Entry) -> Dict[str, Any]:
    """Where ``entry``'s code came from: ``{distribution, version}`` for an installed package, or
    ``{module, file, sha256}`` for a module or file outside any distribution."""
    out = dict(_module_provenance(entry.source), registered_by=entry.source)
    if "file" in out:
        out["sha256"] = _sha256(out["file"])
    return out


def run_id_provenance(entry: Entry) -> Dict[str, Any]:
    """The part of :func:`provenance` a third-party plugin puts into the run id: no path, no module
    that registered it (a moved file with the same content is the same plugin)."""
    return {k: v for k, v in provenance(entry).items() if k in ("distribution", "version", "module", "sha256")}


def load_all(plugins: Tuple[str, ...] | List[str] = ()) -> None:
    """Built-ins, entry points, then ``--plugin`` modules (in that order); a plugin that fails
    is left out and remembered (:func:`load_failures`, :func:`report_load_failures`)."""
    import bench_suite.builtins  # noqa: F401  (registers the built-in plugins)

    load_entry_points()
    for mod in plugins:
        load_plugin_module(mod)
