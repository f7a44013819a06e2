"""The plugin contract: pluggy hook specifications, called with keyword arguments only.

A hook gets `hooks`, the run's RunContext (below: what a plugin may read and call on it),
`changes`, a ChangeSet, and `client`, the Client's narrow handle (handle.ClientHandle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from .handle import ClientHandle
    from .resolve import View
    from .values import ChangeSet

__all__ = ["hookspec", "hookimpl", "PROJECT", "RunContext"]

PROJECT = "mlprefs_sdk"  # pluggy project name and entry-point group
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RunContext(Protocol):
    """What a training hook's `hooks` offers a plugin (training.TrainingHooks is the one).

    Read preferences through get()/enabled(): they hold the values as of the last step
    boundary, rank 0's under torch.distributed. Keep what must survive a resume in `state`
    (JSON, stored with the run, one dict per plugin name) and the rest in `scratch`.
    """

    client: ClientHandle  # the Client the run reads (prefs.get gives the live value)
    run_id: str  # "<date>-<time>-<hex>", or the caller's; a resumed run keeps its id
    iteration: int  # iterations completed: epochs, boosting rounds, passes
    steps: int  # steps completed in the whole run
    checks: int  # evaluations (early-stopping checks) done
    resumed: bool  # this run_id had stored state: counters and `state` were restored
    stop_reason: str | None  # why the run stops, once some plugin or the driver asked
    state: dict[str, Any]  # per-plugin JSON state, stored with the run for resume
    scratch: dict[str, Any]  # per-plugin state for this process only
    optimizer: Any  # the framework's optimizer, if given (torch: param_groups are set live)
    scheduler: Any  # its LR scheduler, if given
    model: Any  # the model, if given (best-weights restore, L1)
    appliers: list[Callable[[Mapping[str, Any]], None]]  # for optimizers without param_groups
    view: View  # the resolved view get() and enabled() read

    def get(self, key: str) -> Any:
        """A key's value as of the last step boundary (next-run keys: as at train start)."""
    def enabled(self, key: str) -> bool:
        """A flag as of the last step boundary (ml.features.* need ml.global.enabled)."""
    @property
    def flags(self) -> Mapping[str, bool]:
        """Every flag's effective value as of the last step boundary."""
    @property
    def should_stop(self) -> bool:
        """A stop was requested."""
    @property
    def privacy_spent(self) -> tuple[float, float] | None:
        """(epsilon, delta) spent so far under DP-SGD, or None."""
    def request_stop(self, reason: str) -> None:
        """Stop at the next check of should_stop; the first reason is kept."""
    def stage(self, write: Callable[[Any], None]) -> None:
        """Queue write(db) for the run's next save (one commit per epoch or evaluation)."""


@hookspec
def mlprefs_register_keys(register: Callable[..., Any]) -> None:
    """Add keys outside ml.: register(key, type, default, min=, max=, choices=, description=)."""


@hookspec
def mlprefs_train_start(hooks: RunContext) -> None:
    """A run starts: bring the optimizer, scheduler and appliers to the current preferences."""


@hookspec
def mlprefs_attach(hooks: RunContext) -> None:
    """Objects were attached after train start: bring them up to date too."""


@hookspec
def mlprefs_apply_changes(hooks: RunContext, changes: ChangeSet, step: int) -> None:
    """Deferred ChangeSets, delivered at a step boundary (never mid-step), oldest first."""


@hookspec
def mlprefs_step_end(hooks: RunContext, step: int) -> None:
    """A step ended (called only when some plugin implements it: it is the hot path)."""


@hookspec
def mlprefs_epoch_end(hooks: RunContext, epoch: int, metrics: Mapping[str, Any] | None) -> None:
    """An iteration (epoch, boosting round, pass) ended; metrics may be None."""


@hookspec
def mlprefs_evaluate(hooks: RunContext, metrics: Mapping[str, Any], fallback_metric: str | None,
                     index: int) -> None:
    """One evaluation: one early-stopping check; index is the epoch or step it belongs to."""


@hookspec(firstresult=True)
def mlprefs_should_stop(hooks: RunContext) -> str | None:
    """Return a reason to stop the run, or None; the first reason wins."""


@hookspec
def mlprefs_train_end(hooks: RunContext) -> None:
    """The run ended (stopped or finished)."""


@hookspec
def mlprefs_preferences_changed(client: ClientHandle, changes: ChangeSet) -> None:
    """A ChangeSet was applied to the client's view (immediately, on the thread that applied it)."""


@hookspec
def mlprefs_cleanup(client: ClientHandle, before: float) -> Any:
    """Retention: delete the plugin's records older than `before` (epoch seconds); return a count."""


@hookspec
def mlprefs_erase(client: ClientHandle, pseudonym: str) -> Any:
    """Erasure: delete every record of this subject pseudonym; return a count."""
