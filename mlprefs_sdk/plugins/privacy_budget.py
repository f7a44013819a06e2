"""Built-in plugin: a DP-SGD run never starts an epoch that would exceed its privacy budget.

It acts only on hooks whose optimizer came from
`mlprefs_sdk.integrations.opacus.make_private`; it finds Opacus's accountant through that
module's registry and never imports Opacus or torch itself (if the module was never imported,
make_private was never used). Before each epoch - at train start and at every should-stop
check - it predicts the epsilon after one more epoch from a copy of the accountant's history
and stops the run, naming the budget, when that would pass the target. The target is
`ml.data.dp_target_epsilon` as it was when make_private sized the noise, or a lower value
edited in mid-run: a live edit can tighten the budget, never loosen it, and max_iterations
cannot extend it. The epsilon spent and the accountant's history are kept in the run's
stored state: a resumed run continues the count, and `prefs.models.register(...,
run_id=...)` reads `dp_epsilon` from it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..runs import load_run
from ..services._model_values import InvalidModelError

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__ = ["run_metrics", "spent", "with_run"]

log = logging.getLogger(__name__)

NAME = "privacy_budget"
INTEGRATION = "mlprefs_sdk.integrations.opacus"
TARGET = "ml.data.dp_target_epsilon"


def _accounting(hooks: RunContext) -> Any:
    module = sys.modules.get(INTEGRATION)
    if module is None or hooks.optimizer is None:
        return None
    return module.accounting_for(hooks.optimizer)


def spent(hooks: RunContext) -> tuple[float, float] | None:
    """(epsilon, delta) the run has spent, from Opacus's accountant; None without DP-SGD."""
    accounting = _accounting(hooks)
    return None if accounting is None else accounting.spent()


def run_metrics(store: Any, run_id: str) -> dict[str, float]:
    """{"dp_epsilon": ...} for a stored run trained with DP-SGD, {} for any other run."""
    record = load_run(store, run_id)
    if record is None:
        raise InvalidModelError(f"run_id {run_id!r} is not a training run in this store; pass the "
                          "hooks.run_id of a run recorded here")
    state = record.state.get("plugins", {}).get(NAME)
    return {} if not state else {"dp_epsilon": float(state["epsilon"])}


def with_run(store: Any, run_id: str, metrics: Mapping[str, Any] | None,
             tags: Mapping[str, str] | None, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model version's metrics and tags when it is registered from a stored run."""
    from_run = run_metrics(store, run_id)
    ours = dict(metrics or {})
    for key, value in from_run.items():
        if key in ours and ours[key] != value:
            raise InvalidModelError(f"metric {key} = {ours[key]!r} of {model} differs from the "
                                    f"{value!r} that run {run_id!r} recorded; leave it out")
    return {**ours, **from_run}, {"mlprefs.run_id": run_id, **(tags or {})}


@hookimpl
def mlprefs_train_start(hooks: RunContext) -> None:
    accounting = _accounting(hooks)
    if accounting is None:
        if hooks.get("ml.data.dp_enabled"):
            log.warning("mlprefs: run %s: ml.data.dp_enabled is true but its optimizer was not "
                        "made private with mlprefs_sdk.integrations.opacus.make_private; this "
                        "run has no differential-privacy guarantee and reports no budget",
                        hooks.run_id)
        return
    saved = hooks.state.get(NAME)
    if hooks.resumed and saved and not accounting.accountant.history:
        accounting.resume(saved["history"])
        log.info("mlprefs: run %s resumes with epsilon %.4g already spent", hooks.run_id,
                 saved["epsilon"])
    _record(hooks, accounting)
    reason = _over_budget(hooks, accounting)
    if reason:
        hooks.request_stop(reason)


@hookimpl
def mlprefs_epoch_end(hooks: RunContext) -> None:
    accounting = _accounting(hooks)
    if accounting is not None:
        _record(hooks, accounting)


@hookimpl
def mlprefs_should_stop(hooks: RunContext) -> str | None:
    accounting = _accounting(hooks)
    return None if accounting is None else _over_budget(hooks, accounting)


@hookimpl
def mlprefs_train_end(hooks: RunContext) -> None:
    accounting = _accounting(hooks)
    if accounting is not None:
        _record(hooks, accounting)  # steps after the last epoch end count too


def _record(hooks: RunContext, accounting: Any) -> None:
    epsilon, delta = accounting.spent()
    hooks.state[NAME] = {"epsilon": epsilon, "delta": delta,
                         "target": accounting.target_epsilon, "history": accounting.history()}


def _over_budget(hooks: RunContext, accounting: Any) -> str | None:
    target = min(accounting.target_epsilon, hooks.get(TARGET))
    after = accounting.epsilon_after(accounting.steps_per_epoch)
    if after <= target:
        return None
    epsilon, delta = accounting.spent()
    return (f"privacy budget: another epoch would take epsilon from {epsilon:.4g} to "
            f"{after:.4g}, past ml.data.dp_target_epsilon = {target:g} (delta {delta:g})")
