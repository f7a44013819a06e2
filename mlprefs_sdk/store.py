"""The preference store: SQLite in WAL mode behind a small interface (a PostgreSQL one follows).

Durability: WAL with synchronous=FULL, so a set() that returned survives a power cut.
Concurrency: writers take the lock up front (BEGIN IMMEDIATE) and wait on busy_timeout, so
several processes can write at once without a lost update or "database is locked".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterator, Protocol, Sequence

from ._migrations import MIGRATIONS
from .errors import StoreError
from .values import UNSET, HistoryEntry

__all__ = ["Store", "SQLiteStore", "open_store", "UNSET"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0


class Store(Protocol):
    """What the Client and the services need from a backend."""

    location: str

    def scope_values(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]: ...
    def write(self, scope: str, scope_id: str, changes: Sequence[tuple[str, Any]], actor: str,
              reason: str | None = None, run_id: str | None = None,
              step: int | None = None,
              check: Callable[[], None] | None = None) -> list[HistoryEntry]: ...
    def history(self, key: str | None = None, scope: str | None = None,
                scope_id: str | None = None, limit: int = 100) -> list[HistoryEntry]: ...
    def history_entry(self, entry_id: int) -> HistoryEntry | None: ...
    def changed(self) -> bool: ...
    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...
    def close(self) -> None: ...


def open_store(location: str) -> Store:
    if location.startswith(("postgresql://", "postgres://")):
        from .pgstore import PostgresStore  # extra "postgres"

        return PostgresStore(location)
    return SQLiteStore(location)


def _dump(value: Any) -> str:
    return json.dumps(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SQLiteStore:
    """One connection per process, guarded by a lock; reopened after fork."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._data_version = -1
        self._connect()

    # -- connection ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self.location
        if path != ":memory:":
            self._prepare_file(path)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            # The version is read before any pragma writes: a store from a newer mlprefs (or
            # a file that is not SQLite at all) is refused without being touched.
            self._check_version(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode not in ("wal", "memory"):
                log.warning("mlprefs: %s runs in %s journal mode, not WAL (filesystem without "
                            "shared memory?); concurrent readers will wait on writers", path, mode)
            conn.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a returned commit is on disk
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")
            self._migrate(conn)
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as e:
            conn.close()
            raise StoreError(f"{path}: cannot open the store ({e})") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{path}: not an mlprefs store ({e}); move it aside or point "
                             f"MLPREFS_STORE at another file") from None
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _check_version(self, conn: sqlite3.Connection) -> None:
        known = len(MIGRATIONS)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > known:
            raise StoreError(
                f"{self.location} has schema version {version}, newer than this mlprefs-sdk "
                f"knows ({known}); upgrade mlprefs-sdk, or point MLPREFS_STORE at another file"
            )

    @staticmethod
    def _prepare_file(path: str) -> None:
        """Create the directory and an empty 0600 file, so no other user can read the store."""
        from .locations import make_private_dirs

        directory = os.path.dirname(path) or "."
        try:
            make_private_dirs(directory)  # 0700 whatever the umask
            if not os.path.exists(path):
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        except OSError as e:
            raise StoreError(
                f"cannot create the store {path}: {e.strerror or e}; set MLPREFS_HOME or "
                f"MLPREFS_STORE to a writable location"
            ) from None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        known = len(MIGRATIONS)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version < known:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < known:  # another process may have migrated meanwhile
                    migration = MIGRATIONS[version]
                    try:
                        migration(conn)
                    except sqlite3.Error as e:
                        raise StoreError(
                            f"{self.location}: schema migration {migration.__name__} failed "
                            f"({e}); the store stays at schema version {version}") from None
                    version += 1
                    conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

    @property
    def conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never share a connection with the parent
            self._conn = None
            self._connect()
        assert self._conn is not None
        return self._conn

    @property
    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    # -- generic access for services -------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; the lock is taken up front so concurrent writers queue."""
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(f"{self.location}: could not start a write: {e}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self._rollback(conn)
                raise StoreError(f"{self.location}: write failed, nothing was changed: {e}") from None
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
            conn.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def changed(self) -> bool:
        """True once after another connection committed (PRAGMA data_version, ~1.5 us)."""
        with self._lock:
            v = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if v != self._data_version:
                self._data_version = v
                return True
            return False

    def health(self) -> dict[str, Any]:
        """Backend, round-trip latency and how other clients' changes arrive (for doctor)."""
        start = time.perf_counter()
        self.query("SELECT 1")
        latency_ms = round((time.perf_counter() - start) * 1000, 3)
        return {"backend": "sqlite", "location": self.location, "latency_ms": latency_ms,
                "notifications": {"mechanism": "PRAGMA data_version",
                                  "state": "read on every watcher tick (this host only)"},
                "healthy": True}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- preferences -------------------------------------------------------------
    def scope_values(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]:
        rows = self.query("SELECT key, value, updated_at, actor FROM prefs "
                          "WHERE scope = ? AND scope_id = ?", (scope, scope_id))
        return {k: (_load(v), at, actor) for k, v, at, actor in rows}

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
        now = time.time()
        entries = []
        with self.transaction() as db:
            for key, new in changes:
                row = db.execute("SELECT value FROM prefs WHERE scope = ? AND scope_id = ? "
                                 "AND key = ?", (scope, scope_id, key)).fetchone()
                old_text = row[0] if row else None
                if new is UNSET:
                    if row is None:
                        continue
                    db.execute("DELETE FROM prefs WHERE scope = ? AND scope_id = ? AND key = ?",
                               (scope, scope_id, key))
                    new_text = None
                else:
                    new_text = _dump(new)
                    db.execute(
                        "INSERT INTO prefs (scope, scope_id, key, value, updated_at, actor) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, scope_id, key) DO UPDATE "
                        "SET value = excluded.value, updated_at = excluded.updated_at, "
                        "actor = excluded.actor", (scope, scope_id, key, new_text, now, actor))
                (entry_id,) = db.execute(
                    "INSERT INTO history (scope, scope_id, key, old, new, at, actor, reason, "
                    "run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (scope, scope_id, key, old_text, new_text, now, actor, reason, run_id, step),
                ).fetchone()
                entries.append(HistoryEntry(entry_id, scope, key, _load(old_text),
                                            _load(new_text), now, actor, reason, scope_id))
            if check is not None:
                check()
        return entries

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
    return HistoryEntry(id_, scope, key, _load(old), _load(new), at, actor, reason, scope_id)
