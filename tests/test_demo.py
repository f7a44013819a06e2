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


def _demo_figure(tmp_path):
    from mlprefs_sdk.demo import draw_curve
    from mlprefs_sdk.plugins.early_stopping import best

    result = run_demo(tmp_path / "demo", epochs=60, stream=io.StringIO(), pace=0)
    with Client(store=result.store) as prefs:
        curves = prefs.curves.get(result.run_id)
        changes = [c for c in run_changes(prefs.store, result.run_id) if c.applied]
        hooks = prefs.training_hooks(run_id=result.run_id)  # the stored run, to read its best
        best_epoch, _ = best(hooks)
    fig = draw_curve(curves, changes, best_epoch, result.epochs, result.stop_reason)
    return fig, result, curves, changes, best_epoch


def test_the_demo_plot_numbers_epochs_as_the_console_does_and_labels_its_axes(home, tmp_path):
    fig, result, curves, _, _ = _demo_figure(tmp_path)
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == "epoch"
    assert loss_ax.get_ylabel() and acc_ax.get_ylabel() == "validation accuracy"
    val_line = next(ln for ln in loss_ax.get_lines() if ln.get_label() == "val loss")
    xs = list(val_line.get_xdata())
    assert xs[0] == 1 and xs[-1] == result.epochs  # the console prints "epoch 1/60" first


def test_the_demo_plot_marks_the_best_epoch_and_the_stop(home, tmp_path):
    fig, result, curves, _, best_epoch = _demo_figure(tmp_path)
    labels = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    best_mark = next(ln for name, ln in labels.items() if name.startswith("best: epoch"))
    assert list(best_mark.get_xdata()) == [best_epoch]
    assert list(best_mark.get_ydata()) == [dict(curves["val_loss"])[best_epoch - 1]]
    stop = next(ln for name, ln in labels.items() if name.startswith("stopped after epoch"))
    assert list(stop.get_xdata()) == [result.epochs, result.epochs]
    assert f"stopped after epoch {result.epochs}: early stopping" in stop.get_label()


def test_the_demo_plot_labels_each_change_above_the_curves(home, tmp_path):
    fig, _, _, changes, _ = _demo_figure(tmp_path)
    notes = [t for t in fig.axes[0].texts]
    assert [n.get_text() for n in notes] == [
        "learning_rate 0.5 → 0.05", "early_stopping_patience 20 → 3"]
    fig.canvas.draw()
    plot_area = fig.axes[0].get_window_extent()
    for note, change in zip(notes, changes):
        assert note.xyann[0] == change.iteration + 0.5  # between the two epochs it landed
        assert note.get_window_extent().y0 >= plot_area.y1  # above the curves (its leader touches)
    assert fig.legends[0].get_window_extent().y1 < plot_area.y0  # the legend sits below them
