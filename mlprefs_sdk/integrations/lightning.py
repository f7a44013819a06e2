"""PyTorch Lightning adapter: a Callback over prefs.training_hooks().

Lightning builds the optimizers after the callback exists and restores their state from a
checkpoint after ``on_fit_start``, so everything is attached at ``on_train_start``: the
preferences, not the constructor or an old checkpoint, decide the learning rate.
``regularization_l1`` is added for you: its term's gradient (l1 x sign(w)) joins the
gradients before each optimizer step, as if ``hooks.l1_penalty(model)`` were in the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._require import require

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn

    from ..client import Client
    from ..training import TrainingHooks
else:
    pl = require("lightning.pytorch", "lightning", "mlprefs_sdk.integrations.lightning")
    TrainerFn = require("lightning.pytorch.trainer.states", "lightning",
                        "mlprefs_sdk.integrations.lightning").TrainerFn

__all__ = ["MlprefsCallback"]

log = logging.getLogger(__name__)


class MlprefsCallback(pl.Callback):
    """Live learning rate and weight decay, early stopping and max_iterations for a Trainer.

    Each validation run (``val_check_interval``, ``check_val_every_n_epoch``) is one
    early-stopping check on ``trainer.callback_metrics``; without a validation loop the check
    runs at each train epoch end on the metrics logged in training. ``max_iterations`` counts
    epochs. The run id is saved in checkpoints, so ``fit(ckpt_path=...)`` continues the run.
    """

    def __init__(self, prefs: Client, run_id: str | None = None) -> None:
        super().__init__()
        self.prefs = prefs
        self.run_id = run_id
        self.hooks: TrainingHooks | None = None

    @property
    def stop_reason(self) -> str | None:
        return None if self.hooks is None else self.hooks.stop_reason

    # -- checkpoints carry only the run id: the early-stopping state lives in the store ----
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = state_dict.get("run_id") or self.run_id

    # -- the training loop ---------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = list(trainer.optimizers)
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        if len(optimizers) > 1:
            log.warning("mlprefs: %d optimizers; live learning_rate and regularization_l2 go to "
                        "the first only", len(optimizers))
        scheduler = next((s for s in schedulers
                          if optimizers and getattr(s, "optimizer", None) is optimizers[0]), None)
        self.hooks = self.prefs.training_hooks(
            optimizer=optimizers[0] if optimizers else None, scheduler=scheduler,
            model=pl_module, run_id=self.run_id,
            # DDP/FSDP strategies run every rank in torch.distributed's default group
            distributed="auto" if trainer.world_size > 1 else False)
        self.run_id = self.hooks.run_id
        self.hooks.on_train_start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.hooks.on_step_end(trainer.global_step)  # type: ignore[union-attr]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        # regularization_l1: the gradient of hooks.l1_penalty(), once per optimizer step
        # (after every accumulated backward, before clipping): the loss itself is out of reach.
        if self.hooks is not None:
            self.hooks.add_l1_gradient(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hooks is None or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self.hooks.on_evaluate(_scalars(trainer.callback_metrics))
        self._stop_if_asked(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks = self.hooks
        assert hooks is not None
        # With a validation loop the checks already ran in on_validation_end.
        metrics = None if trainer.enable_validation else _scalars(trainer.callback_metrics)
        hooks.on_epoch_end(trainer.current_epoch, metrics)
        self._stop_if_asked(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hooks is not None:
            self.hooks.on_train_end()

    def _stop_if_asked(self, trainer: pl.Trainer) -> None:
        # Every rank must agree, or the ranks that stop leave the others waiting in a collective.
        stop = trainer.strategy.reduce_boolean_decision(self.hooks.should_stop, all=False)  # type: ignore[union-attr]
        if stop and not trainer.should_stop:
            trainer.should_stop = True
            log.debug("mlprefs: stopping Lightning training: %s", self.stop_reason)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Lightning's metrics are 0-d tensors; early stopping wants plain floats."""
    out = {}
    for name, value in metrics.items():
        numel = getattr(value, "numel", None)
        if numel is None or numel() == 1:
            out[name] = float(value)
    return out
