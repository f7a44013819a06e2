"""Merge layers into one immutable View; collect every problem on the way."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from .catalog import Catalog, InvalidValueError, KeySpec
from .layers import Entry, Layer
from .rules import check_rules
from .values import Explanation, LayerValue, Problem, Source, format_value

__all__ = ["View", "resolve", "add_key"]

log = logging.getLogger(__name__)


@attrs.frozen
class View:
    """The resolved preferences. Never mutated: a change builds a new View and swaps it in."""

    values: Mapping[str, Any]
    sources: Mapping[str, Source]
    enabled: Mapping[str, bool]
    layers: tuple[Layer, ...]
    catalog: Catalog
    warnings: tuple[Problem, ...] = ()

    @property
    def locked(self) -> Mapping[str, Any]:
        for layer in self.layers:
            if layer.name == "locked":
                return layer.entries
        return {}

    def explain(self, key: str) -> Explanation:
        spec = self.catalog[key]
        chain = []
        for layer in self.layers:
            entry = layer.entries.get(key)
            if entry is None:
                continue
            try:
                value = spec.check(entry.value, from_string=entry.from_string)
            except InvalidValueError:
                value = entry.value
            chain.append(LayerValue(layer.name, value, entry.source))
        return Explanation(key, self.values[key], self.sources[key], tuple(chain),
                           key in self.locked)


def resolve(catalog: Catalog, layers: Sequence[Layer]) -> tuple[View, list[Problem]]:
    """Highest layer wins. Returns the view and every error; warnings stay on the view."""
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    problems: list[Problem] = []
    unregistered: list[Problem] = []
    specs = catalog.specs()
    where = _Where()
    suggestions = SUGGEST_BUDGET
    for layer in layers:
        problems.extend(layer.problems)
        if layer.trusted:
            for key, entry in layer.entries.items():
                values[key] = entry.value
                sources[key] = entry.source
            continue
        for key, entry in layer.entries.items():
            spec = specs.get(key)
            if spec is None:
                if key.startswith("ml.") or layer.name in ("locked", "org", "template"):
                    problems.append(_unknown(catalog, key, entry, where, suggestions > 0))
                    suggestions -= 1
                else:
                    # Perhaps a key a plugin registers later; it applies from then on.
                    unregistered.append(where.problem(
                        key, entry.value, entry.source, UNREGISTERED, "unregistered", "warning"))
                continue
            value = _checked(spec, entry, problems)
            if value is not _INVALID:
                values[key] = value
                sources[key] = entry.source
    found = check_rules(values, sources)
    problems.extend(p for p in found if p.severity == "error")
    warnings = tuple(unregistered) + tuple(p for p in found if p.severity != "error")
    global_on = values.get("ml.global.enabled", True)
    enabled = {
        k: (v and global_on) if k.startswith("ml.features.") else v
        for k, v in values.items()
        if type(v) is bool
    }
    view = View(MappingProxyType(values), MappingProxyType(sources), enabled, tuple(layers),
                catalog, warnings)
    return view, problems


def add_key(view: View, catalog: Catalog, layers: Sequence[Layer],
            spec: KeySpec) -> tuple[View, list[Problem]]:
    """`view` plus the newly registered key `spec`, without re-resolving the other keys.

    Registering thousands of keys one by one must not re-resolve thousands of times. A
    registered key lies outside ml., so no cross-key rule can involve it; only its own
    entries (a file may have set it before it was registered) need resolving.
    """
    key = spec.key
    problems: list[Problem] = []
    value: Any = _INVALID
    source: Source | None = None
    for layer in layers:
        entry = layer.entries.get(key)
        if entry is None:
            continue
        checked = entry.value if layer.trusted else _checked(spec, entry, problems)
        if checked is not _INVALID:
            value, source = checked, entry.source
    assert source is not None, key  # the defaults layer sets every registered key
    values, sources = dict(view.values), dict(view.sources)  # dict copies, C speed
    values[key], sources[key] = value, source
    enabled = view.enabled
    if type(value) is bool:
        enabled = dict(enabled)
        enabled[key] = value
    warnings = tuple(w for w in view.warnings if not (w.rule == "unregistered" and w.key == key))
    return View(MappingProxyType(values), MappingProxyType(sources), enabled, tuple(layers),
                catalog, warnings), problems


_INVALID: Any = object()


def _checked(spec: KeySpec, entry: Entry, problems: list[Problem]) -> Any:
    """The entry's value typed for its key, or _INVALID with the problem recorded."""
    try:
        return spec.check(entry.value, from_string=entry.from_string)
    except InvalidValueError as e:
        problems.append(Problem.for_value(spec.key, e.value, entry.source, e.reason, e.rule))
        return _INVALID


UNREGISTERED = ("is not a registered key yet: the value is held, and applies from the moment "
                "register() defines the key")
SUGGEST_BUDGET = 100  # unknown keys per resolve that get a "did you mean" (each costs a catalog scan)
_FILE_LAYERS = ("user-file", "project-file", "file", "defaults")


class _Where:
    """Problem.for_value for many keys of one file, computing the file's shown path once.

    str(Source) calls os.path.relpath; for 100,000 keys of one file that was most of the
    time Client() took.
    """

    def __init__(self) -> None:
        self._shown: dict[tuple[str, str], str] = {}

    def problem(self, key: str, value: Any, source: Source, reason: str, rule: str,
                severity: str = "error") -> Problem:
        if source.path is None:
            return Problem.for_value(key, value, source, reason, rule, severity)
        shown = self._shown.get((source.layer, source.path))
        if shown is None:
            shown = self._shown[(source.layer, source.path)] = str(attrs.evolve(source, line=None))
        if source.line:  # "./a.toml (org)" -> "./a.toml:3 (org)", as Source.__str__ spells it
            path, layer = (shown, "") if source.layer in _FILE_LAYERS else shown.rsplit(" ", 1)
            shown = f"{path}:{source.line}" + (f" {layer}" if layer else "")
        msg = f"{key} = {format_value(value)} in {shown} {reason}"
        return Problem(key, value, msg, source, rule, severity)


def _unknown(catalog: Catalog, key: str, entry: Any, where: _Where, suggest: bool) -> Problem:
    near = catalog.suggest(key) if suggest else []
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return where.problem(key, entry.value, entry.source, "is not a known key" + hint, "unknown-key")
