"""A run shows what it does without any logging set-up: each event once, silenced on demand.

Each test runs a real script in a subprocess, as a user's training script runs: a plain loop
through the training hooks, a change stored mid-run, a bad edit of mlprefs.toml seen by the
watcher, and early stopping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, sys, threading
    from mlprefs_sdk import Client

    if "before" in sys.argv:
        logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")
    rejected = threading.Event()
    with Client(watch=True) as prefs:
        if "after" in sys.argv:
            logging.basicConfig(format="APP %(name)s %(message)s")
        prefs.on_error(lambda err: rejected.set())
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        prefs.set("ml.training.learning_rate", 0.005)
        hooks.on_step_end(0)                          # the change lands here
        with open("mlprefs.toml", "w") as f:          # a bad edit, seen by the watcher
            f.write("[ml.training]\\nlearning_rate = 5.0\\n")
        assert rejected.wait(10)
        hooks.request_stop("val_loss did not improve for 3 checks")
        hooks.on_train_end()
""")

APPLIED = "ml.training.learning_rate 0.001 -> 0.005"
STOP = "stops after iteration 0: val_loss did not improve for 3 checks"
REJECTED = "mlprefs.toml rejected; keeping the last good preferences"


def run(tmp_path, *args, **env):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLPREFS")}
    environ.update(MLPREFS_HOME=str(tmp_path / "home"), MLPREFS_POLICY=str(tmp_path / "p.toml"))
    environ.update(env)
    project = tmp_path / "project"
    project.mkdir()
    result = subprocess.run([sys.executable, str(script), *args], check=False, cwd=project, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_without_logging_setup_each_event_is_printed_once_on_stderr(tmp_path):
    err = run(tmp_path)
    assert err.count(APPLIED) == 1, err
    assert err.count(STOP) == 1, err
    assert err.count(REJECTED) == 1, err
    assert "step 1: ml.training.learning_rate" in err, err  # says at which step


def test_the_applied_change_names_its_source(tmp_path):
    err = run(tmp_path)
    line = next(ln for ln in err.splitlines() if APPLIED in ln)
    assert "(user (user " in line, line


def test_logging_configured_before_the_client_prints_each_event_once(tmp_path):
    err = run(tmp_path, "before")
    for text in (APPLIED, STOP, REJECTED):
        assert err.count(text) == 1, err
    assert all(ln.startswith(("APP ", "ml.", "  ")) for ln in err.splitlines() if ln), err


def test_logging_configured_after_the_client_prints_each_event_once(tmp_path):
    err = run(tmp_path, "after")
    for text in (APPLIED, STOP, REJECTED):
        assert err.count(text) == 1, err
    assert "APP mlprefs_sdk.training mlprefs: run" in err, err


def test_mlprefs_log_off_prints_nothing(tmp_path):
    assert run(tmp_path, MLPREFS_LOG="off") == ""


def test_mlprefs_log_warning_keeps_the_rejected_edit_only(tmp_path):
    err = run(tmp_path, MLPREFS_LOG="warning")
    assert APPLIED not in err and STOP not in err
    assert err.count(REJECTED) == 1, err
