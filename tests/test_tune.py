"""prefs.tune(): real Optuna studies (samplers, pruners, SQLite and PostgreSQL storage)."""

from __future__ import annotations

import importlib
import sqlite3
import sys
from pathlib import Path

import pytest

from mlprefs_sdk import Client, FeatureDisabledError, ValidationError

optuna = pytest.importorskip("optuna")

ON = "[ml.global]\nenabled = true\n[ml.features]\nauto_optimization = true\n"
LR = "ml.training.learning_rate"
PATIENCE = "ml.training.early_stopping_patience"


def write(text: str, name: str = "mlprefs.toml") -> Path:
    path = Path(name)
    path.write_text(text)
    return path


def enabled(**overrides) -> Client:
    return Client(overrides={"ml.global.enabled": True, "ml.features.auto_optimization": True,
                             **overrides})


def run_epochs(prefs, loss_at, epochs=5, seen=None):
    """A small training loop through the hooks; loss_at(prefs, epoch) is the val_loss."""
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    for epoch in range(epochs):
        hooks.on_epoch_end(epoch, {"val_loss": loss_at(prefs, epoch)})
        if hooks.should_stop:
            break
    hooks.on_train_end()
    if seen is not None:
        seen.append((dict(prefs.snapshot()), hooks.stop_reason, hooks.iteration))
    return None


# -- the gate and the space ---------------------------------------------------------------
def test_tune_is_refused_unless_auto_optimization_is_on(home):
    with Client() as prefs:
        with pytest.raises(FeatureDisabledError, match="ml.features.auto_optimization") as e:
            prefs.tune(lambda p: 0.0, space={LR: {"low": 0.01, "high": 0.1}})
    assert e.value.key == "ml.features.auto_optimization"


def test_tune_is_refused_when_global_enabled_is_off(home):
    with Client(overrides={"ml.features.auto_optimization": True}) as prefs:
        with pytest.raises(FeatureDisabledError):
            prefs.tune(lambda p: 0.0, space={LR: {"low": 0.01, "high": 0.1}})


@pytest.mark.parametrize("key,spec,words", [
    (LR, {"low": 1e-7, "high": 0.1}, "below the minimum"),
    (LR, {"low": 0.01, "high": 2.0}, "above the maximum"),
    ("ml.training.early_stopping_mode", {"choices": ["min", "sideways"]}, "sideways"),
    ("ml.training.learnin_rate", {"low": 0.01, "high": 0.1}, "did you mean ml.training.learning_rate"),
    ("ml.training.early_stopping_mode", {"low": 1, "high": 2}, "give it { choices"),
    (PATIENCE, {"low": 1.5, "high": 4}, "not an int"),
    ("ml.training.regularization_l1", {"low": 0.0, "high": 0.1, "log": True}, "log range needs low > 0"),
])
def test_a_bad_range_is_a_validation_error_naming_the_key_before_any_trial(home, key, spec, words):
    calls = []
    with enabled() as prefs:
        with pytest.raises(ValidationError) as e:
            prefs.tune(calls.append, space={key: spec}, n_trials=2)
    assert [p.key for p in e.value.problems] == [key]
    assert words in str(e.value) and key in str(e.value)
    assert calls == []


def test_every_bad_range_is_reported_at_once(home):
    with enabled() as prefs:
        with pytest.raises(ValidationError) as e:
            prefs.tune(lambda p: 0.0, space={LR: {"low": 0.01, "high": 5.0},
                                             PATIENCE: {"choices": [0, 3]}})
    assert sorted(p.key for p in e.value.problems) == [PATIENCE, LR]


def test_the_space_comes_from_tune_space_in_the_project_file(home, project_dir, caplog):
    write(ON + '[tune.space]\n"ml.training.early_stopping_patience" = { low = 2, high = 4 }\n')
    seen = []
    with Client() as prefs:
        prefs.tune(lambda p: seen.append(p.get(PATIENCE)) or 0.0, n_trials=4)
    assert len(seen) == 4 and set(seen) <= {2, 3, 4}
    assert all(type(v) is int for v in seen)
    assert "tune.space" not in caplog.text  # a search space is not an unregistered key


def test_a_higher_toml_layer_replaces_a_keys_range(home, project_dir):
    write(ON + '[tune.space]\n"ml.training.early_stopping_patience" = { low = 2, high = 4 }\n')
    extra = write('[tune.space]\n"ml.training.early_stopping_patience" = { choices = [9] }\n',
                  "extra.toml")
    seen = []
    with Client(files=[extra]) as prefs:
        prefs.tune(lambda p: seen.append(p.get(PATIENCE)) or 0.0, n_trials=3)
    assert seen == [9, 9, 9]


def test_space_argument_replaces_the_toml_space(home, project_dir):
    write(ON + '[tune.space]\n"ml.training.early_stopping_patience" = { low = 2, high = 4 }\n')
    seen = []
    with Client() as prefs:
        prefs.tune(lambda p: seen.append(dict(p.snapshot())) or 0.0,
                   space={LR: {"low": 1e-4, "high": 1e-2, "log": True}}, n_trials=3)
    assert all(1e-4 <= s[LR] <= 1e-2 and s[PATIENCE] == 5 for s in seen)
    assert all(type(s[LR]) is float for s in seen)


def test_str_keys_take_choices(home):
    seen = []
    with enabled() as prefs:
        prefs.tune(lambda p: seen.append(p.get("ml.models.selection_criteria")) or 0.0,
                   space={"ml.models.selection_criteria": {"choices": ["speed", "memory"]}},
                   n_trials=6, seed=0)
    assert set(seen) <= {"speed", "memory"} and len(seen) == 6


# -- a trial is a run ---------------------------------------------------------------------
def test_explain_names_the_trial_as_the_source_of_its_values(home):
    details = []
    with enabled() as prefs:
        result = prefs.tune(lambda p: details.append(p.explain(LR).source) or 0.0,
                            space={LR: {"low": 0.01, "high": 0.1}}, n_trials=2, study="s1")
        after = prefs.explain(LR).source.layer
    assert [(s.layer, s.detail) for s in details] == [
        ("runtime", "optuna trial 0 of study s1"), ("runtime", "optuna trial 1 of study s1")]
    assert after == "defaults" and result.study == "s1"


def test_train_returning_none_scores_the_runs_best_metric(home):
    def loss(p, epoch):
        return p.get(LR) * 100 + 1.0 / (epoch + 1)  # falls every epoch: best is the last

    with enabled(**{"ml.tuning.pruner": "none"}) as prefs:
        result = prefs.tune(lambda p: run_epochs(p, loss, epochs=4),
                            space={LR: {"low": 0.01, "high": 0.1}}, n_trials=3, seed=1)
    for t in result.trials:
        assert t.state == "complete"
        assert t.value == pytest.approx(t.values[LR] * 100 + 0.25)
    assert result.best_value == min(t.value for t in result.trials)
    assert result.best_values == next(t.values for t in result.trials if t.value == result.best_value)


def test_early_stopping_mode_max_maximises_the_metric(home):
    def train(p):
        hooks = p.training_hooks()
        hooks.on_train_start()
        for epoch in range(3):
            hooks.on_epoch_end(epoch, {"accuracy": p.get(PATIENCE) / 10 - epoch / 100})
        hooks.on_train_end()

    with enabled(**{"ml.training.early_stopping_mode": "max",
                    "ml.training.early_stopping_metric": "accuracy"}) as prefs:
        result = prefs.tune(train, space={PATIENCE: {"choices": [2, 7]}}, n_trials=6, seed=0)
    assert result.best_values == {PATIENCE: 7} and result.best_value == pytest.approx(0.7)


def test_the_median_pruner_stops_bad_runs_through_should_stop(home):
    seen = []

    def loss(p, epoch):
        return p.get(LR) * 10 + 1.0 / (epoch + 1)

    with enabled(**{"ml.tuning.sampler": "random"}) as prefs:
        result = prefs.tune(lambda p: run_epochs(p, loss, epochs=6, seen=seen),
                            space={LR: {"choices": [0.01, 0.5]}}, n_trials=14, seed=0)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(t.values[LR] == 0.5 for t in pruned)
    reasons = [reason for _, reason, _ in seen if reason and "pruned" in reason]
    assert len(reasons) == len(pruned)
    assert all(r.startswith("pruned by optuna MedianPruner at epoch ") for r in reasons)
    assert all(iterations < 6 for _, reason, iterations in seen if reason in reasons)


def test_the_hyperband_pruner_is_named_in_the_stop_reason(home):
    seen = []

    def loss(p, epoch):
        return p.get(LR) * 10 + 1.0 / (epoch + 1)

    with enabled(**{"ml.tuning.sampler": "random", "ml.tuning.pruner": "hyperband"}) as prefs:
        result = prefs.tune(lambda p: run_epochs(p, loss, epochs=9, seen=seen),
                            space={LR: {"choices": [0.01, 0.5]}}, n_trials=20, seed=0)
    reasons = {r.rsplit(" at ", 1)[0] for _, r, _ in seen if r and "pruned" in r}
    assert reasons == {"pruned by optuna HyperbandPruner"}
    assert any(t.state == "pruned" for t in result.trials)


def test_pruner_none_prunes_nothing(home):
    def loss(p, epoch):
        return p.get(LR) * 10 + 1.0 / (epoch + 1)

    with enabled(**{"ml.tuning.sampler": "random", "ml.tuning.pruner": "none"}) as prefs:
        result = prefs.tune(lambda p: run_epochs(p, loss, epochs=4),
                            space={LR: {"choices": [0.01, 0.5]}}, n_trials=10, seed=0)
    assert {t.state for t in result.trials} == {"complete"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_each_sampler_is_reproducible_with_a_seed(home, sampler):
    space = {LR: {"low": 1e-4, "high": 0.1, "log": True}, PATIENCE: {"low": 1, "high": 20}}
    runs = []
    for study in ("a", "b"):
        with enabled(**{"ml.tuning.sampler": sampler}) as prefs:
            result = prefs.tune(lambda p: p.get(LR), space=space, n_trials=4, seed=7, study=study)
        runs.append([t.values for t in result.trials])
    assert runs[0] == runs[1] and len({t[LR] for t in runs[0]}) == 4


def test_qmc_sampler_is_optunas_qmc(home):
    from mlprefs_sdk.integrations.optuna import make_sampler

    assert isinstance(make_sampler("qmc", 0), optuna.samplers.QMCSampler)
    assert isinstance(make_sampler("random", 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("tpe", 0), optuna.samplers.TPESampler)


def test_a_trial_that_raises_is_failed_and_the_study_goes_on(home, caplog):
    def train(p):
        if p.get(PATIENCE) == 3:
            raise RuntimeError("out of memory, say")
        return float(p.get(PATIENCE))

    with enabled() as prefs:
        result = prefs.tune(train, space={PATIENCE: {"choices": [3, 4]}}, n_trials=8, seed=0)
    states = {t.values[PATIENCE]: t.state for t in result.trials}
    assert states == {3: "failed", 4: "complete"} and len(result.trials) == 8
    assert result.best_values == {PATIENCE: 4}
    assert "out of memory, say" in caplog.text


def test_trial_values_breaking_a_cross_key_rule_fail_that_trial(home):
    with enabled(**{"ml.performance.memory_limit_mb": 1024}) as prefs:
        result = prefs.tune(lambda p: 1.0, space={"ml.performance.parallel_workers":
                                                  {"choices": [2, 8]}}, n_trials=6, seed=0)
    states = {t.values["ml.performance.parallel_workers"]: t.state for t in result.trials}
    assert states == {2: "complete", 8: "failed"}


def test_n_trials_defaults_to_the_key(home):
    calls = []
    with enabled(**{"ml.tuning.n_trials": 3}) as prefs:
        result = prefs.tune(lambda p: calls.append(1) or 0.0, space={PATIENCE: {"low": 1, "high": 9}})
    assert len(calls) == len(result.trials) == 3


def test_timeout_stops_starting_trials(home):
    import time

    with enabled() as prefs:
        result = prefs.tune(lambda p: time.sleep(0.05) or 0.0, space={PATIENCE: {"low": 1, "high": 9}},
                            n_trials=1000, timeout_s=0.2)
    assert 1 <= len(result.trials) < 1000


# -- results are preferences -----------------------------------------------------------------
def test_apply_writes_the_best_values_with_history_and_rollback_undoes_it(home):
    with enabled() as prefs:
        prefs.set(PATIENCE, 6, scope="user", reason="hand-picked")
        result = prefs.tune(lambda p: abs(p.get(PATIENCE) - 8), space={PATIENCE: {"low": 2, "high": 12}},
                            n_trials=12, seed=0, study="s")
        entries = result.apply(scope="user")
        tuned = prefs.get(PATIENCE)
        [entry] = entries
        prefs.rollback(PATIENCE, scope="user", to=prefs.history(PATIENCE)[1].id)
        restored = prefs.get(PATIENCE)
    assert tuned == result.best_values[PATIENCE]
    assert entry.reason.startswith("tuned: optuna study 's'") and entry.new == tuned
    assert restored == 6


def test_apply_without_a_completed_trial_says_so(home):
    from mlprefs_sdk import NoCompletedTrialError

    def train(p):
        raise ValueError("broken")

    with enabled() as prefs:
        result = prefs.tune(train, space={PATIENCE: {"low": 2, "high": 4}}, n_trials=2)
    assert result.best_value is None and [t.state for t in result.trials] == ["failed", "failed"]
    with pytest.raises(NoCompletedTrialError, match="no completed trial"):
        result.apply()


# -- the study beside the store ----------------------------------------------------------------
def test_the_study_lives_in_tuning_db_next_to_prefs_db(home):
    with enabled() as prefs:
        prefs.tune(lambda p: 1.0, space={PATIENCE: {"low": 2, "high": 4}}, n_trials=2, study="here")
    with sqlite3.connect(home / "tuning.db") as db:
        assert db.execute("SELECT study_name FROM studies").fetchall() == [("here",)]
        assert db.execute("SELECT count(*) FROM trials").fetchone() == (2,)


def test_the_same_study_name_continues_one_study(home):
    with enabled() as prefs:
        prefs.tune(lambda p: float(p.get(PATIENCE)), space={PATIENCE: {"low": 2, "high": 9}},
                   n_trials=2, study="shared", seed=0)
        again = prefs.tune(lambda p: float(p.get(PATIENCE)), space={PATIENCE: {"low": 2, "high": 9}},
                           n_trials=3, study="shared", seed=1)
    assert [t.number for t in again.trials] == [0, 1, 2, 3, 4]


def test_a_study_on_the_store_database(store_url):
    with Client(store=store_url, overrides={"ml.global.enabled": True,
                                            "ml.features.auto_optimization": True}) as prefs:
        first = prefs.tune(lambda p: float(p.get(PATIENCE)), space={PATIENCE: {"low": 2, "high": 9}},
                           n_trials=3, study="team", seed=0)
    with Client(store=store_url, overrides={"ml.global.enabled": True,
                                            "ml.features.auto_optimization": True}) as prefs:
        second = prefs.tune(lambda p: float(p.get(PATIENCE)), space={PATIENCE: {"low": 2, "high": 9}},
                            n_trials=2, study="team", seed=1)
    assert len(first.trials) == 3 and len(second.trials) == 5
    assert second.best_value == min(t.value for t in second.trials)


# -- packaging ------------------------------------------------------------------------------
def test_the_optuna_adapter_without_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.optuna", raising=False)
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[tune\]"'):
        importlib.import_module("mlprefs_sdk.integrations.optuna")


def test_tune_without_optuna_names_the_extra(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.optuna", raising=False)
    with enabled() as prefs:
        with pytest.raises(ImportError, match=r"mlprefs-sdk\[tune\]"):
            prefs.tune(lambda p: 0.0, space={PATIENCE: {"low": 2, "high": 4}})


def test_a_step_range_gives_values_on_the_step(home):
    seen = []
    with enabled() as prefs:
        prefs.tune(lambda p: seen.append(p.get(PATIENCE)) or 0.0,
                   space={PATIENCE: {"low": 2, "high": 12, "step": 5}}, n_trials=6, seed=0)
    assert set(seen) <= {2, 7, 12}


def test_an_int_key_refuses_a_fractional_step(home):
    with enabled() as prefs:
        with pytest.raises(ValidationError, match="an integer for an int key"):
            prefs.tune(lambda p: 0.0, space={PATIENCE: {"low": 2, "high": 12, "step": 2.5}})


def test_a_range_with_an_unknown_field_is_refused(home):
    with enabled() as prefs:
        with pytest.raises(ValidationError, match="unknown field"):
            prefs.tune(lambda p: 0.0, space={PATIENCE: {"low": 2, "high": 12, "lgo": True}})


def test_an_empty_space_says_how_to_declare_one(home):
    with enabled() as prefs:
        with pytest.raises(ValidationError, match=r"\[tune.space\]"):
            prefs.tune(lambda p: 0.0)


def test_the_tuning_keys_have_their_lower_bounds(home):
    with Client() as prefs:
        assert prefs.spec("ml.tuning.n_trials").min == 1
        assert prefs.spec("ml.tuning.timeout_minutes").min == 0.0
        with pytest.raises(ValidationError):
            prefs.set("ml.tuning.n_trials", 0)


def test_train_returning_a_non_number_fails_that_trial_only(home, caplog):
    with enabled() as prefs:
        result = prefs.tune(lambda p: "good" if p.get(PATIENCE) == 3 else 1.0,
                            space={PATIENCE: {"choices": [3, 4]}}, n_trials=6, seed=0)
    assert {t.values[PATIENCE]: t.state for t in result.trials} == {3: "failed", 4: "complete"}
    assert "train returned 'good'" in caplog.text
