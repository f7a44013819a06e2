"""Values and errors of A/B experiments (experiments.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from ..errors import MlprefsError

PUBLIC = ("Experiment", "ArmSummary", "Analysis", "Conclusion", "ExperimentNotFoundError",
          "ExperimentExistsError", "InvalidExperimentError", "InvalidUnitError",
          "InvalidOutcomeError", "ExperimentStateError", "TREATMENT_WINS", "CONTROL_WINS",
          "NO_DIFFERENCE", "KEEP_RUNNING", "STOPPED_EARLY")
__all__ = [*PUBLIC]

TREATMENT_WINS, CONTROL_WINS = "treatment_wins", "control_wins"
NO_DIFFERENCE, KEEP_RUNNING, STOPPED_EARLY = "no_difference", "keep_running", "stopped_early"


class ExperimentNotFoundError(MlprefsError, KeyError):
    """No experiment of that name exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no experiment named {name!r}; create it with "
                         f"prefs.experiments.create({name!r}, control, treatment)")

    def __str__(self) -> str:
        return str(self.args[0])


class ExperimentExistsError(MlprefsError, ValueError):
    """An experiment of that name exists already."""


class InvalidExperimentError(MlprefsError, ValueError):
    """A create() argument is malformed (arms, metric, settings)."""


class InvalidOutcomeError(MlprefsError, ValueError):
    """An outcome does not fit the metric: conversion takes 0 or 1, mean a finite number."""


class ExperimentStateError(MlprefsError, RuntimeError):
    """The experiment cannot be concluded now (not ready, or concluded already)."""


@attrs.frozen
class Experiment:
    """An experiment's definition; a None setting follows the live ml.experiments.* value."""

    name: str
    control: str
    treatment: str
    metric: str
    higher_is_better: bool
    salt: str
    traffic_split_ratio: float | None
    statistical_significance: float | None
    min_sample_size: int | None
    experiment_duration_days: int | None
    anonymized: bool
    started_at: float
    created_at: float
    created_by: str
    decision: str | None
    concluded_at: float | None
    concluded_by: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Experiment:
        values = list(row)
        values[4], values[10] = bool(values[4]), bool(values[10])
        return cls(*values)


@attrs.frozen
class ArmSummary:
    """One arm: its label (or model URI), units assigned, outcomes n, their mean and variance."""

    label: str
    units: int
    n: int
    mean: float
    variance: float


@attrs.frozen
class Analysis:
    """Everything analyze() found; `decision` is one of the *_WINS, NO_DIFFERENCE, KEEP_RUNNING."""

    name: str
    metric: str
    test: str
    control: ArmSummary
    treatment: ArmSummary
    effect: float | None
    relative_effect: float | None
    ci: tuple[float, float] | None
    relative_ci: tuple[float, float] | None
    confidence: float
    statistic: float | None
    df: float | None
    p_value: float | None
    significant: bool
    srm_p_value: float
    srm_detected: bool
    traffic_split_ratio: float
    min_sample_size: int
    sample_reached: bool
    days_running: float
    duration_days: int
    duration_reached: bool
    required_per_arm: tuple[int, int] | None
    still_needed_per_arm: tuple[int, int] | None
    decision: str
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (an infinite statistic becomes None)."""
        return _finite(attrs.asdict(self))


@attrs.frozen
class Conclusion:
    """A recorded decision, and the model version it promoted, if any."""

    name: str
    decision: str
    analysis: Analysis
    promoted: Any  # ModelVersion | None
    at: float
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "decision": self.decision, "at": self.at, "by": self.by,
                "promoted": self.promoted.uri if self.promoted is not None else None,
                "analysis": self.analysis.to_dict()}


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data
