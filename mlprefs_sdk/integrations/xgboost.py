"""XGBoost adapter: a TrainingCallback over prefs.training_hooks().

Each boosting round is one step and one iteration (max_iterations counts rounds). The
learning rate is set with `booster.set_param("learning_rate", ...)` before a round, so an
edit lands at the next round; regularization_l2 becomes `lambda` (XGBoost's L2 penalty) and
regularization_l1 `alpha` (its L1 penalty), live too.
Metrics are named `<eval name>-<metric>` (`val-rmse`); when early stopping monitors the
default `val_loss` and there is none, the last metric of the last eval set is used, as
XGBoost's own EarlyStopping does. With restore_best_weights the trained model is cut back to
the best round, and `best_iteration` / `best_score` are set like XGBoost's early stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._require import require

if TYPE_CHECKING:
    import xgboost as xgb
else:
    xgb = require("xgboost", "xgboost", "mlprefs_sdk.integrations.xgboost")

__all__ = ["MlprefsCallback"]

log = logging.getLogger(__name__)

PARAMS = {"learning_rate": "learning_rate", "regularization_l1": "alpha", "regularization_l2": "lambda"}


class MlprefsCallback(xgb.callback.TrainingCallback):
    """Live learning rate, L1 and L2, early stopping and max_iterations for xgboost.train / XGB*."""

    def __init__(self, prefs: Any, run_id: str | None = None) -> None:
        super().__init__()
        self.prefs = prefs
        self.run_id = run_id
        self.hooks: Any = None
        self._booster: Any = None
        self._start_round = self._start_iteration = 0
        self._warned_no_eval = False

    @property
    def stop_reason(self) -> str | None:
        return None if self.hooks is None else self.hooks.stop_reason

    def __deepcopy__(self, memo: dict[int, Any]) -> MlprefsCallback:
        """XGBoost's sklearn API may copy callbacks: a copy shares the client, not the run."""
        return type(self)(self.prefs, run_id=self.run_id)

    def before_training(self, model: Any) -> Any:
        self.hooks = self.prefs.training_hooks(run_id=self.run_id)
        self._booster = model
        self._start_round = model.num_boosted_rounds() if hasattr(model, "num_boosted_rounds") else 0
        self._start_iteration = self.hooks.iteration
        self.hooks.add_applier(self._apply)
        self.hooks.on_train_start()
        return model

    def _apply(self, values: Mapping[str, float]) -> None:
        params = [(PARAMS[k], v) for k, v in values.items() if k in PARAMS]
        if params and hasattr(self._booster, "set_param"):
            self._booster.set_param(params)

    def before_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self._booster = model
        self.hooks.on_step_end(epoch)  # pending changes land before this round
        return False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        metrics: dict[str, float] = {}
        fallback = None
        for data, by_metric in evals_log.items():
            for metric, history in by_metric.items():
                last = history[-1]
                metrics[f"{data}-{metric}"] = float(last[0] if isinstance(last, tuple) else last)
                fallback = f"{data}-{metric}"
        if not metrics and not self._warned_no_eval:
            self._warned_no_eval = True
            log.info("mlprefs: no eval set given (evals=/eval_set=): early stopping has nothing "
                     "to check; max_iterations still applies")
        try:
            self.hooks.on_epoch_end(epoch, metrics or None, fallback_metric=fallback)
        except BaseException:  # xgboost skips after_training when a callback raises
            self.hooks.close()
            raise
        return self.hooks.should_stop

    def after_training(self, model: Any) -> Any:
        from ..plugins.early_stopping import best

        self.hooks.on_train_end()
        count, score = best(self.hooks)
        if count is None or count <= self._start_iteration or not hasattr(model, "set_attr"):
            return model
        index = self._start_round + (count - self._start_iteration) - 1
        model.set_attr(best_iteration=str(index), best_score=str(score))
        if self.hooks.get("ml.training.restore_best_weights") \
                and index + 1 < model.num_boosted_rounds():
            try:
                model = model[: index + 1]
            except (ValueError, xgb.core.XGBoostError) as e:  # gblinear cannot be sliced
                log.warning("mlprefs: cannot cut the model back to its best round %d (%s); it "
                            "keeps all %d rounds", index, e, model.num_boosted_rounds())
                return model
            model.set_attr(best_iteration=str(index), best_score=str(score))
            log.info("mlprefs: kept rounds 0..%d (best %s)", index, score)
        return model
