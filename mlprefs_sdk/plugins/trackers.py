"""Built-in plugin: preferences and their live edits into the experiment tracker's run.

With ml.features.experiment_tracking on (it needs ml.global.enabled), a run that starts while
an MLflow run is active or a W&B run exists logs every resolved key with its source, then
each change applied mid-run at the step it landed (integrations/mlflow.py, .../wandb.py).
No tracker run: nothing is logged and no tracker library is imported - a tracker can only
have a run if its module is already in sys.modules, so that is where this looks.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__ = ["TRACKING", "active_sinks"]

log = logging.getLogger(__name__)

NAME = "trackers"
TRACKING = "ml.features.experiment_tracking"


def active_sinks() -> list[Any]:
    """One sink per tracker with a run now; empty when neither library was imported."""
    sinks: list[Any] = []
    if "mlflow" in sys.modules:
        from ..integrations import mlflow

        sinks.append(mlflow.active_sink())
    if "wandb" in sys.modules:
        from ..integrations import wandb

        sinks.append(wandb.active_sink())
    return [s for s in sinks if s is not None]


def _entries(hooks: RunContext, keys: Any) -> list[tuple[str, Any, str, bool]]:
    client = hooks.client
    out = []
    for key in keys:
        spec = client.spec(key)
        out.append((key, hooks.get(key), str(client.explain(key).source), spec.sensitive))
    return out


def _send(hooks: RunContext, what: str, call: Any) -> None:
    """A tracker that fails must not stop training: log the failure with the run and go on."""
    for sink in hooks.scratch.get(NAME, ()):
        try:
            call(sink)
        except Exception:  # the tracker's own errors (HTTP, SQL, protobuf) share no base class
            log.exception("mlprefs: run %s: logging %s to %s failed; training goes on",
                          hooks.run_id, what, sink.name)


@hookimpl
def mlprefs_train_start(hooks: RunContext) -> None:
    if not hooks.enabled(TRACKING):
        return
    sinks = active_sinks()
    if not sinks:
        return
    hooks.scratch[NAME] = sinks
    entries = _entries(hooks, sorted(hooks.client.snapshot()))
    _send(hooks, "the resolved preferences", lambda sink: sink.start(entries, hooks.steps))
    log.info("mlprefs: run %s: %d preference(s) logged to %s", hooks.run_id, len(entries),
             ", ".join(s.name for s in sinks))


@hookimpl
def mlprefs_apply_changes(hooks: RunContext, changes: Any, step: int) -> None:
    if NAME not in hooks.scratch or not hooks.enabled(TRACKING):
        return
    entries = [(c.key, c.new, str(c.source), hooks.client.spec(c.key).sensitive) for c in changes]
    _send(hooks, f"changes of {', '.join(changes.keys)} at step {step}",
          lambda sink: sink.changes(entries, step))
