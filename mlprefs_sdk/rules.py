"""Cross-key rules, checked on the resolved view (SPEC section 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .values import Problem, Source, format_value

__all__ = ["RULES", "check_rules"]

Values = Mapping[str, Any]
Sources = Mapping[str, Source]


def _p(key: str, values: Values, sources: Sources, reason: str, rule: str,
       other: str | None = None, severity: str = "error") -> Problem:
    if other is not None:
        reason += f" ({other} = {format_value(values[other])} from {sources.get(other)})"
    return Problem.for_value(key, values[key], sources.get(key), reason, rule, severity)


def advanced_needs_global(v: Values, s: Sources) -> Iterator[Problem]:
    if v.get("ml.features.advanced_enabled") and not v.get("ml.global.enabled"):
        yield _p("ml.features.advanced_enabled", v, s, "requires ml.global.enabled = true",
                 "requires-global", "ml.global.enabled")


def ab_needs_tracking(v: Values, s: Sources) -> Iterator[Problem]:
    if v.get("ml.experiments.ab_testing_enabled") and not v.get("ml.features.experiment_tracking"):
        yield _p("ml.experiments.ab_testing_enabled", v, s,
                 "requires ml.features.experiment_tracking = true", "requires-tracking",
                 "ml.features.experiment_tracking")


def memory_per_worker(v: Values, s: Sources) -> Iterator[Problem]:
    mem, workers = v.get("ml.performance.memory_limit_mb"), v.get("ml.performance.parallel_workers")
    if mem is not None and workers is not None and mem < 256 * workers:
        yield _p("ml.performance.memory_limit_mb", v, s,
                 f"is below 256 MB x parallel_workers = {256 * workers}", "memory-per-worker",
                 "ml.performance.parallel_workers")


def strict_privacy(v: Values, s: Sources) -> Iterator[Problem]:
    if v.get("ml.data.privacy_mode") != "strict":
        return
    if v.get("ml.data.sharing_allowed"):
        yield _p("ml.data.sharing_allowed", v, s, 'is forbidden by ml.data.privacy_mode = "strict"',
                 "strict-privacy", "ml.data.privacy_mode")
    if v.get("ml.data.anonymization_enabled") is False:
        yield _p("ml.data.anonymization_enabled", v, s,
                 'must be true under ml.data.privacy_mode = "strict"', "strict-privacy",
                 "ml.data.privacy_mode")


def batch_power_of_two(v: Values, s: Sources) -> Iterator[Problem]:
    b = v.get("ml.performance.batch_size")
    if isinstance(b, int) and b > 0 and b & (b - 1):
        yield _p("ml.performance.batch_size", v, s, "is not a power of two",
                 "batch-power-of-two", severity="warning")


RULES: tuple[Callable[[Values, Sources], Iterator[Problem]], ...] = (
    advanced_needs_global,
    ab_needs_tracking,
    memory_per_worker,
    strict_privacy,
    batch_power_of_two,
)


def check_rules(values: Values, sources: Sources) -> list[Problem]:
    return [p for rule in RULES for p in rule(values, sources)]
