"""Built-in plugin: live hyperparameters (learning rate, L2 weight decay) into the optimizer.

SPEC section 6: the preferences, not the optimizer's constructor, decide the values at train
start; a change lands at the next step boundary. With a scheduler the preference is the
schedule's base LR: torch's LambdaLR/CosineAnnealingLR recompute the LR from `base_lrs` (or
rescale the current one) on every `scheduler.step()` and would silently undo a plain write to
`lr`, so `base_lrs` is set and the current LR rescaled by the same ratio, keeping the warmup
and decay shape. `regularization_l2` goes only to the groups that had a non-zero
`weight_decay` at train start (all groups when none had), so groups deliberately left out of
decay (biases, LayerNorm) stay at 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__ = ["LEARNING_RATE", "REGULARIZATION_L2", "set_learning_rate", "set_weight_decay"]

log = logging.getLogger(__name__)

LEARNING_RATE = "ml.training.learning_rate"
REGULARIZATION_L2 = "ml.training.regularization_l2"
REGULARIZATION_L1 = "ml.training.regularization_l1"  # appliers only (XGBoost alpha, SGD, Keras)
KEYS = {LEARNING_RATE: "learning_rate", REGULARIZATION_L1: "regularization_l1",
        REGULARIZATION_L2: "regularization_l2"}
NAME = "hyperparameters"
_SCALED = ("max_lr", "min_lr")  # OneCycleLR/CyclicLR keep these in the param group


@hookimpl
def mlprefs_train_start(hooks: RunContext) -> None:
    _sync(hooks)


@hookimpl
def mlprefs_attach(hooks: RunContext) -> None:
    _sync(hooks)


@hookimpl
def mlprefs_apply_changes(hooks: RunContext, changes: Any) -> None:
    update = {name: c.new for key, name in KEYS.items() if (c := changes.get(key)) is not None}
    if update:
        _apply(hooks, update)


def _sync(hooks: RunContext) -> None:
    """Bring every attached optimizer and applier to the current values."""
    _apply(hooks, {name: hooks.get(key) for key, name in KEYS.items()})


def _apply(hooks: RunContext, update: Mapping[str, float]) -> None:
    opt = hooks.optimizer
    if opt is not None:
        groups = getattr(opt, "param_groups", None)
        if groups is None:
            raise TypeError(f"the optimizer {type(opt).__name__} has no param_groups; pass a torch-"
                            f"style optimizer, or use hooks.add_applier(fn) to set its values")
        if "learning_rate" in update:
            set_learning_rate(groups, hooks.scheduler, update["learning_rate"])
        if "regularization_l2" in update:
            set_weight_decay(groups, _decay_groups(hooks, opt), update["regularization_l2"])
    for fn in hooks.appliers:
        fn(dict(update))


def _decay_groups(hooks: RunContext, opt: Any) -> Sequence[int]:
    """Indices of the groups that take weight decay, fixed when this optimizer is first seen."""
    mine = hooks.scratch.setdefault(NAME, {})
    if mine.get("optimizer") is not opt:
        groups = opt.param_groups
        decayed = [i for i, g in enumerate(groups) if g.get("weight_decay", 0)]
        mine["optimizer"], mine["decay"] = opt, decayed or list(range(len(groups)))
    return mine["decay"]


def _put(group: dict[str, Any], name: str, value: float) -> None:
    current: Any = group.get(name)
    if hasattr(current, "fill_"):  # a tensor LR (capturable optimizers): keep the tensor
        current.fill_(value)
    else:
        group[name] = value


def set_learning_rate(groups: Sequence[dict[str, Any]], scheduler: Any, lr: float) -> None:
    """Every group's LR; with a scheduler, its base LR, the current LR rescaled to match."""
    schedulers = _flatten(scheduler)
    bases = next((list(s.base_lrs) for s in schedulers if getattr(s, "base_lrs", None)), None)
    for i, group in enumerate(groups):
        old_base = bases[i] if bases is not None and i < len(bases) else None
        if old_base:
            ratio = lr / float(old_base)
            _put(group, "lr", float(group["lr"]) * ratio)
            for name in _SCALED:
                if name in group:
                    group[name] = group[name] * ratio
        else:
            _put(group, "lr", lr)
        if "initial_lr" in group:
            group["initial_lr"] = lr
    for s in schedulers:
        if getattr(s, "base_lrs", None) is not None:
            s.base_lrs = [lr] * len(s.base_lrs)
        if hasattr(s, "_last_lr"):  # so get_last_lr() tells the truth before the next step
            s._last_lr = [float(g["lr"]) for g in groups]


def set_weight_decay(groups: Sequence[dict[str, Any]], indices: Sequence[int], value: float) -> None:
    for i in indices:
        if i < len(groups):
            _put(groups[i], "weight_decay", value)


def _flatten(scheduler: Any) -> list[Any]:
    """A scheduler and the ones it chains (SequentialLR, ChainedScheduler)."""
    if scheduler is None:
        return []
    out = [scheduler]
    for child in getattr(scheduler, "_schedulers", ()) or ():
        out.extend(_flatten(child))
    return out
