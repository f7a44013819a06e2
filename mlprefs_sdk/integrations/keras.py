"""Keras 3 adapter: a Callback over prefs.training_hooks(), for any Keras backend.

Keras optimizers have no param groups; the learning rate is a variable (``assign``) and the
weight decay a plain attribute, so both reach the optimizer through ``hooks.add_applier``.
Keras has no L1 counterpart of ``weight_decay``, and a callback cannot reach the loss, so
``regularization_l1`` is applied the way Keras applies weight decay, decoupled from the
gradient: after each step every trainable weight moves ``lr x l1`` toward zero, and stops at
zero (the proximal step of the L1 term).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._require import require

if TYPE_CHECKING:
    import keras

    from ..client import Client
    from ..training import TrainingHooks
else:
    keras = require("keras", "keras", "mlprefs_sdk.integrations.keras")

__all__ = ["MlprefsCallback"]

log = logging.getLogger(__name__)


class MlprefsCallback(keras.callbacks.Callback):
    """Live learning rate, weight decay and L1, early stopping and max_iterations for ``model.fit``.

    Each epoch that reports the monitored metric in ``logs`` is one early-stopping check;
    ``max_iterations`` counts epochs. An optimizer built with a LearningRateSchedule (or a
    callable) keeps its schedule: the learning_rate preference is then not applied, and the
    log says so at train start and at every change.
    """

    def __init__(self, prefs: Client, run_id: str | None = None) -> None:
        super().__init__()
        self.prefs = prefs
        self.run_id = run_id
        self.hooks: TrainingHooks | None = None
        self._step = 0
        self._l1 = 0.0
        self._warned_no_metric = False

    @property
    def stop_reason(self) -> str | None:
        return None if self.hooks is None else self.hooks.stop_reason

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._step = 0
        self.hooks = self.prefs.training_hooks(model=self.model, run_id=self.run_id)
        self.run_id = self.hooks.run_id
        self.hooks.add_applier(self._apply)
        self.hooks.on_train_start()

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._step += 1
        if self._l1:
            self._shrink(self._l1)
        self.hooks.on_step_end(self._step)  # type: ignore[union-attr]

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        hooks = self.hooks
        assert hooks is not None
        metrics = dict(logs or {})
        monitored = self.prefs.get("ml.training.early_stopping_metric")
        if monitored not in metrics and not any(name.startswith("val_") for name in metrics):
            # validation_freq skipped this epoch, or fit() has no validation data at all
            if not self._warned_no_metric:
                self._warned_no_metric = True
                log.warning("mlprefs: %r is not in this epoch's logs (%s) and the epoch did not "
                            "validate; early stopping checks only epochs that report it "
                            "(pass validation_data to fit())", monitored, ", ".join(metrics))
            hooks.on_epoch_end(epoch)
        else:
            hooks.on_epoch_end(epoch, metrics)
        if hooks.should_stop and not self.model.stop_training:
            self.model.stop_training = True
            log.debug("mlprefs: stopping Keras training: %s", hooks.stop_reason)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.hooks is not None:
            self.hooks.on_train_end()

    # -- the optimizer ---------------------------------------------------------------
    def _apply(self, changes: Mapping[str, Any]) -> None:
        optimizer = self.model.optimizer
        if "learning_rate" in changes:
            lr = optimizer.learning_rate
            if isinstance(lr, keras.Variable):
                lr.assign(float(changes["learning_rate"]))
            else:
                schedule = type(getattr(optimizer, "_learning_rate", lr)).__name__
                log.warning(
                    "mlprefs: ml.training.learning_rate = %r is not applied: %s was built with a "
                    "learning-rate schedule (%s), whose rate cannot be set. Build the optimizer with "
                    "a float learning_rate for live changes.",
                    changes["learning_rate"], type(optimizer).__name__, schedule)
        if "regularization_l2" in changes and hasattr(optimizer, "weight_decay"):
            optimizer.weight_decay = float(changes["regularization_l2"])
        if "regularization_l1" in changes:
            self._l1 = float(changes["regularization_l1"])

    def _shrink(self, l1: float) -> None:
        """The step's L1 term: each trainable weight moves lr x l1 toward zero, not past it."""
        ops = keras.ops
        step = l1 * float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        for weight in self.model.trainable_weights:
            weight.assign(ops.sign(weight) * ops.maximum(ops.abs(weight) - step, 0.0))

