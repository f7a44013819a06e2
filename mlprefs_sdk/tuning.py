"""Automatic optimisation (SPEC section 9): the search space, the results, and the gate.

The space is preferences: `[tune.space]` in any TOML layer (or `space=`) maps catalog keys to
a range (`{low, high, log, step}`: integers for an int key, floats for a float key) or to
`{choices = [...]}`. Every range is checked against the key's catalog constraints before any
trial runs. The search itself is Optuna's and lives in integrations/optuna.py, imported only
when a study runs, so `import mlprefs_sdk` imports no Optuna.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .catalog import InvalidValueError
from .errors import FeatureDisabledError, MlprefsError, ValidationError
from .values import HistoryEntry, Problem, Source

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Range", "TrialResult", "TuneResult", "NoCompletedTrialError", "parse_space",
           "space_of", "require_enabled", "tune", "FEATURE_KEY", "STATES"]

log = logging.getLogger(__name__)

FEATURE_KEY = "ml.features.auto_optimization"
STATES = ("complete", "pruned", "failed")
_RANGE_FIELDS = frozenset({"low", "high", "log", "step"})


class NoCompletedTrialError(MlprefsError, LookupError):
    """A tuning result has no completed trial, so it has no best values to apply."""

    def __init__(self, study: str) -> None:
        self.study = study
        super().__init__(f"study {study!r} has no completed trial: nothing to apply; run more "
                         f"trials or look at result.trials for why they failed")


@attrs.frozen
class Range:
    """One key's search range: kind "int" / "float" (low..high, log, step) or "choice"."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@attrs.frozen
class TrialResult:
    """One trial: its number, the values it tried, its objective, and how it ended."""

    number: int
    values: Mapping[str, Any]
    value: float | None
    state: str  # "complete" | "pruned" | "failed"


@attrs.frozen
class TuneResult:
    """A study's outcome; apply() stores the best values like any other preference change."""

    study: str
    best_values: Mapping[str, Any]
    best_value: float | None
    trials: tuple[TrialResult, ...]
    interrupted: bool = False  # Ctrl-C ended the study; the finished trials are kept
    client: Any = attrs.field(default=None, repr=False, eq=False)

    def apply(self, scope: str = "project", reason: str | None = None) -> list[HistoryEntry]:
        """Write best_values through set() (validated, with history: rollback undoes it)."""
        if not self.best_values or self.best_value is None:
            raise NoCompletedTrialError(self.study)
        if self.client is None:
            raise MlprefsError("this TuneResult is not tied to a Client; use client.set() with "
                               "result.best_values")
        reason = reason or f"tuned: optuna study {self.study!r}, best objective {self.best_value:g}"
        return [self.client.set(key, value, scope=scope, reason=reason)
                for key, value in self.best_values.items()]


def require_enabled(client: Client) -> None:
    """Tuning is refused unless ml.features.auto_optimization (and ml.global.enabled) is on."""
    if not client.enabled(FEATURE_KEY):
        raise FeatureDisabledError(FEATURE_KEY, (
            "automatic optimisation is off: set ml.features.auto_optimization = true (it also "
            "needs ml.global.enabled = true) to tune with prefs.tune() or `mlprefs tune`"))


def space_of(client: Client, space: Mapping[str, Any] | None = None,
             source: Source | None = None) -> dict[str, Range]:
    """The checked search space: `space` when given, else `[tune.space]` of the TOML layers
    (a higher layer's range for a key replaces a lower one's)."""
    if space is not None:
        return parse_space(client, [(source or Source("runtime", detail="tune(space=)"), space)])
    tables = [(src, table.get("space", {})) for src, table in client.tables("tune")]
    return parse_space(client, tables)


def parse_space(client: Client, tables: list[tuple[Source, Mapping[str, Any]]]) -> dict[str, Range]:
    """Check every range against the catalog; every problem goes into one ValidationError."""
    ranges: dict[str, Range] = {}
    problems: list[Problem] = []
    for source, table in tables:
        if not isinstance(table, Mapping):
            problems.append(Problem.for_value("tune.space", table, source,
                                              "must be a table of key = { ... }", "tune.space"))
            continue
        for key, spec in table.items():
            try:
                ranges[key] = _range(client, key, spec)
            except _Bad as e:
                problems.append(Problem.for_value(key, spec, source, e.reason, e.rule))
    if problems:
        raise ValidationError(problems)
    if not ranges:
        raise ValidationError([Problem("tune.space", None, (
            "the search space is empty: declare [tune.space] in mlprefs.toml (e.g. "
            '"ml.training.learning_rate" = { low = 1e-5, high = 0.1, log = true }), '
            "pass space= or --space FILE"), None, "tune.space")])
    return ranges


class _Bad(Exception):
    """One range is wrong (parse_space turns it into a Problem naming key and source)."""

    def __init__(self, reason: str, rule: str) -> None:
        super().__init__(reason)
        self.reason, self.rule = reason, rule


def _range(client: Client, key: str, spec: Any) -> Range:
    if key not in client.catalog:
        near = client.catalog.suggest(key)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise _Bad(f"is not a known key{hint}", "unknown")
    ks = client.spec(key)
    if not isinstance(spec, Mapping):
        raise _Bad("must be { low = .., high = .. } or { choices = [..] }", "tune.space")
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        choices = spec["choices"]
        if extra:
            raise _Bad(f"mixes choices with {', '.join(sorted(extra))}", "tune.space")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise _Bad("needs a non-empty list of choices", "tune.space")
        typed = []
        for choice in choices:
            try:
                typed.append(ks.check(choice))
            except InvalidValueError as e:
                raise _Bad(f"has the choice {choice!r}, which {e.reason}", e.rule) from None
        return Range(key, "choice", choices=tuple(typed))
    extra = set(spec) - _RANGE_FIELDS
    if extra:
        raise _Bad(f"has unknown field(s) {', '.join(sorted(extra))}; a range takes "
                   f"low, high, log, step; a list takes choices", "tune.space")
    if ks.type not in (int, float):
        raise _Bad(f"is a {ks.type_name} key: give it {{ choices = [...] }}, not a range",
                   "kind")
    if "low" not in spec or "high" not in spec:
        raise _Bad("needs both low and high", "tune.space")
    bounds = []
    for name in ("low", "high"):
        value = spec[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (ks.type is int and not float(value).is_integer()):
            raise _Bad(f"has {name} = {value!r}, not a{'n int' if ks.type is int else ' number'}",
                       "kind")
        try:
            ks.check(ks.type(value))
        except InvalidValueError as e:
            raise _Bad(f"has {name} = {value!r}, which {e.reason}", e.rule) from None
        bounds.append(ks.type(value))
    low, high = bounds
    if low > high:
        raise _Bad(f"has low {low!r} above high {high!r}", "tune.space")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise _Bad(f"has log = {log_scale!r}, not true or false", "tune.space")
    if log_scale and low <= 0:
        raise _Bad(f"has log = true with low {low!r}: a log range needs low > 0", "tune.space")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or step <= 0 or not math.isfinite(step) or log_scale
                             or (ks.type is int and not float(step).is_integer())):
        raise _Bad(f"has step = {step!r}: a step must be a positive number (an integer for an "
                   f"int key), and not combined with log", "tune.space")
    return Range(key, "int" if ks.type is int else "float", low, high, log_scale,
                 None if step is None else ks.type(step))


def tune(client: Client, train: Callable[[Client], float | None], space: Mapping[str, Any] | None = None,
         n_trials: int | None = None, timeout_s: float | None = None, study: str | None = None,
         seed: int | None = None) -> TuneResult:
    """Client.tune: checked gate and space first, then Optuna runs the trials."""
    require_enabled(client)
    ranges = space_of(client, space)
    from .integrations.optuna import run_in_process

    return run_in_process(client, train, ranges, n_trials=n_trials, timeout_s=timeout_s,
                          study=study, seed=seed)
