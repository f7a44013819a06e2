"""The preference store: SQLite in WAL mode behind a small interface (a PostgreSQL one follows).

Durability: WAL with synchronous=FULL, so a set() that returned survives a power cut.
Concurrency: writers take the lock up front (BEGIN IMMEDIATE) and wait on busy_timeout, so
several processes can write at once without a lost update or "database is locked".
Reads have a connection of their own: a write waiting for another process's lock (up to
MLPREFS_LOCK_TIMEOUT seconds, default 60) never holds up a read, a reload or history(); one
that runs out of time is a StoreError naming the process that holds the lock, when it is known.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from ._migrations import MIGRATIONS, migrate
from ._sharedsql import SharedSql
from .errors import StoreError
from .values import UNSET, HistoryEntry

__all__ = ["UNSET", "SQLiteStore", "Store", "integrity_check", "lock_holder", "lock_timeout", "open_store"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0        # how long a write waits for another writer, unless told otherwise
_READ = re.compile(r"\s*(SELECT|PRAGMA\s+(user_version|data_version|integrity_check|"
                   r"quick_check|journal_mode|page_count|freelist_count)\s*;?\s*$)",
                   re.IGNORECASE)


def lock_timeout() -> float:
    """Seconds a write waits for another writer's lock: $MLPREFS_LOCK_TIMEOUT, else 60."""
    raw = os.environ.get("MLPREFS_LOCK_TIMEOUT", "").strip()
    if not raw:
        return BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise StoreError(f"MLPREFS_LOCK_TIMEOUT={raw!r} is not a number of seconds (0 or more); "
                         f"unset it for the default of {BUSY_TIMEOUT_S:g}")
    return value


class Store(Protocol):
    """What the Client, the services, the watcher and the CLI need from a backend.

    Callers use only this: none asks which backend it has.
    """

    location: str
    shown: str  # the location as it may be shown: a URL without its password

    @property
    def schema_version(self) -> int: ...
    @property
    def local_file(self) -> str | None: ...  # the store's file on this host, if it is one
    @property
    def change_file(self) -> str | None: ...  # a file whose stat moves at every commit
    def integrity(self) -> list[str]: ...
    def health(self) -> dict[str, Any]: ...
    def saved_templates(self) -> dict[str, dict[str, Any]]: ...
    def save_template(self, name: str, values: dict[str, Any], actor: str) -> None: ...
    def purge_erased(self) -> None: ...

    def scope_values(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]: ...
    def write(self, scope: str, scope_id: str, changes: Sequence[tuple[str, Any]], actor: str,
              reason: str | None = None, run_id: str | None = None,
              step: int | None = None,
              check: Callable[[], None] | None = None) -> list[HistoryEntry]: ...
    def history(self, key: str | None = None, scope: str | None = None,
                scope_id: str | None = None, limit: int = 100) -> list[HistoryEntry]: ...
    def history_entry(self, entry_id: int) -> HistoryEntry | None: ...
    def changed(self) -> bool: ...
    def follow(self) -> None: ...
    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]: ...
    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...
    def close(self) -> None: ...


def open_store(location: str) -> Store:
    if location.startswith(("postgresql://", "postgres://")):
        from .pgstore import PostgresStore  # extra "postgres"

        return PostgresStore(location)
    return SQLiteStore(location)


class SQLiteStore(SharedSql):
    """Two connections per process: writes (one at a time) and reads; reopened after fork.

    A write holds `_write_lock` for its whole transaction, including the wait for another
    process's lock; reads take only `_lock` on their own connection, so they never queue
    behind that wait. The thread inside a write transaction reads through the write
    connection, so it sees its own pending rows.
    """

    def __init__(self, location: str) -> None:
        self.location = self.shown = location
        self.timeout = lock_timeout()
        self._lock = threading.RLock()        # the read connection
        self._write_lock = threading.RLock()  # the write connection and its transaction
        self._writer: int | None = None       # the thread inside transaction(), if any
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._pid = -1
        self._data_version = self._writer_version = -1
        self._held_for_fork = (False, False)  # (write lock, read lock) taken before fork()
        self._connect()
        _follow_forks(self)

    # -- connection ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """Open and set up both connections; several processes opening a new store at once
        retry until the budget runs out.

        Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
        locked" at once, without waiting, when two connections each hold a shared lock and
        both want it (a deadlock it refuses to wait on): DDP ranks starting together do that.
        """
        deadline, pause = time.monotonic() + self.timeout, 0.005
        while True:
            try:
                return self._connect_once()
            except StoreError as e:
                locked = isinstance(e.__cause__, sqlite3.OperationalError) and _busy(e.__cause__)
                if not locked or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _connect_once(self) -> sqlite3.Connection:
        path = self.location
        if path != ":memory:":
            self._prepare_file(path)
        conn = self._open(path)
        reader = None
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
            # An in-memory database exists once per connection: it reads through the writer.
            reader = conn if path == ":memory:" else self._open(path)
            self._data_version = reader.execute("PRAGMA data_version").fetchone()[0]
            self._writer_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as e:
            self._close_all(conn, reader)
            raise _open_error(path, e) from e
        except sqlite3.DatabaseError as e:
            self._close_all(conn, reader)
            if getattr(e, "sqlite_errorcode", 0) & 0xFF == SQLITE_CORRUPT or "malformed" in str(e):
                raise damaged(path, e) from None
            raise StoreError(f"{path}: not an mlprefs store ({e}); move it aside or point "
                             f"MLPREFS_STORE at another file") from None
        except BaseException:
            self._close_all(conn, reader)
            raise
        self._conn, self._reader, self._pid = conn, reader, os.getpid()
        return conn

    def _open(self, path: str) -> sqlite3.Connection:
        try:
            return sqlite3.connect(path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise _open_error(path, e) from e

    @staticmethod
    def _close_all(*conns: sqlite3.Connection | None) -> None:
        for c in {id(c): c for c in conns if c is not None}.values():
            c.close()

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
            if os.path.isdir(path):
                raise IsADirectoryError(21, "it is a directory, not a store file", path)
            if not os.path.exists(path):
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        except OSError as e:
            raise StoreError(  # the OSError stays chained: it says what kind of problem
                f"cannot create the store {path}: {e.strerror or e}; set MLPREFS_HOME or "
                f"MLPREFS_STORE to a writable location") from e

    def _migrate(self, conn: sqlite3.Connection) -> None:
        @contextlib.contextmanager
        def transaction() -> Iterator[sqlite3.Connection]:
            self._begin(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

        migrate(self.location, MIGRATIONS,
                lambda: conn.execute("PRAGMA user_version").fetchone()[0], transaction,
                lambda db, n: db.execute(f"PRAGMA user_version = {int(n)}"),
                lambda e: str(e) if isinstance(e, sqlite3.Error) else None)

    def hold_for_fork(self) -> None:
        """Before fork(): let a write or read in progress in another thread end first.

        SQLite keeps its file locks in a per-process table; a child forked while a connection
        of this process is inside a transaction inherits that table with the lock held, and
        its own next write then waits out the whole busy timeout. Waits at most FORK_WAIT_S.
        """
        got_write = self._write_lock.acquire(timeout=FORK_WAIT_S)
        got_read = self._lock.acquire(timeout=FORK_WAIT_S)
        if not (got_write and got_read):
            log.warning("mlprefs: %s: a %s was still running %.0f s into fork(); the child "
                        "opens fresh connections, but its first write may wait for the lock",
                        self.location, "write" if not got_write else "read", FORK_WAIT_S)
        self._held_for_fork = (got_write, got_read)

    def release_after_fork(self) -> None:
        """After fork(), on both sides: the forking thread lets go of what it took (in the
        child, the next use also reconnects, see _after_fork)."""
        (got_write, got_read), self._held_for_fork = self._held_for_fork, (False, False)
        if got_read:
            self._lock.release()
        if got_write:
            self._write_lock.release()
        if os.getpid() != self._pid and not (got_write and got_read):
            # In the child a thread that is not there kept one: new locks, new connections.
            self._lock, self._write_lock = threading.RLock(), threading.RLock()
            self._writer = None

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and connections, never the parent's."""
        self._lock, self._write_lock = threading.RLock(), threading.RLock()
        self._writer = None
        self._conn = self._reader = None
        self._connect()

    @property
    def conn(self) -> sqlite3.Connection:
        """The write connection (services' transactions run on it)."""
        if self._pid != os.getpid():  # forked: never share a connection with the parent
            self._after_fork()
        assert self._conn is not None
        return self._conn

    @property
    def reader(self) -> sqlite3.Connection:
        """The read connection: it never waits for a writer (WAL)."""
        if self._pid != os.getpid():
            self._after_fork()
        assert self._reader is not None
        return self._reader

    @property
    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    # -- generic access for services -------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; the lock is taken up front so concurrent writers queue."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._write_lock:
            conn = self.conn
            outer = self._writer
            self._begin(conn)
            self._writer = threading.get_ident()
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                self._rollback(conn)
                if _damaged(e):
                    raise damaged(self.location, e) from None
                if not isinstance(e, sqlite3.OperationalError):
                    raise  # a constraint the caller may handle
                raise StoreError(f"{self.location}: write failed, nothing was changed: {e}") from None
            except BaseException:
                self._rollback(conn)
                raise
            finally:
                self._writer = outer

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE: wait up to the budget for the write lock, then say who holds it."""
        start = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            waited = time.monotonic() - start
            if "locked" not in str(e) and "busy" not in str(e):
                raise StoreError(f"{self.location}: could not start a write: {e}") from None
            raise StoreError(
                f"{self.location}: gave up waiting for the write lock after {waited:.1f} s "
                f"(budget {self.timeout:g} s, MLPREFS_LOCK_TIMEOUT); it is held by "
                f"{lock_holder(self.location)}; nothing was changed") from None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
            conn.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """One statement: reads on the read connection (or, inside this thread's write
        transaction, on the write connection, to see its pending rows); writes on the writer."""
        if self._pid != os.getpid():
            self._after_fork()
        try:
            if self._writer == threading.get_ident() or not _READ.match(sql):
                with self._write_lock:
                    return self.conn.execute(sql, params).fetchall()
            with self._lock:
                return self.reader.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            if _damaged(e):
                raise damaged(self.location, e) from None
            if isinstance(e, sqlite3.OperationalError):  # e.g. still locked after the budget
                raise StoreError(f"{self.location}: {e} (held by {lock_holder(self.location)}; "
                                 f"budget {self.timeout:g} s, MLPREFS_LOCK_TIMEOUT)"
                                 if "locked" in str(e) else f"{self.location}: {e}") from None
            raise

    @property
    def local_file(self) -> str | None:
        return None if self.location == ":memory:" else self.location

    @property
    def change_file(self) -> str | None:
        """The -wal file: every commit writes it (the watcher stats it before asking)."""
        return None if self.location == ":memory:" else self.location + "-wal"

    def integrity(self) -> list[str]:
        """PRAGMA integrity_check: ["ok"], or up to 20 problems (for doctor); [] for an
        in-memory store, which has no file to check."""
        if self.location == ":memory:":
            return []
        return integrity_check(self.location)

    def purge_erased(self) -> None:
        """After an erasure: checkpoint and truncate the WAL, so erased rows' old page images
        leave the disk too."""
        if self.location == ":memory:":
            return
        busy, _, _ = self.query("PRAGMA wal_checkpoint(TRUNCATE)")[0]
        if busy:
            log.warning("mlprefs: after an erasure the WAL of %s could not be truncated (another "
                        "connection is reading); erased rows' old pages stay in it until the "
                        "next checkpoint", self.location)

    def changed(self) -> bool:
        """True once after another connection committed (PRAGMA data_version, ~1.5 us).

        The read connection sees our own writes as another connection's; the write
        connection does not. So a change the reader sees is confirmed on the writer when it
        is free, and reported as is when a write is under way (a spurious re-read at worst).
        """
        with self._lock:
            v = self.reader.execute("PRAGMA data_version").fetchone()[0]
            if v == self._data_version:
                return False
            self._data_version = v
        if self._conn is self._reader or not self._write_lock.acquire(blocking=False):
            return True
        try:
            w = self.conn.execute("PRAGMA data_version").fetchone()[0]
            foreign, self._writer_version = w != self._writer_version, w
            return foreign
        finally:
            self._write_lock.release()

    def follow(self) -> None:
        """Nothing to start: changed() reads PRAGMA data_version when asked."""

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """SQLite announces nothing: the watcher's tick polls changed(). Unsubscribing is a no-op."""
        return lambda: None

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
            if self._pid == os.getpid():
                self._close_all(self._conn, self._reader)
            self._conn = self._reader = None


def _located(err: StoreError, code: int | None, path: str) -> StoreError:
    """Chain the path problem behind a StoreError as its __cause__ (an OSError with errno and
    file name), so a caller can tell an unusable location (EISDIR, EACCES...) from a damaged
    store without parsing the message."""
    err.__cause__ = OSError(code, os.strerror(code), path) if code is not None else None
    err.__suppress_context__ = True
    return err


FORK_WAIT_S = 2.0  # how long fork() waits for another thread's store transaction to end
_FORK_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_fork_hooks_installed = False


def _follow_forks(store: SQLiteStore) -> None:
    """Hold every open SQLite store still across fork() (hooks installed once, on first use)."""
    global _fork_hooks_installed
    _FORK_STORES.add(store)
    if not _fork_hooks_installed and hasattr(os, "register_at_fork"):
        _fork_hooks_installed = True
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _before_fork() -> None:
    for store in list(_FORK_STORES):
        store.hold_for_fork()


def _after_fork() -> None:
    for store in list(_FORK_STORES):
        store.release_after_fork()


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def _damaged(e: sqlite3.Error) -> bool:
    """A corrupt database (damaged pages), as opposed to a busy, full or misused one."""
    return getattr(e, "sqlite_errorcode", 0) & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB) or \
        "malformed" in str(e)


def damaged(path: str, e: sqlite3.Error) -> StoreError:
    """The error for a store whose pages are damaged: where it is and what to do."""
    return StoreError(
        f"{path}: the store is damaged ({e}); see `mlprefs doctor` for its integrity report, "
        f"then restore it from a backup, or move it aside (a new empty store is created) after "
        f"saving what can still be read: sqlite3 {path} .recover > prefs.sql")


def integrity_check(path: str, limit: int = 20) -> list[str]:
    """SQLite's integrity report of a store file, read-only: ["ok"] or the problems found.

    Works on a file too damaged for a Client to open; a file that cannot be checked at all
    gives one line saying why.
    """
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                               timeout=5)
    except sqlite3.Error as e:
        return [f"cannot be read: {e}"]
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
        return [str(r[0]) for r in rows] or ["ok"]
    except sqlite3.DatabaseError as e:
        return [f"cannot be checked: {e}"]
    finally:
        conn.close()


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _open_error(path: str, e: sqlite3.Error) -> StoreError:
    """A store that cannot be opened, named, with what to do about it (raise it as is)."""
    code = None
    if os.path.isdir(path):
        why, code = "it is a directory, not a store file", errno.EISDIR
    elif not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        why, code = f"its directory is not writable ({e})", errno.EACCES
    else:
        why = str(e)
    return _located(StoreError(f"{path}: cannot open the store: {why}; move it aside, or set "
                               f"MLPREFS_STORE (or MLPREFS_HOME) to a writable file location"),
                    code, path)


def lock_holder(path: str) -> str:
    """Who holds the store's write lock, from /proc/locks (Linux, this host); else unknown.

    SQLite in WAL mode takes the write lock as a POSIX lock on byte 120 of the -shm file
    (in rollback-journal mode, the RESERVED byte of the database file itself).
    """
    targets = []
    for name, starts in ((path + "-shm", ("120",)), (path, ("1073741825",))):
        try:
            st = os.stat(name)
        except OSError:
            continue
        targets.append((f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}",
                        starts))
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process (unknown which: no /proc/locks here)"
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 8 or parts[1] not in ("POSIX", "OFDLCK"):
            continue
        kind, pid, ident, start = parts[3], parts[4], parts[5], parts[6]
        for target, starts in targets:
            if kind == "WRITE" and ident == target and start in starts:
                if pid == str(os.getpid()):
                    return f"this process (pid {pid}, another connection)"
                return f"pid {pid} ({_command(pid)})"
    return "another process (unknown which: it may run on another host)"


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "command unknown"
    return cmd[:120] or "command unknown"
