"""MLflow bridges: preferences into the active run, and MLflow's model registry into mlprefs'.

Tracking (the `trackers` plugin calls it): at train start every resolved key becomes a run
param (its value then) and a tag `mlprefs.source.<key>` (where it came from); each change
applied mid-run becomes a metric `mlprefs/<key>` at the step it landed (numbers and bools;
a string's latest value and step go to the tag `mlprefs.value.<key>`). MLflow refuses to
change a param, so the params are the starting point and the metrics the live edits.

Registry: `import_registered_model` copies a registered model's versions (metrics from their
runs) into prefs.models and promotes the version holding alias ml.models.mlflow_alias;
`move_alias` points that alias at the version mlprefs made active (ml.models.mlflow_sync).

mlflow itself is imported only by these functions; the plugin calls them only when
`mlflow` is already in sys.modules, so a script that never imported it pays nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError
from ._require import require

if TYPE_CHECKING:
    from ..services.registry import ModelRegistry, ModelVersion

__all__ = [
    "TAG_SOURCE",
    "TAG_URI",
    "MlflowSink",
    "MlflowSyncError",
    "active_sink",
    "import_registered_model",
    "move_alias",
]

log = logging.getLogger(__name__)

ALIAS_KEY = "ml.models.mlflow_alias"
TAG_URI = "mlflow.tracking_uri"  # on imported versions: the registry to sync the alias with
TAG_SOURCE = "mlflow.registered_model"  # on imported versions: the MLflow model they came from
FLAVORS = {"sklearn": "sklearn", "pytorch": "pytorch", "tensorflow": "tensorflow",
           "keras": "tensorflow", "xgboost": "xgboost"}
MASK = "********"


class MlflowSyncError(MlprefsError, RuntimeError):
    """mlprefs moved a model's active version but could not move the MLflow alias to match."""

    def __init__(self, name: str, version: str, alias: str, cause: BaseException) -> None:
        self.name, self.version, self.alias = name, version, alias
        super().__init__(f"{name}/{version} is active in mlprefs, but moving MLflow alias "
                         f"{alias!r} to it failed ({type(cause).__name__}: {cause}); "
                         "ml.models.mlflow_sync is on: fix the MLflow connection and promote "
                         "again, or set ml.models.mlflow_sync = false")


def _mlflow() -> Any:
    return require("mlflow", "mlflow", "mlprefs_sdk.integrations.mlflow")


# -- tracking ------------------------------------------------------------------------------
class MlflowSink:
    """The MLflow run that was active when training started; every write names it by id."""

    name = "mlflow"

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        mlflow = _mlflow()
        self.run_id = run_id
        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self._entities = require("mlflow.entities", "mlflow", "mlprefs_sdk.integrations.mlflow")

    def start(self, entries: Iterable[tuple[str, Any, str, bool]], step: int = 0) -> None:
        """entries: (key, value, source, sensitive): params and source tags in one batch.

        MLflow refuses to change a param, so a run resumed into the same MLflow run keeps the
        params it has; a value that differs from its param is logged as a change at `step`.
        """
        E = self._entities
        logged = self._client.get_run(self.run_id).data.params
        params, tags, changed = [], [], []
        for key, value, source, sensitive in entries:
            text = MASK if sensitive else _text(value)
            if key not in logged:
                params.append(E.Param(key, text))
            elif logged[key] != text:
                changed.append((key, value, source, sensitive))
            tags.append(E.RunTag(f"mlprefs.source.{key}", source))
        self._client.log_batch(self.run_id, params=params, tags=tags)
        if changed:
            self.changes(changed, step)

    def changes(self, entries: Iterable[tuple[str, Any, str, bool]], step: int) -> None:
        """Each applied change at the step it landed; the source tag follows the edit."""
        E = self._entities
        now = int(time.time() * 1000)
        metrics, tags = [], []
        for key, value, source, sensitive in entries:
            tags.append(E.RunTag(f"mlprefs.source.{key}", source))
            if sensitive:
                continue
            if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                metrics.append(E.Metric(f"mlprefs/{key}", float(value), now, step))
            else:
                tags.append(E.RunTag(f"mlprefs.value.{key}", f"{_text(value)} (step {step})"))
        self._client.log_batch(self.run_id, metrics=metrics, tags=tags)


def active_sink() -> MlflowSink | None:
    """A sink for the active MLflow run, or None (also when mlflow was never imported)."""
    mlflow = sys.modules.get("mlflow")
    active_run = getattr(mlflow, "active_run", None)
    run = active_run() if active_run is not None else None
    if run is None:
        return None
    return MlflowSink(run.info.run_id, mlflow.get_tracking_uri())  # type: ignore[union-attr]


def _text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


# -- registry --------------------------------------------------------------------------------
def import_registered_model(models: ModelRegistry, prefs: Any, name: str,
                            tracking_uri: str | None = None) -> list[ModelVersion]:
    """Copy an MLflow registered model's versions into prefs.models; returns the new ones.

    Versions already in mlprefs are left as they are (versions are immutable), so importing
    again brings in only what MLflow registered since. The version holding alias
    ml.models.mlflow_alias is then promoted (no alias: the active version stays).
    """
    mlflow = _mlflow()
    from ..services.registry import DuplicateVersionError

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    alias = prefs.get(ALIAS_KEY)
    try:
        registered = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        from ..services.registry import ModelNotFoundError

        log.error("mlprefs: MLflow registry %s has no model %r: %s",
                  tracking_uri or mlflow.get_registry_uri(), name, e)
        raise ModelNotFoundError(name) from e
    escaped = name.replace("'", "\\'")
    found = sorted(client.search_model_versions(f"name = '{escaped}'"), key=lambda v: int(v.version))
    have = {mv.version for mv in models.list(name)}
    imported = []
    for mv in found:
        version = str(mv.version)
        if version in have:
            continue
        run = _run(client, mv.run_id)
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        tags[TAG_SOURCE] = name
        if tracking_uri is not None:
            tags[TAG_URI] = tracking_uri
        if mv.run_id:
            tags["mlflow.run_id"] = mv.run_id
        try:
            imported.append(models.register(
                name, version, framework=_framework(client, mv, run, prefs),
                metrics=_metrics(run), tags=tags, source_uri=mv.source,
                description=mv.description or ""))
        except DuplicateVersionError:  # registered by another process meanwhile: keep theirs
            log.info("mlprefs: %s/%s appeared in mlprefs during the import; kept as it is", name,
                     version)
    target = (registered.aliases or {}).get(alias)
    if target is None:
        log.info("mlprefs: MLflow model %r has no alias %r (%s); the active version is unchanged",
                 name, alias, ALIAS_KEY)
    else:
        current = next((mv for mv in models.list(name, status="active")), None)
        if current is None or current.version != str(target):
            models.promote(name, str(target), reason=f"MLflow alias {alias!r}")
    log.info("mlprefs: imported %d version(s) of MLflow model %r", len(imported), name)
    return imported


def move_alias(version: ModelVersion, alias: str) -> None:
    """Point the MLflow alias at this (imported) version in the registry it came from."""
    try:
        mlflow = _mlflow()
        client = mlflow.MlflowClient(tracking_uri=version.tags.get(TAG_URI),
                                     registry_uri=version.tags.get(TAG_URI))
        client.set_registered_model_alias(version.tags.get(TAG_SOURCE, version.name), alias,
                                          version.version)
    except Exception as e:  # MLflow's errors (REST, SQL, import) have no common base
        raise MlflowSyncError(version.name, version.version, alias, e) from e
    log.info("mlprefs: MLflow alias %r of %s now points at version %s", alias, version.name,
             version.version)


def _run(client: Any, run_id: str | None) -> Any:
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except Exception as e:  # a deleted run: import the version without its metrics
        log.warning("mlprefs: cannot read MLflow run %s (%s: %s); its version is imported "
                    "without metrics", run_id, type(e).__name__, e)
        return None


def _metrics(run: Any) -> dict[str, float]:
    if run is None:
        return {}
    out = {}
    for key, value in run.data.metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            if key == "accuracy" and not 0.0 <= value <= 1.0:
                log.warning("mlprefs: MLflow run %s metric accuracy = %r is not in [0, 1]; "
                            "left out", run.info.run_id, value)
                continue
            out[key] = float(value)
    return out


def _framework(client: Any, mv: Any, run: Any, prefs: Any) -> str | None:
    """A `framework` tag (version, then run), else the logged model's flavor, else None."""
    choices = prefs.spec("ml.models.default_framework").choices or ()
    for tags in (mv.tags or {}, run.data.tags if run is not None else {}):
        for key in ("framework", "mlprefs.framework"):
            if tags.get(key) in choices:
                return str(tags[key])
    for flavor in _flavors(client, mv):
        if FLAVORS.get(flavor) in choices:
            return FLAVORS[flavor]
    return None


def _flavors(client: Any, mv: Any) -> Iterable[str]:
    model_id = getattr(mv, "model_id", None)
    if not model_id:
        return ()
    try:
        flavors: Mapping[str, Any] = getattr(client.get_logged_model(model_id), "flavors", None) or {}
    except Exception as e:  # an older server without logged models: fall back to the default
        log.info("mlprefs: no flavors for MLflow model %s (%s: %s)", model_id, type(e).__name__, e)
        return ()
    return list(flavors)
