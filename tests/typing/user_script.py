"""A user's training script over the public API (SPEC sections 4, 6, 7), checked with
`mypy --strict` by tests/test_typing.py - and run by it too, so it is also correct.

Only Client.get (and section(), whose fields depend on the catalog) may give Any: everything
else a script touches is typed, so mypy catches a misspelt method or a wrong argument.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, assert_type

import attrs

from mlprefs_sdk import (
    ChangeSet,
    Client,
    Explanation,
    HistoryEntry,
    KeySpec,
    MlprefsError,
    Subscription,
)
from mlprefs_sdk.services.curves import Curves
from mlprefs_sdk.services.drift import DriftResult
from mlprefs_sdk.services.experiments import Experiments
from mlprefs_sdk.services.feedback import Feedback
from mlprefs_sdk.services.monitor import Alert, Monitor
from mlprefs_sdk.services.privacy import DataPrivacy
from mlprefs_sdk.services.registry import ModelRegistry, ModelVersion
from mlprefs_sdk.training import TrainingHooks

LR = "ml.training.learning_rate"
BATCH = "ml.performance.batch_size"


@attrs.frozen
class TrainingConfig:
    learning_rate: float
    max_iterations: int
    early_stopping_enabled: bool = True


@dataclasses.dataclass(frozen=True)
class PerformanceConfig:
    batch_size: int
    parallel_workers: int = 1


class LinearModel:
    """A one-weight model trained by plain gradient descent: no framework needed."""

    def __init__(self) -> None:
        self.weight = 0.0

    def step(self, x: float, y: float, lr: float) -> float:
        error = self.weight * x - y
        self.weight -= lr * 2 * error * x
        return error * error


def on_change(changes: ChangeSet) -> None:
    for change in changes:
        print(f"{change.key}: {change.old!r} -> {change.new!r} ({change.source})")


def on_error(error: MlprefsError) -> None:
    print(f"rejected: {error}")


def on_alert(alert: Alert) -> None:
    print(f"alert [{alert.kind}] {alert}")


def train(prefs: Client, data: list[tuple[float, float]]) -> tuple[LinearModel, TrainingHooks]:
    model = LinearModel()
    hooks: TrainingHooks = prefs.training_hooks(model=model)
    hooks.add_applier(lambda values: None)  # no param_groups: the loop reads the LR itself
    hooks.on_train_start()
    for epoch in range(50):
        total = 0.0
        for step, (x, y) in enumerate(data):
            lr: float = hooks.get(LR)
            total += model.step(x, y, lr)
            hooks.on_step_end(step)
        hooks.on_epoch_end(epoch, {"val_loss": total / len(data)})
        if hooks.should_stop:
            print(f"stopped: {hooks.stop_reason}")
            break
    hooks.on_train_end()
    return model, hooks


def main() -> int:
    rng = random.Random(0)
    data = [(x, 3.0 * x + rng.gauss(0, 0.01)) for x in (rng.random() for _ in range(32))]
    with Client(project="typing-demo", overrides={
        "ml.global.enabled": True,
        "ml.features.experiment_tracking": True,
        "ml.experiments.ab_testing_enabled": True,
        "ml.data.user_consent_required": False,
        "ml.data.privacy_mode": "permissive",
    }) as prefs:
        # The types mypy must see (a service typed Any would let any typo through).
        assert_type(prefs.get(LR), Any)
        assert_type(prefs.training_hooks(), TrainingHooks)
        assert_type(prefs.models, ModelRegistry)
        assert_type(prefs.experiments, Experiments)
        assert_type(prefs.monitor, Monitor)
        assert_type(prefs.feedback, Feedback)
        assert_type(prefs.data, DataPrivacy)
        assert_type(prefs.curves, Curves)
        assert_type(prefs.load(TrainingConfig, prefix="ml.training"), TrainingConfig)

        # -- section 4: reading, explaining, writing ------------------------------------
        lr: float = prefs.get(LR)
        advanced: bool = prefs.enabled("ml.features.advanced_enabled")
        why: Explanation = prefs.explain(LR)
        print(f"lr = {lr} from {why.source} (locked: {why.locked}); advanced: {advanced}")
        snapshot = prefs.snapshot()
        print(f"{len(snapshot)} keys; batch {snapshot[BATCH]}; {prefs.section('ml.training')}")
        training = prefs.load(TrainingConfig, prefix="ml.training")
        performance = prefs.load(PerformanceConfig, prefix="ml.performance")
        print(training.learning_rate * performance.batch_size)

        sub: Subscription = prefs.on_change("ml.training.*", on_change)
        stop_errors = prefs.on_error(on_error)
        entry: HistoryEntry = prefs.set(BATCH, 64, scope="project", reason="fits the GPU")
        prefs.set(BATCH, 128, scope="project")
        history: list[HistoryEntry] = prefs.history(BATCH, limit=10)
        prefs.rollback(BATCH, scope="project", to=entry.id)
        assert prefs.get(BATCH) == 64 and len(history) >= 2
        with prefs.override({LR: 0.05}):
            assert prefs.get(LR) == 0.05
        spec: KeySpec = prefs.register("team.eval.every_n_steps", int, 500, min=1,
                                       description="evaluate every n steps")
        print(spec.key, prefs.apply_pending())

        # -- section 6: the training loop ---------------------------------------------------
        model, hooks = train(prefs, data)
        print(f"run {hooks.run_id}: weight {model.weight:.2f} after {hooks.iteration} epochs")

        # -- section 7: services on the same store ------------------------------------------
        version: ModelVersion = prefs.models.register(
            "linear", 1, "sklearn", metrics={"accuracy": 0.93, "latency_ms": 2.0})
        prefs.models.register("linear", 2, metrics={"accuracy": 0.95, "latency_ms": 3.0})
        prefs.models.promote("linear", version.version)
        prefs.models.promote("linear", 2)
        back: ModelVersion = prefs.models.rollback("linear")
        best: ModelVersion = prefs.models.select("linear")
        loaded: float = prefs.models.load("linear", lambda mv: float(mv.metrics["accuracy"]))
        print(back.version, best.version, loaded, prefs.models.check_updates("linear").message)

        prefs.experiments.create("lr-test", "small", "large", metric="mean")
        for unit in range(20):
            arm: str = prefs.experiments.assign("lr-test", unit)
            prefs.experiments.record("lr-test", unit, 1.0 if arm == "treatment" else 0.5)
        analysis = prefs.experiments.analyze("lr-test")
        print(analysis.effect, analysis.significant)

        stop_alerts = prefs.on_alert(on_alert)
        prefs.monitor.record("linear", "1", accuracy=0.5, latency_ms=5.0)
        drift: DriftResult = prefs.monitor.drift([0.1 * i for i in range(100)],
                                                 [0.1 * i + 3 for i in range(100)])
        alerts: list[Alert] = prefs.monitor.check()
        print(drift.drifted, [str(a) for a in alerts])

        prefs.data.grant_consent("user-1")
        feedback_ok: Any = prefs.feedback.record("user-1", "linear", "1", 1, 0)
        needed: bool = prefs.feedback.retrain_needed("linear")
        allowed: bool = prefs.data.may_train_on("user-1")
        print(feedback_ok, needed, allowed, prefs.data.policy.privacy_mode,
              prefs.data.pseudonym("user-1")[:8], sorted(prefs.data.export("user-1")))
        prefs.curves.log(hooks.run_id, 0, val_loss=0.5)
        print(prefs.curves.get(hooks.run_id)["val_loss"][-1])

        sub.cancel()
        stop_errors()
        stop_alerts()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
