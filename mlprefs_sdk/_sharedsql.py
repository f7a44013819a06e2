"""The preference, history and template SQL both stores run, written once (store.SharedSql)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from .values import UNSET, HistoryEntry

__all__ = ["SharedSql", "dump", "load"]


def dump(value: Any) -> str:
    return json.dumps(value)


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SharedSql:
    """The preference, history and template SQL both backends run, written once.

    A backend supplies query() and transaction() (whose connection has execute()), and
    may override _change_row() (one preference change) with its own spelling of it.
    """

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def scope_values(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]:
        rows = self.query("SELECT key, value, updated_at, actor FROM prefs "
                          "WHERE scope = ? AND scope_id = ?", (scope, scope_id))
        return {k: (load(v), at, actor) for k, v, at, actor in rows}

    def write(self, scope: str, scope_id: str, changes: Sequence[tuple[str, Any]], actor: str,
              reason: str | None = None, run_id: str | None = None,
              step: int | None = None,
              check: Callable[[], None] | None = None) -> list[HistoryEntry]:
        """Write values (or UNSET) and their history rows in one transaction.

        `check` runs inside the transaction after the rows changed and before the commit; it
        reads the store through this object (seeing the pending rows and, with the write lock
        held, no other writer's) and raises to roll everything back. That is how the Client
        validates cross-key rules against the store as it is, not as it last read it.
        """
        with self.transaction() as db:
            return self._write_rows(db, scope, scope_id, changes, actor,
                                    (reason, run_id, step), check)

    def _write_rows(self, db: Any, scope: str, scope_id: str,
                    changes: Sequence[tuple[str, Any]], actor: str,
                    why: tuple[str | None, str | None, int | None],
                    check: Callable[[], None] | None) -> list[HistoryEntry]:
        """The body of write(), inside the backend's transaction (shared by both backends)."""
        reason, run_id, step = why
        now = time.time()
        entries = []
        for key, new in changes:
            new_text = None if new is UNSET else dump(new)
            done = self._change_row(db, (scope, scope_id, key), new_text, now, actor,
                                    (reason, run_id, step))
            if done is None:  # unset a key that had no value: nothing to record
                continue
            entry_id, old_text = done
            entries.append(HistoryEntry(entry_id, scope, key, load(old_text),
                                        load(new_text), now, actor, reason, scope_id))
        if check is not None:
            check()
        return entries

    @staticmethod
    def _change_row(db: Any, where: tuple[str, str, str], new_text: str | None, now: float,
                    actor: str, why: tuple[str | None, str | None, int | None],
                    ) -> tuple[int, str | None] | None:
        """Set (or, with None, delete) one stored value and add its history row: (history id,
        old value), or None when there was nothing to delete. Three statements here; the
        PostgreSQL store does it in one round trip."""
        row = db.execute("SELECT value FROM prefs WHERE scope = ? AND scope_id = ? AND key = ?",
                         where).fetchone()
        old_text = row[0] if row else None
        if new_text is None:
            if row is None:
                return None
            db.execute("DELETE FROM prefs WHERE scope = ? AND scope_id = ? AND key = ?", where)
        else:
            db.execute(
                "INSERT INTO prefs (scope, scope_id, key, value, updated_at, actor) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, scope_id, key) DO UPDATE "
                "SET value = excluded.value, updated_at = excluded.updated_at, "
                "actor = excluded.actor", (*where, new_text, now, actor))
        (entry_id,) = db.execute(
            "INSERT INTO history (scope, scope_id, key, old, new, at, actor, reason, "
            "run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (*where, old_text, new_text, now, actor, *why)).fetchone()
        return entry_id, old_text

    def history(self, key: str | None = None, scope: str | None = None,
                scope_id: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        where, params = [], []
        for col, val in (("key", key), ("scope", scope), ("scope_id", scope_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = ("SELECT id, scope, key, old, new, at, actor, reason, scope_id FROM history"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        return [_entry(r) for r in self.query(sql, [*params, limit])]

    def history_entry(self, entry_id: int) -> HistoryEntry | None:
        rows = self.query("SELECT id, scope, key, old, new, at, actor, reason, scope_id "
                          "FROM history WHERE id = ?", (entry_id,))
        return _entry(rows[0]) if rows else None

    # -- templates ---------------------------------------------------------------
    def saved_templates(self) -> dict[str, dict[str, Any]]:
        return {name: json.loads(body) for name, body in
                self.query("SELECT name, body FROM templates ORDER BY name")}

    def save_template(self, name: str, values: dict[str, Any], actor: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO templates (name, body, created_at, actor) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET body = excluded.body, "
                       "created_at = excluded.created_at, actor = excluded.actor",
                       (name, json.dumps(values), time.time(), actor))


def _entry(row: tuple) -> HistoryEntry:
    id_, scope, key, old, new, at, actor, reason, scope_id = row
    return HistoryEntry(id_, scope, key, load(old), load(new), at, actor, reason, scope_id)
