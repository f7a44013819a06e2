"""Frozen value objects returned by the public API."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = ["Source", "LayerValue", "Explanation", "Change", "ChangeSet", "HistoryEntry", "Problem",
           "explain_text"]

UNSET: Any = object()  # marks a removal in Store.write (store.UNSET is this object)

LAYERS = (
    "defaults",
    "org",
    "template",
    "user",
    "project",
    "user-file",
    "project-file",
    "file",
    "env",
    "runtime",
    "locked",
)


def show_path(path: str) -> str:
    """Paths under the working directory print as ./relative, like the SPEC's messages."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else "./" + rel


def format_value(value: Any) -> str:
    """TOML spelling, so messages read like the file the user edits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


@attrs.frozen
class Source:
    """Where a value came from: layer, plus file and line, or scope/variable in detail."""

    layer: str
    path: str | None = None
    line: int | None = None
    detail: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            where = show_path(self.path) + (f":{self.line}" if self.line else "")
            return where if self.layer in ("user-file", "project-file", "file", "defaults") else (
                f"{where} ({self.layer})"
            )
        return f"{self.layer} ({self.detail})" if self.detail else self.layer


@attrs.frozen
class LayerValue:
    """What one layer sets a key to, and where it says so."""

    layer: str
    value: Any
    source: Source

    def __str__(self) -> str:
        return f"{self.layer} {format_value(self.value)} ({self.source})"


@attrs.frozen
class Explanation:
    """A key's value, the source that won, and every layer that sets it (lowest first)."""

    key: str
    value: Any
    source: Source
    chain: tuple[LayerValue, ...]
    locked: bool

    def __str__(self) -> str:
        return explain_text(self)


def explain_text(ex: Explanation, details: Iterable[tuple[str, str]] = ()) -> str:
    """The readable chain: `str(Explanation)`, and `mlprefs explain` with the key's rule added."""
    lines = [f"{ex.key} = {format_value(ex.value)}" + ("  (locked)" if ex.locked else ""),
             f"  from    {ex.source}"]
    lines += [f"  {label:<7} {text}" for label, text in details]
    lines.append("  layers (lowest first):")
    for lv in ex.chain:
        win = "*" if lv.source == ex.source else " "
        lines.append(f"   {win} {lv.layer:<13} {format_value(lv.value):<12} {lv.source}")
    return "\n".join(lines)


@attrs.frozen
class Change:
    """One key one edit changed: old and new value, and the source of the new one."""

    key: str
    old: Any
    new: Any
    source: Source

    def __str__(self) -> str:
        old = "(unset)" if self.old is None else format_value(self.old)
        return f"{self.key} {old} -> {format_value(self.new)} ({self.source})"


@attrs.frozen
class ChangeSet:
    """Every key one edit changed, delivered together."""

    changes: tuple[Change, ...]

    def __str__(self) -> str:
        return "; ".join(map(str, self.changes)) if self.changes else "no changes"

    def __iter__(self):
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.changes)

    def get(self, key: str) -> Change | None:
        for c in self.changes:
            if c.key == key:
                return c
        return None


@attrs.frozen
class HistoryEntry:
    """One stored write, as `history()` returns it and `mlprefs history` prints it."""

    id: int
    scope: str
    key: str
    old: Any
    new: Any
    at: float
    actor: str
    reason: str | None
    scope_id: str | None = None

    def __str__(self) -> str:
        when = dt.datetime.fromtimestamp(self.at).strftime("%Y-%m-%d %H:%M:%S")
        old = "(unset)" if self.old is None else format_value(self.old)
        new = "(unset)" if self.new is None else format_value(self.new)
        why = f"  # {self.reason}" if self.reason else ""
        return (f"#{self.id:<5} {when}  {self.scope}:{self.scope_id}  {self.key}  {old} -> {new}"
                f"  by {self.actor}{why}")


@attrs.frozen
class Problem:
    """One thing wrong with one value: the message names key, value, source and rule."""

    key: str
    value: Any
    message: str
    source: Source | None = None
    rule: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        return self.message

    @classmethod
    def for_value(
        cls, key: str, value: Any, source: Source | None, reason: str, rule: str,
        severity: str = "error",
    ) -> Problem:
        where = f" in {source}" if source is not None else ""
        msg = f"{key} = {format_value(value)}{where} {reason}"
        return cls(key, value, msg, source, rule, severity)
