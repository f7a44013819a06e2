"""scikit-learn through fit_incremental: real partial_fit estimators on synthetic data."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from mlprefs_sdk import Client, MlprefsError
from mlprefs_sdk.hookspecs import hookimpl
from mlprefs_sdk.plugins.early_stopping import best

np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")
from sklearn.linear_model import SGDClassifier, SGDRegressor  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from mlprefs_sdk.integrations.sklearn import fit_incremental  # noqa: E402


def write(text: str) -> None:
    Path("mlprefs.toml").write_text(text)


def regression(n=256):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    return X, X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 0.1, n)


def classification(n=256):
    X, y = regression(n)
    return X, (y > 0).astype(int)


class EditAfterEpoch:
    """A user's plugin: edits mlprefs.toml when an epoch ends, and notes what each step used."""

    def __init__(self, prefs, epoch, text, read):
        self.prefs, self.epoch, self.text, self.read = prefs, epoch, text, read
        self.seen = []

    @hookimpl
    def mlprefs_step_end(self):
        self.seen.append(self.read())

    @hookimpl
    def mlprefs_epoch_end(self, epoch):
        if epoch == self.epoch:
            write(self.text)
            self.prefs.reload()


def test_sgd_takes_a_new_learning_rate_as_eta0_mid_run(home):
    write("[ml.training]\nlearning_rate = 0.05\nmax_iterations = 10\n"
          "early_stopping_enabled = false\n")
    X, y = regression()
    est = SGDRegressor(learning_rate="constant")
    with Client() as prefs:
        spy = EditAfterEpoch(prefs, 1, "[ml.training]\nlearning_rate = 0.01\nmax_iterations = 10\n"
                             "early_stopping_enabled = false\n", lambda: est.eta0)
        prefs.plugin_manager.register(spy)
        hooks = fit_incremental(est, X, y, prefs).mlprefs_run_
    per_epoch = len(spy.seen) // 10
    assert spy.seen[:2 * per_epoch] == [0.05] * (2 * per_epoch)
    assert set(spy.seen[2 * per_epoch:]) == {0.01}
    assert hooks.stop_reason == "max_iterations 10 reached"


def test_mlp_optimizer_takes_the_new_learning_rate_after_its_first_partial_fit(home):
    write("[ml.training]\nlearning_rate = 0.01\nmax_iterations = 10\n"
          "early_stopping_enabled = false\n")
    X, y = classification()
    est = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with Client() as prefs:
        spy = EditAfterEpoch(prefs, 0, "[ml.training]\nlearning_rate = 0.002\nmax_iterations = 10\n"
                             "early_stopping_enabled = false\n",
                             lambda: est._optimizer.learning_rate_init)
        prefs.plugin_manager.register(spy)
        fit_incremental(est, X, y, prefs, classes=[0, 1])
    assert spy.seen[0] == 0.01 and spy.seen[-1] == 0.002
    assert est.learning_rate_init == 0.002


def test_early_stopping_ends_the_passes(home):
    write("[ml.training]\nlearning_rate = 0.01\nearly_stopping_patience = 2\n"
          "convergence_threshold = 0.01\n")
    X, y = regression()
    with Client() as prefs:
        hooks = fit_incremental(SGDRegressor(learning_rate="constant", random_state=0),
                                X[:200], y[:200], prefs, X_val=X[200:], y_val=y[200:]).mlprefs_run_
        curve = prefs.curves.get(hooks.run_id)["val_loss"]
    assert hooks.stop_reason.startswith("early stopping: val_loss")
    assert hooks.iteration == len(curve) < 1000


def test_classifiers_report_log_loss_and_need_classes(home):
    X, y = classification()
    with Client(overrides={"ml.training.max_iterations": 10}) as prefs:
        with pytest.raises(ValueError, match="classes="):
            fit_incremental(SGDClassifier(loss="log_loss", learning_rate="constant"), X, y, prefs)
        hooks = fit_incremental(SGDClassifier(loss="log_loss", learning_rate="constant"), X, y,
                                prefs, classes=[0, 1]).mlprefs_run_
        [(_, first), *_] = prefs.curves.get(hooks.run_id)["val_loss"]
    assert 0 < first < 1  # a log-loss of a better-than-chance classifier


def test_sgd_with_the_optimal_schedule_is_refused_clearly(home):
    X, y = classification()
    with Client() as prefs:
        with pytest.raises(MlprefsError, match="learning_rate='optimal'.*eta0"):
            fit_incremental(SGDClassifier(loss="log_loss"), X, y, prefs, classes=[0, 1])


def test_regularization_l2_becomes_alpha(home):
    write("[ml.training]\nregularization_l2 = 0.2\nmax_iterations = 10\n")
    X, y = regression()
    est = SGDRegressor(learning_rate="constant")
    with Client() as prefs:
        fit_incremental(est, X, y, prefs)
    assert est.alpha == 0.2


def test_restore_best_weights_returns_the_best_pass(home):
    write("[ml.training]\nlearning_rate = 0.3\nrestore_best_weights = true\n"
          "early_stopping_patience = 3\n")
    X, y = regression()
    est = SGDRegressor(learning_rate="constant", random_state=0)
    with Client() as prefs:
        hooks = fit_incremental(est, X, y, prefs).mlprefs_run_
        last = prefs.curves.get(hooks.run_id)["val_loss"][-1][1]
    _, best_loss = best(hooks)
    assert last != best_loss
    assert np.mean((est.predict(X) - y) ** 2) == pytest.approx(best_loss)


def test_importing_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.sklearn")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[sklearn\]"'):
        importlib.import_module("mlprefs_sdk.integrations.sklearn")


def test_fit_incremental_returns_the_fitted_estimator_with_its_run(home):
    X, y = regression()
    est = SGDRegressor(learning_rate="constant", random_state=0)
    with Client(overrides={"ml.training.max_iterations": 10}) as prefs:
        fitted = fit_incremental(est, X, y, prefs)
        runs = prefs.curves.get(fitted.mlprefs_run_.run_id)["val_loss"]
    assert fitted is est and hasattr(fitted, "coef_")
    assert fitted.mlprefs_run_.stop_reason == "max_iterations 10 reached"
    assert fitted.mlprefs_run_.iteration == len(runs) == 10


def test_elasticnet_sgd_takes_alpha_and_l1_ratio_from_l1_and_l2(home):
    write("[ml.training]\nregularization_l1 = 0.03\nregularization_l2 = 0.01\n"
          "max_iterations = 10\nearly_stopping_enabled = false\n")
    X, y = regression()
    est = SGDRegressor(learning_rate="constant", penalty="elasticnet")
    with Client() as prefs:
        spy = EditAfterEpoch(prefs, 1, "[ml.training]\nregularization_l1 = 0.0\n"
                             "regularization_l2 = 0.02\nmax_iterations = 10\n"
                             "early_stopping_enabled = false\n",
                             lambda: (round(est.alpha, 6), round(est.l1_ratio, 6)))
        prefs.plugin_manager.register(spy)
        fit_incremental(est, X, y, prefs)
    assert spy.seen[0] == (0.04, 0.75)
    assert spy.seen[-1] == (0.02, 0.0)


def test_l1_penalty_sgd_takes_alpha_from_regularization_l1(home):
    X, y = classification()
    est = SGDClassifier(loss="log_loss", learning_rate="constant", penalty="l1")
    with Client(overrides={"ml.training.regularization_l1": 0.2,
                           "ml.training.max_iterations": 10}) as prefs:
        fit_incremental(est, X, y, prefs, classes=[0, 1])
    assert est.alpha == 0.2


def test_l1_makes_elasticnet_sgd_weights_sparser(home):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 20))
    y = X[:, 0] * 2.0 + rng.normal(0, 0.1, 400)  # one informative feature of 20
    zeros = {}
    for l1 in (0.0, 0.2):
        est = SGDRegressor(learning_rate="constant", penalty="elasticnet", random_state=0)
        with Client(overrides={"ml.training.regularization_l1": l1,
                               "ml.training.regularization_l2": 0.0001,
                               "ml.training.max_iterations": 20,
                               "ml.training.early_stopping_enabled": False}) as prefs:
            fit_incremental(est, X, y, prefs)
        zeros[l1] = int(np.sum(np.abs(est.coef_) < 1e-6))
    assert zeros[0.2] > zeros[0.0]
