"""The store on PostgreSQL: one database that a team's machines share (extra "postgres").

Same schema, migrations and semantics as SQLiteStore, and the same SQL (store.SharedSql); the
dialect is explicit: column types in the migrations (_migrations.Dialect), the schema-version
table, the locking statements, and one preference change as a single statement. The SQL the
services hand over is spelled for SQLite; _pgsql maps its placeholders (and, in DDL, types).
A preference write and a read of one scope, the hot paths, run statements prepared once per
session on libpq itself (_pgwire); everything else goes through psycopg.

Writers. A services' transaction() takes the store's advisory lock exclusive, PostgreSQL's
counterpart of SQLite's BEGIN IMMEDIATE, so their read-then-write sees no other writer. A
preference write() takes that lock shared and the written scope's lock exclusive, so writers
to different scopes commit in parallel; the Client's validation, which reads the other scopes,
takes their locks shared on the way (without waiting: a scope being written makes the write
start again with every lock taken up front, in one order), so two writes that break a
cross-key rule only together cannot both commit, and nothing is lost between hosts. A write
waits for a lock at most its budget (lock_timeout, from MLPREFS_LOCK_TIMEOUT as for SQLite);
reads have a connection of their own, so they never queue behind a waiting write, and a write
that runs out of time is a StoreError naming the session that holds the lock.

Changes. A write NOTIFYs after its durable commit, in a transaction of its own that does not
wait for a flush (NOTIFY inside the write would serialise every writer's commit). A client
that follows the store (a watcher, changed(), health()) has a listener thread on its own
connection: it LISTENs on the store's channel, raises the flag changed() reads, and wakes the
on_change() callbacks at once (the watcher re-reads the store then, not at its next tick).
Clients that only write never LISTEN, so a commit does not wake the whole team. A lost
listener connection reconnects with backoff and then reports a change, so the Client re-reads
everything and misses nothing that was committed meanwhile; reads keep being answered from
the Client's cached view throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Loader

from . import _pgwire
from ._migrations import MIGRATIONS, migrate
from ._pglisten import Listener, Wakers
from ._pglisten import say as _say
from ._pgsql import (
    LOCK_HOLDER,
    PREPARED,
    VERSION_TABLE,
    PgConnection,
    change_params,
    change_result,
    holder,
    is_read,
    plain_number,
    translate,
)
from ._sharedsql import SharedSql, dump, load
from .errors import StoreError
from .store import UNSET, lock_timeout
from .values import HistoryEntry

__all__ = ["PostgresStore", "redact"]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 10.0       # twice how long follow() waits for LISTEN to be in place
# Applied unless the URL says otherwise: a dead peer is noticed in seconds, not hours.
CONNECT_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "5",
                    "keepalives_interval": "2", "keepalives_count": "3",
                    "tcp_user_timeout": "10000"}


def redact(url: str) -> str:
    """The URL without its password, for messages and `mlprefs doctor`."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


class _NumberLoader(Loader):
    """NUMERIC (SUM/AVG of integers) as the int or float SQLite returns, not Decimal."""

    def load(self, data: Any) -> int | float:
        return plain_number(bytes(data).decode())


class PostgresStore(SharedSql):
    """A write connection, a read connection and a listener thread; all reopened after fork.

    As in SQLiteStore, `_write_lock` guards the write connection (and the wait for the
    store's advisory lock), `_lock` the read connection, which other threads use meanwhile.
    """

    @staticmethod
    def _change_row(db: PgConnection, where: tuple[str, str, str], new_text: str | None,
                    now: float, actor: str, why: tuple[str | None, str | None, int | None],
                    ) -> tuple[int, str | None] | None:
        """SharedSql._change_row in one statement, so one round trip: data-modifying CTEs
        all see the rows as they were before the statement (the old value)."""
        rows = db.execute_prepared("mlprefs_change", change_params(where, new_text, now, actor, why))
        return change_result(rows)

    def __init__(self, location: str) -> None:
        self.location = location
        self.shown = redact(location)
        self.timeout = lock_timeout()
        self._lock = threading.RLock()        # the read connection
        self._write_lock = threading.RLock()  # the write connection and its transaction
        self._writer: int | None = None       # the thread inside transaction(), if any
        self._held: set[tuple[str, str]] | None = None  # scopes locked by write(), inside it
        self._head: Any = None        # inside write(): the results of what ran with BEGIN
        self._prefetched: tuple[tuple[str, str], list[tuple]] | None = None  # its scope's rows
        self._conn: psycopg.Connection | None = None
        self._reader: psycopg.Connection | None = None
        self._pid = -1
        self._listener: Listener | None = None
        self._following = False  # LISTENing: once follow() or changed() asked for it
        self._wakers: Wakers | None = None  # on_change() callbacks and their thread
        self._connect()

    # -- connections --------------------------------------------------------------
    def open_connection(self, role: str) -> psycopg.Connection:
        """A new autocommit connection to the store, named "mlprefs <role>" on the server."""
        given = psycopg.conninfo.conninfo_to_dict(self.location)
        extra: dict[str, Any] = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
        extra.setdefault("application_name", f"mlprefs {role}")
        extra["client_encoding"] = "UTF8"  # _pgwire's text is UTF-8, whatever the URL asks
        try:
            conn = psycopg.connect(self.location, autocommit=True, **extra)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the store {self.shown}: {_say(e)}") from None
        conn.adapters.register_loader("numeric", _NumberLoader)
        # The store prepares what write() runs itself (_pgwire); psycopg's automatic
        # preparation would DEALLOCATE ALL after any ROLLBACK, the store's statements too.
        conn.prepare_threshold = None
        return conn

    def _connect(self) -> None:
        """Open the main connection, migrate, and (first time in this process) start listening."""
        conn = self.open_connection("store")
        try:
            schema = _one(conn.execute("SELECT current_schema()").fetchone())
            if schema is None:
                raise StoreError(f"{self.shown}: its search_path names no existing schema; "
                                 f"create the schema first")
            self.schema = schema
            self.channel = f"mlprefs:{schema}"[:63]
            lock_id = zlib.crc32(f"mlprefs:{schema}".encode()) - 2**31
            self.lock_id = lock_id
            self._wait_ms = str(max(1, round(self.timeout * 1000))).encode()
            # The notification goes out in a transaction of its own after the durable commit,
            # without waiting for its own flush: NOTIFY inside the write transaction would hold
            # the server's notify-queue lock across that transaction's WAL flush, and so
            # serialise every writer's commit (no group commit).
            self._notify: _pgwire.Statement = (b"mlprefs_notify", [self.channel.encode()])
            self._conn, self._pid = conn, os.getpid()
            self.backend_pid = conn.info.backend_pid  # our own notifications come from it
            self._prepared: set[str] = set()  # on this connection, by name
            self._prepare(conn, "mlprefs_notify")
            self._migrate()
            self._prepare(conn, "mlprefs_change", "mlprefs_scope_rows")  # once the tables exist
        except BaseException:
            self._conn = None
            conn.close()
            raise
        if self._following and (self._listener is None or self._listener.pid != self._pid):
            self._listen()

    def _listen(self) -> None:
        """Start the listener thread and wait (a while) for its LISTEN to be in place."""
        self._listener = Listener(self)
        self._listener.start()
        if self._listener.ready.wait(READY_TIMEOUT_S / 2):  # a watcher arms within 10 s
            # What was committed before now, the caller's first read sees; only later
            # commits are news. (A late first LISTEN leaves the flag set: read again.)
            self._listener.changed.clear()
        else:
            log.warning("mlprefs: %s: no LISTEN connection yet; changes made elsewhere are "
                        "picked up once it connects", self.shown)

    def follow(self) -> None:
        """Start hearing of other clients' commits (changed(), on_change()), if not yet.

        A client that never watches never LISTENs: every commit would otherwise wake every
        client of the store, a cost that grows with the square of the team. The first time,
        changed() reports a change, since commits made before now were not heard.
        """
        if self._pid != os.getpid():
            with self._lock:
                self._after_fork()
        self._start_following(report=True)

    def _start_following(self, report: bool) -> None:
        with self._lock:
            if not self._following:
                self._following = True
                self._listen()
                if report and self._listener is not None:
                    self._listener.changed.set()

    def _after_fork(self) -> None:
        """In a forked child: its own connections and listener, never the parent's sockets."""
        self._conn, self._reader, self._listener = None, None, None
        self._lock, self._write_lock, self._writer = threading.RLock(), threading.RLock(), None
        self._wakers = None  # the parent's callbacks and thread stay there
        self._connect()
        if self._listener is not None:
            self._listener.changed.set()  # the view the child inherited may predate its LISTEN

    @property
    def conn(self) -> psycopg.Connection:
        """The write connection: replaced after fork, or when it broke outside a transaction."""
        if self._pid != os.getpid():
            self._after_fork()
        elif self._conn is None or (self._conn.closed and self._writer is None):
            self._connect()
        assert self._conn is not None
        return self._conn

    @property
    def reader(self) -> psycopg.Connection:
        """The read connection (opened on first use, replaced when it broke)."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._reader is None or self._reader.closed:
            reader = self.open_connection("read")
            _pgwire.prepare(reader, "mlprefs_scope_rows", PREPARED["mlprefs_scope_rows"])
            self._reader = reader
        return self._reader

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        version = self._version()
        if version > known:
            raise StoreError(f"{self.shown} has schema version {version}, newer than this "
                             f"mlprefs-sdk knows ({known}); upgrade mlprefs-sdk")

        @contextlib.contextmanager
        def transaction() -> Iterator[PgConnection]:
            with self.transaction() as db:
                db.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version BIGINT NOT NULL)")
                db.execute(f"INSERT INTO {VERSION_TABLE} (version) SELECT 0 "
                           f"WHERE NOT EXISTS (SELECT 1 FROM {VERSION_TABLE})")
                yield db

        migrate(self.shown, MIGRATIONS, self._version, transaction,
                lambda db, n: db.execute(f"UPDATE {VERSION_TABLE} SET version = {int(n)}"),
                lambda e: _say(e.__cause__ or e) if isinstance(e, StoreError) else None)

    def _version(self) -> int:
        """The schema version: 0 before the version table exists (an empty schema)."""
        assert self._conn is not None
        exists = _one(self._conn.execute("SELECT to_regclass(%s)", [VERSION_TABLE]).fetchone())
        if exists is None:
            return 0
        row = self._conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        return row[0] if row else 0

    @property
    def schema_version(self) -> int:
        return self.query(f"SELECT version FROM {VERSION_TABLE}")[0][0]

    def _error(self, statement: str, e: Exception) -> StoreError:
        return StoreError(f"{self.shown}: {_say(e)} (in: {' '.join(statement.split())[:200]})")

    # -- generic access for services -------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """A write transaction holding the store's write lock, so concurrent writers queue."""
        with self._transaction(((self.lock_id, "x"),)) as db:
            yield db

    @contextlib.contextmanager
    def _transaction(self, locks: Sequence[tuple[int, str]],
                     head: Sequence[_pgwire.Statement] = ()) -> Iterator[PgConnection]:
        """A write transaction that first takes `locks` ((advisory key, "x" or "s"), in order);
        `head` is prepared statements run in the same round trip (their results: self._head)."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._write_lock:
            if self._writer is not None:
                raise StoreError(f"{self.shown}: a write transaction is already open on this "
                                 f"thread; transactions do not nest")
            conn, self._head = self._begin_with(locks, head)
            db = PgConnection(conn, psycopg.Error, self._error)
            db.wrote = bool(head)
            self._writer = threading.get_ident()
            try:
                try:
                    yield db
                except BaseException:
                    self._rollback(conn)
                    raise
                self._commit(conn, db.wrote)
            finally:
                self._writer = None
                self._held = self._head = self._prefetched = None

    def _commit(self, conn: psycopg.Connection, wrote: bool) -> None:
        """COMMIT; after a write, notify the other clients once it is durable (one round trip)."""
        try:  # an error in the notification after a good COMMIT cannot be told apart
            _pgwire.exchange(conn, [(False, (b"COMMIT", None))] + (
                [(True, self._notify)] if wrote else []))
        except psycopg.Error as e:
            raise StoreError(f"{self.shown}: the commit failed ({_say(e)}); if the "
                             f"connection dropped, the write may or may not be stored: "
                             f"check the history") from e

    def write(self, scope: str, scope_id: str, changes: Sequence[tuple[str, Any]], actor: str,
              reason: str | None = None, run_id: str | None = None,
              step: int | None = None,
              check: Callable[[], None] | None = None) -> list[HistoryEntry]:
        """SharedSql.write, with locks as narrow as the Client's validation allows.

        The store's lock is taken shared (a services' transaction() takes it exclusive), and
        the written scope's own lock exclusive, so writers to different scopes commit in
        parallel. `check` reads other scopes through scope_values(), which takes their locks
        shared without waiting: a scope another writer holds means the two writes may together
        break a rule, so this one rolls back and starts again, this time taking every lock it
        needs up front in one global order (which cannot deadlock), and validates against
        what the other committed.
        """
        own = (scope, scope_id)
        why = (reason, run_id, step)
        now = time.time()
        texts = [(key, None if new is UNSET else dump(new)) for key, new in changes]

        # Run behind BEGIN and the locks, in the same round trip: every change, and the
        # written scope as it then is (what `check` reads first).
        head = [(b"mlprefs_change", _pgwire.texts(change_params(
            (scope, scope_id, key), text, now, actor, why))) for key, text in texts]
        head.append((b"mlprefs_scope_rows", _pgwire.texts(own)))
        needs: dict[tuple[str, str], str] = {own: "x"}
        for _attempt in range(5):
            upfront = len(needs) > 1
            locks = [(self.lock_id, "s")] + sorted(
                (self._scope_lock(*k), mode) for k, mode in needs.items())
            try:
                with self._transaction(locks, head):
                    self._held = set(needs) if upfront else {own}
                    *changed, rows = self._head
                    entries = []
                    for (key, text), result in zip(texts, changed):
                        done = change_result(_pgwire.rows(result))
                        if done is not None:  # None: unset a key that had no value
                            entries.append(HistoryEntry(done[0], scope, key, load(done[1]),
                                                        load(text), now, actor, reason,
                                                        scope_id))
                    self._prefetched = (own, [(key, value, float(at), who) for key, value, at, who
                                              in _pgwire.rows(rows)])
                    if check is not None:
                        check()
                    return entries
            except _Busy as busy:
                needs.setdefault(busy.scope, "s")
        with self._transaction(((self.lock_id, "x"),)) as db:  # give up being clever
            self._held = _ALL
            return self._write_rows(db, scope, scope_id, changes, actor,
                                    (reason, run_id, step), check)

    def scope_values(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]:
        """A scope's stored values; inside write(), under that scope's lock (see write())."""
        held = self._held
        if self._writer == threading.get_ident() and self._prefetched is not None \
                and self._prefetched[0] == (scope, scope_id):
            return {k: (load(v), at, actor) for k, v, at, actor in self._prefetched[1]}
        if held is not None and held is not _ALL and (scope, scope_id) not in held \
                and self._writer == threading.get_ident():
            (got,) = self.query("SELECT pg_try_advisory_xact_lock_shared(?)",
                                (self._scope_lock(scope, scope_id),))[0]
            if not got:
                raise _Busy((scope, scope_id))
            held.add((scope, scope_id))
        if self._writer == threading.get_ident():  # this transaction's rows
            return super().scope_values(scope, scope_id)
        return self._read_scope(scope, scope_id)

    def _read_scope(self, scope: str, scope_id: str) -> dict[str, tuple[Any, float, str]]:
        """scope_values() on the read connection, by its prepared statement: this is the
        watcher's read after a NOTIFY, so its time is part of how soon a change arrives."""
        statement = (b"mlprefs_scope_rows", _pgwire.texts((scope, scope_id)))
        with self._lock:
            for attempt in (1, 2):
                reader = self.reader
                try:
                    (result,) = _pgwire.exchange(reader, [(True, statement)])
                except psycopg.OperationalError as e:
                    if attempt == 2 or not reader.closed:
                        raise self._error("a read of the preferences", e) from e
                    log.warning("mlprefs: %s: connection lost (%s); reconnecting", self.shown,
                                _say(e))
                    continue
                except psycopg.Error as e:
                    raise self._error("a read of the preferences", e) from e
                return {key: (load(value), float(at), actor)
                        for key, value, at, actor in _pgwire.rows(result)}
        raise AssertionError("unreachable")

    def _scope_lock(self, scope: str, scope_id: str) -> int:
        """The advisory lock key of one scope of this store (64 bits of a hash)."""
        digest = hashlib.blake2b(f"{self.schema}\0{scope}\0{scope_id}".encode(),
                                 digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _begin_with(self, locks: Sequence[tuple[int, str]], head: Sequence[_pgwire.Statement],
                    ) -> tuple[psycopg.Connection, list[Any]]:
        """BEGIN and take the locks, then run `head`, in one round trip; a connection found
        dead here is replaced once."""
        for attempt in (1, 2):
            conn = self.conn
            start = time.monotonic()
            try:
                statements: list[tuple[bool, _pgwire.Statement]] = [
                    (False, (b"BEGIN", None)), (True, self._lock_statement(conn, locks)),
                    *((True, statement) for statement in head)]
                return conn, _pgwire.exchange(conn, statements)[2:]
            except psycopg.errors.LockNotAvailable:
                waited = time.monotonic() - start
                self._rollback(conn)
                raise StoreError(
                    f"{self.shown}: gave up waiting for the write lock after {waited:.1f} s "
                    f"(budget {self.timeout:g} s, MLPREFS_LOCK_TIMEOUT); it is held by "
                    f"{self._lock_holder([key for key, _ in locks])}; nothing was changed"
                ) from None
            except psycopg.OperationalError as e:
                self._rollback(conn)
                if attempt == 2 or not conn.closed:
                    raise StoreError(f"{self.shown}: could not start a write: {_say(e)}") from e
                log.warning("mlprefs: %s: connection lost (%s); reconnecting", self.shown, _say(e))
            except psycopg.Error as e:  # a statement of `head`
                self._rollback(conn)
                raise self._error("a preference write", e) from e
        raise AssertionError("unreachable")

    def _prepare(self, conn: psycopg.Connection, *names: str) -> None:
        for name in names:
            _pgwire.prepare(conn, name, PREPARED[name])
            self._prepared.add(name)

    def _lock_statement(self, conn: psycopg.Connection, locks: Sequence[tuple[int, str]],
                        ) -> _pgwire.Statement:
        """The statement that sets the lock budget and takes `locks`, in order (one SELECT
        evaluates left to right); prepared on `conn` the first time its shape is used there
        (there are few: a services' transaction, a write, a write that validates others)."""
        shape = "".join(mode for _, mode in locks)
        name = f"mlprefs_lock_{shape}"
        if name not in self._prepared:
            take = "".join(f", pg_advisory_xact_lock{'_shared' if mode == 's' else ''}(${n})"
                           for n, mode in enumerate(shape, 2))
            _pgwire.prepare(conn, name,
                            f"SELECT set_config('lock_timeout', $1, true){take}")
            self._prepared.add(name)
        return name.encode(), [self._wait_ms, *(str(key).encode() for key, _ in locks)]

    def _lock_holder(self, keys: Sequence[int]) -> str:
        """A session holding one of the advisory locks, from pg_locks, if it can be read."""
        try:
            with self._lock:
                row = self.reader.execute(LOCK_HOLDER, [self.backend_pid, list(keys)]).fetchone()
        except psycopg.Error as e:
            return f"another session (unknown which: {_say(e)})"
        return holder(row)

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return  # a dropped connection rolled back on the server
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error as e:
            log.warning("mlprefs: rollback failed (%s); the server rolls back on disconnect", e)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """One statement. Outside a transaction a write gets one of its own (as SQLite's
        autocommit takes the write lock), and a read is retried once after a dropped
        connection."""
        if self._pid != os.getpid():
            self._after_fork()
        if self._writer == threading.get_ident():  # see this transaction's pending rows
            with self._write_lock:
                return PgConnection(self.conn, psycopg.Error, self._error).execute(
                    sql, params).fetchall()
        if not is_read(translate(sql)):
            with self.transaction() as db:
                return db.execute(sql, params).fetchall()
        with self._lock:
            db = PgConnection(self.reader, psycopg.Error, self._error)
            try:
                return db.execute(sql, params).fetchall()
            except StoreError as e:
                if not db.raw.closed:
                    raise
                log.warning("mlprefs: %s; reconnecting", e)
            return PgConnection(self.reader, psycopg.Error, self._error).execute(
                sql, params).fetchall()

    def changed(self) -> bool:
        """True once after another client committed, or after LISTEN reconnected (a flag)."""
        if self._pid != os.getpid():
            with self._lock:
                self._after_fork()
        if not self._following:  # commits from now on (follow() reports one at once)
            self._start_following(report=False)
        listener = self._listener
        if listener is not None and listener.changed.is_set():
            listener.changed.clear()
            return True
        return False

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` as soon as another client's commit is announced (LISTEN/NOTIFY),
        rather than at the next poll of changed(); returns the function that unsubscribes it.

        Callbacks run on a thread of the store's, one at a time; a burst of commits makes one
        call. Each call consumes the changed() flag; a callback that raises is logged and the
        flag is set again, so a poller re-reads.
        """
        if self._pid != os.getpid():
            with self._lock:
                self._after_fork()
        self.follow()
        with self._lock:
            if self._wakers is None:
                self._wakers = Wakers(f"mlprefs-wake {self.channel}", lambda: self._listener,
                                      self.shown)
            return self._wakers.add(callback)

    local_file = None    # a server: no file on this host
    change_file = None   # changes are announced (follow(), on_change())

    def integrity(self) -> list[str]:
        """[]: the server checks its own pages (data checksums); nothing to report here."""
        return []

    def purge_erased(self) -> None:
        """Nothing to do at once: erased rows' old versions are reclaimed by (auto)vacuum."""

    def health(self) -> dict[str, Any]:
        """Backend, round-trip latency and the notification channel's state (for doctor)."""
        with self._lock:
            start = time.perf_counter()
            self.query("SELECT 1")
            latency_ms = round((time.perf_counter() - start) * 1000, 3)
        if not self._following:
            self._start_following(report=False)
        listener = self._listener
        connected = listener is not None and listener.connected
        round_trip = listener.probe(self) if listener is not None and connected else None
        state = (f"connected, a NOTIFY came back in {round_trip} ms" if round_trip is not None
                 else "connected, but a NOTIFY did not come back" if connected
                 else "reconnecting")
        reconnects = listener.reconnects if listener is not None else 0
        return {"backend": "postgresql", "location": self.shown, "schema": self.schema,
                "latency_ms": latency_ms,
                "notifications": {"mechanism": f"LISTEN/NOTIFY on {self.channel}", "state": state,
                                  "round_trip_ms": round_trip, "reconnects": reconnects},
                "healthy": round_trip is not None}

    def close(self) -> None:
        if self._wakers is not None and self._pid == os.getpid():
            self._wakers.close()
        with self._lock:
            listener, self._listener = self._listener, None
            mine = self._pid == os.getpid()
            if listener is not None and mine:
                listener.stop(self._reader if self._reader is not None else self._conn)
            for conn in (self._conn, self._reader):
                if conn is not None and mine:
                    conn.close()
            self._conn = self._reader = None

    def notify(self, payload: str) -> None:
        """Send `payload` on the store's channel (health() probes the listener with it)."""
        with self._lock:
            self.reader.execute("SELECT pg_notify(%s, %s)", [self.channel, payload])


class _Busy(Exception):
    """Inside write(): another writer holds a scope the validation reads; start again."""

    def __init__(self, scope: tuple[str, str]) -> None:
        super().__init__(f"scope {scope} is being written")
        self.scope = scope


_ALL: set[tuple[str, str]] = set()  # write() under the store's exclusive lock: all is held


def _one(row: tuple[Any, ...] | None) -> Any:
    """The single column of a query that always returns one row."""
    assert row is not None
    return row[0]
