"""The Keras 3 adapter against real model.fit() on the torch backend, CPU, a tiny Dense model."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from pathlib import Path

import pytest

os.environ["KERAS_BACKEND"] = "torch"  # must precede the first import of keras
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")
if keras.backend.backend() != "torch":  # pragma: no cover - keras imported earlier elsewhere
    pytest.skip("keras was imported with another backend", allow_module_level=True)

from mlprefs_sdk import Client  # noqa: E402
from mlprefs_sdk.integrations.keras import MlprefsCallback  # noqa: E402

# Keras 3's torch-backend Variable.__array__ predates numpy 2's copy keyword; its own
# get_weights() (used by restore_best_weights) and Variable.numpy() trigger this.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def write_prefs(path: Path, **training: object) -> None:
    lines = ["[ml.training]"] + [f"{k} = {v!r}".replace("True", "true").replace("False", "false")
                                 for k, v in training.items()]
    path.write_text("\n".join(lines) + "\n")


def data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True) * 2


def model(optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=optimizer or keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    return m


class EditAndRecord(keras.callbacks.Callback):
    """Records the lr at the start of every batch; edits mlprefs.toml after batch `edit_after`."""

    def __init__(self, prefs: Client, edit_after: int | None = None, watched: bool = False,
                 **new_values: object) -> None:
        super().__init__()
        self.prefs, self.edit_after, self.new_values = prefs, edit_after, new_values
        self.watched = watched  # the Client's watcher, not reload(), picks the edit up
        self.lrs: list[float] = []
        self.weight_decays: list[float | None] = []
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(self.model.optimizer.learning_rate.numpy()))
        self.weight_decays.append(self.model.optimizer.weight_decay)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.edit_after:
            write_prefs(Path("mlprefs.toml"), **self.new_values)
            if not self.watched:
                self.prefs.reload()
            else:  # block this step until the watcher has swapped the view in
                wait_for(lambda: all(self.prefs.get(f"ml.training.{k}") == v
                                     for k, v in self.new_values.items()))


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the watcher did not pick up the edit"
        time.sleep(0.01)


def fit(m: keras.Model, *callbacks: keras.callbacks.Callback, epochs: int = 50, validate: bool = True):
    x, y = data()
    return m.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=list(callbacks),
                 validation_data=(x, y) if validate else None)


def test_a_toml_edit_mid_run_reaches_the_optimizer_at_the_next_step(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=3, learning_rate=0.002)
        fit(model(), record, MlprefsCallback(prefs), epochs=2)
    assert record.lrs[:3] == pytest.approx([0.01] * 3)  # the preference, not the constructor's 0.5
    assert record.lrs[3:] == pytest.approx([0.002] * 5)


def test_with_hot_reload_an_edit_of_the_file_alone_reaches_the_optimizer(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client(watch=True) as prefs:
        record = EditAndRecord(prefs, edit_after=3, watched=True, learning_rate=0.002)
        fit(model(), record, MlprefsCallback(prefs), epochs=2)
    assert record.lrs[:3] == pytest.approx([0.01] * 3)
    assert record.lrs[3:] == pytest.approx([0.002] * 5)


def test_regularization_l2_becomes_the_optimizers_weight_decay(project_dir):
    write_prefs(project_dir / "mlprefs.toml", regularization_l2=0.05)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=2, regularization_l2=0.2)
        fit(model(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.004)), record,
            MlprefsCallback(prefs), epochs=1)
    assert record.weight_decays == pytest.approx([0.05, 0.05, 0.2, 0.2])


class RecordWeights(keras.callbacks.Callback):
    """The model's weights after every batch (placed after MlprefsCallback: after its L1 step)."""

    def __init__(self) -> None:
        super().__init__()
        self.after: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.after.append([np.array(keras.ops.convert_to_numpy(w)) for w in self.model.trainable_weights])


def test_regularization_l1_moves_each_weight_lr_times_l1_toward_zero_after_each_step(project_dir):
    plain, shrunk = RecordWeights(), RecordWeights()
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.1, regularization_l1=0.0)
    with Client() as prefs:
        fit(model(), MlprefsCallback(prefs), plain, epochs=1, validate=False)
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.1, regularization_l1=0.5)
    with Client() as prefs:
        fit(model(), MlprefsCallback(prefs), shrunk, epochs=1, validate=False)
    # The first step is the same gradient step on the same weights; then the L1 step of 0.05.
    for before, after in zip(plain.after[0], shrunk.after[0]):
        expected = np.sign(before) * np.maximum(np.abs(before) - 0.05, 0.0)
        assert after == pytest.approx(expected, abs=1e-6)
    assert sum(np.abs(w).sum() for w in shrunk.after[-1]) < sum(np.abs(w).sum() for w in plain.after[-1])


def test_an_edit_of_regularization_l1_mid_run_applies_from_the_next_step(project_dir):
    runs = []
    for edit in (None, 2):
        write_prefs(project_dir / "mlprefs.toml", learning_rate=0.1, regularization_l1=0.0)
        with Client() as prefs:
            record = RecordWeights()
            edits = EditAndRecord(prefs, edit_after=edit, learning_rate=0.1, regularization_l1=0.5)
            fit(model(), edits, MlprefsCallback(prefs), record, epochs=1, validate=False)
            runs.append(record.after)
    untouched, edited = runs
    for step in (0, 1):  # before the edit: the same weights as a run without L1
        assert all(np.array_equal(a, b) for a, b in zip(untouched[step], edited[step]))
    assert not all(np.allclose(a, b) for a, b in zip(untouched[2], edited[2]))


def test_early_stopping_ends_fit_with_a_reason(project_dir):
    # A tiny lr cannot improve val_loss by 0.1: epoch 1 sets the best, epochs 2 and 3 do not improve.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=2,
                convergence_threshold=0.1)
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        history = fit(model(), mlprefs)
    assert len(history.history["val_loss"]) == 3
    assert mlprefs.stop_reason.startswith("early stopping")


def test_max_iterations_counts_epochs(project_dir):
    write_prefs(project_dir / "mlprefs.toml", max_iterations=10, early_stopping_enabled=False)
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        history = fit(model(), mlprefs, epochs=100, validate=False)
    assert len(history.history["loss"]) == 10
    assert "max_iterations" in mlprefs.stop_reason


def test_restore_best_weights_brings_back_the_best_epoch(project_dir):
    # lr 0.5 on this problem diverges after a few epochs: the best weights are early ones.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.5, early_stopping_patience=3,
                restore_best_weights=True)
    with Client() as prefs:
        m = model()
        history = fit(m, MlprefsCallback(prefs))
        x, y = data()
        final = float(m.evaluate(x, y, verbose=0))
    assert history.history["val_loss"][-1] > min(history.history["val_loss"])  # it did get worse
    assert final == pytest.approx(min(history.history["val_loss"]), rel=1e-4)


def test_a_learning_rate_schedule_is_kept_and_the_log_says_why(project_dir, caplog):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    with Client() as prefs, caplog.at_level(logging.WARNING, "mlprefs_sdk.integrations.keras"):
        record = EditAndRecord(prefs)
        fit(model(keras.optimizers.SGD(learning_rate=schedule)), record, MlprefsCallback(prefs),
            epochs=1)
    assert record.lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert "learning-rate schedule (ExponentialDecay)" in caplog.text


def test_an_epoch_without_validation_is_counted_but_not_checked(project_dir, caplog):
    write_prefs(project_dir / "mlprefs.toml", max_iterations=10)
    with Client() as prefs, caplog.at_level(logging.WARNING, "mlprefs_sdk.integrations.keras"):
        mlprefs = MlprefsCallback(prefs)
        history = fit(model(), mlprefs, epochs=12, validate=False)
    assert len(history.history["loss"]) == 10
    assert caplog.text.count("'val_loss' is not in this epoch's logs") == 1


def test_importing_the_adapter_without_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.keras")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[keras\]"'):
        importlib.import_module("mlprefs_sdk.integrations.keras")
