"""The Transformers adapter against a real Trainer on the CPU: a tiny BERT built from a config."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a hub: the model is built locally
torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # the Trainer needs it
transformers = pytest.importorskip("transformers")

from mlprefs_sdk import Client, MlprefsError  # noqa: E402
from mlprefs_sdk.integrations.transformers import MlprefsCallback  # noqa: E402


def write_prefs(path: Path, **training: object) -> None:
    lines = ["[ml.training]"] + [f"{k} = {v!r}".replace("True", "true").replace("False", "false")
                                 for k, v in training.items()]
    path.write_text("\n".join(lines) + "\n")


def tiny_bert() -> transformers.PreTrainedModel:
    config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def dataset(n: int = 32) -> list[dict[str, object]]:
    ids = torch.randint(0, 32, (n, 8), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": int(row[0] > 16)} for row in ids]


class EditAndRecord(transformers.TrainerCallback):
    """Records each optimizer step's lr and the scheduler factor; edits mlprefs.toml after a step."""

    def __init__(self, prefs: Client, edit_after: int | None = None, **new_values: object) -> None:
        self.prefs, self.edit_after, self.new_values = prefs, edit_after, new_values
        self.steps: list[tuple[float, float]] = []  # (lr, schedule factor)
        self.groups: list[tuple[float, float]] = []  # (lr, weight_decay) of each group at each step
        self.evaluations = 0

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kw):
        factor = lr_scheduler.lr_lambdas[0](lr_scheduler.last_epoch)
        self.steps.append((optimizer.param_groups[0]["lr"], factor))
        self.groups.append(tuple(g["weight_decay"] for g in optimizer.param_groups))

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.edit_after:
            write_prefs(Path("mlprefs.toml"), **self.new_values)
            self.prefs.reload()

    def on_evaluate(self, args, state, control, **kw):
        self.evaluations += 1


def train(tmp_path: Path, *callbacks: transformers.TrainerCallback, **options: object) -> transformers.Trainer:
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                    num_train_epochs=2, eval_strategy="no", logging_strategy="no",
                    save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                    learning_rate=0.5)  # the constructor's lr, which the preferences replace
    settings.update(options)
    trainer = transformers.Trainer(model=tiny_bert(), args=transformers.TrainingArguments(**settings),
                                   train_dataset=dataset(), eval_dataset=dataset(8),
                                   callbacks=list(callbacks))
    trainer.train()
    return trainer


def test_a_toml_edit_mid_run_rescales_the_linear_schedule_at_the_next_step(project_dir, tmp_path):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=3, learning_rate=0.002)
        trainer = train(tmp_path, record, MlprefsCallback(prefs))
    base = [lr / factor for lr, factor in record.steps]  # the Trainer's default linear decay
    assert base[:3] == pytest.approx([0.01] * 3)
    assert base[3:] == pytest.approx([0.002] * 5)
    assert trainer.lr_scheduler.base_lrs == pytest.approx([0.002, 0.002])


def test_regularization_l2_leaves_the_groups_excluded_from_decay_at_zero(project_dir, tmp_path):
    # weight_decay=0 (the Trainer's default) gives both of its groups 0 at the start;
    # the bias/LayerNorm group must stay at 0 all the same.
    write_prefs(project_dir / "mlprefs.toml", regularization_l2=0.05)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=2, regularization_l2=0.2)
        train(tmp_path, record, MlprefsCallback(prefs), num_train_epochs=1)
    assert record.groups == [(0.05, 0.0), (0.05, 0.0), (0.2, 0.0), (0.2, 0.0)]


def test_each_evaluation_is_one_early_stopping_check_on_eval_loss(project_dir, tmp_path):
    # A tiny lr cannot improve eval_loss by 0.1: check 1 sets the best, checks 2 and 3 do not.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=2,
                convergence_threshold=0.1)
    with Client() as prefs:
        record, mlprefs = EditAndRecord(prefs), MlprefsCallback(prefs)
        trainer = train(tmp_path, record, mlprefs, num_train_epochs=50, eval_strategy="steps",
                        eval_steps=2)
    assert record.evaluations == 3
    assert trainer.state.global_step == 6
    assert mlprefs.stop_reason.startswith("early stopping")
    assert "eval_loss" in mlprefs.stop_reason


def test_an_epoch_evaluation_belongs_to_its_epoch_for_warmup(project_dir, tmp_path):
    # warmup 2: the checks of epochs 1 and 2 do not count; epoch 3's is the first that can stop.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=1,
                convergence_threshold=0.1, early_stopping_warmup=2)
    with Client() as prefs:
        record, mlprefs = EditAndRecord(prefs), MlprefsCallback(prefs)
        trainer = train(tmp_path, record, mlprefs, num_train_epochs=50, eval_strategy="epoch")
    assert record.evaluations == 3
    assert trainer.state.epoch == 3
    assert mlprefs.hooks.iteration == 3
    assert mlprefs.stop_reason.startswith("early stopping")


def test_max_iterations_counts_epochs_and_ends_train(project_dir, tmp_path):
    write_prefs(project_dir / "mlprefs.toml", max_iterations=10, early_stopping_enabled=False)
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        trainer = train(tmp_path, mlprefs, num_train_epochs=100)
    assert trainer.state.epoch == 10
    assert "max_iterations" in mlprefs.stop_reason


def test_a_missing_monitored_metric_is_an_error_naming_the_metrics_that_exist(project_dir, tmp_path):
    write_prefs(project_dir / "mlprefs.toml", early_stopping_metric="eval_f1")
    with Client() as prefs, pytest.raises(MlprefsError, match="eval_f1") as err:
        train(tmp_path, MlprefsCallback(prefs), eval_strategy="steps", eval_steps=2)
    assert "eval_loss" in str(err.value)


def test_importing_the_adapter_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.transformers")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[transformers\]"'):
        importlib.import_module("mlprefs_sdk.integrations.transformers")
