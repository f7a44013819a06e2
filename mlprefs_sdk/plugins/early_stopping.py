"""Built-in plugin: early stopping, every parameter read live at each check.

An improvement beats the best by more than convergence_threshold; the run stops when the
count of non-improving checks reaches early_stopping_patience. The first
early_stopping_warmup iterations do not count (their improvements still set the best). A NaN
or infinite metric stops at once. The best value and wait count live in the run's stored
state, so a resumed run continues them under the *current* preferences. With
restore_best_weights and a model, the best weights are kept in memory and put back at train
end.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MetricNotFoundError, MlprefsError
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__ = ["best", "capture_weights", "restore_weights"]

log = logging.getLogger(__name__)

NAME = "early_stopping"
K = "ml.training."
DEFAULT_METRIC = "val_loss"
EPOCH_END = NAME + ".epoch_end"


def best(hooks: RunContext) -> tuple[int | None, float | None]:
    """(iteration, value) of the best check so far; (None, None) before any."""
    state = hooks.state.get(NAME, {})
    return state.get("best_iteration"), state.get("best")


@hookimpl
def mlprefs_train_start(hooks: RunContext) -> None:
    hooks.state.setdefault(NAME, {"best": None, "best_iteration": None, "wait": 0})
    hooks.scratch[NAME] = {"reason": None, "weights": None, "fallback_logged": False}


@hookimpl
def mlprefs_epoch_end(hooks: RunContext, metrics: Mapping[str, Any] | None) -> None:
    hooks.scratch[EPOCH_END] = metrics is not None  # the check that follows closes this iteration


@hookimpl
def mlprefs_evaluate(hooks: RunContext, metrics: Mapping[str, Any], fallback_metric: str | None) -> None:
    # A check from on_evaluate (HF eval_steps, Lightning val_check_interval) falls inside the
    # iteration in progress, which hooks.iteration does not count yet.
    current = hooks.iteration if hooks.scratch.pop(EPOCH_END, False) else hooks.iteration + 1
    state = hooks.state.setdefault(NAME, {"best": None, "best_iteration": None, "wait": 0})
    scratch = hooks.scratch.setdefault(NAME, {"reason": None, "weights": None,
                                              "fallback_logged": False})
    enabled = hooks.get(K + "early_stopping_enabled")
    found = _lookup(hooks, scratch, metrics, fallback_metric, raise_missing=enabled)
    if found is None:
        return
    name, value = found
    if not math.isfinite(value):
        if enabled:
            scratch["reason"] = f"{name} is {value}"
        return
    min_delta = hooks.get(K + "convergence_threshold")
    mode = hooks.get(K + "early_stopping_mode")
    previous = state["best"]
    improved = previous is None or (value < previous - min_delta if mode == "min"
                                    else value > previous + min_delta)
    if improved:
        state.update(best=value, best_iteration=hooks.iteration, wait=0)
        if hooks.model is not None and hooks.get(K + "restore_best_weights"):
            scratch["weights"] = capture_weights(hooks.model)
        return
    if current <= hooks.get(K + "early_stopping_warmup"):
        return
    state["wait"] += 1
    patience = hooks.get(K + "early_stopping_patience")
    if enabled and state["wait"] >= patience:
        scratch["reason"] = (f"early stopping: {name} did not improve by more than {min_delta:g} "
                             f"for {state['wait']} checks")


@hookimpl
def mlprefs_should_stop(hooks: RunContext) -> str | None:
    return hooks.scratch.get(NAME, {}).get("reason")


@hookimpl
def mlprefs_train_end(hooks: RunContext) -> None:
    if hooks.model is None or not hooks.get(K + "restore_best_weights"):
        return
    weights = hooks.scratch.get(NAME, {}).get("weights")
    iteration, value = best(hooks)
    if weights is None:
        log.warning("mlprefs: run %s: restore_best_weights is on but no best weights were kept in "
                    "this process (no check improved%s); the model keeps its last weights",
                    hooks.run_id, " since the resume" if hooks.resumed else "")
        return
    restore_weights(hooks.model, weights)
    log.info("mlprefs: run %s: restored the best weights, from iteration %s (%s)",
             hooks.run_id, iteration, value)


def _lookup(hooks: RunContext, scratch: dict[str, Any], metrics: Mapping[str, Any],
            fallback: str | None, raise_missing: bool) -> tuple[str, float] | None:
    """The monitored metric by SPEC section 6: val_loss may fall back to the framework's own."""
    name = hooks.get(K + "early_stopping_metric")
    if name not in metrics and name == DEFAULT_METRIC and fallback is not None and fallback in metrics:
        if not scratch["fallback_logged"]:
            scratch["fallback_logged"] = True
            log.info("mlprefs: no %r among the metrics; early stopping monitors the framework's "
                     "validation loss %r instead", DEFAULT_METRIC, fallback)
        name = fallback
    if name not in metrics:
        if raise_missing:
            raise MetricNotFoundError(name, metrics.keys())
        return None
    try:
        return name, float(metrics[name])
    except (TypeError, ValueError) as e:
        raise MlprefsError(f"early stopping monitors {name!r}, but its value "
                           f"{metrics[name]!r} is not a number") from e


def capture_weights(model: Any) -> Any:
    """A copy of the model's weights: Keras get_weights, torch state_dict, else its attributes."""
    if hasattr(model, "get_weights") and hasattr(model, "set_weights"):
        return ("weights", model.get_weights())
    if hasattr(model, "state_dict") and hasattr(model, "load_state_dict"):
        return ("state_dict", {k: (v.detach().clone() if hasattr(v, "detach") else copy.deepcopy(v))
                               for k, v in model.state_dict().items()})
    return ("attrs", copy.deepcopy(vars(model)))


def restore_weights(model: Any, saved: Any) -> None:
    kind, weights = saved
    if kind == "weights":
        model.set_weights(weights)
    elif kind == "state_dict":
        model.load_state_dict(weights)
    else:
        vars(model).clear()
        vars(model).update(copy.deepcopy(weights))
