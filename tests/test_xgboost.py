"""XGBoost through MlprefsCallback: real boosting rounds on the CPU (xgboost-cpu wheel)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.training import MetricNotFoundError

np = pytest.importorskip("numpy")
xgb = pytest.importorskip("xgboost")
from mlprefs_sdk.integrations.xgboost import MlprefsCallback  # noqa: E402


def write(text: str) -> None:
    Path("mlprefs.toml").write_text(text)


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 0.3, 300)
    return xgb.DMatrix(X[:200], label=y[:200]), xgb.DMatrix(X[200:], label=y[200:])


def eta(booster) -> float:
    config = json.loads(booster.save_config())
    return float(config["learner"]["gradient_booster"]["tree_train_param"]["eta"])


class EditAt(xgb.callback.TrainingCallback):
    """A user's callback that edits mlprefs.toml after a given round."""

    def __init__(self, prefs, round_, text):
        super().__init__()
        self.prefs, self.round, self.text = prefs, round_, text

    def after_iteration(self, model, epoch, evals_log):
        if epoch == self.round:
            write(self.text)
            self.prefs.reload()
        return False


class RecordEta(xgb.callback.TrainingCallback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def before_iteration(self, model, epoch, evals_log):
        self.seen.append(round(eta(model), 6))
        return False


def test_a_file_edit_mid_training_changes_the_boosters_learning_rate(home):
    write("[ml.training]\nlearning_rate = 0.3\nearly_stopping_enabled = false\n")
    train, val = data()
    record = RecordEta()
    with Client() as prefs:
        edit = EditAt(prefs, 2, "[ml.training]\nlearning_rate = 0.05\nearly_stopping_enabled = false\n")
        xgb.train({"learning_rate": 0.9}, train, 6, evals=[(val, "val")], verbose_eval=False,
                  callbacks=[edit, MlprefsCallback(prefs), record])
    assert record.seen == [0.3, 0.3, 0.3, 0.05, 0.05, 0.05]


def test_early_stopping_ends_boosting(home):
    write("[ml.training]\nlearning_rate = 0.3\nearly_stopping_patience = 3\n"
          "convergence_threshold = 0.01\n")
    train, val = data()
    callback = MlprefsCallback(Client())
    booster = xgb.train({}, train, 500, evals=[(train, "train"), (val, "val")],
                        verbose_eval=False, callbacks=[callback])
    callback.prefs.close()
    assert booster.num_boosted_rounds() < 500
    assert callback.stop_reason.startswith("early stopping: val-rmse did not improve")


def test_max_iterations_counts_rounds(home):
    write("[ml.training]\nmax_iterations = 12\nearly_stopping_enabled = false\n")
    train, _ = data()
    with Client() as prefs:
        callback = MlprefsCallback(prefs)
        booster = xgb.train({}, train, 100, callbacks=[callback])
    assert booster.num_boosted_rounds() == 12
    assert callback.stop_reason == "max_iterations 12 reached"


def test_a_named_metric_is_looked_up_as_eval_name_dash_metric(home):
    write('[ml.training]\nearly_stopping_metric = "val-mae"\nearly_stopping_patience = 2\n'
          "learning_rate = 0.3\nconvergence_threshold = 0.05\n")
    train, val = data()
    with Client() as prefs:
        callback = MlprefsCallback(prefs)
        xgb.train({"eval_metric": ["rmse", "mae"]}, train, 300, evals=[(val, "val")],
                  verbose_eval=False, callbacks=[callback])
    assert callback.stop_reason.startswith("early stopping: val-mae")


def test_a_missing_metric_lists_what_xgboost_reported(home):
    write('[ml.training]\nearly_stopping_metric = "valid-auc"\n')
    train, val = data()
    with Client() as prefs:
        with pytest.raises(MetricNotFoundError, match="'valid-auc'.*val-rmse"):
            xgb.train({}, train, 5, evals=[(val, "val")], verbose_eval=False,
                      callbacks=[MlprefsCallback(prefs)])


def test_restore_best_weights_cuts_the_model_back_to_the_best_round(home):
    write("[ml.training]\nlearning_rate = 0.5\nrestore_best_weights = true\n"
          "early_stopping_patience = 5\n")
    train, val = data()
    with Client() as prefs:
        callback = MlprefsCallback(prefs)
        booster = xgb.train({}, train, 300, evals=[(val, "val")], verbose_eval=False,
                            callbacks=[callback])
        stopped_at = callback.hooks.iteration
    assert booster.num_boosted_rounds() == int(booster.attr("best_iteration")) + 1 < stopped_at


def test_the_sklearn_api_takes_the_callback_too(home):
    write("[ml.training]\nlearning_rate = 0.3\nearly_stopping_patience = 3\n"
          "convergence_threshold = 0.01\n")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = X.sum(1)
    with Client() as prefs:
        model = xgb.XGBRegressor(n_estimators=400, callbacks=[MlprefsCallback(prefs)])
        model.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], verbose=False)
    assert model.get_booster().num_boosted_rounds() < 400


def test_importing_without_xgboost_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.xgboost")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[xgboost\]"'):
        importlib.import_module("mlprefs_sdk.integrations.xgboost")


def alpha(booster) -> float:
    config = json.loads(booster.save_config())
    return float(config["learner"]["gradient_booster"]["tree_train_param"]["alpha"])


class RecordAlpha(xgb.callback.TrainingCallback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def before_iteration(self, model, epoch, evals_log):
        self.seen.append(round(alpha(model), 6))
        return False


def test_regularization_l1_is_the_boosters_alpha_and_changes_live(home):
    write("[ml.training]\nregularization_l1 = 0.5\nearly_stopping_enabled = false\n")
    train, val = data()
    record = RecordAlpha()
    with Client() as prefs:
        edit = EditAt(prefs, 1, "[ml.training]\nregularization_l1 = 0.0\nearly_stopping_enabled = false\n")
        xgb.train({"alpha": 3.0}, train, 4, evals=[(val, "val")], verbose_eval=False,
                  callbacks=[edit, MlprefsCallback(prefs), record])
    assert record.seen == [0.5, 0.5, 0.0, 0.0]
