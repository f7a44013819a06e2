"""`mlprefs demo`: a real run with hot reload, live edits, early stopping and a plot."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import main
from mlprefs_sdk.runs import run_changes

pytest.importorskip("numpy")
pytest.importorskip("matplotlib")
from mlprefs_sdk.demo import run_demo  # noqa: E402


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_demo_command_edits_its_file_stops_early_and_plots(home, tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "mlprefs_sdk", "demo", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "ml.training.learning_rate 0.5 -> 0.05  (from " in text
    assert "ml.training.early_stopping_patience 20 -> 3  (from " in text
    assert "early stopping: val_loss did not improve" in text
    assert (out / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    assert "learning_rate = 0.05" in (out / "mlprefs.toml").read_text()


def test_the_demo_records_the_changes_it_applied(home, tmp_path):
    result = run_demo(tmp_path / "demo", epochs=30, stream=io.StringIO(), pace=0)
    with Client(store=result.store) as prefs:
        changes = run_changes(prefs.store, result.run_id)
    assert [(c.key, c.new, c.applied) for c in changes] == [
        ("ml.training.learning_rate", 0.05, True),
        ("ml.training.early_stopping_patience", 3, True)]


def test_manual_mode_waits_for_the_users_own_edit(home, tmp_path):
    out, stream, stop = tmp_path / "demo", io.StringIO(), threading.Event()
    runner = threading.Thread(target=run_demo, args=(out,),
                              kwargs={"epochs": 1000, "manual": True, "stream": stream,
                                      "pace": 0.02, "stop": stop})
    runner.start()
    try:
        wait_for(lambda: "Edit that file" in stream.getvalue() and "epoch" in stream.getvalue())
        config = out / "mlprefs.toml"
        config.write_text(config.read_text().replace("learning_rate = 0.5", "learning_rate = 0.2"))
        wait_for(lambda: "learning_rate 0.5 -> 0.2" in stream.getvalue())
    finally:
        stop.set()
        runner.join(timeout=60)
    assert "demo edits" not in stream.getvalue()
    assert "stopped after epoch" in stream.getvalue()


def test_demo_json_prints_the_summary(home, tmp_path, capsys):
    assert main(["--json", "demo", "--out", str(tmp_path / "d"), "--epochs", "12",
                 "--pace", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["plot"]).exists() and summary["epochs"] <= 12


def test_demo_refuses_zero_epochs(home, tmp_path, capsys):
    assert main(["demo", "--epochs", "0", "--out", str(tmp_path / "d")]) == 1
    assert "--epochs must be at least 1" in capsys.readouterr().err
