"""The framework-agnostic driver: deferred delivery, live hyperparameters, early stopping, runs."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlprefs_sdk import Client, MlprefsError, training
from mlprefs_sdk.runs import load_run, run_changes
from mlprefs_sdk.training import MetricNotFoundError


class Optimizer:
    """The smallest torch-style optimizer: param groups as dicts (what the driver touches)."""

    def __init__(self, *weight_decays: float, lr: float = 0.5) -> None:
        self.param_groups = [{"params": [], "lr": lr, "weight_decay": wd} for wd in weight_decays]


class Model:
    def __init__(self) -> None:
        self.weight = 0.0


def write(text: str) -> None:
    Path("mlprefs.toml").write_text(textwrap.dedent(text))


def edit(prefs: Client, text: str) -> None:
    write(text)
    prefs.reload()


def run_epochs(hooks, losses, start=0):
    """One check per epoch with the given val_loss values; returns how many epochs ran."""
    for n, loss in enumerate(losses, start):
        hooks.on_step_end(0)
        hooks.on_epoch_end(n, {"val_loss": loss})
        if hooks.should_stop:
            return n - start + 1
    return len(losses)


def test_learning_rate_and_l2_come_from_the_preferences_at_train_start(home):
    write("[ml.training]\nlearning_rate = 0.02\nregularization_l2 = 0.003\n")
    opt = Optimizer(0.1, lr=0.9)
    with Client() as prefs:
        prefs.training_hooks(optimizer=opt).on_train_start()
    assert opt.param_groups[0]["lr"] == 0.02
    assert opt.param_groups[0]["weight_decay"] == 0.003


def test_a_change_waits_for_the_next_step_boundary(home):
    write("[ml.training]\nlearning_rate = 0.02\n")
    opt = Optimizer(0.0)
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt)
        hooks.on_train_start()
        edit(prefs, "[ml.training]\nlearning_rate = 0.005\n")
        assert prefs.get("ml.training.learning_rate") == 0.005
        assert opt.param_groups[0]["lr"] == 0.02  # mid-step: untouched
        hooks.on_step_end(0)
        assert opt.param_groups[0]["lr"] == 0.005


def test_weight_decay_skips_groups_that_started_without_it(home):
    write("[ml.training]\nregularization_l2 = 0.03\n")
    opt = Optimizer(0.1, 0.0)
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt)
        hooks.on_train_start()
        edit(prefs, "[ml.training]\nregularization_l2 = 0.2\n")
        hooks.on_step_end(0)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]


def test_weight_decay_goes_to_every_group_when_none_had_it(home):
    write("[ml.training]\nregularization_l2 = 0.03\n")
    opt = Optimizer(0.0, 0.0)
    with Client() as prefs:
        prefs.training_hooks(optimizer=opt).on_train_start()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.03, 0.03]


def test_appliers_get_every_value_at_start_and_only_the_changed_one_after(home):
    write("[ml.training]\nlearning_rate = 0.02\nregularization_l2 = 0.003\n")
    seen = []
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.add_applier(seen.append)
        hooks.on_train_start()
        edit(prefs, "[ml.training]\nlearning_rate = 0.01\nregularization_l2 = 0.003\n")
        hooks.on_step_end(0)
    assert seen == [{"learning_rate": 0.02, "regularization_l1": 0.01, "regularization_l2": 0.003},
                    {"learning_rate": 0.01}]


def test_an_optimizer_attached_after_train_start_gets_the_current_values(home):
    write("[ml.training]\nlearning_rate = 0.02\n")
    opt = Optimizer(0.0)
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.attach(optimizer=opt)
    assert opt.param_groups[0]["lr"] == 0.02


def test_users_deferred_callbacks_run_at_the_step_boundary(home):
    write("[ml.training]\nlearning_rate = 0.02\n")
    seen = []
    with Client() as prefs:
        prefs.on_change("ml.training.*", lambda cs: seen.append(cs.keys), deliver="deferred")
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        edit(prefs, "[ml.training]\nlearning_rate = 0.01\n")
        assert seen == []
        hooks.on_step_end(0)
    assert seen == [("ml.training.learning_rate",)]


def test_patience_counts_checks_without_improvement(home):
    write("[ml.training]\nearly_stopping_patience = 2\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        ran = run_epochs(hooks, [1.0, 0.8, 0.9, 0.85, 0.7])
    assert ran == 4
    assert hooks.stop_reason == ("early stopping: val_loss did not improve by more than 0.001 "
                                 "for 2 checks")


def test_convergence_threshold_is_the_smallest_improvement_that_counts(home):
    write("[ml.training]\nearly_stopping_patience = 2\nconvergence_threshold = 0.05\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0, 0.97, 0.96, 0.5]) == 3


def test_mode_max_waits_for_a_higher_metric(home):
    write('[ml.training]\nearly_stopping_patience = 1\nearly_stopping_mode = "max"\n'
          'early_stopping_metric = "val_acc"\n')
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.on_epoch_end(0, {"val_acc": 0.5})
        hooks.on_epoch_end(1, {"val_acc": 0.7})
        assert not hooks.should_stop
        hooks.on_epoch_end(2, {"val_acc": 0.6})
    assert hooks.stop_reason.startswith("early stopping: val_acc did not improve")


def test_warmup_iterations_do_not_count(home):
    write("[ml.training]\nearly_stopping_patience = 1\nearly_stopping_warmup = 3\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0, 1.0, 1.0, 1.0, 1.0]) == 4


def test_a_nan_metric_stops_with_that_reason(home):
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0, math.nan, 0.5]) == 2
    assert hooks.stop_reason == "val_loss is nan"


def test_an_infinite_metric_stops_too(home):
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        run_epochs(hooks, [math.inf])
    assert hooks.stop_reason == "val_loss is inf"


def test_default_metric_falls_back_to_the_frameworks_validation_loss(home, caplog):
    write("[ml.training]\nearly_stopping_patience = 1\n")
    caplog.set_level(logging.INFO, "mlprefs_sdk")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.on_evaluate({"eval_loss": 1.0, "epoch": 1.0}, fallback_metric="eval_loss")
        hooks.on_evaluate({"eval_loss": 1.5, "epoch": 2.0}, fallback_metric="eval_loss")
    assert hooks.stop_reason.startswith("early stopping: eval_loss did not improve")
    assert sum("'eval_loss' instead" in r.message for r in caplog.records) == 1


def test_a_missing_metric_is_an_error_listing_the_reported_ones(home):
    write('[ml.training]\nearly_stopping_metric = "val_auc"\n')
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        with pytest.raises(MetricNotFoundError, match="val_auc.*eval_loss, loss"):
            hooks.on_evaluate({"loss": 1.0, "eval_loss": 1.0}, fallback_metric="eval_loss")


def test_a_missing_metric_is_ignored_while_early_stopping_is_off(home):
    write('[ml.training]\nearly_stopping_enabled = false\n')
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.on_epoch_end(0, {"loss": 1.0})
    assert not hooks.should_stop


def test_disabled_early_stopping_never_stops_on_a_plateau(home):
    write("[ml.training]\nearly_stopping_enabled = false\nearly_stopping_patience = 1\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0] * 8) == 8


def test_max_iterations_stops_even_with_early_stopping_off(home):
    write("[ml.training]\nearly_stopping_enabled = false\nmax_iterations = 10\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        for epoch in range(100):
            hooks.on_epoch_end(epoch)
            if hooks.should_stop:
                break
    assert hooks.iteration == 10
    assert hooks.stop_reason == "max_iterations 10 reached"


def test_patience_is_read_live_at_every_check(home):
    write("[ml.training]\nearly_stopping_patience = 10\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0, 1.0, 1.0]) == 3
        edit(prefs, "[ml.training]\nearly_stopping_patience = 3\n")
        assert run_epochs(hooks, [1.0], start=3) == 1
    assert hooks.stop_reason.endswith("for 3 checks")


def test_restore_best_weights_puts_the_best_state_back(home):
    write("[ml.training]\nrestore_best_weights = true\nearly_stopping_patience = 2\n")
    model = Model()
    with Client() as prefs:
        hooks = prefs.training_hooks(model=model)
        hooks.on_train_start()
        for epoch, loss in enumerate([1.0, 0.5, 0.9, 0.8]):
            model.weight = loss
            hooks.on_epoch_end(epoch, {"val_loss": loss})
        hooks.on_train_end()
    assert model.weight == 0.5


def test_next_run_keys_wait_for_the_next_run(home, caplog):
    write("[ml.performance]\nbatch_size = 32\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        edit(prefs, "[ml.performance]\nbatch_size = 64\n")
        hooks.on_step_end(0)
        edit(prefs, "[ml.performance]\nbatch_size = 128\n")
        hooks.on_step_end(1)
        assert hooks.get("ml.performance.batch_size") == 32
        assert prefs.get("ml.performance.batch_size") == 128
        hooks.on_train_end()
        changes = run_changes(prefs.store, hooks.run_id)
    assert sum("takes effect at the next run" in r.message for r in caplog.records) == 1
    assert [(c.key, c.new, c.applied) for c in changes] == [
        ("ml.performance.batch_size", 64, False), ("ml.performance.batch_size", 128, False)]


def test_every_applied_change_is_recorded_with_run_id_and_step(home):
    write("[ml.training]\nlearning_rate = 0.02\n")
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="run-a")
        hooks.on_train_start()
        for step in range(3):
            hooks.on_step_end(step)
        edit(prefs, "[ml.training]\nlearning_rate = 0.01\n")
        hooks.on_step_end(3)
        hooks.on_epoch_end(0)
        [change] = run_changes(prefs.store, "run-a")
    assert (change.run_id, change.step, change.key, change.old, change.new, change.applied) == (
        "run-a", 4, "ml.training.learning_rate", 0.02, 0.01, True)
    assert change.source.endswith("mlprefs.toml:2")


def test_a_change_applied_mid_epoch_reaches_the_store_at_a_later_step(home, monkeypatch):
    monkeypatch.setattr(training, "FLUSH_AFTER_S", 0.0)
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="run-b")
        hooks.on_train_start()
        prefs.set("ml.training.learning_rate", 0.01)
        hooks.on_step_end(0)
        with Client() as other:  # another process's view of the store
            assert [c.new for c in run_changes(other.store, "run-b")] == [0.01]


def test_flags_hold_still_until_the_step_boundary(home):
    write("[ml.global]\nenabled = true\n[ml.features]\nadvanced_enabled = false\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        edit(prefs, "[ml.global]\nenabled = true\n[ml.features]\nadvanced_enabled = true\n")
        assert not hooks.enabled("ml.features.advanced_enabled")
        hooks.on_step_end(0)
        assert hooks.enabled("ml.features.advanced_enabled")


def test_the_master_switch_flips_every_feature_and_the_log_says_so(home, caplog):
    caplog.set_level(logging.INFO, "mlprefs_sdk")
    write("[ml.global]\nenabled = true\n")
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert hooks.enabled("ml.features.naive_enabled")
        edit(prefs, "[ml.global]\nenabled = false\n")
        hooks.on_step_end(0)
        assert not hooks.enabled("ml.features.naive_enabled")
    assert any("feature ml.features.naive_enabled is now off" in r.message
               and "mlprefs.toml:2" in r.message for r in caplog.records)


def test_epoch_metrics_become_the_runs_learning_curve(home):
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="curve-run")
        hooks.on_train_start()
        run_epochs(hooks, [1.0, 0.5])
        assert prefs.curves.get("curve-run") == {"val_loss": [(0, 1.0), (1, 0.5)]}


def test_a_run_resumes_with_its_early_stopping_state_and_the_current_preferences(home):
    """A first process checks three epochs and dies; the restart continues under patience 4."""
    write("[ml.training]\nearly_stopping_patience = 10\n")
    script = textwrap.dedent("""
        import os
        from mlprefs_sdk import Client
        prefs = Client()
        hooks = prefs.training_hooks(run_id="resumable")
        hooks.on_train_start()
        for epoch, loss in enumerate([1.0, 1.0, 1.0]):
            hooks.on_step_end(0)
            hooks.on_epoch_end(epoch, {"val_loss": loss})
        os._exit(0)  # a crash: no on_train_end, no close
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    write("[ml.training]\nearly_stopping_patience = 4\n")
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="resumable")
        assert hooks.resumed and hooks.iteration == 3
        hooks.on_train_start()
        assert run_epochs(hooks, [1.0, 1.0, 1.0], start=3) == 2
        hooks.on_train_end()
        record = load_run(prefs.store, "resumable")
    assert hooks.stop_reason.endswith("for 4 checks")
    assert (record.status, record.iteration) == ("stopped", 5)


def test_a_plugin_hook_failure_reaches_the_caller(home):
    write('[ml.training]\nearly_stopping_metric = "nope"\n')
    with Client() as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        with pytest.raises(MlprefsError):
            hooks.on_epoch_end(0, {"val_loss": 1.0})


def test_runs_changes_and_curves_live_in_either_store_backend(store_url):
    with Client(store=store_url) as prefs:
        hooks = prefs.training_hooks(run_id="both")
        hooks.on_train_start()
        prefs.set("ml.training.learning_rate", 0.01)
        hooks.on_step_end(0)
        hooks.on_epoch_end(0, {"val_loss": 0.31})
        hooks.on_epoch_end(1, {"val_loss": math.nan})
        hooks.on_train_end()
    with Client(store=store_url) as prefs:
        assert (load_run(prefs.store, "both").status, prefs.training_hooks(run_id="both").iteration) \
            == ("stopped", 2)
        assert [(c.key, c.new, c.step) for c in run_changes(prefs.store, "both")] == [
            ("ml.training.learning_rate", 0.01, 1)]
        [first, second] = prefs.curves.get("both")["val_loss"]
        assert first == (0, 0.31) and math.isnan(second[1])
        assert prefs.curves.runs() == ["both"]
