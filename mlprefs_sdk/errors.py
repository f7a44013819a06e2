"""One error root; each subclass also inherits the builtin a caller would expect to catch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .values import Problem, Source

__all__ = [
    "MlprefsError",
    "ValidationError",
    "ConfigFileError",
    "UnknownKeyError",
    "LockedKeyError",
    "StoreError",
    "FeatureDisabledError",
    "PolicyError",
    "MetricNotFoundError",
]


MAX_LISTED = 20  # problems (or warnings) spelled out in a message; the rest are counted
MAX_LINE = 1000  # characters of one listed problem (a 5,000-segment key, a huge value)


def cap_lines(lines: Sequence[str], limit: int = MAX_LISTED,
              more: str = "problems (every one is in .problems)") -> list[str]:
    """The first `limit` lines, each cut to MAX_LINE characters, then "... and N more".

    20,000 unknown keys must give a readable message (and log), not a megabyte of text.
    """
    shown = [cut_line(line) for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"... and {len(lines) - limit:,} more {more}")
    return shown


def cut_line(line: str) -> str:
    if len(line) <= MAX_LINE:
        return line
    return f"{line[:MAX_LINE]}... ({len(line) - MAX_LINE:,} more characters)"


class MlprefsError(Exception):
    """Root of every error the SDK raises."""


class ValidationError(MlprefsError, ValueError):
    """One or more values break a key's type, range or a cross-key rule."""

    def __init__(self, problems: Sequence[Problem], header: str | None = None) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        if header is None:
            header = (
                cut_line(lines[0])
                if len(lines) == 1
                else f"{len(lines)} problems found in mlprefs preferences:"
            )
            if len(lines) == 1:
                lines = []
        super().__init__("\n  ".join([header, *cap_lines(lines)]))


class ConfigFileError(ValidationError):
    """A TOML file cannot be read or parsed; carries path, line and column."""

    def __init__(
        self,
        path: str,
        line: int | None,
        column: int | None,
        reason: str,
        problems: Sequence[Problem] = (),
    ) -> None:
        from .values import show_path

        self.path, self.line, self.column, self.reason = path, line, column, reason
        self.problems = list(problems)
        where = show_path(path) + (f":{line}" if line else "") + (f":{column}" if column else "")
        header = cut_line(f"{where}: cannot parse TOML: {reason}")
        # The parse failure itself is the header; list only the other problems under it.
        others = [str(p) for p in self.problems
                  if not (p.rule == "toml" and p.source is not None and p.source.path == path)]
        if others:
            header += f"; {len(others)} more problem(s):"
        MlprefsError.__init__(self, "\n  ".join([header, *cap_lines(others)]))


class UnknownKeyError(MlprefsError, KeyError):
    """The key is neither in the catalog nor registered."""

    def __init__(self, key: str, suggestions: Sequence[str] = ()) -> None:
        self.key, self.suggestions = key, tuple(suggestions)
        msg = f"unknown preference key {key!r}"
        if self.suggestions:
            msg += "; did you mean " + " or ".join(self.suggestions) + "?"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class LockedKeyError(MlprefsError, PermissionError):
    """The key is pinned by the policy file's [locked] table."""

    def __init__(self, key: str, value: Any, locked_value: Any, source: Source) -> None:
        from .values import format_value

        self.key, self.value, self.locked_value, self.source = key, value, locked_value, source
        super().__init__(f"{key} is locked to {format_value(locked_value)} by {source}; "
                         f"cannot set it to {format_value(value)}")


class StoreError(MlprefsError, OSError):
    """The preference store cannot be opened, migrated or written."""


class FeatureDisabledError(MlprefsError, RuntimeError):
    """A service was used while the preference that enables it is off."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class PolicyError(MlprefsError, PermissionError):
    """The data policy (or the policy file) forbids what was asked."""


class MetricNotFoundError(MlprefsError, LookupError):
    """The monitored metric is not among the metrics the framework reported."""

    def __init__(self, metric: str, available: Any) -> None:
        self.metric, self.available = metric, tuple(sorted(str(k) for k in available))
        names = ", ".join(self.available) or "none"
        super().__init__(
            f"early stopping monitors {metric!r} (ml.training.early_stopping_metric), but the "
            f"metrics reported are: {names}; set ml.training.early_stopping_metric to one of "
            f"them, or set ml.training.early_stopping_enabled = false")

    def __str__(self) -> str:
        return str(self.args[0])
