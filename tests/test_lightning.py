"""The Lightning adapter against a real Trainer on the CPU: a tiny regression, a few batches."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from mlprefs_sdk import Client  # noqa: E402
from mlprefs_sdk.integrations.lightning import MlprefsCallback  # noqa: E402

pytestmark = [
    # Lightning 2.6 builds torch.utils._pytree.LeafSpec, which torch 2.13 deprecates.
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
    # Lightning suggests more DataLoader workers for our 16-sample in-memory dataset.
    pytest.mark.filterwarnings("ignore:The '.*dataloader' does not have many workers:UserWarning"),
    # ... and a log_every_n_steps larger than our 2-4 batches per epoch.
    pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval"),
]


def write_prefs(path: Path, **training: object) -> None:
    lines = ["[ml.training]"] + [f"{k} = {v!r}".replace("True", "true").replace("False", "false")
                                 for k, v in training.items()]
    path.write_text("\n".join(lines) + "\n")


class Regression(pl.LightningModule):
    """y = 2x on 16 samples; the constructor's lr (0.5) is what the preferences must replace."""

    def __init__(self, lambda_schedule: bool = False) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.lambda_schedule = lambda_schedule
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, generator=gen)
        self.y = self.x.sum(dim=1, keepdim=True) * 2

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=4)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader()

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.5)
        if not self.lambda_schedule:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EditAndRecord(pl.Callback):
    """Records the lr of every optimizer step; edits mlprefs.toml after step `edit_after`."""

    def __init__(self, prefs: Client, edit_after: int | None = None, **new_values: object) -> None:
        self.prefs, self.edit_after, self.new_values = prefs, edit_after, new_values
        self.lrs: list[tuple[int, float]] = []
        self.validations = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append((trainer.global_step, optimizer.param_groups[0]["lr"]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.edit_after:
            write_prefs(Path("mlprefs.toml"), **self.new_values)
            self.prefs.reload()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validations += 1


def trainer(*callbacks: pl.Callback, **kwargs: object) -> pl.Trainer:
    options = dict(max_epochs=50, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    options.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **options)


def test_the_preferred_lr_replaces_the_constructor_lr_before_the_first_step(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01, max_iterations=10)
    with Client() as prefs:
        record = EditAndRecord(prefs)
        trainer(record, MlprefsCallback(prefs), max_epochs=1).fit(Regression())
    assert record.lrs[0] == (0, pytest.approx(0.01))


def test_a_toml_edit_mid_run_reaches_the_optimizer_at_the_next_step(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=3, learning_rate=0.002)
        trainer(record, MlprefsCallback(prefs), max_epochs=2).fit(Regression())
    lrs = dict(record.lrs)
    assert [lrs[s] for s in (0, 1, 2)] == pytest.approx([0.01] * 3)
    assert [lrs[s] for s in range(3, 8)] == pytest.approx([0.002] * 5)


def test_an_lr_edit_rescales_a_lambda_schedule_and_survives_its_next_step(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        record = EditAndRecord(prefs, edit_after=3, learning_rate=0.002)
        trainer(record, MlprefsCallback(prefs), max_epochs=2).fit(Regression(lambda_schedule=True))
    base = {step: lr * (1 + step) for step, lr in record.lrs}  # the schedule is base / (1 + step)
    assert [base[s] for s in (0, 1, 2)] == pytest.approx([0.01] * 3)
    assert [base[s] for s in range(3, 8)] == pytest.approx([0.002] * 5)


def test_each_validation_run_is_one_early_stopping_check_and_stops_fit(project_dir):
    # A tiny lr cannot improve val_loss by 0.1: check 1 sets the best, checks 2 and 3 do not improve.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=2,
                convergence_threshold=0.1)
    with Client() as prefs:
        record, mlprefs = EditAndRecord(prefs), MlprefsCallback(prefs)
        t = trainer(record, mlprefs, val_check_interval=0.5)  # two validations per 4-batch epoch
        t.fit(Regression())
    assert record.validations == 3
    assert t.global_step == 6
    assert mlprefs.stop_reason.startswith("early stopping")


def test_a_validation_mid_epoch_belongs_to_the_epoch_in_progress_for_warmup(project_dir):
    # warmup 1: the checks after steps 2 and 4 (epoch 1) do not count; the one after step 6 stops.
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=1,
                convergence_threshold=0.1, early_stopping_warmup=1)
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        t = trainer(mlprefs, val_check_interval=0.5)
        t.fit(Regression())
    assert t.global_step == 6
    assert mlprefs.stop_reason.startswith("early stopping")


def test_sanity_checks_and_validate_after_fit_are_not_checks(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        mlprefs, model = MlprefsCallback(prefs), Regression()
        t = trainer(mlprefs, max_epochs=2, num_sanity_val_steps=2)
        t.fit(model)
        t.validate(model, verbose=False)
    assert mlprefs.hooks.checks == 2


def test_without_a_validation_loop_the_check_uses_metrics_logged_in_training(project_dir):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=1e-6, early_stopping_patience=2,
                convergence_threshold=0.1, early_stopping_metric="train_loss")
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        t = trainer(mlprefs, limit_val_batches=0)
        t.fit(Regression())
    assert t.current_epoch == 3
    assert mlprefs.stop_reason.startswith("early stopping")


def test_max_iterations_counts_epochs_and_ends_fit(project_dir):
    write_prefs(project_dir / "mlprefs.toml", max_iterations=10, early_stopping_enabled=False)
    with Client() as prefs:
        mlprefs = MlprefsCallback(prefs)
        t = trainer(mlprefs, max_epochs=100)
        t.fit(Regression())
    assert t.current_epoch == 10
    assert "max_iterations" in mlprefs.stop_reason


def test_resuming_from_a_checkpoint_continues_the_same_run(project_dir, tmp_path):
    write_prefs(project_dir / "mlprefs.toml", learning_rate=0.01)
    with Client() as prefs:
        first = MlprefsCallback(prefs)
        t = trainer(first, max_epochs=1)
        t.fit(Regression())
        t.save_checkpoint(tmp_path / "last.ckpt")
        second = MlprefsCallback(prefs)
        trainer(second, max_epochs=2).fit(Regression(), ckpt_path=tmp_path / "last.ckpt")
    assert first.run_id is not None
    assert second.hooks.run_id == first.run_id


def test_importing_the_adapter_without_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.lightning")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[lightning\]"'):
        importlib.import_module("mlprefs_sdk.integrations.lightning")
