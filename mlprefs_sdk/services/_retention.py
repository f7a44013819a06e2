"""Where subject data and dated records live, and how they are deleted without stalling readers.

Two maps name every table the SDK keeps personal or dated data in; erase, export and cleanup
read them, so a new table is covered by adding one line here. Expired rows are deleted in
batches, each its own short transaction: a reader on the same connection waits for one batch
at most, never for the whole cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from . import _lifecycle

__all__ = ["SUBJECT_COLUMNS", "DATED_COLUMNS", "JSON_COLUMNS", "delete_expired", "subject_rows",
           "AutoCleanup", "DAY"]

log = logging.getLogger(__name__)

DAY = 86400.0
BATCH_ROWS = 5000

# table -> the column holding the subject's id (pseudonym while anonymisation is on).
SUBJECT_COLUMNS: dict[str, str] = {
    "consent": "subject",
    "feedback": "subject",
    "experiment_units": "unit",
    "experiment_outcomes": "unit",
    "data_audit": "subject",
}

# table -> the column holding the row's time; rows older than the retention period go.
DATED_COLUMNS: dict[str, str] = {
    "feedback": "at",
    "experiment_outcomes": "at",
    "experiment_units": "assigned_at",
    "monitor_samples": "at",
    "monitor_series": "last_at",
    "drift_results": "at",
    "alerts": "at",
    "curves": "at",
    "data_audit": "at",
}

# columns stored as JSON text, decoded for export.
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "feedback": ("prediction", "actual"),
    "data_audit": ("detail",),
}


def delete_expired(store: Any, table: str, column: str, before: float,
                   stop: Callable[[], bool] = lambda: False, batch: int = BATCH_ROWS,
                   gate: AbstractContextManager[Any] | None = None) -> int:
    """Delete rows with column < before, `batch` rows per transaction; returns how many.

    Each batch ends at the time of its last row (found through the time index), so the
    statements stay portable and need no rowid. `stop()` is checked between batches; `gate`
    is held around each batch (a fork waits for it: AutoCleanup.gate).
    """
    total = 0
    while not stop():
        with gate or contextlib.nullcontext(), store.transaction() as db:
            row = db.execute(f"SELECT {column} FROM {table} WHERE {column} < ? "
                             f"ORDER BY {column} LIMIT 1 OFFSET ?", (before, batch - 1)).fetchone()
            if row is None:  # the rest fits in one batch
                total += db.execute(f"DELETE FROM {table} WHERE {column} < ?",
                                    (before,)).rowcount
                return total
            total += db.execute(f"DELETE FROM {table} WHERE {column} <= ?", (row[0],)).rowcount
    log.info("mlprefs: cleanup of %s stopped after %d rows (client closing)", table, total)
    return total


class AutoCleanup:
    """Runs the retention cleanup in a background thread, at most once a day per store.

    The last run time lives in the store (table `maintenance`), claimed in a transaction, so
    several processes sharing a store do not each run it. Never runs on the get() path.
    Every store write of a run holds `gate`, which a fork takes first (_lifecycle), so a
    child is never forked while this thread holds the store's lock.
    """

    TASK = "cleanup"

    def __init__(self, store: Any, enabled: Callable[[], bool],
                 run: Callable[[Callable[[], bool]], Any], interval: float = DAY,
                 poll: float = 3600.0) -> None:
        self._store, self._enabled, self._run = store, enabled, run
        self.interval, self.poll = interval, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.gate = _lifecycle.OwnedLock()
        _lifecycle.register(self)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlprefs-auto-cleanup",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("mlprefs: auto-cleanup thread still running after %.0fs", timeout)

    def last_run(self) -> float | None:
        rows = self._store.query("SELECT last_run FROM maintenance WHERE task = ?", (self.TASK,))
        return rows[0][0] if rows else None

    def _loop(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = self.poll
            try:
                if self._enabled() and self._claim():
                    self._run(self._stop.is_set)
            except Exception:  # a background job must report, never kill the thread silently
                log.exception("mlprefs: automatic retention cleanup of %s failed; it is tried "
                              "again in %.0fs", getattr(self._store, "location", "?"), wait)

    def _claim(self) -> bool:
        """Take today's run if nobody ran it within `interval`; returns whether it is ours."""
        now = time.time()
        with self.gate, self._store.transaction() as db:
            row = db.execute("SELECT last_run FROM maintenance WHERE task = ?",
                             (self.TASK,)).fetchone()
            if row is not None and now - row[0] < self.interval:
                return False
            self.record_run(db, now)
        return True

    # -- _lifecycle: nothing buffered, but the thread must not hold a lock across a fork ----
    def flush(self) -> int:
        return 0

    def flush_now(self) -> bool:
        return True

    def wait_idle(self) -> None:
        with self.gate:
            pass

    def fork_locks(self) -> list[_lifecycle.OwnedLock]:
        return [self.gate]

    def after_fork_in_child(self, renew: bool) -> None:
        """The thread is the parent's; the child starts its own when a client asks."""
        self._thread = None
        self._stop = threading.Event()
        if renew:
            self.gate = _lifecycle.OwnedLock()

    @classmethod
    def record_run(cls, db: Any, at: float) -> None:
        db.execute("INSERT INTO maintenance (task, last_run) VALUES (?, ?) "
                   "ON CONFLICT (task) DO UPDATE SET last_run = excluded.last_run",
                   (cls.TASK, at))


def subject_rows(db: Any, tables: Iterable[str], ids: tuple[str, ...]) -> dict[str, list[dict]]:
    """Every row of the given subject ids in each table, as dicts (JSON columns decoded)."""
    import json

    out: dict[str, list[dict]] = {}
    marks = ", ".join("?" * len(ids))
    for table in tables:
        column = SUBJECT_COLUMNS[table]
        cur = db.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", ids)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for r in rows:
            for c in JSON_COLUMNS.get(table, ()):
                if r.get(c) is not None:
                    r[c] = json.loads(r[c])
        out[table] = rows
    return out
