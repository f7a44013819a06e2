"""Differential privacy through Opacus (SPEC section 10): real torch, real Opacus, on the CPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from mlprefs_sdk import Client, DifferentialPrivacyError, PolicyError, ValidationError
from mlprefs_sdk.services.registry import InvalidModelError

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from mlprefs_sdk.integrations.opacus import accounting_for, make_private

# Opacus's per-sample hooks make torch say this on every backward pass of a first layer.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

DP = {"ml.data.dp_enabled": True, "ml.data.dp_target_epsilon": 2.0,
      "ml.training.early_stopping_enabled": False, "ml.training.learning_rate": 0.1}
MODERATE = {"ml.data.privacy_mode": "moderate", "ml.training.early_stopping_enabled": False}


def parts(n: int = 128, batch: int = 32):
    torch.manual_seed(0)
    X = torch.randn(n, 8)
    y = (X[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), loader


def train(hooks, model, opt, loader, epochs: int = 100, between=None) -> int:
    """The SPEC section 6 loop; between(epoch) runs after each epoch end. Returns epochs run."""
    hooks.on_train_start()
    done = 0
    for epoch in range(epochs):
        if hooks.should_stop:
            break
        for step, (xb, yb) in enumerate(loader):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            hooks.on_step_end(step)
        done += 1
        hooks.on_epoch_end(epoch, {"val_loss": loss.item()})
        if between is not None:
            between(epoch)
        if hooks.should_stop:
            break
    hooks.on_train_end()
    return done


def private(prefs, epochs: int = 3):
    model, opt, loader = parts()
    return make_private(prefs, model, opt, loader, epochs=epochs)


# -- the budget ---------------------------------------------------------------------------
def test_the_run_stops_after_the_planned_epochs_whatever_max_iterations_says(home):
    with Client(overrides={**DP, "ml.training.max_iterations": 1000}) as prefs:
        model, opt, loader = private(prefs, epochs=3)
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        assert train(hooks, model, opt, loader) == 3
    assert hooks.stop_reason.startswith("privacy budget: another epoch would take epsilon")
    assert "ml.data.dp_target_epsilon = 2" in hooks.stop_reason
    epsilon, delta = hooks.privacy_spent
    assert 1.0 < epsilon <= 2.0 and delta == 1e-5


def test_privacy_spent_is_what_the_opacus_accountant_reports(home):
    with Client(overrides=DP) as prefs:
        model, opt, loader = private(prefs)
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        spent = []
        train(hooks, model, opt, loader, epochs=2, between=lambda e: spent.append(hooks.privacy_spent))
        engine = accounting_for(opt).engine
        assert spent[-1] == (engine.get_epsilon(1e-5), 1e-5)
        assert 0 < spent[0][0] < spent[1][0]


def test_the_predicted_epsilon_of_the_next_epoch_is_what_it_then_spends(home):
    with Client(overrides=DP) as prefs:
        model, opt, loader = private(prefs, epochs=5)
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        accounting = accounting_for(opt)
        predicted, spent = [], []

        def look(epoch):
            spent.append(hooks.privacy_spent[0])
            predicted.append(accounting.epsilon_after(accounting.steps_per_epoch))
        train(hooks, model, opt, loader, epochs=3, between=look)
    assert predicted[:2] == pytest.approx(spent[1:], rel=1e-9)
    assert len(accounting.accountant.history) == 1  # the prediction left the accountant alone


def test_a_live_edit_can_tighten_the_budget_but_not_loosen_it(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.data]\ndp_target_epsilon = 2.0\n")
    overrides = {k: v for k, v in DP.items() if k != "ml.data.dp_target_epsilon"}
    with Client(overrides=overrides) as prefs:
        model, opt, loader = private(prefs, epochs=4)
        hooks = prefs.training_hooks(optimizer=opt, model=model)

        def edit(epoch):
            if epoch == 0:
                (project_dir / "mlprefs.toml").write_text("[ml.data]\ndp_target_epsilon = 50.0\n")
                prefs.reload()
        assert train(hooks, model, opt, loader, between=edit) == 4  # 50 does not extend it
        assert hooks.privacy_spent[0] <= 2.0

        model, opt, loader = private(prefs, epochs=4)  # sized for 50 now
        hooks = prefs.training_hooks(optimizer=opt, model=model)

        def tighten(epoch):
            if epoch == 0:
                budget = hooks.privacy_spent[0] * 1.5
                (project_dir / "mlprefs.toml").write_text(f"[ml.data]\ndp_target_epsilon = {budget}\n")
                prefs.reload()
        assert train(hooks, model, opt, loader, between=tighten) < 4
        assert "privacy budget" in hooks.stop_reason


def test_a_resumed_run_keeps_counting_the_epsilon_it_spent(home):
    with Client(overrides=DP) as prefs:
        model, opt, loader = private(prefs, epochs=3)
        first = prefs.training_hooks(optimizer=opt, model=model)
        train(first, model, opt, loader, epochs=2)  # the process "dies" after epoch 2
        before = first.privacy_spent[0]
    with Client(overrides=DP) as prefs:
        model, opt, loader = private(prefs, epochs=3)
        hooks = prefs.training_hooks(optimizer=opt, model=model, run_id=first.run_id)
        assert hooks.resumed
        assert train(hooks, model, opt, loader) == 1
        assert hooks.privacy_spent[0] > before
        assert "privacy budget" in hooks.stop_reason


def test_a_consent_revoked_mid_run_leaves_the_dp_loader_at_the_next_epoch(home):
    torch.manual_seed(0)
    X = torch.randn(240, 8)
    rows = [(X[i], torch.tensor(int(X[i, 0] > 0)), torch.tensor(i % 6)) for i in range(240)]
    with Client(overrides=DP) as prefs:
        for u in range(6):
            prefs.data.grant_consent(f"user-{u}")
        view = prefs.data.filter(rows, lambda row: f"user-{int(row[2])}")
        model = torch.nn.Sequential(torch.nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(view, batch_size=24)
        model, opt, loader = make_private(prefs, model, opt, loader, epochs=3)
        seen = []
        for epoch in range(3):
            users = set()
            for xb, yb, ub in loader:
                users.update(ub.tolist())
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
            seen.append(users)
            if epoch == 0:
                prefs.data.revoke_consent("user-0")
                prefs.data.opt_out("user-5")
    assert seen[0] == {0, 1, 2, 3, 4, 5}
    assert seen[1] == seen[2] == {1, 2, 3, 4}


# -- the registry -------------------------------------------------------------------------
def test_the_epsilon_spent_lands_in_a_version_registered_from_the_run_also_later(home):
    with Client(overrides=DP) as prefs:
        model, opt, loader = private(prefs)
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        train(hooks, model, opt, loader)
        epsilon = hooks.privacy_spent[0]
        version = prefs.models.register("churn", 1, "pytorch", metrics={"accuracy": 0.9},
                                        run_id=hooks.run_id)
        assert version.metrics == {"accuracy": 0.9, "dp_epsilon": epsilon}
    with Client() as later:
        version = later.models.register("churn", 2, "pytorch", run_id=hooks.run_id)
        assert version.metrics["dp_epsilon"] == epsilon
        assert version.tags["mlprefs.run_id"] == hooks.run_id


def test_a_run_without_dp_registers_no_dp_epsilon(home):
    with Client(overrides=MODERATE) as prefs:
        model, opt, loader = parts()
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        train(hooks, model, opt, loader, epochs=1)
        assert "dp_epsilon" not in prefs.models.register("m", 1, "pytorch", run_id=hooks.run_id).metrics


def test_an_unknown_run_id_is_refused_by_name(home):
    with Client() as prefs, pytest.raises(InvalidModelError, match="run_id 'nope' is not"):
        prefs.models.register("m", 1, "pytorch", run_id="nope")


# -- DP off and strict privacy --------------------------------------------------------------
def test_make_private_with_dp_off_under_strict_privacy_is_refused(home):
    with Client() as prefs, pytest.raises(PolicyError,
                                          match=r"ml.data.dp_enabled is false \(.*defaults.toml:"):
        private(prefs)


def test_make_private_with_dp_off_returns_the_objects_unchanged_and_no_budget(home, caplog):
    caplog.set_level(logging.WARNING)
    with Client(overrides=MODERATE) as prefs:
        model, opt, loader = parts()
        assert make_private(prefs, model, opt, loader, epochs=3) == (model, opt, loader)
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        train(hooks, model, opt, loader, epochs=1)
        assert hooks.privacy_spent is None
    assert "training WITHOUT differential privacy" in caplog.text


def test_dp_enabled_without_a_private_optimizer_warns_at_train_start(home, caplog):
    caplog.set_level(logging.WARNING)
    with Client(overrides=DP) as prefs:
        model, opt, _ = parts()
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        hooks.on_train_start()
        assert hooks.privacy_spent is None
    assert "has no differential-privacy guarantee" in caplog.text


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("ml.data.dp_target_epsilon", 0.0),
                                       ("ml.data.dp_delta", 0.0), ("ml.data.dp_delta", 0.5),
                                       ("ml.data.dp_max_grad_norm", -1.0)])
def test_dp_keys_out_of_range_are_refused_naming_the_key(home, key, value):
    with Client() as prefs, pytest.raises(ValidationError, match=key.replace(".", r"\.")):
        prefs.set(key, value)


@pytest.mark.parametrize("epochs", [0, 2.5, True])
def test_make_private_needs_a_whole_number_of_epochs(home, epochs):
    with Client(overrides=DP) as prefs, pytest.raises(DifferentialPrivacyError, match="epochs"):
        private(prefs, epochs=epochs)


def test_make_private_needs_a_loader_with_batches(home):
    model, opt, loader = parts()
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.empty(0, 8)))
    with Client(overrides=DP) as prefs:
        with pytest.raises(DifferentialPrivacyError, match="a length"):
            make_private(prefs, model, opt, (batch for batch in loader), epochs=1)
        with pytest.raises(DifferentialPrivacyError, match=r"empty \(0 batches\)"):
            make_private(prefs, model, opt, empty, epochs=1)


def test_without_opacus_make_private_says_which_extra_to_install(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus", None)
    with Client(overrides=DP) as prefs, pytest.raises(ImportError, match=r"mlprefs-sdk\[dp\]"):
        private(prefs)


def test_the_budget_plugin_imports_neither_opacus_nor_torch(home):
    code = ("import sys\n"
            "from mlprefs_sdk import Client\n"
            "with Client(overrides={'ml.data.dp_enabled': True}) as prefs:\n"
            "    assert 'privacy_budget' in dict(prefs.plugin_manager.list_name_plugin())\n"
            "    hooks = prefs.training_hooks(optimizer=None)\n"
            "    hooks.on_train_start(); hooks.on_epoch_end(0); hooks.on_train_end()\n"
            "    assert hooks.privacy_spent is None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'opacus')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, env={**os.environ}).stdout
    assert out.strip() == "[]"
