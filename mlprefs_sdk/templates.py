"""Templates: named bundles of values. Built-in ones ship here; saved ones live in the store."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .catalog import InvalidValueError
from .errors import ValidationError
from .values import Problem, Source

if TYPE_CHECKING:
    from .handle import ClientHandle
    from .values import HistoryEntry

__all__ = ["BUILTIN_TEMPLATES", "Templates"]

BUILTIN_TEMPLATES: dict[str, dict[str, Any]] = {
    "quick-experiment": {
        "ml.features.experiment_tracking": True,
        "ml.training.max_iterations": 100,
        "ml.training.learning_rate": 0.01,
        "ml.training.early_stopping_patience": 3,
        "ml.feedback.learning_curve_enabled": True,
        "ml.models.versioning_enabled": False,
    },
    "production": {
        "ml.models.fallback_enabled": True,
        "ml.models.versioning_enabled": True,
        "ml.models.auto_update_policy": "manual",
        "ml.monitoring.accuracy_tracking": True,
        "ml.monitoring.latency_tracking": True,
        "ml.monitoring.drift_detection": True,
        "ml.monitoring.resource_alerts": True,
        "ml.data.privacy_mode": "strict",
        "ml.training.restore_best_weights": True,
    },
    "privacy-strict": {
        "ml.data.privacy_mode": "strict",
        "ml.data.anonymization_enabled": True,
        "ml.data.user_consent_required": True,
        "ml.data.opt_out_enabled": True,
        "ml.data.sharing_allowed": False,
        "ml.data.retention_days": 90,
        "ml.data.auto_cleanup_enabled": True,
    },
}


class Templates:
    """prefs.templates: list, show, save and apply templates."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client

    def _all(self) -> dict[str, dict[str, Any]]:
        return {**BUILTIN_TEMPLATES, **self._client.store.saved_templates()}

    def list(self) -> list[str]:
        return sorted(self._all())

    def show(self, name: str) -> dict[str, Any]:
        try:
            return dict(self._all()[name])
        except KeyError:
            raise KeyError(f"no template named {name!r}; known: {', '.join(self.list())}") from None

    def save(self, name: str, values: Mapping[str, Any]) -> None:
        """Validate every value against its key, then store the template."""
        if name in BUILTIN_TEMPLATES:
            raise ValueError(f"{name!r} is a built-in template; save under another name")
        catalog = self._client.catalog
        typed, problems = {}, []
        source = Source("template", detail=name)
        for key, value in values.items():
            try:
                typed[key] = catalog[key].check(value)
            except InvalidValueError as e:
                problems.append(Problem.for_value(key, e.value, source, e.reason, e.rule))
        if problems:
            raise ValidationError(problems)
        self._client.store.save_template(name, typed, self._client.user)

    def apply(self, name: str, scope: str | None = None) -> builtins.list[HistoryEntry]:
        """Write the template's values into a store scope (project when set, else user)."""
        values = self.show(name)
        scope = scope or ("project" if self._client.project else "user")
        return self._client.set_many(values, scope, reason=f"template {name}")
