"""Reading the suite's YAML files (matrices, default rules, references) safely and strictly.

``yaml.safe_load`` builds only plain data (no Python objects, so a file cannot run code), but it
lets a key repeated in one mapping silently replace the first; in a matrix that means an axis or a
setting the author wrote is ignored. :func:`load_yaml` is ``safe_load`` that rejects repeated keys,
naming the key, the file and both lines.
"""
from __future__ import annotations

from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` whose mappings refuse a key that appears twice."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)  # resolve YAML merge keys (<<) first, as SafeLoader does
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping below raises the usual error
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found the key {key!r} twice (first on line {first + 1}); a repeated key would silently "
                f"replace the first", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """The plain data in ``text`` (mappings, lists, scalars); ``yaml.YAMLError`` on bad YAML or a
    key repeated within one mapping."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
