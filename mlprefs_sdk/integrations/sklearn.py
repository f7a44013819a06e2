"""scikit-learn adapter: `fit_incremental` drives `partial_fit` through the training hooks.

One iteration is one pass over the data, in mini-batches of ml.performance.batch_size (each
batch ends a step, where pending preference changes land). After each pass `val_loss` is
computed on X_val/y_val (the training data when none is given): mean squared error for
regressors, log-loss for classifiers. max_iterations counts passes.

Learning rate: SGD estimators take it as `eta0`; MLP estimators as `learning_rate_init`,
which `partial_fit` reads only on its first call, so the adapter also updates the
estimator's optimizer in place. The penalties follow the estimator's own `penalty`: SGD with
penalty="elasticnet" takes `alpha = l1 + l2` and `l1_ratio = l1 / (l1 + l2)` (from
regularization_l1 and regularization_l2), penalty="l1" takes `alpha = l1`, penalty="l2" (and
MLP's `alpha`) `alpha = l2`.

Like scikit-learn's own `fit`, fit_incremental returns the fitted estimator; the run (its
TrainingHooks: run_id, stop_reason, iteration) is its `mlprefs_run_` attribute.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MlprefsError
from ._require import require

np = require("numpy", "sklearn", "mlprefs_sdk.integrations.sklearn")
require("sklearn", "sklearn", "mlprefs_sdk.integrations.sklearn")
from sklearn.base import is_classifier  # noqa: E402
from sklearn.metrics import log_loss, mean_squared_error  # noqa: E402

__all__ = ["fit_incremental"]

log = logging.getLogger(__name__)


def fit_incremental(estimator: Any, X: Any, y: Any, prefs: Any, X_val: Any = None,
                    y_val: Any = None, classes: Sequence[Any] | None = None,
                    run_id: str | None = None) -> Any:
    """Train with partial_fit until early stopping or max_iterations; returns the estimator.

    The run (run_id, stop_reason, iteration) is `estimator.mlprefs_run_`.
    """
    if not hasattr(estimator, "partial_fit"):
        raise TypeError(f"{type(estimator).__name__} has no partial_fit; fit_incremental needs an "
                        f"incremental estimator (SGDRegressor, SGDClassifier, MLPRegressor, ...)")
    classifier = is_classifier(estimator)
    if classifier and classes is None:
        raise ValueError(f"fit_incremental({type(estimator).__name__}, ...) needs classes=: the "
                         f"full list of labels, which partial_fit and log-loss require")
    if classifier and not hasattr(estimator, "predict_proba"):
        raise MlprefsError(f"{type(estimator).__name__} (as configured) has no predict_proba, so "
                           f"the log-loss val_loss cannot be computed; use loss='log_loss' or "
                           f"'modified_huber'")
    X, y = _array(X), _array(y)
    X_val, y_val = (X, y) if X_val is None else (_array(X_val), _array(y_val))
    fit_kwargs = {"classes": np.asarray(classes)} if classifier else {}

    hooks = prefs.training_hooks(model=estimator, run_id=run_id)
    hooks.add_applier(_applier(estimator))
    hooks.on_train_start()
    batch = hooks.get("ml.performance.batch_size")
    n = X.shape[0]
    try:
        while not hooks.should_stop:
            for step, start in enumerate(range(0, n, batch)):
                estimator.partial_fit(X[start:start + batch], y[start:start + batch], **fit_kwargs)
                hooks.on_step_end(step)
            loss = _val_loss(estimator, X_val, y_val, classifier, classes)
            hooks.on_epoch_end(hooks.iteration, {"val_loss": loss})
    except BaseException:
        hooks.close()  # the run stays "running" in the store: it can be resumed by its id
        raise
    hooks.on_train_end()
    estimator.mlprefs_run_ = hooks
    return estimator


def _array(a: Any) -> Any:
    return a if hasattr(a, "shape") else np.asarray(a)


def _val_loss(estimator: Any, X: Any, y: Any, classifier: bool, classes: Any) -> float:
    if classifier:
        return float(log_loss(y, estimator.predict_proba(X), labels=classes))
    return float(mean_squared_error(y, estimator.predict(X)))


def _applier(estimator: Any) -> Any:
    """The function that puts learning_rate / regularization_l2 into this estimator."""
    params = estimator.get_params()
    name = type(estimator).__name__
    if "eta0" in params:
        if params.get("learning_rate") == "optimal":
            raise MlprefsError(
                f"{name}(learning_rate='optimal') ignores eta0, so ml.training.learning_rate "
                f"cannot drive it; build it with learning_rate='constant', 'invscaling' or "
                f"'adaptive'")
        lr_param = "eta0"
    elif "learning_rate_init" in params:
        if params.get("solver") == "lbfgs":
            raise MlprefsError(f"{name}(solver='lbfgs') has no partial_fit; use solver='adam' or "
                               f"'sgd'")
        lr_param = "learning_rate_init"
    else:
        lr_param = None
        log.info("mlprefs: %s has no learning rate parameter; ml.training.learning_rate does "
                 "not apply to it", name)
    penalty = params.get("penalty", "l2") if "alpha" in params else None
    strengths = {"regularization_l1": 0.0, "regularization_l2": 0.0}  # as last applied

    def apply(values: Mapping[str, float]) -> None:
        update: dict[str, Any] = {}
        if lr_param and "learning_rate" in values:
            update[lr_param] = values["learning_rate"]
        strengths.update((k, v) for k, v in values.items() if k in strengths)
        l1, l2 = strengths["regularization_l1"], strengths["regularization_l2"]
        if penalty == "l2" and "regularization_l2" in values:
            update["alpha"] = l2
        elif penalty == "l1" and "regularization_l1" in values:
            update["alpha"] = l1
        elif penalty == "elasticnet" and strengths.keys() & values.keys():
            update["alpha"] = l1 + l2
            if l1 + l2 > 0:
                update["l1_ratio"] = l1 / (l1 + l2)
        if update:
            estimator.set_params(**update)
        optimizer = getattr(estimator, "_optimizer", None)  # MLP: built by the first partial_fit
        if lr_param == "learning_rate_init" and optimizer is not None and "learning_rate" in values:
            optimizer.learning_rate_init = optimizer.learning_rate = values["learning_rate"]

    return apply
