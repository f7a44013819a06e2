"""The hook contract: prefixed names, keyword calls, subsets of arguments, first answer wins."""

from __future__ import annotations

import inspect

import pluggy
import pytest

from mlprefs_sdk import Client, hookspecs
from mlprefs_sdk.hookspecs import hookimpl


def specs():
    return [(name, fn) for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "mlprefs_sdk_spec")]


def test_every_hook_carries_the_project_prefix_and_a_docstring():
    names = [name for name, _ in specs()]
    assert {"mlprefs_register_keys", "mlprefs_train_start", "mlprefs_step_end",
            "mlprefs_epoch_end", "mlprefs_should_stop", "mlprefs_train_end",
            "mlprefs_preferences_changed", "mlprefs_cleanup", "mlprefs_erase"} <= set(names)
    for name, fn in specs():
        assert name.startswith("mlprefs_") and inspect.getdoc(fn), name


def test_only_should_stop_takes_the_first_answer():
    firstresult = [name for name, fn in specs() if fn.mlprefs_sdk_spec["firstresult"]]
    assert firstresult == ["mlprefs_should_stop"]


def test_the_first_stop_reason_wins(home):
    class Says:
        def __init__(self, reason):
            self.reason = reason

        @hookimpl
        def mlprefs_should_stop(self):
            return self.reason

    with Client() as prefs:
        prefs.plugin_manager.register(Says("first"))
        prefs.plugin_manager.register(Says(None))  # called first (LIFO), no answer
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.on_epoch_end(0)
    assert hooks.stop_reason == "first"


def test_an_implementation_may_take_a_subset_of_the_arguments(home):
    seen = []

    class EpochsOnly:
        @hookimpl
        def mlprefs_epoch_end(self, epoch):
            seen.append(epoch)

    with Client() as prefs:
        prefs.plugin_manager.register(EpochsOnly())
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        hooks.on_epoch_end(7)
    assert seen == [7]


def test_a_misspelt_hook_is_caught_by_check_pending(home):
    class Typo:
        @hookimpl
        def mlprefs_epoch_ends(self, epoch):
            pass

    with Client() as prefs:
        prefs.plugin_manager.register(Typo())
        with pytest.raises(pluggy.PluginValidationError, match="mlprefs_epoch_ends"):
            prefs.plugin_manager.check_pending()


def test_the_step_hook_runs_at_every_step_when_a_plugin_implements_it(home):
    steps = []

    class Steps:
        @hookimpl
        def mlprefs_step_end(self, step):
            steps.append(step)

    with Client() as prefs:
        prefs.plugin_manager.register(Steps())
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        for step in range(3):
            hooks.on_step_end(step)
    assert steps == [0, 1, 2]


def test_preferences_changed_hears_every_applied_change(home):
    heard = []

    class Listener:
        @hookimpl
        def mlprefs_preferences_changed(self, changes):
            heard.append(changes.keys)

    with Client() as prefs:
        prefs.plugin_manager.register(Listener())
        prefs.set("ml.training.learning_rate", 0.02)
    assert heard == [("ml.training.learning_rate",)]
