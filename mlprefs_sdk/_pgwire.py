"""A preference write's round trips on libpq itself, under psycopg's connection.

psycopg's cursors (adaptation, the prepared-statement cache, a generator per result) cost
about 0.15 ms of CPU per write, most of a PostgreSQL write's own CPU in the client; with
eight writers on two cores that CPU is what limits writes/s. The write path sends its few
statements, all text-format, through the connection's PGconn in pipeline mode and reads the
results back here. The socket waits are poll()s, so other threads run meanwhile (libpq's
blocking calls would hold the GIL for the whole round trip, even a lock wait of seconds).

Anything that goes wrong half-way (an interrupt, a dropped connection) closes the
connection: the server then rolls the transaction back, and the store opens a new one.
psycopg never sees the pipeline, which is always left before returning.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["Statement", "prepare", "exchange", "texts", "rows"]

# (SQL text or a prepared statement's name, text parameters or None for no parameters)
Statement = tuple[bytes, Sequence[bytes | None] | None]

_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


def prepare(conn: psycopg.Connection, name: str, sql: str) -> None:
    """Prepare `sql` (placeholders $1, $2...) as `name` on this session (a protocol-level
    Parse, as psycopg's own prepared statements: PgBouncer 1.21+ keeps those)."""
    _pipeline(conn, lambda pgconn: pgconn.send_prepare(name.encode(), sql.encode()))


def exchange(conn: psycopg.Connection, statements: Sequence[tuple[bool, Statement]],
             ) -> list[pq.abc.PGresult]:
    """Send every statement in one pipeline and return one result each; (True, ...) runs a
    prepared statement by name. The first error is raised as psycopg raises it (the rest of
    the pipeline is skipped, and an open transaction is left aborted for the caller to roll
    back)."""
    def send(pgconn: pq.abc.PGconn) -> None:
        for prepared, (what, params) in statements:
            if prepared:
                pgconn.send_query_prepared(what, params)
            else:
                pgconn.send_query_params(what, params)
    return _pipeline(conn, send)


def _pipeline(conn: psycopg.Connection, send: Callable[[pq.abc.PGconn], None],
              ) -> list[pq.abc.PGresult]:
    pgconn = conn.pgconn
    try:
        pgconn.enter_pipeline_mode()
        send(pgconn)
        pgconn.pipeline_sync()
        while pgconn.flush():
            _wait(pgconn, select.POLLOUT)
        results = []
        while True:
            while pgconn.is_busy():
                _wait(pgconn, select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            results.append(result)
        pgconn.exit_pipeline_mode()
    except BaseException:
        conn.close()  # the server rolls back; the store reconnects for the next write
        raise
    for result in results:
        if result.status not in _OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return results


def _wait(pgconn: pq.abc.PGconn, event: int) -> None:
    poller = select.poll()
    poller.register(pgconn.socket, event | select.POLLERR | select.POLLHUP)
    poller.poll()


def texts(values: Sequence[Any]) -> list[bytes | None]:
    """Parameters in PostgreSQL's text format (each a str, an int, a float or None)."""
    return [None if v is None else (v if isinstance(v, str) else repr(v)).encode()
            for v in values]


def rows(result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    """The result's rows, each value a str or None (the caller converts its numbers)."""
    width = result.nfields
    return [tuple(None if (v := result.get_value(r, c)) is None else bytes(v).decode()
                  for c in range(width)) for r in range(result.ntuples)]
