"""Tuned default hyper-parameters per model and dataset, read by the runner.

A defaults file is YAML: a list of rules, each ``{match: {...}, set: {...}, source: "..."}``.
``match`` compares flat spec keys (``model``, ``dataset``, ``propagation``, ``quant``,
``bits``, ...) that the spec writes (a spec without ``quant`` is ``quant: fp32``); ``set`` holds flat
spec keys to apply.  Rules with more ``match``
keys win over rules with fewer; explicit matrix or command-line values win over
every default.  Built-in files live in ``bench_suite/defaults/``; a plugin package
adds its own with :func:`register_defaults_file`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

from bench_suite.yamlfile import load_yaml

_FILES: List[Path] = []
_RULES: List[Dict[str, Any]] | None = None


def register_defaults_file(path: str | Path) -> None:
    global _RULES
    p = Path(path)
    if p not in _FILES:
        _FILES.append(p)
        _RULES = None


def _builtin_files() -> List[Path]:
    return sorted((Path(__file__).parent / "defaults").glob("*.yaml"))


def rules() -> List[Dict[str, Any]]:
    global _RULES
    if _RULES is None:
        out = []
        for f in _builtin_files() + _FILES:
            data = load_yaml(f.read_text()) or []
            if not isinstance(data, list):
                raise ValueError(f"defaults file {f} must hold a list of rules, got {type(data).__name__}")
            for i, rule in enumerate(data):
                if not isinstance(rule, dict) or set(rule) - {"match", "set", "source"} or "set" not in rule:
                    raise ValueError(f"defaults file {f}, rule {i}: expected keys match/set/source, got {rule!r}")
                out.append({"match": dict(rule.get("match") or {}), "set": dict(rule["set"]),
                            "source": str(rule.get("source", "")), "file": str(f)})
        _RULES = out
    return _RULES


#: keys a spec that does not write them (or writes them empty) still has, for matching: no quantizer is
#: full precision, no transform is ``none`` (a rule for the plain model of a search with a transform axis
#: names ``transform: none``, so it never ties with the transform's rule)
IMPLICIT = {"quant": "fp32", "transform": "none"}


def defaults_for(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """Flat spec keys the matching rules set, most specific last (so it wins).  A rule matches the keys
    the spec writes, and :data:`IMPLICIT` (``quant: fp32`` matches a spec that names no quantizer)."""
    seen = dict(flat)
    for k, v in IMPLICIT.items():
        if seen.get(k) is None:
            seen[k] = v
    hits = [r for r in rules() if all(str(seen.get(k)) == str(v) for k, v in r["match"].items())]
    hits.sort(key=lambda r: len(r["match"]))
    out: Dict[str, Any] = {}
    for r in hits:
        out.update(r["set"])
    return out


def apply_defaults(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``flat`` with tuned defaults filled in where it does not set a key itself."""
    merged = dict(defaults_for(flat))
    merged.update(flat)
    return merged
