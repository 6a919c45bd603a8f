"""Run specs: a frozen, canonical, hashable description of one training run.

A flat ``key=value`` mapping (the CLI's and the matrix files' form) is resolved
against the registry: the fixed keys below, then every constructor keyword of the
chosen dataset, model, propagation, quantizer and transform.  A key that fits
nothing fails at once, naming where it came from and the valid keys; a key that
fits two plugins must be written with its prefix (``model.dropout=0.5``).
Defaults are filled in, so the spec (and its hash) says everything that shaped
the run.  Bumping ``SPEC_VERSION`` invalidates every old record on purpose.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, fields
from typing import Annotated, Any, Dict, Mapping, Tuple

import yaml

from bench_suite.bits import BITS, FP32_BITS, is_full_precision
from bench_suite.record import group_key, run_label
from bench_suite.registry import (
    DATASETS,
    MODELS,
    PROPAGATIONS,
    QUANTIZERS,
    TRANSFORMS,
    Range,
    Registry,
    RegistryError,
    declared_ranges,
    is_core,
    provenance,
    range_message,
    run_id_provenance,
    unknown_message,
)

#: 2: the aggregate role quantizes the normalised aggregation (METHOD.md §2), records carry the
#: dataset's metric, methods train in their own papers' settings (the defaults files)
SPEC_VERSION = 2
#: keys added since SPEC_VERSION was last bumped, with the default that computes what runs did
#: before them: a key at that default is left out of the canonical spec, so the run ids of
#: existing records stay valid; set to anything else, it is written (and the run id differs).
#: The next version bump writes every key and empties this.
UNVERSIONED_DEFAULTS: Dict[Tuple[str, str], Any] = {
    ("dataset", "sparse_features"): False,
    ("train", "lr_decay"): 1.0,
    ("train", "lr_decay_every"): 50,
}


class SpecError(ValueError):
    """A spec key or value that is not valid; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (METHOD.md §10): Adam, best-validation model selection."""

    epochs: Annotated[int, Range(1)] = 200
    lr: Annotated[float, Range(0)] = 0.01
    weight_decay: Annotated[float, Range(0)] = 5e-4
    patience: Annotated[int, Range(0)] = 100
    quant_lr: Annotated[float, Range(0)] = 1e-4
    #: step schedule: the model parameters' learning rate (not the quantizers') is multiplied by
    #: ``lr_decay`` after every ``lr_decay_every`` epochs; 1.0 keeps it constant
    lr_decay: Annotated[float, Range(0, 1)] = 1.0
    lr_decay_every: Annotated[int, Range(1)] = 50
    seed: int = 0


TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
TOP_KEYS = ("dataset", "model", "depth", "quant", "bits", "transform") + TRAIN_KEYS
SECTIONS = ("dataset", "model", "propagation", "quant", "transform", "train")


def parse_value(text: Any) -> Any:
    """``"0.01"`` → 0.01, ``"true"`` → True, ``"bt*"`` → ``"bt*"`` (YAML scalars)."""
    if not isinstance(text, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        val = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(val, (dict, list)) or val is None and text.lower() not in ("null", "none", "~") else val


def _coerce(value: Any, default: Any, key: str, where: str) -> Any:
    if default is None or default is inspect.Parameter.empty or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise SpecError(f"{key}={value!r}{_where(where)} has the wrong type: expected {type(default).__name__} "
                    f"like the default {default!r}")


def _where(where: str) -> str:
    return f" (from {where})" if where else ""


def _plugin_defaults(reg: Registry, name: str, skip=()) -> Dict[str, Any]:
    return {p.name: p.default for p in reg.params(name) if p.name not in skip}


@dataclass(frozen=True)
class RunSpec:
    """A resolved run spec; ``canonical`` is sorted-key JSON and ``run_id`` its hash."""

    canonical: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        return cls(json.dumps(d, sort_keys=True, separators=(",", ":")))

    @property
    def data(self) -> Dict[str, Any]:
        return json.loads(self.canonical)

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(**self.data["train"])

    @property
    def seed(self) -> int:
        return int(self.data["train"]["seed"])

    def group_key(self) -> str:
        """Everything but the seed: the unit a report aggregates over (:func:`bench_suite.record.group_key`)."""
        return group_key(self.data)

    def label(self) -> str:
        """A short human name, e.g. ``cora/gcn+dropedge/L8/qlr-int2-bt*/s0`` (:func:`bench_suite.record.run_label`)."""
        return run_label(self.data)


def resolve_spec(flat: Mapping[str, Any], where: str = "") -> RunSpec:
    """Resolve a flat ``key=value`` mapping into a canonical :class:`RunSpec`."""
    raw = {str(k): parse_value(v) for k, v in flat.items()}
    for req in ("dataset", "model"):
        if req not in raw:
            raise SpecError(f"missing required key {req!r}{_where(where)}; "
                            f"valid {req}s: {', '.join((DATASETS if req == 'dataset' else MODELS).keys())}")

    dataset = str(raw.pop("dataset"))
    model = str(raw.pop("model"))
    DATASETS.entry(dataset, where)
    MODELS.entry(model, where)
    quant = str(raw.pop("quant", "fp32"))
    full_precision = is_full_precision(QUANTIZERS.entry(quant, where).obj)
    bits_raw = raw.pop("bits", None)
    transform = raw.pop("transform", None)
    transform = None if transform in (None, "none") else str(transform)
    if transform is not None:
        TRANSFORMS.entry(transform, where)
    depth = raw.pop("depth", 2)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 128:
        raise SpecError(f"depth={depth!r}{_where(where)} is not valid; use an integer in 1..128")

    if full_precision:
        if bits_raw not in (None, FP32_BITS):
            low_bit = [k for k in QUANTIZERS.keys() if not is_full_precision(QUANTIZERS.get(k))]
            raise SpecError(f"bits={bits_raw!r}{_where(where)} makes no sense with quant={quant}; "
                            f"drop bits or choose a quantizer ({', '.join(low_bit)})")
        bits = FP32_BITS
    else:
        if bits_raw is None:
            raise SpecError(f"quant={quant!r}{_where(where)} needs bits; valid: {', '.join(map(str, BITS))}")
        if bits_raw not in BITS:
            raise SpecError(f"bits={bits_raw!r}{_where(where)} is not valid for quant={quant!r}; "
                            f"valid: {', '.join(map(str, BITS))}")
        bits = int(bits_raw)

    model_defaults = _plugin_defaults(MODELS, model, skip=("propagation_params",))
    propagation = None
    if "propagation" in model_defaults:
        propagation = str(raw.pop("propagation", raw.pop("model.propagation", model_defaults["propagation"])))
        PROPAGATIONS.entry(propagation, where)

    sections: Dict[str, Tuple[Registry | None, str | None, Dict[str, Any]]] = {
        "dataset": (DATASETS, dataset, _plugin_defaults(DATASETS, dataset)),
        "model": (MODELS, model, {k: v for k, v in model_defaults.items() if k != "propagation"}),
        "propagation": (PROPAGATIONS, propagation,
                        _plugin_defaults(PROPAGATIONS, propagation) if propagation else {}),
        "quant": (QUANTIZERS, quant, _plugin_defaults(QUANTIZERS, quant)),
        "transform": (TRANSFORMS, transform, _plugin_defaults(TRANSFORMS, transform) if transform else {}),
        "train": (None, None, {f.name: f.default for f in fields(TrainConfig)}),
    }
    chosen: Dict[str, Dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in raw.items():
        if "." in key:
            sec, _, name = key.partition(".")
            if sec not in sections:
                raise SpecError(unknown_message("spec section", sec, list(SECTIONS), where))
            if name not in sections[sec][2]:
                raise SpecError(unknown_message(f"key of {sec} {sections[sec][1] or ''}".rstrip(), name,
                                                sorted(sections[sec][2]), where))
            targets = [sec]
        else:
            targets = [s for s in SECTIONS if key in sections[s][2]]
        if not targets:
            valid = sorted(set(TOP_KEYS) | {k for s in SECTIONS for k in sections[s][2]})
            msg = unknown_message("spec key", key, valid, where)
            raise SpecError(msg)
        if len(targets) > 1:
            raise SpecError(f"spec key {key!r}{_where(where)} fits several sections ({', '.join(targets)}); "
                            f"write it as {' or '.join(t + '.' + key for t in targets)}")
        sec = targets[0]
        chosen[sec][key.partition(".")[2] if "." in key else key] = value

    out: Dict[str, Any] = {"version": SPEC_VERSION}
    for sec in SECTIONS:
        reg, name, defaults = sections[sec]
        if sec != "train" and name is None:
            out[sec] = None
            continue
        vals = {}
        if sec == "train":
            ranges = declared_ranges(TrainConfig)
        else:
            ranges = {p.name: p.range for p in reg.params(name)} if defaults else {}
        for k, default in defaults.items():
            if k in chosen[sec]:
                vals[k] = _coerce(chosen[sec][k], default, k, where)
                rng = ranges.get(k)
                if rng is not None and vals[k] not in rng:
                    raise SpecError(range_message(k, vals[k], rng, where, "training" if sec == "train"
                                                  else f"{sec} {name!r}"))
            elif default is inspect.Parameter.empty:
                raise SpecError(f"{sec} {name!r} needs {k}=…{_where(where)}")
            else:
                vals[k] = default
            if (sec, k) in UNVERSIONED_DEFAULTS and _same_value(vals[k], UNVERSIONED_DEFAULTS[(sec, k)]):
                del vals[k]
        _check_json(vals, sec, where)
        if sec != "train":
            vals["name"] = name
        out[sec] = vals
    out["model"]["depth"] = depth
    out["quant"]["bits"] = bits
    third_party = spec_plugins(out, third_party_only=True)
    if third_party:  # a changed third-party plugin is another run; core specs keep their ids
        out["plugins"] = third_party
    spec = RunSpec.from_dict(out)
    validate_spec(spec, where)
    return spec


PLUGIN_SECTIONS = (("dataset", DATASETS), ("model", MODELS), ("propagation", PROPAGATIONS),
                   ("quant", QUANTIZERS), ("transform", TRANSFORMS))


def spec_plugins(data: Mapping[str, Any], third_party_only: bool = False) -> Dict[str, Dict[str, Any]]:
    """``section -> provenance`` of the registered object each section of a spec uses.

    ``third_party_only``: only plugins outside the suite and its ``baselines`` package, with what
    goes into the run id (distribution and version, or module and file SHA-256); otherwise every
    section, with the file and registering module too (what a record's ``env.plugins`` keeps).
    """
    out = {}
    for sec, reg in PLUGIN_SECTIONS:
        part = data.get(sec)
        if not part or part.get("name") not in reg:
            continue
        entry = reg.entry(part["name"])
        if third_party_only:
            if not is_core(entry):
                out[sec] = run_id_provenance(entry)
        else:
            out[sec] = dict(provenance(entry), key=part["name"])
    return out


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _check_json(vals: Mapping[str, Any], sec: str, where: str) -> None:
    try:
        json.dumps(vals)
    except TypeError as exc:
        raise SpecError(f"{sec} parameters{_where(where)} are not plain values: {exc}") from None


def validate_spec(spec: RunSpec, where: str = "") -> None:
    """Plugin-specific value checks (``validate_spec`` classmethods) before anything runs."""
    d = spec.data
    for sec, reg in (("dataset", DATASETS), ("model", MODELS), ("propagation", PROPAGATIONS),
                     ("quant", QUANTIZERS), ("transform", TRANSFORMS)):
        part = d.get(sec)
        if not part:
            continue
        obj = reg.get(part["name"])
        check = getattr(obj, "validate_params", None)
        if check is not None:
            params = {k: v for k, v in part.items() if k != "name"}
            try:
                check(**params)
            except (ValueError, TypeError) as exc:
                raise SpecError(f"{sec} {part['name']!r}{_where(where)}: {exc}") from None


def parse_assignments(items, where: str = "command line") -> Dict[str, str]:
    """``["depth=2", "lr=0.1"]`` → ``{"depth": "2", "lr": "0.1"}``; an item without ``=`` or a key
    given twice (``depth=2 depth=3``: which one was meant?) is a :class:`SpecError`."""
    out: Dict[str, str] = {}
    for item in items:
        k, eq, v = str(item).partition("=")
        k = k.strip()
        if not eq or not k:
            raise SpecError(f"argument {item!r} ({where}) is not key=value")
        if k in out:
            raise SpecError(f"key {k!r} is given twice ({where}): {k}={out[k]} and {k}={v.strip()}; give it once")
        out[k] = v.strip()
    return out


def spec_from_cli(args: list[str], where: str = "command line", defaults: bool = False) -> RunSpec:
    """``key=value`` arguments as a spec; ``defaults``: fill in the tuned defaults as a matrix run does."""
    flat = parse_assignments(args, where)
    if defaults:
        from bench_suite.defaults import apply_defaults

        flat = apply_defaults(flat)
    return resolve_spec(flat, where)


__all__ = ["RunSpec", "SpecError", "TrainConfig", "resolve_spec", "spec_from_cli", "parse_value", "RegistryError"]
