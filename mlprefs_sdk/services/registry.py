"""The model registry: MLflow's registry concepts, kept in the preference store.

A model is a name with immutable versions. One version per model is active (it serves); every
move of that pointer is recorded with who, when, from and to, so rollback() can walk it back.
select() ranks versions by the ml.models.* and ml.performance.* preferences, load() falls back
through earlier and ranked versions, and check_updates() applies ml.models.auto_update_policy.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._model_values import (
    PUBLIC,
    DuplicateVersionError,
    InvalidModelError,
    ModelLoadError,
    ModelNotFoundError,
    ModelStateError,
    ModelVersion,
    Move,
    NoQualifyingModelError,
    UpdateCheck,
    checked_metrics,
    checked_tags,
    json_text,
    name_text,
    version_text,
)

if TYPE_CHECKING:
    from ..handle import ClientHandle

# Spelled out (not *PUBLIC): type checkers read __all__ literally to see what is re-exported.
__all__ = ["ModelRegistry", "ModelVersion", "Move", "UpdateCheck", "ModelNotFoundError",
           "DuplicateVersionError", "InvalidModelError", "ModelStateError",
           "NoQualifyingModelError", "ModelLoadError"]
assert set(__all__) == {"ModelRegistry", *PUBLIC}

log = logging.getLogger(__name__)

T = TypeVar("T")
STATUSES = ("active", "experimental", "deprecated")
POINTER_KINDS = ("promote", "replace", "rollback")  # the moves that change the active version
_COLUMNS = ("name, version, framework, status, metrics, config, tags, source_uri, description, "
            "created_at, created_by")
_SHOWN_EXCLUSIONS = 20


class ModelRegistry:
    """prefs.models: register, promote, deprecate, roll back, select and load model versions."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client
        self._store = client.store

    # -- reading -------------------------------------------------------------------
    def get(self, name: str, version: str | int | None = None) -> ModelVersion:
        """A version of a model; version None means the active one."""
        if version is None:
            rows = self._store.query(f"SELECT {_COLUMNS} FROM model_versions "
                                     "WHERE name = ? AND status = 'active'", (name,))
            if not rows:
                self._require(name)
                raise ModelStateError(f"model {name!r} has no active version; promote one with "
                                      f"prefs.models.promote({name!r}, version)")
            return ModelVersion.from_row(rows[0])
        version = version_text(version)
        rows = self._store.query(f"SELECT {_COLUMNS} FROM model_versions "
                                 "WHERE name = ? AND version = ?", (name, version))
        if not rows:
            raise self._not_found(name, version)
        return ModelVersion.from_row(rows[0])

    def list(self, name: str | None = None, framework: str | None = None,
             status: str | None = None) -> list[ModelVersion]:
        """Versions in registration order, filtered by any of name, framework and status."""
        where, params = [], []
        for col, val in (("name", name), ("framework", framework), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = (f"SELECT {_COLUMNS} FROM model_versions"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY name, id")
        return [ModelVersion.from_row(r) for r in self._store.query(sql, params)]

    def names(self) -> builtins.list[str]:
        return [r[0] for r in self._store.query("SELECT DISTINCT name FROM model_versions "
                                                "ORDER BY name")]

    def moves(self, name: str, limit: int = 100) -> builtins.list[Move]:
        """The model's recorded actions, newest first."""
        rows = self._store.query("SELECT id, name, kind, from_version, to_version, at, actor, "
                                 "reason FROM model_moves WHERE name = ? ORDER BY id DESC LIMIT ?",
                                 (name, limit))
        return [Move(*r) for r in rows]

    # -- writing -------------------------------------------------------------------
    def register(self, name: str, version: str | int, framework: str | None = None,
                 status: str = "experimental", metrics: Mapping[str, float] | None = None,
                 config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                 source_uri: str | None = None, description: str = "",
                 run_id: str | None = None) -> ModelVersion:
        """Add an immutable version (framework defaults to ml.models.default_framework).

        run_id (hooks.run_id) ties it to a stored training run: tag mlprefs.run_id, and the
        run's privacy budget spent as metric dp_epsilon when it trained with DP-SGD.

        status="active" also promotes it. With ml.models.versioning_enabled off a model keeps
        one version: registering another replaces it (and takes over the active pointer).
        """
        name, version = name_text(name), version_text(version)
        choices = self._client.spec("ml.models.default_framework").choices or ()
        if framework is None:
            framework = self._client.get("ml.models.default_framework")
        if framework not in choices:
            raise InvalidModelError(f"framework {framework!r} of {name}/{version} is not one of "
                                    f"ml.models.default_framework's choices: {', '.join(choices)}")
        if status not in STATUSES:
            raise InvalidModelError(f"status {status!r} of {name}/{version} is not one of "
                                    f"{', '.join(STATUSES)}")
        if run_id is not None:  # a stored run: tag mlprefs.run_id, dp_epsilon if it used DP
            from ..plugins.privacy_budget import with_run

            metrics, tags = with_run(self._store, run_id, metrics, tags, f"{name}/{version}")
        metric_values = checked_metrics(name, version, metrics or {})
        config_text = json_text(name, version, "config", config or {})
        tags_text = json_text(name, version, "tags", checked_tags(name, version, tags or {}))
        versioning = self._client.get("ml.models.versioning_enabled")
        now, actor = time.time(), self._client.user
        with self._store.transaction() as db:
            existing = db.execute("SELECT version, status FROM model_versions WHERE name = ?",
                                  (name,)).fetchall()
            if any(v == version for v, _ in existing):
                raise DuplicateVersionError(f"{name}/{version} is already registered; versions "
                                            "are immutable, so register a new version")
            active = next((v for v, s in existing if s == "active"), None)
            kind, reason = "promote", "registered as active"
            if existing and not versioning:
                db.execute("DELETE FROM model_versions WHERE name = ?", (name,))
                kind = "replace"
                reason = (f"replaced {', '.join(v for v, _ in existing)} "
                          "(ml.models.versioning_enabled = false)")
                if active is not None and status != "deprecated":
                    status = "active"
            elif status == "active" and active is not None:
                db.execute("UPDATE model_versions SET status = 'experimental' "
                           "WHERE name = ? AND status = 'active'", (name,))
            db.execute(
                f"INSERT INTO model_versions ({_COLUMNS}, accuracy, latency_ms, memory_mb) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, framework, status, json.dumps(metric_values), config_text,
                 tags_text, source_uri, description, now, actor, metric_values.get("accuracy"),
                 metric_values.get("latency_ms"), metric_values.get("memory_mb")))
            if status == "active" or (kind == "replace" and active is not None):
                to = version if status == "active" else None
                _record(db, name, kind, active, to, now, actor, reason)
        log.info("mlprefs: registered %s/%s (%s, %s) by %s", name, version, framework, status, actor)
        return self.get(name, version)

    def promote(self, name: str, version: str | int, reason: str | None = None) -> ModelVersion:
        """Make a version active; the previous active one becomes its rollback target."""
        version = version_text(version)
        with self._editing(name, version) as (db, statuses, now, actor):
            if statuses[version] == "deprecated":
                raise ModelStateError(f"{name}/{version} is deprecated and cannot serve; "
                                      "register a new version instead")
            if statuses[version] != "active":
                current = _active(statuses)
                _move_pointer(db, name, current, version)
                _record(db, name, "promote", current, version, now, actor, reason)
                log.info("mlprefs: %s active version %s -> %s by %s", name, current, version, actor)
        return self._synced(self.get(name, version))

    def deprecate(self, name: str, version: str | int, reason: str | None = None) -> ModelVersion:
        """Retire a version: never selected, loaded as a fallback, or rolled back to."""
        version = version_text(version)
        with self._editing(name, version) as (db, statuses, now, actor):
            if statuses[version] == "active":
                raise ModelStateError(f"{name}/{version} is the active version; promote another "
                                      f"or roll back (prefs.models.rollback({name!r})) first")
            if statuses[version] != "deprecated":
                db.execute("UPDATE model_versions SET status = 'deprecated' "
                           "WHERE name = ? AND version = ?", (name, version))
                _record(db, name, "deprecate", version, None, now, actor, reason)
        return self.get(name, version)

    @contextlib.contextmanager
    def _editing(self, name: str, version: str) -> Iterator[tuple[Any, dict[str, str], float, str]]:
        """A write transaction on an existing version: (db, statuses of the model, now, actor)."""
        with self._store.transaction() as db:
            statuses = _statuses(db, name)
            if version not in statuses:
                raise self._not_found(name, version, statuses)
            yield db, statuses, time.time(), self._client.user

    def rollback(self, name: str, reason: str | None = None) -> ModelVersion:
        """Re-point the model to the version that was active before the current one."""
        if not self._client.get("ml.models.versioning_enabled"):
            raise ModelStateError(f"cannot roll back {name!r}: versioning is off "
                                  "(ml.models.versioning_enabled = false), so a model keeps one "
                                  "version and there is no earlier one")
        now, actor = time.time(), self._client.user
        with self._store.transaction() as db:
            statuses = _statuses(db, name)
            if not statuses:
                raise ModelNotFoundError(name)
            current = _active(statuses)
            if current is None:
                raise ModelStateError(f"model {name!r} has no active version to roll back from")
            earlier = [v for v in reversed(_pointer_stack(db, name)) if v != current
                       and statuses.get(v, "deprecated") != "deprecated"]
            if not earlier:
                raise ModelStateError(f"model {name!r} has no earlier active version to roll "
                                      f"back to (active: {current})")
            target = earlier[0]
            _move_pointer(db, name, current, target)
            _record(db, name, "rollback", current, target, now, actor, reason)
        log.info("mlprefs: %s rolled back %s -> %s by %s", name, current, target, actor)
        return self._synced(self.get(name, target))

    # -- MLflow's registry (integrations/mlflow.py) ------------------------------------
    def import_mlflow(self, name: str, tracking_uri: str | None = None) -> builtins.list[ModelVersion]:
        """Bring in an MLflow registered model's versions; its ml.models.mlflow_alias version
        becomes active. Returns the versions that were new."""
        from ..integrations.mlflow import import_registered_model

        return import_registered_model(self, self._client, name, tracking_uri)

    def _synced(self, mv: ModelVersion) -> ModelVersion:
        """With ml.models.mlflow_sync on, an imported model's MLflow alias follows the move."""
        if self._client.get("ml.models.mlflow_sync") and "mlflow.registered_model" in mv.tags:
            from ..integrations.mlflow import move_alias

            move_alias(mv, self._client.get("ml.models.mlflow_alias"))
        return mv

    # -- choosing ------------------------------------------------------------------
    def select(self, name: str | None = None) -> ModelVersion:
        """The best qualifying version by ml.models.selection_criteria (see docs/registry-experiments.md).

        Qualifying: not deprecated, accuracy >= ml.performance.accuracy_threshold, and the
        metric the criterion ranks by is present. Ties go to the most recently registered.
        """
        ranked = self.ranked(name, limit=1)
        if ranked:
            return ranked[0]
        raise self._nothing_qualifies(name)

    def ranked(self, name: str | None = None, limit: int | None = None) -> builtins.list[ModelVersion]:
        """Qualifying versions in select() order (best first)."""
        if name is not None:
            self._require(name)
        get = self._client.get
        criteria = get("ml.models.selection_criteria")
        where = ["status <> 'deprecated'", "accuracy IS NOT NULL", "accuracy >= ?"]
        params: list[Any] = [get("ml.performance.accuracy_threshold")]
        if name is not None:
            where.insert(0, "name = ?")
            params.insert(0, name)
        order, order_params = "accuracy DESC, id DESC", []
        if criteria == "speed":
            where.append("latency_ms IS NOT NULL")
            order = "latency_ms ASC, accuracy DESC, id DESC"
        elif criteria == "memory":
            where.append("memory_mb IS NOT NULL")
            order = "memory_mb ASC, accuracy DESC, id DESC"
        elif criteria == "balanced":
            cond = " AND ".join(where)
            lo_a, hi_a, lo_l, hi_l = self._store.query(
                "SELECT MIN(accuracy), MAX(accuracy), MIN(latency_ms), MAX(latency_ms) "
                f"FROM model_versions WHERE {cond}", params)[0]
            if lo_a is None:
                return []
            p = get("ml.performance.speed_priority")
            # score = (1 - p) * accuracy scaled to [0, 1] + p * speed scaled to [0, 1]
            order = ("(1.0 - ?) * (accuracy - ?) / ? + ? * COALESCE((? - latency_ms) / ?, 0.0) "
                     "DESC, accuracy DESC, id DESC")
            order_params = [p, lo_a, (hi_a - lo_a) or 1.0, p, hi_l,
                            (hi_l - lo_l) if hi_l is not None and hi_l > lo_l else 1.0]
        cond = " AND ".join(where)
        if limit is None:
            return [ModelVersion.from_row(r) for r in self._store.query(
                f"SELECT {_COLUMNS} FROM model_versions WHERE {cond} ORDER BY {order}",
                params + order_params)]
        # The best few: rank ids only (every column the ranking reads is in the index
        # model_versions_rank, so no table row is read), then fetch those rows.
        ids = [r[0] for r in self._store.query(
            f"SELECT id FROM model_versions WHERE {cond} ORDER BY {order} LIMIT ?",
            params + order_params + [limit])]
        rows = {r[0]: r[1:] for r in self._store.query(
            f"SELECT id, {_COLUMNS} FROM model_versions WHERE id IN ({', '.join('?' * len(ids))})",
            ids)} if ids else {}
        return [ModelVersion.from_row(rows[i]) for i in ids]

    def load(self, name: str, loader: Callable[[ModelVersion], T]) -> T:
        """loader(version) for the active version; on failure (ml.models.fallback_enabled) the
        earlier active versions newest first, then the other qualifying ones in select() order."""
        versions = {mv.version: mv for mv in self.list(name)}
        if not versions:
            raise ModelNotFoundError(name)
        order = [mv for mv in versions.values() if mv.status == "active"]
        fallback = self._client.get("ml.models.fallback_enabled")
        if fallback:
            stack = _replay(self._store.query(_STACK_SQL, (name,)))
            order += [versions[v] for v in reversed(stack)
                      if v in versions and versions[v].status != "deprecated"]
            order += self.ranked(name)
        seen: set[str] = set()
        candidates: list[ModelVersion] = []
        for mv in order:  # each version once, where it first appears
            if mv.version not in seen:
                seen.add(mv.version)
                candidates.append(mv)
        if not candidates:
            why = ("ml.models.fallback_enabled is false" if not fallback
                   else "no earlier active or qualifying version exists")
            raise ModelLoadError(name, [], f"model {name!r} has no active version and {why}")
        failures: list[tuple[ModelVersion, BaseException]] = []
        for i, mv in enumerate(candidates):
            try:
                model = loader(mv)
            except Exception as e:  # the loader is user code: record the cause, try the next
                more = "; falling back to the next candidate" if i + 1 < len(candidates) else ""
                log.warning("mlprefs: loading %s failed: %s: %s%s", mv.uri, type(e).__name__, e, more)
                failures.append((mv, e))
                continue
            if failures:
                log.warning("mlprefs: serving %s after %d failed candidate(s)", mv.uri, len(failures))
            return model
        raise ModelLoadError(name, failures) from failures[-1][1]

    def check_updates(self, name: str) -> UpdateCheck:
        """Apply ml.models.auto_update_policy: disabled, manual (report), automatic (promote
        the best better version), scheduled (report it as due for `mlprefs models update`)."""
        return self._update(name, perform=False)

    def update(self, name: str | None = None) -> builtins.list[UpdateCheck]:
        """Perform due promotions (automatic or scheduled policy) for one model or all."""
        names = [name] if name is not None else self.names()
        return [self._update(n, perform=True) for n in names]

    def _update(self, name: str, perform: bool) -> UpdateCheck:
        policy = self._client.get("ml.models.auto_update_policy")
        self._require(name)
        active_rows = self.list(name, status="active")
        active = active_rows[0] if active_rows else None
        if policy == "disabled":
            return UpdateCheck(name, policy, active, (), None, None,
                               "ml.models.auto_update_policy is disabled: nothing checked")
        ranked = self.ranked(name)
        at = next((i for i, mv in enumerate(ranked) if active and mv.version == active.version),
                  len(ranked))
        better = tuple(ranked[:at])
        criteria = self._client.get("ml.models.selection_criteria")
        if not better:
            return UpdateCheck(name, policy, active, (), None, None,
                               f"{name}: no qualifying version ranks above the active "
                               f"{active.version if active else '(none)'} by {criteria}")
        best = better[0]
        was = active.version if active else "(none)"
        if policy == "automatic" or (policy == "scheduled" and perform):
            promoted = self.promote(name, best.version,
                                    reason=f"auto-update ({policy} policy): ranks above {was} "
                                           f"by {criteria}")
            return UpdateCheck(name, policy, active, better, promoted, None,
                               f"{name}: promoted {best.version} (was {was}) by {criteria}")
        if policy == "scheduled":
            return UpdateCheck(name, policy, active, better, None, best,
                               f"{name}: promoting {best.version} (now {was}) is due; "
                               "`mlprefs models update` performs it")
        return UpdateCheck(name, policy, active, better, None, None,
                           f"{name}: {', '.join(mv.version for mv in better)} rank above {was} "
                           f"by {criteria}; promote with `mlprefs models promote {name} "
                           f"{best.version}`")

    # -- helpers -----------------------------------------------------------------
    def _require(self, name: str) -> None:
        if not self._store.query("SELECT 1 FROM model_versions WHERE name = ? LIMIT 1", (name,)):
            raise ModelNotFoundError(name)

    def _not_found(self, name: str, version: str,
                   statuses: Mapping[str, str] | None = None) -> ModelNotFoundError:
        if statuses is None:
            statuses = dict(self._store.query("SELECT version, status FROM model_versions "
                                              "WHERE name = ? ORDER BY id", (name,)))
        if not statuses:
            return ModelNotFoundError(name)
        return ModelNotFoundError(name, version, list(statuses))

    def _nothing_qualifies(self, name: str | None) -> NoQualifyingModelError:
        get = self._client.get
        threshold, criteria = get("ml.performance.accuracy_threshold"), get("ml.models.selection_criteria")
        needs = {"speed": "latency_ms", "memory": "memory_mb"}.get(criteria)
        sql = "SELECT name, version, status, accuracy, latency_ms, memory_mb FROM model_versions"
        rows = self._store.query(sql + (" WHERE name = ?" if name else "") + " ORDER BY name, id",
                                 (name,) if name else ())
        excluded = {}
        for model, version, status, accuracy, _latency, _memory in rows:
            if status == "deprecated":
                why = "deprecated"
            elif accuracy is None:
                why = "has no accuracy metric"
            elif accuracy < threshold:
                why = f"accuracy {accuracy:g} is below ml.performance.accuracy_threshold {threshold:g}"
            else:
                why = (f"has no {needs} metric (ml.models.selection_criteria = {criteria})")
            excluded[f"{model}/{version}"] = why
        what = f"model {name!r}" if name else "the registry"
        if not excluded:
            return NoQualifyingModelError(f"{what} holds no model versions", excluded)
        lines = [f"{k}: {v}" for k, v in list(excluded.items())[:_SHOWN_EXCLUSIONS]]
        if len(excluded) > _SHOWN_EXCLUSIONS:
            lines.append(f"... and {len(excluded) - _SHOWN_EXCLUSIONS} more")
        return NoQualifyingModelError(f"no version of {what} qualifies for selection "
                                      f"(criteria {criteria}):\n  " + "\n  ".join(lines), excluded)


# -- transaction helpers ---------------------------------------------------------------
def _statuses(db: Any, name: str) -> dict[str, str]:
    return dict(db.execute("SELECT version, status FROM model_versions WHERE name = ? ORDER BY id",
                           (name,)).fetchall())


def _active(statuses: Mapping[str, str]) -> str | None:
    return next((v for v, s in statuses.items() if s == "active"), None)


def _move_pointer(db: Any, name: str, current: str | None, target: str) -> None:
    if current is not None:
        db.execute("UPDATE model_versions SET status = 'experimental' "
                   "WHERE name = ? AND version = ?", (name, current))
    db.execute("UPDATE model_versions SET status = 'active' WHERE name = ? AND version = ?",
               (name, target))


def _record(db: Any, name: str, kind: str, frm: str | None, to: str | None, at: float,
            actor: str, reason: str | None) -> None:
    db.execute("INSERT INTO model_moves (name, kind, from_version, to_version, at, actor, reason) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)", (name, kind, frm, to, at, actor, reason))


def _replay(moves: list[tuple[str, str | None]]) -> list[str]:
    """The active versions as a stack: a promotion pushes, a rollback pops back to its target."""
    stack: list[str] = []
    for kind, to in moves:
        if to is None:
            continue
        if kind == "rollback":
            while stack and stack[-1] != to:
                stack.pop()
            if not stack:
                stack.append(to)
        else:
            stack.append(to)
    return stack


_STACK_SQL = ("SELECT kind, to_version FROM model_moves WHERE name = ? AND kind IN ("
              + ", ".join(f"'{k}'" for k in POINTER_KINDS) + ") ORDER BY id")


def _pointer_stack(db: Any, name: str) -> list[str]:
    return _replay(db.execute(_STACK_SQL, (name,)).fetchall())

