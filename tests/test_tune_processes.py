"""Tuning across processes: shared studies, Ctrl-C, and `mlprefs tune -- COMMAND` (all real
subprocesses and signals)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlprefs_sdk

pytest.importorskip("optuna")

REPO = str(Path(mlprefs_sdk.__file__).resolve().parent.parent)
ON = "[ml.global]\nenabled = true\n[ml.features]\nauto_optimization = true\n"
SPACE = '[tune.space]\n"ml.training.learning_rate" = { choices = [0.01, 0.5] }\n'


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = REPO + os.pathsep + out.get("PYTHONPATH", "")
    return out


def trials_in(db: Path, study: str) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
            "WHERE s.study_name = ? ORDER BY t.number", (study,)).fetchall()


TUNER = """
import sys, time
from pathlib import Path
from mlprefs_sdk import Client
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
with Client() as prefs:
    result = prefs.tune(lambda p: p.get("ml.training.learning_rate") * 10, n_trials=5,
                        study="shared")
print(len(result.trials))
"""


def test_two_processes_started_at_once_on_a_fresh_store_share_one_study(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    go = project_dir / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TUNER, str(go)], env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(1.0)  # both are waiting at the barrier, before any table exists
    assert not (home / "tuning.db").exists()
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    trials = trials_in(home / "tuning.db", "shared")
    assert [n for n, _ in trials] == list(range(10))
    assert {state for _, state in trials} == {"COMPLETE"}
    # each process saw at least its own five trials, the second to finish all ten
    assert max(int(out.split()[-1]) for out, _ in outs) == 10


INTERRUPTED = """
import time
from pathlib import Path
from mlprefs_sdk import Client
def train(p):
    with open("progress", "a") as f:
        f.write("started\\n")
    time.sleep(0.2 if Path("progress").read_text().count("started") < 4 else 60)
    return p.get("ml.training.learning_rate")
with Client() as prefs:
    result = prefs.tune(train, n_trials=50, study="ctrl-c")
print(result.interrupted, [t.state for t in result.trials])
"""


def test_ctrl_c_ends_the_study_and_keeps_its_finished_trials(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = project_dir / "progress"
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text().count("started") >= 4):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "True ['complete', 'complete', 'complete', 'failed']"
    assert trials_in(home / "tuning.db", "ctrl-c") == [
        (0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE"), (3, "FAIL")]


SCRIPT = """
import sys
from mlprefs_sdk import Client

with Client() as prefs:
    lr = prefs.get("ml.training.learning_rate")
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    for epoch in range(6):
        hooks.on_epoch_end(epoch, {"val_loss": lr * 10 + 1.0 / (epoch + 1)})
        if hooks.should_stop:
            break
    hooks.on_train_end()
    print("run", lr, hooks.iteration, hooks.stop_reason,
          prefs.explain("ml.training.learning_rate").source, sep="|")
"""


def mlprefs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlprefs_sdk", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=600)


def test_mlprefs_tune_runs_an_unchanged_script_per_trial_and_prunes_it(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    (project_dir / "train.py").write_text(SCRIPT)
    done = mlprefs("--json", "tune", "--trials", "9", "--seed", "0", "--study", "cli", "--",
                   sys.executable, "train.py", cwd=project_dir)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    runs = [line.split("|") for line in done.stdout.splitlines() if line.startswith("run|")]
    assert len(runs) == len(result["trials"]) == 9
    assert all(source.startswith("env (MLPREFS__ML__TRAINING__LEARNING_RATE)") for *_, source in runs)
    states = {t["state"] for t in result["trials"]}
    assert states == {"complete", "pruned"}
    for trial, (_, lr, iterations, reason, _) in zip(result["trials"], runs):
        assert float(lr) == trial["values"]["ml.training.learning_rate"]
        if trial["state"] == "pruned":
            assert reason.startswith("pruned by optuna MedianPruner at epoch")
            assert int(iterations) < 6
        else:  # scored by the run's best val_loss: its last epoch's
            assert trial["value"] == pytest.approx(float(lr) * 10 + 1 / 6)
    assert result["best_values"] == {"ml.training.learning_rate": 0.01}


def test_mlprefs_tune_apply_stores_the_best_values_in_project_scope(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON)
    (project_dir / "space.toml").write_text(SPACE)
    (project_dir / "train.py").write_text(SCRIPT)
    done = mlprefs("--project", "churn", "tune", "--trials", "4", "--seed", "1", "--space",
                   "space.toml", "--apply", "--", sys.executable, "train.py", cwd=project_dir)
    assert done.returncode == 0, done.stderr
    assert "best value" in done.stdout and "applied to project scope" in done.stdout
    explained = json.loads(mlprefs("--project", "churn", "--json", "explain",
                                   "ml.training.learning_rate", cwd=project_dir).stdout)
    assert explained["value"] == 0.01 and explained["source"]["layer"] == "project"


def test_a_command_that_fails_is_a_failed_trial_and_the_study_goes_on(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    (project_dir / "train.py").write_text(
        "import os, sys\nif os.environ['MLPREFS__ML__TRAINING__LEARNING_RATE'] == '0.5':\n"
        "    sys.exit(3)\n" + SCRIPT)
    done = mlprefs("--json", "tune", "--trials", "6", "--seed", "0", "--", sys.executable,
                   "train.py", cwd=project_dir)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    by_lr = {t["values"]["ml.training.learning_rate"]: t["state"] for t in result["trials"]}
    assert by_lr == {0.5: "failed", 0.01: "complete"} and len(result["trials"]) == 6
    assert "exited with code 3" in done.stderr


def test_mlprefs_tune_is_refused_when_auto_optimization_is_off(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(SPACE)
    done = mlprefs("tune", "--", sys.executable, "-c", "pass", cwd=project_dir)
    assert done.returncode == 1 and "ml.features.auto_optimization" in done.stderr


def test_mlprefs_tune_needs_a_command(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    done = mlprefs("tune", cwd=project_dir)
    assert done.returncode == 1 and "needs a command" in done.stderr


def test_import_mlprefs_sdk_imports_no_optuna(home):
    code = ("import sys, mlprefs_sdk; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('optuna', 'sqlalchemy') or m.startswith('mlprefs_sdk.integrations')))")
    done = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


SLOW_SCRIPT = """
import time
from pathlib import Path
from mlprefs_sdk import Client

with Client() as prefs:
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    for epoch in range(3):
        hooks.on_epoch_end(epoch, {"val_loss": 1.0 / (epoch + 1)})
    with open("runs", "a") as f:
        f.write("done\\n")
    if Path("runs").read_text().count("done") >= 3:
        time.sleep(120)  # the third run hangs until Ctrl-C
    hooks.on_train_end()
"""


def test_ctrl_c_to_mlprefs_tune_ends_the_command_and_prints_the_finished_trials(home, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    (project_dir / "train.py").write_text(SLOW_SCRIPT)
    proc = subprocess.Popen([sys.executable, "-m", "mlprefs_sdk", "--json", "tune", "--trials", "5",
                             "--study", "cli-ctrl-c", "--", sys.executable, "train.py"],
                            cwd=project_dir, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    runs = project_dir / "runs"
    deadline = time.monotonic() + 120
    while not (runs.exists() and runs.read_text().count("done") >= 3):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # to mlprefs alone: it passes Ctrl-C on to the command
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["interrupted"] is True
    assert [t["state"] for t in result["trials"]] == ["complete", "complete", "failed"]
    assert trials_in(home / "tuning.db", "cli-ctrl-c")[-1] == (2, "FAIL")


def test_mlprefs_tune_with_the_store_on_postgresql_or_sqlite(store_url, project_dir):
    (project_dir / "mlprefs.toml").write_text(ON + SPACE)
    (project_dir / "train.py").write_text(SCRIPT)
    done = mlprefs("--store", store_url, "--json", "tune", "--trials", "3", "--seed", "0",
                   "--study", "team", "--", sys.executable, "train.py", cwd=project_dir)
    assert done.returncode == 0, done.stderr
    again = mlprefs("--store", store_url, "--json", "tune", "--trials", "2", "--seed", "1",
                    "--study", "team", "--", sys.executable, "train.py", cwd=project_dir)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout.splitlines()[-1])
    assert [t["number"] for t in result["trials"]] == [0, 1, 2, 3, 4]
    assert {t["state"] for t in result["trials"]} == {"complete"}
