"""Run specs: a frozen, canonical, hashable description of one run: a training run, or a speed
measurement of the integer engine (``kind: speed``, :func:`resolve_speed_spec`).

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
from typing import Annotated, Any, Dict, Mapping, Optional, Tuple

import yaml

from bench_suite.bits import BITS, FP32_BITS, is_full_precision
from bench_suite.record import SPEED, TRAIN, group_key, run_label, spec_kind, spec_seed
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
    ("train", "select"): "score",
    ("propagation", "quantize_output"): True,
    ("quant", "grad_mask"): "input",
    ("model", "batchnorm"): False,
    ("model", "self_weight"): False,
    ("model", "variant"): "xu",
    ("model", "star"): False,
    ("dataset", "row_normalize"): False,
    # a speed spec's measure section (speed specs have their own SPEED_SPEC_VERSION; the same rule)
    ("measure", "sums"): "exact",
    ("measure", "train_protocol"): "brief",
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
    #: which epoch's model is kept (and what ``patience`` counts): ``score``, the best validation
    #: score, ties broken by the lower validation loss; ``loss``, the lowest validation loss, ties to
    #: the later epoch (the DropEdge authors' EarlyStopping, src/earlystopping.py)
    select: str = "score"
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


def _depth(depth: Any, where: str) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 128:
        raise SpecError(f"depth={depth!r}{_where(where)} is not valid; use an integer in 1..128")
    return depth


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
    def kind(self) -> str:
        """What the run does: ``train`` (a training run; its spec has no ``kind`` field, so the ids of
        training runs predate the field) or ``speed`` (a speed measurement of the integer engine)."""
        return spec_kind(self.data)

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(**self.data["train"])

    @property
    def measure(self) -> "SpeedConfig":
        return SpeedConfig(**self.data["measure"])

    @property
    def seed(self) -> int:
        return spec_seed(self.data)

    @property
    def dataset(self) -> Optional[Dict[str, Any]]:
        """The dataset section (name and parameters) whose files the run reads; None for a speed
        measurement on a generated graph."""
        d = self.data
        if self.kind == SPEED:
            graph = d["graph"]
            return {"name": graph["name"]} if graph.get("source") == "dataset" else None
        return d["dataset"]

    def group_key(self) -> str:
        """Everything but the seed: the unit a report aggregates over (:func:`bench_suite.record.group_key`)."""
        return group_key(self.data)

    def label(self) -> str:
        """A short human name, e.g. ``cora/gcn+dropedge/L8/qlr-int2-bt*/s0`` (:func:`bench_suite.record.run_label`)."""
        return run_label(self.data)


#: a spec section while resolving: its source (a registry, or the dataclass of a config section such as
#: :class:`TrainConfig`), the chosen plugin (None for a config section, or a section left out) and defaults
Section = Tuple[Any, Optional[str], Dict[str, Any]]
#: what an error calls each config section
CONFIG_OWNERS = {"train": "training", "measure": "speed measurement"}
#: the valid values of a config section's string keys
CONFIG_CHOICES = {("train", "select"): ("score", "loss")}


def config_defaults(cls: type) -> Dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def _resolve_sections(raw: Mapping[str, Any], sections: Mapping[str, Section], top_keys: Tuple[str, ...],
                      where: str) -> Dict[str, Optional[Dict[str, Any]]]:
    """Assign each flat key of ``raw`` to the one section that has it (``section.key`` when several
    do), check its type and range, and fill in every default; a plugin section also gets its
    ``name``, a section without a plugin is None."""
    order = list(sections)
    chosen: Dict[str, Dict[str, Any]] = {s: {} for s in order}
    for key, value in raw.items():
        if "." in key:
            sec, _, name = key.partition(".")
            if sec not in sections:
                raise SpecError(unknown_message("spec section", sec, order, where))
            if name not in sections[sec][2]:
                raise SpecError(unknown_message(f"key of {sec} {sections[sec][1] or ''}".rstrip(), name,
                                                sorted(sections[sec][2]), where))
            targets = [sec]
        else:
            targets = [s for s in order if key in sections[s][2]]
        if not targets:
            valid = sorted(set(top_keys) | {k for s in order for k in sections[s][2]})
            raise SpecError(unknown_message("spec key", key, valid, where))
        if len(targets) > 1:
            raise SpecError(f"spec key {key!r}{_where(where)} fits several sections ({', '.join(targets)}); "
                            f"write it as {' or '.join(t + '.' + key for t in targets)}")
        chosen[targets[0]][key.partition(".")[2] if "." in key else key] = value

    out: Dict[str, Optional[Dict[str, Any]]] = {}
    for sec in order:
        source, name, defaults = sections[sec]
        config = not isinstance(source, Registry)
        if not config and name is None:
            out[sec] = None
            continue
        vals = {}
        if config:
            ranges, owner = declared_ranges(source), CONFIG_OWNERS.get(sec, sec)
        else:
            ranges, owner = ({p.name: p.range for p in source.params(name)} if defaults else {}), f"{sec} {name!r}"
        for k, default in defaults.items():
            if k in chosen[sec]:
                vals[k] = _coerce(chosen[sec][k], default, k, where)
                rng = ranges.get(k)
                if rng is not None and vals[k] not in rng:
                    raise SpecError(range_message(k, vals[k], rng, where, owner))
                choices = CONFIG_CHOICES.get((sec, k)) if config else None
                if choices and vals[k] not in choices:
                    raise SpecError(f"{k}={vals[k]!r}{_where(where)} is not a valid {owner} option: "
                                    f"use one of {', '.join(choices)}")
            elif default is inspect.Parameter.empty:
                raise SpecError(f"{sec} {name!r} needs {k}=…{_where(where)}")
            else:
                vals[k] = default
            if (sec, k) in UNVERSIONED_DEFAULTS and _same_value(vals[k], UNVERSIONED_DEFAULTS[(sec, k)]):
                del vals[k]
        _check_json(vals, sec, where)
        if not config:
            vals["name"] = name
        out[sec] = vals
    return out


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
    depth = _depth(raw.pop("depth", 2), where)

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

    sections: Dict[str, Section] = {
        "dataset": (DATASETS, dataset, _plugin_defaults(DATASETS, dataset)),
        "model": (MODELS, model, {k: v for k, v in model_defaults.items() if k != "propagation"}),
        "propagation": (PROPAGATIONS, propagation,
                        _plugin_defaults(PROPAGATIONS, propagation) if propagation else {}),
        "quant": (QUANTIZERS, quant, _plugin_defaults(QUANTIZERS, quant)),
        "transform": (TRANSFORMS, transform, _plugin_defaults(TRANSFORMS, transform) if transform else {}),
        "train": (TrainConfig, None, config_defaults(TrainConfig)),
    }
    out: Dict[str, Any] = {"version": SPEC_VERSION, **_resolve_sections(raw, sections, TOP_KEYS, where)}
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
        across = getattr(obj, "validate_spec", None)  # checks that need other sections (e.g. the quantizer)
        if across is not None:
            try:
                across(d)
            except (ValueError, TypeError) as exc:
                raise SpecError(f"{sec} {part['name']!r}{_where(where)}: {exc}") from None


# --------------------------------------------------------------------------- speed measurements

#: layout version of speed specs (their own: a training spec's ``version`` is :data:`SPEC_VERSION`)
SPEED_SPEC_VERSION = 1
#: generated graphs a speed measurement runs on: name -> (nodes, undirected edges, features, classes);
#: a Chung-Lu power-law graph with random features (:func:`bench_suite.engine.bench.power_law_graph`)
GENERATED_GRAPHS: Dict[str, Tuple[int, int, int, int]] = {
    "arxiv-like": (169_343, 1_166_243, 128, 40),
    "arxiv-like-10": (16_934, 116_624, 128, 40),
    "small": (2_000, 10_000, 64, 8),
    "tiny": (300, 1_200, 16, 4),
}
#: the implementations a speed measurement can time: DGL's FP32 layers, the suite's FP32 model, the integer
#: engine, and the tuned FP32 path (:mod:`bench_suite.engine.fp32`: DGL's sparse kernel with the normalisation
#: folded in), which is timed beside ``int`` whenever ``int`` is, listed or not (:class:`SpeedConfig`)
IMPLS = ("dgl-fp32", "suite-fp32", "int", "fp32-tuned")
#: the default ``impls`` of a speed spec (written in its canonical form, so it stays what it was: the tuned
#: FP32 path joins ``int`` without being listed, and the ids of existing speed specs do not change)
DEFAULT_IMPLS = ("dgl-fp32", "suite-fp32", "int")
#: the implementation every integer timing is also compared against (``speedup_vs_fp32``)
TUNED_FP32 = "fp32-tuned"
#: how the integer model gets its activation ranges: recomputed from every tensor (QLR's α·[min, max], the
#: exact simulation of the fake-quant model) or calibrated once and frozen
#: (:func:`bench_suite.engine.convert.calibrate`)
RANGES = ("dynamic", "calibrated")
#: how the integer model computes the neighbour sums that decide the aggregate role's codes and ranges
#: (:data:`bench_suite.engine.intmodel.SUMS`): the exact integer sums, or the fake-quant model's float32
#: order where it decides a code or a range (that model's codes exactly, at a cost in time)
SUMS = ("exact", "reference")
#: how a speed measurement trains its fake-quant model on a dataset: ``brief``, ``train_epochs`` epochs of
#: the default :class:`TrainConfig`; ``tuned``, the suite's own protocol for that model, quantizer and
#: dataset (the tuned defaults a matrix run gets: its ``train`` section and the model's keys)
TRAIN_PROTOCOLS = ("brief", "tuned")
#: a speed measurement's flat keys with their defaults (the engine's headline configuration), beside those of
#: the model, propagation and quantizer and of :class:`SpeedConfig`
SPEED_DEFAULTS = {"graph": "arxiv-like", "model": "gcn", "depth": 4, "hidden": 256, "quant": "qlr", "bits": 2}
SPEED_TOP_KEYS = ("kind", "graph", "model", "depth", "quant", "bits", "propagation")


@dataclass(frozen=True)
class SpeedConfig:
    """How a speed measurement runs (:func:`bench_suite.engine.bench.measure`): ``impls`` timed
    interleaved, one pass of each per round, the median of ``repeats`` rounds after ``warmup``.
    When ``impls`` has ``int``, the tuned FP32 path (:data:`TUNED_FP32`) is timed in the same rounds even if
    not listed, so that every integer timing has its speed-up over it (``speedup_vs_fp32``) beside the one
    over DGL (``speedup_vs_dgl``).

    ``breakdown`` profiles the integer model's stages afterwards; ``ranges``: dynamic, or calibrated
    on the deployed graph (or on ``calibration_graph`` / ``calibration_seed``); ``train_epochs`` trains
    the fake-quant model on a dataset's training nodes first (else one calibration forward sets its
    ranges) with the default :class:`TrainConfig`, or ``train_protocol: tuned`` (:data:`TRAIN_PROTOCOLS`)
    trains it in the suite's own protocol for that dataset, model and quantizer: the spec then holds
    that protocol's ``train`` section and the model keys it tunes (dropout, initialisation), as a
    matrix run's spec would; ``model_path`` loads a saved integer model instead of converting one; ``seed`` seeds the
    generated graph and the model's weights; ``sums`` (:data:`SUMS`) is the integer model's sums mode
    (:func:`bench_suite.engine.convert.convert`; a loaded model is switched to it), left out of the
    canonical spec at its default ``exact`` (:data:`UNVERSIONED_DEFAULTS`)."""

    impls: Tuple[str, ...] = DEFAULT_IMPLS
    repeats: Annotated[int, Range(5)] = 5
    warmup: Annotated[int, Range(0)] = 1
    breakdown: bool = False
    ranges: str = "dynamic"
    calibration_graph: Optional[str] = None
    calibration_seed: Optional[int] = None
    train_epochs: Annotated[int, Range(0)] = 0
    train_protocol: str = "brief"
    model_path: Optional[str] = None
    seed: int = 0
    sums: str = "exact"


def _speed_graph(name: Any, where: str, key: str = "graph") -> Dict[str, Any]:
    """The ``graph`` section of a speed spec: a generated graph with its size, or a registered dataset."""
    name = str(name)
    if name in GENERATED_GRAPHS:
        nodes, edges, features, classes = GENERATED_GRAPHS[name]
        return {"name": name, "source": "generated", "nodes": nodes, "edges": edges, "features": features,
                "classes": classes}
    if name in DATASETS:
        return {"name": name, "source": "dataset"}
    raise SpecError(unknown_message(f"{key} (a generated graph or a registered dataset)", name,
                                    list(GENERATED_GRAPHS) + DATASETS.keys(), where))


def _engine_models(model: str, propagation: Optional[str], where: str) -> None:
    """``model`` (and its ``propagation``) must be one the integer engine converts."""
    from bench_suite.engine.convert import convertible

    models, props = convertible()
    valid = [k for k in MODELS.keys() if issubclass(MODELS.get(k), models)]
    if model not in valid:
        raise SpecError(f"model={model!r}{_where(where)} has no integer-engine conversion; valid for a speed "
                        f"measurement: {', '.join(valid)}")
    if propagation is not None and PROPAGATIONS.get(propagation) not in props:
        valid = [k for k in PROPAGATIONS.keys() if PROPAGATIONS.get(k) in props]
        raise SpecError(f"propagation={propagation!r}{_where(where)} has no integer-engine conversion; valid for a "
                        f"speed measurement: {', '.join(valid)}")


def _check_measure(m: Dict[str, Any], graph: Dict[str, Any], where: str) -> None:
    """Checks across the keys of a speed spec's ``measure`` section; ``impls`` becomes a list."""
    impls = m["impls"]
    impls = [i.strip() for i in impls.split(",")] if isinstance(impls, str) else impls
    if not isinstance(impls, (list, tuple)) or not impls or len(set(map(str, impls))) != len(impls):
        raise SpecError(f"impls={m['impls']!r}{_where(where)} is not valid; give distinct names of {', '.join(IMPLS)}")
    for i in impls:
        if i not in IMPLS:
            raise SpecError(unknown_message("implementation (impls)", i, list(IMPLS), where))
    m["impls"] = list(impls)
    if m["ranges"] not in RANGES:
        raise SpecError(f"ranges={m['ranges']!r}{_where(where)} is not valid; valid: {', '.join(RANGES)}")
    if m.get("sums", "exact") not in SUMS:  # left out at its default (UNVERSIONED_DEFAULTS)
        raise SpecError(f"sums={m['sums']!r}{_where(where)} is not valid; valid: {', '.join(SUMS)}")
    if m["ranges"] == "dynamic" and (m["calibration_graph"] is not None or m["calibration_seed"] is not None):
        raise SpecError(f"calibration_graph / calibration_seed{_where(where)} apply to ranges=calibrated only")
    if m["calibration_graph"] is not None:
        m["calibration_graph"] = _speed_graph(m["calibration_graph"], where, "calibration_graph")["name"]
    cal_seed = m["calibration_seed"]
    if cal_seed is not None and (not isinstance(cal_seed, int) or isinstance(cal_seed, bool)):
        raise SpecError(f"calibration_seed={cal_seed!r}{_where(where)} is not valid; use an integer")
    if m["breakdown"] and "int" not in impls:
        raise SpecError(f"breakdown=true{_where(where)} profiles the integer model; impls={impls} has no 'int'")
    protocol = m.get("train_protocol", "brief")  # left out at its default (UNVERSIONED_DEFAULTS)
    if protocol not in TRAIN_PROTOCOLS:
        raise SpecError(f"train_protocol={protocol!r}{_where(where)} is not valid; valid: {', '.join(TRAIN_PROTOCOLS)}")
    if protocol == "tuned" and graph["source"] != "dataset":
        raise SpecError(f"train_protocol=tuned{_where(where)} trains on a dataset's labels; graph={graph['name']!r} "
                        f"is generated (use a dataset name such as amazon-computers)")
    if protocol == "tuned" and m["train_epochs"]:
        raise SpecError(f"train_epochs={m['train_epochs']}{_where(where)} with train_protocol=tuned: the tuned "
                        f"protocol sets its own epochs; drop train_epochs")
    if m["train_epochs"] and graph["source"] != "dataset":
        raise SpecError(f"train_epochs={m['train_epochs']}{_where(where)} needs a dataset with labels; "
                        f"graph={graph['name']!r} is generated (use a dataset name such as amazon-computers)")
    if m["model_path"] is not None:
        m["model_path"] = str(m["model_path"])


def resolve_speed_spec(flat: Mapping[str, Any], where: str = "") -> RunSpec:
    """Resolve a flat ``key=value`` mapping into the canonical :class:`RunSpec` of a speed measurement.

    Its canonical form has ``kind: speed`` (a training spec has no ``kind``, so the two never share
    an id), the ``graph`` (a generated graph with its size, or a dataset), the ``model``,
    ``propagation`` and ``quant`` sections resolved against the registry as a training spec's are
    (every constructor keyword, defaults filled in), and the ``measure`` section (:class:`SpeedConfig`).
    Unset keys take :data:`SPEED_DEFAULTS`; every check happens here, before anything is built."""
    raw = {str(k): parse_value(v) for k, v in flat.items()}
    given = dict(raw)
    kind = raw.pop("kind", SPEED)
    if kind != SPEED:
        raise SpecError(f"kind={kind!r}{_where(where)} is not a speed measurement (kind=speed)")
    graph = _speed_graph(raw.pop("graph", SPEED_DEFAULTS["graph"]), where)
    model = str(raw.pop("model", SPEED_DEFAULTS["model"]))
    MODELS.entry(model, where)
    quant = str(raw.pop("quant", SPEED_DEFAULTS["quant"]))
    if is_full_precision(QUANTIZERS.entry(quant, where).obj):
        low_bit = [k for k in QUANTIZERS.keys() if not is_full_precision(QUANTIZERS.get(k))]
        raise SpecError(f"quant={quant!r}{_where(where)}: a speed measurement times an integer model; choose a "
                        f"quantizer ({', '.join(low_bit)})")
    bits = raw.pop("bits", SPEED_DEFAULTS["bits"])
    if bits not in BITS:
        raise SpecError(f"bits={bits!r}{_where(where)} is not valid; valid: {', '.join(map(str, BITS))}")
    depth = _depth(raw.pop("depth", SPEED_DEFAULTS["depth"]), where)
    model_defaults = _plugin_defaults(MODELS, model, skip=("propagation_params",))
    propagation = None
    if "propagation" in model_defaults:
        propagation = str(raw.pop("propagation", raw.pop("model.propagation", model_defaults["propagation"])))
        PROPAGATIONS.entry(propagation, where)
    elif "propagation" in raw:
        raise SpecError(f"propagation={raw['propagation']!r}{_where(where)} applies to a model with a propagation "
                        f"(decoupled), not model={model!r}")
    _engine_models(model, propagation, where)
    if "hidden" in model_defaults and "model.hidden" not in raw:
        raw.setdefault("hidden", SPEED_DEFAULTS["hidden"])
    sections: Dict[str, Section] = {
        "model": (MODELS, model, {k: v for k, v in model_defaults.items() if k != "propagation"}),
        "propagation": (PROPAGATIONS, propagation,
                        _plugin_defaults(PROPAGATIONS, propagation) if propagation else {}),
        "quant": (QUANTIZERS, quant, _plugin_defaults(QUANTIZERS, quant)),
        "measure": (SpeedConfig, None, config_defaults(SpeedConfig)),
    }
    out: Dict[str, Any] = {"kind": SPEED, "version": SPEED_SPEC_VERSION, "graph": graph,
                           **_resolve_sections(raw, sections, SPEED_TOP_KEYS, where)}
    out["model"]["depth"] = depth
    out["quant"]["bits"] = int(bits)
    _check_measure(out["measure"], graph, where)
    if out["measure"].get("train_protocol") == "tuned":
        out.update(_tuned_training(out, given, where))
    third_party = spec_plugins(out, third_party_only=True)
    if third_party:
        out["plugins"] = third_party
    spec = RunSpec.from_dict(out)
    validate_spec(spec, where)
    return spec


def _tuned_training(out: Dict[str, Any], given: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """The ``model``, ``propagation``, ``quant`` and ``train`` sections of a ``train_protocol: tuned``
    speed spec ``out``: those of the training spec a matrix run of the same dataset, model, depth and
    quantizer resolves to (tuned defaults filled in where the speed spec's own keys ``given`` do not
    set them), seeded with the measurement's seed."""
    from bench_suite.defaults import apply_defaults

    speed_only = {f.name for f in fields(SpeedConfig)} | {"graph", "kind"}
    own = {k: v for k, v in given.items() if k.rsplit(".", 1)[-1] not in speed_only}
    flat = dict(own, dataset=out["graph"]["name"], model=out["model"]["name"], depth=out["model"]["depth"],
                quant=out["quant"]["name"], bits=out["quant"]["bits"], seed=out["measure"]["seed"])
    if out.get("propagation"):
        flat["propagation"] = out["propagation"]["name"]
    if "hidden" in out["model"]:
        flat.setdefault("hidden", out["model"]["hidden"])
    d = resolve_spec(apply_defaults(flat), where).data
    return {"model": d["model"], "propagation": d.get("propagation"), "quant": d["quant"], "train": d["train"]}


def resolve_run(flat: Mapping[str, Any], where: str = "") -> RunSpec:
    """A flat mapping as the spec of its ``kind``: a training run (the default) or ``speed``."""
    kind = parse_value(flat.get("kind", TRAIN))
    if kind == SPEED:
        return resolve_speed_spec(flat, where)
    if kind != TRAIN:
        raise SpecError(unknown_message("run kind", kind, [TRAIN, SPEED], where))
    return resolve_spec({k: v for k, v in flat.items() if k != "kind"}, where)


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


__all__ = ["RunSpec", "SpecError", "TrainConfig", "SpeedConfig", "resolve_spec", "resolve_speed_spec", "resolve_run",
           "spec_from_cli", "parse_value", "RegistryError"]
