"""Hugging Face Transformers adapter: a TrainerCallback over prefs.training_hooks().

The Trainer creates its optimizer and LR scheduler (and loads them from a checkpoint) before
``on_train_begin``; they are attached there. Its default schedules are LambdaLRs that
recompute the LR from ``base_lrs`` at every step, so the scheduler is attached too and the
preference rescales ``base_lrs`` instead of being undone one step later.
``regularization_l1`` is added for you: its term's gradient (l1 x sign(w)) joins the
gradients before each optimizer step, as if ``hooks.l1_penalty(model)`` were in the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._require import require

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    from ..client import Client
    from ..training import TrainingHooks

else:
    _hf = require("transformers", "transformers", "mlprefs_sdk.integrations.transformers")
    TrainerCallback, TrainerControl = _hf.TrainerCallback, _hf.TrainerControl
    TrainerState, TrainingArguments = _hf.TrainerState, _hf.TrainingArguments

__all__ = ["MlprefsCallback"]

log = logging.getLogger(__name__)

FALLBACK_METRIC = "eval_loss"  # the Trainer's own validation loss, used for the default "val_loss"
_DECAY_MARK = 1.0  # any non-zero value: on_train_start replaces it with regularization_l2


class MlprefsCallback(TrainerCallback):
    """Live learning rate and weight decay, early stopping and max_iterations for a Trainer.

    Each evaluation during training (``eval_strategy`` / ``eval_steps``) is one early-stopping
    check on the evaluation metrics; ``max_iterations`` counts epochs. To continue a run after
    ``train(resume_from_checkpoint=...)``, pass the same ``run_id``.
    """

    def __init__(self, prefs: Client, run_id: str | None = None) -> None:
        self.prefs = prefs
        self.run_id = run_id
        self.hooks: TrainingHooks | None = None
        self._training = False
        self._epoch_pending: int | None = None

    @property
    def stop_reason(self) -> str | None:
        return None if self.hooks is None else self.hooks.stop_reason

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, optimizer: Any = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        self.hooks = self.prefs.training_hooks(
            optimizer=optimizer, scheduler=lr_scheduler, model=model, run_id=self.run_id,
            # torchrun/accelerate: every process is a rank of torch.distributed's default group
            distributed="auto" if args.world_size > 1 else False)
        self.run_id = self.hooks.run_id
        self._training, self._epoch_pending = True, None
        if optimizer is not None:
            _mark_decay_groups(optimizer.param_groups)
        self.hooks.on_train_start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self.hooks.on_step_end(state.global_step)  # type: ignore[union-attr]

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                              control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        # regularization_l1: the gradient of hooks.l1_penalty(), once per optimizer step
        # (after gradient accumulation): the Trainer's loss is out of a callback's reach.
        if self.hooks is not None and model is not None:
            self.hooks.add_l1_gradient(model)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        if not self._training or metrics is None:  # trainer.evaluate() outside train()
            return
        hooks = self.hooks
        assert hooks is not None
        if self._epoch_pending is not None:  # this evaluation closes the epoch just ended
            epoch, self._epoch_pending = self._epoch_pending, None
            hooks.on_epoch_end(epoch, metrics, fallback_metric=FALLBACK_METRIC)
        else:
            hooks.on_evaluate(metrics, fallback_metric=FALLBACK_METRIC)
        self._stop_if_asked(control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        # state.epoch is fractional and reaches n at the end of the n-th epoch.
        epoch = max(round(state.epoch or 0) - 1, 0)
        if control.should_evaluate:
            # eval_strategy="epoch": the Trainer evaluates this epoch right after this call;
            # count the epoch with that check, as a plain loop's on_epoch_end(epoch, metrics).
            self._epoch_pending = epoch
            return
        self._count_epoch(epoch, control)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._flush_epoch(control)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._flush_epoch(control)
        self._training = False
        if self.hooks is not None:
            self.hooks.on_train_end()

    def _flush_epoch(self, control: TrainerControl) -> None:
        """An epoch whose announced evaluation did not come is still counted."""
        if self._epoch_pending is not None:
            epoch, self._epoch_pending = self._epoch_pending, None
            self._count_epoch(epoch, control)

    def _count_epoch(self, epoch: int, control: TrainerControl) -> None:
        self.hooks.on_epoch_end(epoch)  # type: ignore[union-attr]
        self._stop_if_asked(control)

    def _stop_if_asked(self, control: TrainerControl) -> None:
        if self.hooks.should_stop and not control.should_training_stop:  # type: ignore[union-attr]
            control.should_training_stop = True
            log.debug("mlprefs: stopping Transformers training: %s", self.stop_reason)


def _mark_decay_groups(groups: list[dict[str, Any]]) -> None:
    """Keep the Trainer's no-decay group (biases, LayerNorm weights) out of weight decay.

    The Trainer splits parameters into a decay group and a no-decay group, but with its
    default weight_decay=0 both start at 0, and regularization_l2 then goes to every group
    (SPEC section 6: to the groups non-zero at train start, else to all). When every group is
    at 0, the groups holding matrices (what the Trainer decays) are marked non-zero here, just
    before train start sets them to regularization_l2; groups of vectors only stay at 0.
    """
    if len(groups) < 2 or any(g.get("weight_decay") for g in groups):
        return
    has_matrix = [any(p.ndim >= 2 for p in g["params"]) for g in groups]
    if all(has_matrix) or not any(has_matrix):
        return
    for group, decays in zip(groups, has_matrix):
        if decays:
            group["weight_decay"] = _DECAY_MARK
