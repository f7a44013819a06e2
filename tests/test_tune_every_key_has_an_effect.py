"""Every key has an effect: some package code reads it, or its description says the user's
own code does; and regularization_l1 reaches torch loops, Lightning and Transformers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlprefs_sdk
from mlprefs_sdk import Client
from mlprefs_sdk.catalog import Catalog

PACKAGE = Path(mlprefs_sdk.__file__).parent
OWN_CODE = "your own code"  # what a description says when the user's code is the reader


def _names_in_code() -> tuple[set[str], list[str]]:
    """Attribute names and string constants of the package's code, docstrings left out."""
    attrs_, strings = set(), []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                           ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                attrs_.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings:
                strings.append(node.value)
    return attrs_, strings


def unread_keys(keys: list[str], catalog: Catalog) -> list[str]:
    """Keys that no code names (whole, or by the last segment it is read with) and whose
    description does not say the user's own code reads them."""
    attrs_, strings = _names_in_code()
    exact = set(strings)
    out = []
    for key in keys:
        name = key.rsplit(".", 1)[-1]
        read = (name in exact or name in attrs_ or any(key in s for s in strings))
        if not read and OWN_CODE not in catalog[key].description.lower():
            out.append(key)
    return out


def test_every_catalog_key_is_read_by_some_code_or_says_the_users_code_reads_it():
    catalog = Catalog.packaged()
    assert unread_keys(sorted(catalog), catalog) == []


def test_the_walk_finds_a_key_that_nothing_reads():
    catalog = Catalog.packaged().copy()
    catalog.register(catalog["ml.training.learning_rate"].__class__.build(
        "team.zz_unused_knob_q", float, 0.5, description="Nothing reads this."))
    assert unread_keys(["team.zz_unused_knob_q"], catalog) == ["team.zz_unused_knob_q"]


# -- regularization_l1 in torch ------------------------------------------------------------
torch = pytest.importorskip("torch")


def test_l1_penalty_is_l1_times_the_sum_of_absolute_weights(home):
    model = torch.nn.Linear(3, 2)
    with Client(overrides={"ml.training.regularization_l1": 0.1}) as prefs:
        hooks = prefs.training_hooks(model=model)
        hooks.on_train_start()
        penalty = hooks.l1_penalty()
    expected = 0.1 * sum(p.detach().abs().sum() for p in model.parameters())
    assert float(penalty.detach()) == pytest.approx(float(expected))
    assert penalty.requires_grad  # it is a loss term: backward reaches the weights


def test_l1_penalty_is_zero_when_regularization_l1_is_zero(home):
    with Client(overrides={"ml.training.regularization_l1": 0.0}) as prefs:
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        assert hooks.l1_penalty(torch.nn.Linear(3, 2)) == 0.0


def test_l1_penalty_follows_an_edit_at_the_next_step_boundary(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\nregularization_l1 = 0.1\n")
    model = torch.nn.Linear(2, 1)
    with Client() as prefs:
        hooks = prefs.training_hooks(model=model)
        hooks.on_train_start()
        before = float(hooks.l1_penalty().detach())
        (project_dir / "mlprefs.toml").write_text("[ml.training]\nregularization_l1 = 0.2\n")
        prefs.reload()
        mid_step = float(hooks.l1_penalty().detach())
        hooks.on_step_end(0)
        after = float(hooks.l1_penalty().detach())
    assert mid_step == before and after == pytest.approx(2 * before)


def _zero_loss_step_weights(l1: float, fit) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights before and after one SGD step (lr 0.5) on a loss whose own gradient is 0."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    before = model.weight.detach().clone()
    with Client(overrides={"ml.training.regularization_l1": l1,
                           "ml.training.early_stopping_enabled": False,
                           "ml.training.regularization_l2": 0.0,
                           "ml.training.learning_rate": 0.5}) as prefs:
        fit(prefs, model)
    return before, model.weight.detach().clone()


def test_lightning_adds_the_l1_gradient_before_each_optimizer_step(home):
    pl = pytest.importorskip("lightning.pytorch")
    from mlprefs_sdk.integrations.lightning import MlprefsCallback

    class ZeroLoss(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            return (self.net(batch[0]) * 0.0).sum()

        def train_dataloader(self):
            x = torch.ones(4, 4)
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(prefs, model):
        trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[MlprefsCallback(prefs)])
        trainer.fit(ZeroLoss(model))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and log intervals
        before, after = _zero_loss_step_weights(0.2, fit)
    assert torch.allclose(after, before - 0.5 * 0.2 * before.sign())


def test_transformers_adds_the_l1_gradient_before_each_optimizer_step(home, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from mlprefs_sdk.integrations.transformers import MlprefsCallback

    class ZeroLoss(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, labels=None):
            out = self.net(x)
            return {"loss": (out * 0.0).sum(), "logits": out}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.ones(4), "labels": torch.zeros(1)}

    def fit(prefs, model):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
            learning_rate=0.1, weight_decay=0.0, max_grad_norm=0.0, report_to=[],
            save_strategy="no", use_cpu=True, lr_scheduler_type="constant", optim="sgd")
        trainer = transformers.Trainer(model=ZeroLoss(model), args=args, train_dataset=Data(),
                                       callbacks=[MlprefsCallback(prefs)])
        trainer.train()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before, after = _zero_loss_step_weights(0.2, fit)
    assert torch.allclose(after, before - 0.5 * 0.2 * before.sign())
