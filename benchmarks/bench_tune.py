"""Automatic optimisation: what tuning finds, and what the SDK costs per trial.

Run: python benchmarks/bench_tune.py [--trials N]

1. Quality: prefs.tune() (TPE, median pruner, seed 0) tunes two real models from their
   defaults - the demo network (mlprefs_sdk.demo: numpy MLP on noisy spirals, driven by the
   training hooks) and a scikit-learn SGDRegressor (elastic net, through fit_incremental) -
   and reports the best objective (best val_loss of the run) against the default
   configuration's, measured in the same run.
2. Overhead (issue 13 target: under 5 ms per trial in-process): prefs.tune() against a bare
   Optuna objective doing the same work (the same loop, trial.report + should_prune each
   epoch), same sampler, pruner and seed, for an in-memory study and a SQLite study
   (tuning.db beside prefs.db for the SDK, the same kind of file for bare Optuna).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from _bench import isolate, print_table  # noqa: E402

from mlprefs_sdk import Client  # noqa: E402
from mlprefs_sdk.hookspecs import hookimpl  # noqa: E402

ON = {"ml.global.enabled": True, "ml.features.auto_optimization": True}
EPOCHS = 40  # max_iterations for every run, default or tuned: the budget is the same
TARGET_MS = 5.0


def client(home: str, store: str | None = None, **overrides: object) -> Client:
    os.makedirs(home, exist_ok=True)
    os.environ["MLPREFS_HOME"] = home
    return Client(store=store, overrides={**ON, "ml.training.max_iterations": EPOCHS, **overrides},
                  discover=False, env=False)


# -- the demo network -----------------------------------------------------------------------
def demo_train(prefs: Client) -> None:
    from mlprefs_sdk.demo import MomentumSGD, TinyNet, make_data

    rng = np.random.default_rng(0)
    X, y = make_data(rng)
    X_val, y_val = make_data(np.random.default_rng(1), 400)
    net = TinyNet(np.random.default_rng(2))
    opt = MomentumSGD([{"params": list(net.params.values()), "lr": 0.0, "weight_decay": 0.0}])
    hooks = prefs.training_hooks(optimizer=opt)
    hooks.on_train_start()
    batch = hooks.get("ml.performance.batch_size")
    for epoch in range(10_000):
        order = rng.permutation(len(X))
        for step, start in enumerate(range(0, len(X), batch)):
            idx = order[start:start + batch]
            opt.step(net.grads(X[idx], y[idx]))
            hooks.on_step_end(step)
        hooks.on_epoch_end(epoch, {"val_loss": net.loss(X_val, y_val)[0]})
        if hooks.should_stop:
            break
    hooks.on_train_end()


DEMO_SPACE = {
    "ml.training.learning_rate": {"low": 1e-3, "high": 1.0, "log": True},
    "ml.performance.batch_size": {"choices": [16, 32, 64, 128]},
    "ml.training.regularization_l2": {"low": 1e-6, "high": 1e-2, "log": True},
}


# -- scikit-learn SGD (elastic net) ------------------------------------------------------------
def sgd_data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 100))
    w = np.zeros(100)
    w[:5] = [3.0, -2.0, 1.5, 1.0, -0.5]  # 5 informative features of 100, few samples
    y = X @ w + rng.normal(0, 1.0, 1200)
    return X[:200], y[:200], X[200:], y[200:]


def sgd_train(prefs: Client) -> None:
    from sklearn.linear_model import SGDRegressor

    from mlprefs_sdk.integrations.sklearn import fit_incremental

    X, y, X_val, y_val = sgd_data()
    fit_incremental(SGDRegressor(learning_rate="constant", penalty="elasticnet", random_state=0),
                    X, y, prefs, X_val=X_val, y_val=y_val)


SGD_SPACE = {
    "ml.training.learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
    "ml.training.regularization_l1": {"low": 1e-5, "high": 0.5, "log": True},
    "ml.training.regularization_l2": {"low": 1e-5, "high": 0.5, "log": True},
}


def best_loss_of_default(root: str, name: str, train) -> float:
    """The default configuration's run, scored like a trial: its best val_loss."""
    with client(os.path.join(root, name)) as prefs:
        seen = []
        prefs.plugin_manager.register(_Spy(seen))
        train(prefs)
    return min(seen)


class _Spy:
    """Notes every check's val_loss (how a trial is scored when train returns None)."""

    def __init__(self, seen: list[float]) -> None:
        self.seen = seen

    @hookimpl
    def mlprefs_evaluate(self, metrics):
        self.seen.append(float(metrics["val_loss"]))


def quality(root: str, trials: int) -> list[tuple]:
    rows = []
    for name, train, space in (("demo network", demo_train, DEMO_SPACE),
                               ("sklearn SGD elastic net", sgd_train, SGD_SPACE)):
        default = best_loss_of_default(root, name + "-default", train)
        t = time.perf_counter()
        with client(os.path.join(root, name)) as prefs:
            result = prefs.tune(train, space=space, n_trials=trials, seed=0)
        took = time.perf_counter() - t
        states = [t.state for t in result.trials]
        print(f"{name}: default best val_loss {default:.4f}; tuned {result.best_value:.4f} in "
              f"{trials} trials ({states.count('pruned')} pruned, {states.count('failed')} failed, "
              f"{took:.1f} s); best values {dict(result.best_values)}")
        rows.append((f"{name}: best val_loss", f"{result.best_value:.4f}", "< default",
                     f"default config {default:.4f}", f"{result.best_value / default:.2f}x",
                     result.best_value < default))
    return rows


# -- overhead per trial -------------------------------------------------------------------
WORK_EPOCHS = 10
A = np.random.default_rng(0).normal(size=(64, 64))


def work(lr: float, epoch: int) -> float:
    """The same small computation in both: ~tens of microseconds per epoch."""
    return float(np.abs(A @ A[:, epoch % 64]).sum() * lr) + 1.0 / (epoch + 1)


def sdk_trial(prefs: Client) -> None:
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    lr = hooks.get("ml.training.learning_rate")
    for epoch in range(WORK_EPOCHS):
        hooks.on_epoch_end(epoch, {"val_loss": work(lr, epoch)})
        if hooks.should_stop:
            break
    hooks.on_train_end()


def bare_objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("ml.training.learning_rate", 1e-4, 0.1, log=True)
    best = float("inf")
    for epoch in range(WORK_EPOCHS):
        value = work(lr, epoch)
        best = min(best, value)
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


def bare_seconds(storage: object, name: str, n: int) -> float:
    study = optuna.create_study(storage=storage, study_name=name,
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner())
    t = time.perf_counter()
    study.optimize(bare_objective, n_trials=n)
    return time.perf_counter() - t


def overhead(root: str, n: int) -> list[tuple]:
    """SDK overhead = prefs.tune minus bare Optuna on the same kind of storage. For SQLite the
    same storage is tuning.db's settings (WAL, synchronous=NORMAL); Optuna's default SQLite
    settings (an fsync per report) are shown beside it."""
    from mlprefs_sdk.integrations.optuna import _storage

    rows = []
    space = {"ml.training.learning_rate": {"low": 1e-4, "high": 0.1, "log": True}}
    for kind in ("in-memory", "sqlite"):
        home = os.path.join(root, "overhead-" + kind)
        store = ":memory:" if kind == "in-memory" else os.path.join(home, "prefs.db")
        same = (lambda: None) if kind == "in-memory" else \
            (lambda: _storage("sqlite:///" + os.path.join(root, "bare-same.db")))
        sdk_s, bare_s, default_s, hooks_s = [], [], [], []
        for rep in range(3):  # best of 3: the machine is shared
            bare_s.append(bare_seconds(same(), f"bare{rep}", n))
            if kind == "sqlite":
                default_s.append(bare_seconds("sqlite:///" + os.path.join(root, "bare-default.db"),
                                              f"default{rep}", n))
            # Same work: the bare objective has no early stopping, so the SDK's is off here.
            with client(home, store, **{"ml.tuning.sampler": "random",
                                        "ml.training.early_stopping_enabled": False}) as prefs:
                t = time.perf_counter()
                prefs.tune(sdk_trial, space=space, n_trials=n, seed=0, study=f"sdk{rep}")
                sdk_s.append(time.perf_counter() - t)
                hooks_s.append(hooks_seconds(prefs, n))
        sdk_ms, bare_ms = min(sdk_s) / n * 1e3, min(bare_s) / n * 1e3
        hooks_ms = min(hooks_s) / n * 1e3
        extra = sdk_ms - bare_ms
        note = ""
        if default_s:
            default_ms = min(default_s) / n * 1e3
            note = f"; bare Optuna with its default SQLite settings {default_ms:.2f} ms/trial"
        print(f"{kind}: prefs.tune {sdk_ms:.2f} ms/trial, bare Optuna (same storage) "
              f"{bare_ms:.2f} ms/trial, SDK overhead {extra:.2f} ms/trial, of which the training "
              f"hooks' own run bookkeeping (outside tuning) {hooks_ms:.2f} ms{note} "
              f"({n} trials x {WORK_EPOCHS} epochs)")
        rows.append((f"overhead per trial ({kind} store + study)", f"{extra:.2f} ms",
                     f"< {TARGET_MS:g} ms", f"bare Optuna {bare_ms:.2f} ms/trial",
                     f"{sdk_ms / bare_ms:.2f}x", extra < TARGET_MS))
        rows.append((f"  of which hooks' run bookkeeping ({kind})", f"{hooks_ms:.2f} ms", "-",
                     "the same loop without hooks", "-", True))
        if default_s:
            rows.append(("prefs.tune vs Optuna's default SQLite", f"{sdk_ms:.2f} ms/trial", "-",
                         f"bare Optuna {default_ms:.2f} ms/trial", f"{sdk_ms / default_ms:.2f}x",
                         True))
    return rows


def hooks_seconds(prefs: Client, n: int) -> float:
    """n runs of the trial's loop through the hooks, minus the same loop without them: what
    the training hooks cost (run state saved at start, each epoch and end), tuning or not."""
    t = time.perf_counter()
    for _ in range(n):
        sdk_trial(prefs)
    with_hooks = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n):
        for epoch in range(WORK_EPOCHS):
            work(0.01, epoch)
    return max(with_hooks - (time.perf_counter() - t), 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per tuned model")
    parser.add_argument("--overhead-trials", type=int, default=100,
                        help="trials per overhead measurement")
    args = parser.parse_args()
    isolate()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlprefs_sdk").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as root:
        rows = quality(root, args.trials) + overhead(root, args.overhead_trials)
    return print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
