"""The plugin contract: pluggy hook specifications, called with keyword arguments only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "mlprefs_sdk"  # pluggy project name and entry-point group
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mlprefs_register_keys(register: Callable[..., Any]) -> None:
    """Add keys outside ml.: register(key, type, default, min=, max=, choices=, description=)."""


@hookspec
def mlprefs_train_start(hooks: Any) -> None:
    """A run starts: bring the optimizer, scheduler and appliers to the current preferences."""


@hookspec
def mlprefs_attach(hooks: Any) -> None:
    """Objects were attached after train start: bring them up to date too."""


@hookspec
def mlprefs_apply_changes(hooks: Any, changes: Any, step: int) -> None:
    """Deferred ChangeSets, delivered at a step boundary (never mid-step), oldest first."""


@hookspec
def mlprefs_step_end(hooks: Any, step: int) -> None:
    """A step ended (called only when some plugin implements it: it is the hot path)."""


@hookspec
def mlprefs_epoch_end(hooks: Any, epoch: int, metrics: Mapping[str, Any] | None) -> None:
    """An iteration (epoch, boosting round, pass) ended; metrics may be None."""


@hookspec
def mlprefs_evaluate(hooks: Any, metrics: Mapping[str, Any], fallback_metric: str | None,
                     index: int) -> None:
    """One evaluation: one early-stopping check; index is the epoch or step it belongs to."""


@hookspec(firstresult=True)
def mlprefs_should_stop(hooks: Any) -> str | None:
    """Return a reason to stop the run, or None; the first reason wins."""


@hookspec
def mlprefs_train_end(hooks: Any) -> None:
    """The run ended (stopped or finished)."""


@hookspec
def mlprefs_preferences_changed(client: Any, changes: Any) -> None:
    """A ChangeSet was applied to the client's view (immediately, on the thread that applied it)."""


@hookspec
def mlprefs_cleanup(client: Any, before: float) -> Any:
    """Retention: delete the plugin's records older than `before` (epoch seconds); return a count."""


@hookspec
def mlprefs_erase(client: Any, pseudonym: str) -> Any:
    """Erasure: delete every record of this subject pseudonym; return a count."""
