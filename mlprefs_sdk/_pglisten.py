"""The PostgreSQL store's listener thread: LISTEN on the store's channel, reconnect with
backoff, and flag (and wake) every change another client announces."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql as pgsql

from .errors import StoreError

if TYPE_CHECKING:
    from .pgstore import PostgresStore

__all__ = ["BACKOFF_S", "HEARTBEAT_S", "PROBE_TIMEOUT_S", "WAKE", "Listener", "Wakers", "say"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0            # the listener pings its idle connection this often
BACKOFF_S = (0.05, 2.0)      # first and longest wait between reconnection attempts
PROBE_TIMEOUT_S = 2.0        # how long health() waits for its NOTIFY to come back
WAKE = "wake"                # payload close() sends so the listener stops at once


def say(e: BaseException) -> str:
    """An error's message on one line: the server's primary message, else libpq's text."""
    primary = getattr(getattr(e, "diag", None), "message_primary", None)
    return primary or " ".join(str(e).split()) or type(e).__name__



class Listener(threading.Thread):
    """LISTEN on the store's channel; reconnect with backoff; flag every change for changed()."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(name=f"mlprefs-listen {store.channel}", daemon=True)
        self._store = store
        self.pid = os.getpid()
        self.changed = threading.Event()
        self.woken = threading.Event()  # set with `changed`: wakes the store's on_change thread
        self.ready = threading.Event()
        self.connected = False
        self.reconnects = 0
        self.backend_pid = 0
        self._halt = threading.Event()
        self._probes: dict[str, threading.Event] = {}

    def run(self) -> None:
        delay = BACKOFF_S[0]
        while not self._halt.is_set():
            try:
                conn = self._store.open_connection(f"listen {self._store.schema}")
            except StoreError as e:
                log.warning("mlprefs: %s; retrying in %.2f s", e, delay)
            else:
                since = time.monotonic()
                try:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self._store.channel)))
                    self.backend_pid, self.connected = conn.info.backend_pid, True
                    if self.ready.is_set():
                        self.reconnects += 1
                        log.warning("mlprefs: %s: notifications reconnected; re-reading the store",
                                    self._store.shown)
                    self.changed.set()  # commits made while we were not listening sent nothing
                    self.woken.set()
                    self.ready.set()
                    self._serve(conn)
                except psycopg.Error as e:
                    if not self._halt.is_set():
                        log.warning("mlprefs: %s: notification connection lost (%s); "
                                    "reconnecting", self._store.shown, say(e))
                finally:
                    self.connected = False
                    conn.close()
                if time.monotonic() - since > HEARTBEAT_S:  # it had been healthy: start over
                    delay = BACKOFF_S[0]
            self._halt.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_S[1])

    def _serve(self, conn: psycopg.Connection) -> None:
        while not self._halt.is_set():
            got = False
            for note in conn.notifies(timeout=HEARTBEAT_S):
                got = True
                if self._halt.is_set():
                    return
                probe = self._probes.get(note.payload)
                if probe is not None:
                    probe.set()
                elif note.payload != WAKE and note.pid != self._store.backend_pid:
                    self.changed.set()  # our own commits are in the view already
                    self.woken.set()
            if not got:
                conn.execute("SELECT 1")  # a dead server or network surfaces here

    def probe(self, store: PostgresStore) -> float | None:
        """Milliseconds for a NOTIFY to come back through this listener; None if it did not."""
        token = f"probe {os.getpid()} {threading.get_ident()} {time.monotonic_ns()}"
        arrived = self._probes[token] = threading.Event()
        try:
            start = time.perf_counter()
            store.notify(token)
            if arrived.wait(PROBE_TIMEOUT_S):
                return round((time.perf_counter() - start) * 1000, 3)
            return None
        finally:
            del self._probes[token]

    def stop(self, conn: psycopg.Connection | None) -> None:
        self._halt.set()
        if conn is not None and not conn.closed:
            try:  # wakes the listener now rather than at its next heartbeat
                conn.execute("SELECT pg_notify(%s, %s)", [self._store.channel, WAKE])
            except psycopg.Error as e:
                log.debug("mlprefs: wake-up notification failed (%s)", e)
        if self is not threading.current_thread():
            self.join(HEARTBEAT_S + 1)


class Wakers:
    """The store's on_change() callbacks and the thread that calls them when the listener
    wakes it: one at a time, and a burst of commits makes one call.

    Each call consumes the listener's changed flag; a callback that raises is logged and the
    flag is set again, so a poller of changed() re-reads. `listener()` gives the store's
    current listener (None once it is closed).
    """

    def __init__(self, name: str, listener: Callable[[], Listener | None], shown: str) -> None:
        self._name, self._listener, self._shown = name, listener, shown
        self._callbacks: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._closing = False

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Subscribe `callback`; returns the function that unsubscribes it."""
        self._callbacks.append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name=self._name)
            self._thread.start()

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)
        return cancel

    def _run(self) -> None:
        while not self._closing:
            listener = self._listener()
            if listener is None:
                return
            listener.woken.wait(HEARTBEAT_S)
            listener.woken.clear()
            callbacks = list(self._callbacks)
            if self._closing or not callbacks or not listener.changed.is_set():
                continue
            listener.changed.clear()
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a poller of changed() tries again
                    log.exception("mlprefs: %s: a change callback failed", self._shown)
                    listener.changed.set()

    def close(self) -> None:
        """Stop the thread (at once, unless a callback is running: then when it returns)."""
        self._closing = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            listener = self._listener()
            if listener is not None:
                listener.woken.set()
            thread.join(HEARTBEAT_S + 1)
