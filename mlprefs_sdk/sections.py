"""section(): typed, frozen attrs objects over a prefix of the resolved view."""

from __future__ import annotations

import functools
import keyword
from collections.abc import Mapping
from typing import Any

import attrs

from .catalog import Catalog

__all__ = ["build_section", "field_name"]


def build_section(catalog: Catalog, values: Mapping[str, Any], prefix: str) -> Any:
    """Fields are the keys below prefix; deeper keys become nested sections."""
    prefix = prefix.rstrip(".")
    cls, children = _section_class(catalog, frozenset(catalog), prefix)
    kwargs = {}
    for name, full in children.items():
        if full in values:
            kwargs[name] = values[full]
        else:
            kwargs[name] = build_section(catalog, values, full)
    return cls(**kwargs)


def field_name(segment: str) -> str:
    """A key segment as an attribute name: `global` -> `global_` (PEP 8), `3d` -> `_3d`."""
    if keyword.iskeyword(segment):
        return segment + "_"
    return segment if segment.isidentifier() else "_" + segment


@functools.lru_cache(maxsize=512)
def _section_class(catalog: Catalog, keys: frozenset[str], prefix: str):
    children: dict[str, str] = {}
    types: dict[str, Any] = {}
    specs = catalog.specs()
    dotted = prefix + "."
    for key in sorted(keys):
        if not key.startswith(dotted):
            continue
        head, _, rest = key[len(dotted):].partition(".")
        full, name = dotted + head, field_name(head)
        if rest:
            children.setdefault(name, full)
            types.setdefault(name, object)
        else:
            children[name] = full
            types[name] = specs[key].type
    if not children:
        from .errors import UnknownKeyError

        raise UnknownKeyError(prefix, catalog.suggest(prefix + ".x"))
    name = "".join(p.title() for p in prefix.replace("_", ".").split(".")) + "Section"
    cls = attrs.make_class(name, {n: attrs.field(type=types[n], alias=n) for n in children},
                           frozen=True, slots=True)
    return cls, children
