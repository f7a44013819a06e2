"""Built-in plugin: a tuning trial is pruned through the same hooks as early stopping.

At every check (each on_epoch_end with metrics, each on_evaluate) the monitored metric,
ml.training.early_stopping_metric, is reported to the trial; once the trial's pruner prunes
it, should_stop returns a reason naming the pruner and the run ends like any early stop.

In-process, prefs.tune() registers a TrialPlugin on the trial client's plugin manager. In a
command run by `mlprefs tune`, this module (the group's entry point) finds the trial through
the MLPREFS_TUNE_TRIAL variable and loads it from the study's storage: no Optuna code in the
user's script, and no Optuna import in any process that is not a trial.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any, Protocol

from ..hookspecs import RunContext, hookimpl

__all__ = ["TrialPlugin", "EnvTrialPlugin", "Trial", "monitored", "from_env", "ENV"]

log = logging.getLogger(__name__)

ENV = "MLPREFS_TUNE_TRIAL"  # set by `mlprefs tune` for each command it runs
METRIC = "ml.training.early_stopping_metric"
DEFAULT_METRIC = "val_loss"


class Trial(Protocol):
    """What the plugin reports to: integrations.optuna's trials."""

    pruned: str | None  # the stop reason once the pruner has pruned the trial

    def report(self, value: float, epoch: int) -> None: ...


def monitored(hooks: RunContext, metrics: Mapping[str, Any], fallback: str | None) -> float | None:
    """The early-stopping metric's value in this check (val_loss may fall back, as in SPEC 6)."""
    name = hooks.get(METRIC)
    if name not in metrics and name == DEFAULT_METRIC and fallback is not None:
        name = fallback
    if name not in metrics:
        return None  # early stopping itself raises MetricNotFoundError when it is on
    try:
        value = float(metrics[name])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class TrialPlugin:
    """Reports each check to one trial; stops the run once the trial is pruned."""

    def __init__(self, trial: Trial | None) -> None:
        self.trial = trial

    def _trial(self) -> Trial | None:
        return self.trial

    @hookimpl
    def mlprefs_evaluate(self, hooks: RunContext, metrics: Mapping[str, Any], fallback_metric: str | None,
                         index: int) -> None:
        trial = self._trial()
        if trial is None or trial.pruned:
            return
        value = monitored(hooks, metrics, fallback_metric)
        if value is not None:
            trial.report(value, index)

    @hookimpl
    def mlprefs_should_stop(self, hooks: RunContext) -> str | None:
        trial = self._trial()
        return None if trial is None else trial.pruned


class EnvTrialPlugin(TrialPlugin):
    """The trial named by MLPREFS_TUNE_TRIAL, loaded on the first check of the process."""

    def __init__(self) -> None:
        super().__init__(None)
        self._looked = False

    def _trial(self) -> Trial | None:
        if not self._looked:
            self._looked = True
            spec = os.environ.get(ENV)
            if spec:
                from ..integrations.optuna import trial_from_env

                self.trial = trial_from_env(spec)
        return self.trial


# This module is the `tuning` entry point of the mlprefs_sdk group: its hooks are those of the
# trial named by MLPREFS_TUNE_TRIAL, when the variable is set.
from_env = EnvTrialPlugin()


@hookimpl
def mlprefs_evaluate(hooks: RunContext, metrics: Mapping[str, Any], fallback_metric: str | None,
                     index: int) -> None:
    from_env.mlprefs_evaluate(hooks=hooks, metrics=metrics, fallback_metric=fallback_metric,
                              index=index)


@hookimpl
def mlprefs_should_stop(hooks: RunContext) -> str | None:
    return from_env.mlprefs_should_stop(hooks=hooks)
