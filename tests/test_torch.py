"""Plain PyTorch through prefs.training_hooks(): real optimizers and schedulers on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlprefs_sdk import Client

torch = pytest.importorskip("torch")


def write(text: str) -> None:
    Path("mlprefs.toml").write_text(text)


def data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=gen)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])


def model_and_optimizer(lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "weight_decay": 0.01},
                           {"params": [model.bias], "weight_decay": 0.0}], lr=lr)
    return model, opt


def train_step(model, opt, X, y):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(X), y)
    loss.backward()
    opt.step()
    return loss.item()


def test_the_preferred_lr_is_in_the_optimizer_before_the_first_step(home):
    write("[ml.training]\nlearning_rate = 0.03\n")
    model, opt = model_and_optimizer(lr=0.5)
    with Client() as prefs:
        prefs.training_hooks(optimizer=opt, model=model).on_train_start()
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.03]


def test_a_file_edit_mid_run_reaches_the_optimizer_at_the_next_step(home):
    write("[ml.training]\nlearning_rate = 0.05\n")
    model, opt = model_and_optimizer()
    X, y = data()
    seen = []
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        hooks.on_train_start()
        for step in range(6):
            seen.append(opt.param_groups[0]["lr"])
            train_step(model, opt, X, y)
            if step == 2:
                write("[ml.training]\nlearning_rate = 0.01\n")
                prefs.reload()
            hooks.on_step_end(step)
    assert seen == [0.05, 0.05, 0.05, 0.01, 0.01, 0.01]


def test_weight_decay_stays_zero_for_the_excluded_bias_group(home):
    write("[ml.training]\nregularization_l2 = 0.2\n")
    model, opt = model_and_optimizer()
    with Client() as prefs:
        prefs.training_hooks(optimizer=opt).on_train_start()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]


@pytest.mark.parametrize("make", [
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9 ** epoch),
    lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20),
], ids=["LambdaLR", "StepLR", "CosineAnnealingLR"])
def test_a_new_lr_survives_the_schedulers_next_step(home, make):
    """The schedule is rescaled: after the change the LR is what the schedule gives from 0.01."""
    write("[ml.training]\nlearning_rate = 0.1\n")
    model, opt = model_and_optimizer()
    sched = make(opt)
    reference_model, reference_opt = model_and_optimizer(lr=0.01)
    reference = make(reference_opt)
    X, y = data()
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt, scheduler=sched)
        hooks.on_train_start()
        for epoch in range(5):
            train_step(model, opt, X, y)
            hooks.on_step_end(0)
            sched.step()
            reference_opt.step()  # no gradients: a no-op that keeps the scheduler's order check happy
            reference.step()
            if epoch == 2:
                write("[ml.training]\nlearning_rate = 0.01\n")
                prefs.reload()
    assert sched.base_lrs == [0.01, 0.01]
    assert opt.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"])
    assert sched.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0])


def test_early_stopping_ends_the_loop(home):
    write("[ml.training]\nlearning_rate = 0.05\nearly_stopping_patience = 2\n"
          "convergence_threshold = 0.05\n")
    model, opt = model_and_optimizer()
    X, y = data()
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        hooks.on_train_start()
        epochs = 0
        for epoch in range(200):
            for step in range(4):
                loss = train_step(model, opt, X, y)
                hooks.on_step_end(step)
            epochs += 1
            hooks.on_epoch_end(epoch, {"val_loss": loss})
            if hooks.should_stop:
                break
        hooks.on_train_end()
    assert epochs < 200
    assert hooks.stop_reason.startswith("early stopping: val_loss")


def test_restore_best_weights_loads_the_best_state_dict(home):
    write("[ml.training]\nrestore_best_weights = true\n")
    model, opt = model_and_optimizer()
    with Client() as prefs:
        hooks = prefs.training_hooks(optimizer=opt, model=model)
        hooks.on_train_start()
        with torch.no_grad():
            model.weight.fill_(1.0)
        hooks.on_epoch_end(0, {"val_loss": 0.1})
        with torch.no_grad():
            model.weight.fill_(7.0)
        hooks.on_epoch_end(1, {"val_loss": 0.9})
        hooks.on_train_end()
    assert torch.all(model.weight == 1.0)
