"""Values and errors of the model registry (registry.py), and its argument checks."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..errors import MlprefsError

PUBLIC = ("ModelVersion", "Move", "UpdateCheck", "ModelNotFoundError", "DuplicateVersionError",
          "InvalidModelError", "ModelStateError", "NoQualifyingModelError", "ModelLoadError")
__all__ = [*PUBLIC, "name_text", "version_text", "checked_metrics", "checked_tags", "json_text"]


class ModelNotFoundError(MlprefsError, KeyError):
    """No model of that name, or no such version of it, is registered."""

    def __init__(self, name: str, version: str | None = None, known: list[str] | None = None) -> None:
        self.name, self.version = name, version
        if version is None:
            msg = f"no model named {name!r} is registered"
        else:
            msg = f"model {name!r} has no version {version!r}"
            if known:
                shown = ", ".join(known[-10:])
                msg += f" (its versions: {'..., ' if len(known) > 10 else ''}{shown})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateVersionError(MlprefsError, ValueError):
    """That (name, version) is registered already; versions are immutable."""


class InvalidModelError(MlprefsError, ValueError):
    """A registration argument is malformed (framework, status, metrics, config, tags)."""


class ModelStateError(MlprefsError, RuntimeError):
    """The registry cannot do that in the model's current state (rollback, deprecate, promote)."""


class NoQualifyingModelError(MlprefsError, LookupError):
    """select() found no version that qualifies; `excluded` maps each candidate to why."""

    def __init__(self, message: str, excluded: Mapping[str, str]) -> None:
        self.excluded = dict(excluded)
        super().__init__(message)


class ModelLoadError(MlprefsError, RuntimeError):
    """load() tried every candidate and each failed; `failures` lists (version, exception)."""

    def __init__(self, name: str, failures: list[tuple[ModelVersion, BaseException]],
                 reason: str | None = None) -> None:
        self.name, self.failures = name, list(failures)
        lines = [f"{mv.uri}: {type(e).__name__}: {e}" for mv, e in self.failures]
        head = reason or f"could not load model {name!r}: all {len(lines)} candidate(s) failed"
        super().__init__("\n  ".join([head, *lines]))


@attrs.frozen
class ModelVersion:
    """One registered version. Its content never changes; only its status does."""

    name: str
    version: str
    framework: str
    status: str
    metrics: Mapping[str, float]
    config: Mapping[str, Any]
    tags: Mapping[str, str]
    source_uri: str | None
    description: str
    created_at: float
    created_by: str

    @property
    def uri(self) -> str:
        """MLflow-style reference, usable as an experiment arm: models:/<name>/<version>."""
        return f"models:/{self.name}/{self.version}"

    @classmethod
    def from_row(cls, row: tuple) -> ModelVersion:
        name, version, framework, status, metrics, config, tags, uri, desc, at, by = row
        return cls(name, version, framework, status, MappingProxyType(json.loads(metrics)),
                   MappingProxyType(json.loads(config)), MappingProxyType(json.loads(tags)),
                   uri, desc, at, by)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "framework": self.framework,
                "status": self.status, "metrics": dict(self.metrics), "config": dict(self.config),
                "tags": dict(self.tags), "source_uri": self.source_uri,
                "description": self.description, "created_at": self.created_at,
                "created_by": self.created_by, "uri": self.uri}


@attrs.frozen
class Move:
    """One recorded registry action: promote, replace, rollback (pointer moves) or deprecate."""

    id: int
    name: str
    kind: str
    from_version: str | None
    to_version: str | None
    at: float
    actor: str
    reason: str | None


@attrs.frozen
class UpdateCheck:
    """What ml.models.auto_update_policy says about a model right now."""

    name: str
    policy: str
    active: ModelVersion | None
    better: tuple[ModelVersion, ...]  # qualifying versions ranked above the active one, best first
    promoted: ModelVersion | None  # promoted by this call (automatic policy, or update())
    due: ModelVersion | None  # scheduled policy: what the next `mlprefs models update` promotes
    message: str

    def to_dict(self) -> dict[str, Any]:
        def ref(mv: ModelVersion | None) -> str | None:
            return None if mv is None else mv.version

        return {"name": self.name, "policy": self.policy, "active": ref(self.active),
                "better": [mv.version for mv in self.better], "promoted": ref(self.promoted),
                "due": ref(self.due), "message": self.message}


# -- argument checks -------------------------------------------------------------------
def name_text(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise InvalidModelError(f"model name must be a non-empty str without '/', got {name!r}")
    return name


def version_text(version: Any) -> str:
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise InvalidModelError(f"model version must be a str or int, got {version!r}")
    text = str(version)
    if not text.strip() or "/" in text:
        raise InvalidModelError(f"model version must be non-empty and without '/', got {version!r}")
    return text


def checked_metrics(name: str, version: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in dict(metrics).items():
        if (not isinstance(key, str) or isinstance(value, bool)
                or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise InvalidModelError(f"metric {key!r} = {value!r} of {name}/{version} must be a "
                                    "finite number")
        if key == "accuracy" and not 0.0 <= value <= 1.0:
            raise InvalidModelError(f"metric accuracy = {value!r} of {name}/{version} must be "
                                    "between 0 and 1")
        if key in ("latency_ms", "memory_mb") and value < 0:
            raise InvalidModelError(f"metric {key} = {value!r} of {name}/{version} must not be "
                                    "negative")
        out[key] = float(value)
    return out


def checked_tags(name: str, version: str, tags: Mapping[str, Any]) -> dict[str, str]:
    for key, value in dict(tags).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidModelError(f"tag {key!r} = {value!r} of {name}/{version} must map a "
                                    "str to a str")
    return dict(tags)


def json_text(name: str, version: str, what: str, value: Mapping[str, Any]) -> str:
    if not isinstance(value, Mapping):
        raise InvalidModelError(f"{what} of {name}/{version} must be a mapping, got "
                                f"{type(value).__name__}")
    try:
        return json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidModelError(f"{what} of {name}/{version} must be JSON-serialisable: {e}") from None
