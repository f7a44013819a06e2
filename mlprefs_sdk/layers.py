"""The eleven layers, each read into raw entries with their sources (validated in resolve)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .catalog import Catalog, KeySpec
from .errors import ConfigFileError
from .values import LAYERS, Problem, Source

__all__ = ["store_layer", "template_layer", "Entry", "Layer", "defaults_layer", "default_entry", "file_layer",
           "policy_layers", "env_layer", "mapping_layer", "ENV_PREFIX"]

log = logging.getLogger(__name__)

ENV_PREFIX = "MLPREFS__"


@attrs.frozen
class Entry:
    value: Any
    source: Source
    from_string: bool = False


@attrs.frozen
class Layer:
    """One source's raw values. `trusted` layers (the catalog's defaults) skip validation."""

    name: str
    entries: Mapping[str, Entry]
    path: str | None = None
    problems: tuple[Problem, ...] = ()
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    trusted: bool = False
    tables: Mapping[str, Any] = attrs.field(factory=dict)  # a TOML file's reserved tables ([tune])

    def __attrs_post_init__(self) -> None:
        assert self.name in LAYERS, self.name


def defaults_layer(catalog: Catalog) -> Layer:
    entries = {key: default_entry(catalog, spec) for key, spec in catalog.specs().items()}
    return Layer("defaults", entries, catalog.path, trusted=True)


_REGISTERED = Source("defaults", detail="registered")  # one shared, immutable instance


def default_entry(catalog: Catalog, spec: KeySpec) -> Entry:
    """A packaged key points at its line in defaults.toml; a registered one says so."""
    if spec.line:
        return Entry(spec.default, Source("defaults", catalog.path, spec.line))
    return Entry(spec.default, _REGISTERED)


def file_layer(name: str, path: str, section: str | None = None) -> Layer:
    """A TOML override file; a missing file is an empty layer, a broken one carries its problem."""
    from .tomlfile import read_toml  # tomllib loads on first use, not on `import mlprefs_sdk`

    try:
        doc = read_toml(path, section=section)
    except ConfigFileError as e:
        return Layer(name, {}, path, problems=_in_layer(e.problems, name))
    if doc is None:
        return Layer(name, {}, path)
    entries = {key: Entry(value, Source(name, path, line)) for key, (value, line) in doc.values.items()}
    return Layer(name, entries, path, problems=_in_layer(doc.problems, name), meta=dict(doc.meta),
                 tables=dict(doc.tables))


def _in_layer(problems: Iterable[Problem], layer: str) -> tuple[Problem, ...]:
    """A parse problem names the layer whose file it is (the TOML reader does not know)."""
    return tuple(attrs.evolve(p, source=attrs.evolve(p.source, layer=layer)) if p.source else p
                 for p in problems)


def policy_layers(path: str) -> tuple[Layer, Layer]:
    """The org layer ([defaults]) and the locked layer ([locked]) of the policy file."""
    from .tomlfile import read_toml

    try:
        doc = read_toml(path, meta_table="")
    except ConfigFileError as e:
        return Layer("org", {}, path, problems=_in_layer(e.problems, "org")), Layer("locked", {}, path)
    if doc is None:
        return Layer("org", {}, path), Layer("locked", {}, path)
    out: dict[str, dict[str, Entry]] = {"defaults": {}, "locked": {}}
    problems = []
    for key, (value, line) in doc.values.items():
        table, _, rest = key.partition(".")
        if table in out and rest:
            layer = "org" if table == "defaults" else "locked"
            out[table][rest] = Entry(value, Source(layer, path, line))
        else:
            problems.append(Problem.for_value(
                key, value, Source("org", path, line),
                "is outside the policy file's [defaults] and [locked] tables", "policy"))
    return (Layer("org", out["defaults"], path, problems=tuple(problems)),
            Layer("locked", out["locked"], path))


def env_layer(environ: Mapping[str, str] | None = None) -> Layer:
    """MLPREFS__ML__TRAINING__LEARNING_RATE=0.01 -> ml.training.learning_rate (strings, coerced)."""
    environ = os.environ if environ is None else environ
    entries = {}
    n = len(ENV_PREFIX)
    for name, value in environ.items():
        if len(name) > n and name[:n].upper() == ENV_PREFIX:
            key = ".".join(name[n:].lower().split("__"))
            entries[key] = Entry(value, Source("env", detail=name), from_string=True)
    return Layer("env", entries)


def mapping_layer(name: str, values: Mapping[str, Any] | Iterable[tuple[str, Any]],
                  detail: str | None = None, from_string: bool = False) -> Layer:
    items = values.items() if isinstance(values, Mapping) else values
    return Layer(name, {k: Entry(v, Source(name, detail=detail), from_string) for k, v in items})


def store_layer(scope: str, scope_id: str, rows: Mapping[str, tuple[Any, float, str]]) -> Layer:
    """A store scope's rows; each source says who set the value and when."""
    entries = {}
    for key, (value, at, actor) in rows.items():
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))  # per row of every read
        entries[key] = Entry(value, Source(scope, detail=f"{scope} {scope_id!r}, set {when} by {actor}"))
    return Layer(scope, entries)


def template_layer(name: str, templates: Mapping[str, Mapping[str, Any]]) -> Layer:
    """The named one of `templates` (every known one, built-in or saved); an unknown name is
    a problem listing the known ones."""
    values = templates.get(name)
    if values is None:
        known = ", ".join(sorted(templates))
        problem = Problem(key="", value=name, source=Source("template"), rule="template",
                          message=f"template {name!r} does not exist; known: {known}")
        return Layer("template", {}, problems=(problem,))
    return mapping_layer("template", values, detail=name)
