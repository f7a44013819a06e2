"""The training driver: what a loop (or a framework adapter) calls at its boundaries.

Preference changes are delivered here only at step boundaries (deferred delivery): an edit
to mlprefs.toml mid-step reaches the optimizer before the next step, never halfway through
one. What is done with a change, and when training stops, is up to the plugins (built-in:
live hyperparameters, early stopping, feature gates, learning curves); the driver counts
iterations, enforces max_iterations, records every change it delivers with the run id and
step, and stores the run's state so that the same run_id resumes where it stopped.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .distributed import join_ranks
from .errors import MetricNotFoundError, StoreError
from .runs import RunChange, load_run, save_run, write_changes
from .values import ChangeSet

if TYPE_CHECKING:
    from .handle import ClientHandle
    from .hookspecs import RunContext
    from .resolve import View

__all__ = ["TrainingHooks", "MetricNotFoundError", "NEXT_RUN_KEYS"]

log = logging.getLogger(__name__)

# Changing these mid-run would break the data pipeline or the model being built.
NEXT_RUN_KEYS = frozenset({
    "ml.performance.batch_size",
    "ml.performance.parallel_workers",
    "ml.models.default_framework",
})
MAX_ITERATIONS = "ml.training.max_iterations"
REGULARIZATION_L1 = "ml.training.regularization_l1"
FLUSH_AFTER_S = 1.0  # changes applied mid-epoch reach the store at the latest this much later


def new_run_id() -> str:
    """Sortable and readable: 20250101-120000-a1b2c3."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _trainable(model: Any) -> list[Any]:
    if model is None or not hasattr(model, "parameters"):
        return []
    return [p for p in model.parameters() if getattr(p, "requires_grad", True)]


class TrainingHooks:
    """One training run: call on_train_start, on_step_end, on_epoch_end, on_train_end."""

    def __init__(self, client: ClientHandle, optimizer: Any = None, scheduler: Any = None, model: Any = None,
                 run_id: str | None = None, distributed: Any = False) -> None:
        self.client = client
        self.optimizer, self.scheduler, self.model = optimizer, scheduler, model
        self.appliers: list[Callable[[Mapping[str, Any]], None]] = []
        self.run_id = run_id or new_run_id()
        self.iteration = 0  # iterations completed: epochs, boosting rounds, passes
        self.steps = 0  # steps completed in the whole run (what recorded changes refer to)
        self.checks = 0  # early-stopping checks (evaluations) done
        self.stop_reason: str | None = None
        self.state: dict[str, Any] = {}  # per-plugin JSON state, stored for resume
        self.scratch: dict[str, Any] = {}  # per-plugin state for this process only
        self.resumed = False
        self._pm = client.plugin_manager
        self._hook = self._pm.hook
        self._pending = client.events.pending  # the dispatcher's deferred queue
        self._queued: list[ChangeSet] = []
        self._sub: Any = None
        self._step_hook: Any = None
        self._slow = False  # on_step_end has more to do than deliver: a step plugin, staged writes
        self._started = self._ended = False
        self.view: View = client.view  # what get() and enabled() read: the last step boundary's
        self._pinned: dict[str, Any] = {}
        self._staged: list[Callable[[Any], None]] = []
        self._staged_at = 0.0
        self._warned_next_run: set[str] = set()
        self._ranks = join_ranks(self, distributed)  # None unless ranks follow rank 0
        self._resume()

    # -- reading preferences as of the last step boundary ---------------------------
    def get(self, key: str) -> Any:
        """A key's value as of the last step boundary (next-run keys: as at train start)."""
        pinned = self._pinned.get(key, self)
        if pinned is not self:
            return pinned
        return self.view.values[key] if key in self.view.values else self.client.get(key)

    def enabled(self, key: str) -> bool:
        """A flag as of the last step boundary (ml.features.* need ml.global.enabled)."""
        try:
            return self.view.enabled[key]
        except KeyError:
            return self.client.enabled(key)

    @property
    def flags(self) -> Mapping[str, bool]:
        """Every flag's effective value as of the last step boundary."""
        return self.view.enabled

    @property
    def privacy_spent(self) -> tuple[float, float] | None:
        """(epsilon, delta) spent so far under DP-SGD (integrations.opacus.make_private), from
        Opacus's accountant; None when the optimizer is not private."""
        from .plugins.privacy_budget import spent

        return spent(self)

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: str) -> None:
        """Stop the run at the next check of should_stop; the first reason is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("mlprefs: run %s stops after iteration %d: %s", self.run_id, self.iteration,
                     reason)

    # -- L1: torch has no optimizer knob for it, so it is a loss term -----------------
    def l1_penalty(self, model: Any = None) -> Any:
        """regularization_l1 x the sum of |w| over the model's trainable parameters: add it
        to the loss (`loss = loss + hooks.l1_penalty(model)`); 0.0 when the key is 0."""
        l1 = self.get(REGULARIZATION_L1)
        params = _trainable(model if model is not None else self.model)
        if not l1 or not params:
            return 0.0
        return l1 * sum(p.abs().sum() for p in params)

    def add_l1_gradient(self, model: Any = None) -> None:
        """What l1_penalty adds to the loss, added to the gradients instead (l1 x sign(w)):
        for adapters that cannot reach the loss (Lightning, Transformers), once per
        optimizer step, after backward."""
        l1 = self.get(REGULARIZATION_L1)
        if not l1:
            return
        for p in _trainable(model if model is not None else self.model):
            if p.grad is not None:
                p.grad.add_(p.detach().sign(), alpha=l1)

    # -- wiring -------------------------------------------------------------------
    def attach(self, optimizer: Any = None, scheduler: Any = None, model: Any = None) -> None:
        """Add objects a framework builds after the callback (they get the current values)."""
        if optimizer is not None:
            self.optimizer = optimizer
        if scheduler is not None:
            self.scheduler = scheduler
        if model is not None:
            self.model = model
        if self._started:
            self._hook.mlprefs_attach(hooks=self)

    def add_applier(self, fn: Callable[[Mapping[str, Any]], None]) -> None:
        """For optimizers without param_groups: fn gets {"learning_rate": ..,
        "regularization_l1": .., "regularization_l2": ..} at start, then the changed ones."""
        if not callable(fn):
            raise TypeError(f"an applier must be callable, got {fn!r}")
        self.appliers.append(fn)
        if self._started:
            self._hook.mlprefs_attach(hooks=self)

    # -- the loop's boundaries ----------------------------------------------------------
    def on_train_start(self) -> None:
        if self._started:
            return
        self._started = True
        self.client.apply_pending()  # older edits are already in the view read below
        self._sub = self.client.on_change("*", self._queued.append, deliver="deferred")
        self.view = self.client.view
        if self._ranks is not None:
            self._ranks.train_start()  # every rank takes rank 0's values and counters
        self._pinned = {k: self.view.values[k] for k in NEXT_RUN_KEYS if k in self.view.values}
        if self._hook.mlprefs_step_end.get_hookimpls():
            self._step_hook = self._hook.mlprefs_step_end
            self._slow = True
        self._hook.mlprefs_train_start(hooks=self)
        self._save("running")

    def on_step_end(self, step: int) -> None:
        """Applies pending preference changes; next to free when nothing changed."""
        self.steps += 1
        if self._ranks is not None:
            self._ranks.step_end()
        elif self._pending:
            self._deliver()
        if self._slow:
            self._slow_step(step)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None,
                     fallback_metric: str | None = None) -> None:
        """Counts one iteration; with metrics, also one early-stopping check."""
        if self._ranks is not None:
            metrics = self._ranks.boundary(metrics)
        elif self._pending:
            self._deliver()
        self.iteration += 1
        self._hook.mlprefs_epoch_end(hooks=self, epoch=epoch, metrics=metrics)
        if metrics is not None:
            self._evaluate(metrics, fallback_metric, epoch)
        self._decide()
        self._save()

    def on_evaluate(self, metrics: Mapping[str, Any], fallback_metric: str | None = None,
                    step: int | None = None) -> None:
        """One early-stopping check, for frameworks that evaluate on their own schedule."""
        if self._ranks is not None:
            metrics = self._ranks.boundary(metrics)  # type: ignore[assignment]
        elif self._pending:
            self._deliver()
        self._evaluate(metrics, fallback_metric, self.checks if step is None else step)
        self._decide()
        self._save()

    def on_train_end(self) -> None:
        """Restores the best weights (when asked) and closes the run."""
        if self._ended:
            return
        self._ended = True
        if self._pending and self._ranks is None:  # no collective: a rank may end alone
            self._deliver()
        try:
            self._hook.mlprefs_train_end(hooks=self)
        finally:
            self._save("stopped" if self.stop_reason else "finished")
            self.close()

    def close(self) -> None:
        """Stop receiving changes (on_train_end does this)."""
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None
        if self._ranks is not None:
            self._ranks.close()

    # -- internals ------------------------------------------------------------------
    def _slow_step(self, step: int) -> None:
        if self._step_hook is not None:
            self._step_hook(hooks=self, step=step)
        if self._staged and time.monotonic() - self._staged_at >= FLUSH_AFTER_S:
            self._save()

    def _evaluate(self, metrics: Mapping[str, Any], fallback_metric: str | None, index: int) -> None:
        self.checks += 1
        self._hook.mlprefs_evaluate(hooks=self, metrics=metrics, fallback_metric=fallback_metric,
                                    index=index)

    def _decide(self) -> None:
        if self._ranks is not None:
            self._ranks.decide(self._decide_here)  # rank 0 decides for every rank
        else:
            self._decide_here()

    def _decide_here(self) -> None:
        reason = self._hook.mlprefs_should_stop(hooks=self)
        if reason:
            self.request_stop(str(reason))
        limit = self.get(MAX_ITERATIONS)
        if self.iteration >= limit:
            self.request_stop(f"max_iterations {limit} reached")

    def _deliver(self) -> None:
        """Deliver deferred ChangeSets (the user's and ours) at this step boundary."""
        batches = self.drain_changes()
        if batches:
            self.apply_changes(batches, self.client.view)

    @property
    def changes_pending(self) -> bool:
        """Some deferred ChangeSet waits for the next boundary (the rank sync asks this)."""
        return bool(self._pending)

    def drain_changes(self) -> list[ChangeSet]:
        """The ChangeSets queued for this run, taken; the user's deferred callbacks run too."""
        self.client.apply_pending()
        batches = self._queued[:]
        self._queued.clear()  # the subscription appends to this very list
        return batches

    def apply_changes(self, batches: list[ChangeSet], view: View) -> None:
        """Record the ChangeSets and hand them to the plugins; `view` holds the values from now."""
        self.view = view
        now = time.time()
        records = []
        for cs in batches:
            live = []
            for c in cs:
                applied = c.key not in NEXT_RUN_KEYS
                records.append(RunChange(self.run_id, self.steps, self.iteration, c.key, c.old, c.new,
                                         str(c.source), applied, now))
                if applied:
                    live.append(c)
                    log.info("mlprefs: run %s step %d: %s %r -> %r (%s)", self.run_id, self.steps,
                             c.key, c.old, c.new, c.source)
                elif c.key not in self._warned_next_run:
                    self._warned_next_run.add(c.key)
                    log.warning("mlprefs: %s changed to %r (%s) during run %s; it cannot change "
                                "safely mid-run and takes effect at the next run", c.key, c.new,
                                c.source, self.run_id)
            if live:
                self._hook.mlprefs_apply_changes(hooks=self, changes=ChangeSet(tuple(live)),
                                                 step=self.steps)
        self.stage(lambda db: write_changes(db, records))

    def _resume(self) -> None:
        record = self._store_call(load_run, self.run_id)
        if record is None:
            return
        self.resumed = True
        self.iteration, self.steps = record.iteration, record.steps
        self.checks = int(record.state.get("checks", 0))
        self.state = dict(record.state.get("plugins", {}))
        log.info("mlprefs: resuming run %s after iteration %d (%s before)", self.run_id,
                 self.iteration, record.status)

    def stage(self, write: Callable[[Any], None]) -> None:
        """Queue write(db) for the run's next save: one commit per epoch or evaluation, none
        on the step path (a step boundary saves only what waited FLUSH_AFTER_S)."""
        if not self._staged:
            self._staged_at = time.monotonic()
            self._slow = True
        self._staged.append(write)

    def _save(self, status: str = "running") -> None:
        staged = self._staged[:]
        self._staged.clear()
        self._slow = self._step_hook is not None
        self._store_call(save_run, self.run_id, self.client.user, self.client.project, status,
                         self.stop_reason, self.iteration, self.steps,
                         {"checks": self.checks, "plugins": self.state}, staged)

    def _store_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Bookkeeping must not kill a training run: a store failure is logged, not raised."""
        try:
            return fn(self.client.store, *args)
        except StoreError:
            log.exception("mlprefs: run %s: could not %s in the store; training goes on, but "
                          "this run may not resume from here", self.run_id,
                          fn.__name__.replace("_", " "))
            return None

    def __repr__(self) -> str:
        return (f"<TrainingHooks run={self.run_id!r} iteration={self.iteration} steps={self.steps}"
                f"{' stop: ' + self.stop_reason if self.stop_reason else ''}>")


if TYPE_CHECKING:
    _CONTRACT: type[RunContext] = TrainingHooks  # the driver offers what the hook specs promise
