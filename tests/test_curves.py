"""prefs.curves: learning curves in the store, read back, plotted; `mlprefs curves`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mlprefs_sdk import Client, MlprefsError
from mlprefs_sdk.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_logged_epochs_come_back_by_metric_in_epoch_order(home):
    with Client() as prefs:
        prefs.curves.log("r1", 1, val_loss=0.5, acc=0.8)
        prefs.curves.log("r1", 0, val_loss=0.9, acc=0.6)
        assert prefs.curves.get("r1") == {"acc": [(0, 0.6), (1, 0.8)],
                                          "val_loss": [(0, 0.9), (1, 0.5)]}


def test_relogging_an_epoch_replaces_its_value(home):
    with Client() as prefs:
        prefs.curves.log("r1", 0, val_loss=0.9)
        prefs.curves.log("r1", 0, val_loss=0.7)
        assert prefs.curves.get("r1") == {"val_loss": [(0, 0.7)]}


def test_nan_survives_the_round_trip(home):
    with Client() as prefs:
        prefs.curves.log("r1", 0, val_loss=math.nan)
        [(_, value)] = prefs.curves.get("r1")["val_loss"]
    assert math.isnan(value)


def test_nothing_is_logged_while_learning_curves_are_disabled(home):
    Path("mlprefs.toml").write_text("[ml.feedback]\nlearning_curve_enabled = false\n")
    with Client() as prefs:
        assert prefs.curves.log("r1", 0, val_loss=0.9) is False
        hooks = prefs.training_hooks(run_id="r2")
        hooks.on_train_start()
        hooks.on_epoch_end(0, {"val_loss": 1.0})
        assert prefs.curves.get("r1") == {} and prefs.curves.get("r2") == {}


def test_a_curve_persists_for_another_client(home):
    with Client() as prefs:
        prefs.curves.log("r1", 0, val_loss=0.9)
    with Client() as again:
        assert again.curves.get("r1") == {"val_loss": [(0, 0.9)]}
        assert again.curves.runs() == ["r1"]


def test_plot_writes_a_png_of_a_trained_run(home, tmp_path):
    pytest.importorskip("matplotlib")
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="plotted")
        hooks.on_train_start()
        for epoch, loss in enumerate([1.0, 0.6, 0.5]):
            if epoch == 1:
                prefs.set("ml.training.learning_rate", 0.01)
            hooks.on_step_end(0)
            hooks.on_epoch_end(epoch, {"val_loss": loss})
        path = prefs.curves.plot("plotted", tmp_path / "out" / "curve.png")
    assert Path(path).read_bytes().startswith(PNG)


def test_plotting_an_unknown_run_names_the_known_ones(home, tmp_path):
    with Client() as prefs:
        prefs.curves.log("known", 0, val_loss=1.0)
        with pytest.raises(MlprefsError, match="no learning curve for run 'nope'; known runs: known"):
            prefs.curves.plot("nope", tmp_path / "x.png")


def test_cli_show_prints_the_table_and_the_applied_changes(home, capsys):
    with Client() as prefs:
        hooks = prefs.training_hooks(run_id="shown")
        hooks.on_train_start()
        hooks.on_epoch_end(0, {"val_loss": 1.0})
        prefs.set("ml.training.learning_rate", 0.01)
        hooks.on_step_end(0)
        hooks.on_epoch_end(1, {"val_loss": 0.5})
    assert main(["curves", "show", "shown"]) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out and "    1" in out
    assert "ml.training.learning_rate 0.001 -> 0.01" in out


def test_cli_show_json_and_plot(home, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    with Client() as prefs:
        prefs.curves.log("r1", 0, val_loss=0.9)
    assert main(["--json", "curves", "show", "r1"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"val_loss": [[0, 0.9]]}
    out = tmp_path / "r1.png"
    assert main(["curves", "plot", "r1", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)


def test_cli_show_of_an_unknown_run_exits_1(home, capsys):
    assert main(["curves", "show", "nope"]) == 1
    assert "no learning curve for run 'nope'" in capsys.readouterr().err
