"""PostgreSQL for the tests: each test gets a private schema in the server MLPREFS_TEST_PG names.

The variable is read at import, before the `home` fixture clears every MLPREFS_* variable.
Without it the PostgreSQL tests skip and say how to enable them.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SERVER = os.environ.get("MLPREFS_TEST_PG", "")
HOW_TO_ENABLE = (
    "PostgreSQL tests need a server: run `export MLPREFS_TEST_PG=$(bash .ci/postgres.sh)` "
    "(starts a private server from Debian's postgresql package, installing it as root if "
    "needed) or set MLPREFS_TEST_PG to a postgresql:// URL; .ci/run does this"
)


def require_server() -> str:
    if not SERVER:
        pytest.skip(HOW_TO_ENABLE)
    pytest.importorskip("psycopg", reason="install the extra: pip install 'mlprefs-sdk[postgres]'")
    return SERVER


def in_schema(url: str, schema: str) -> str:
    """The URL with its search_path set to one schema (a store per schema)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def admin() -> psycopg.Connection:  # noqa: F821 (psycopg is imported lazily)
    import psycopg

    return psycopg.connect(require_server(), autocommit=True)


@contextlib.contextmanager
def fresh_store_url() -> Iterator[str]:
    """A new, empty schema; dropped (with everything in it) afterwards."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield in_schema(SERVER, schema)
    finally:
        with admin() as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def terminate(*backend_pids: int) -> None:
    """Kill server sessions, as an administrator or a failover would."""
    with admin() as conn:
        for pid in backend_pids:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])  # returns once gone


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.005)


class Cable:
    """A TCP path from clients to the server that a test can cut and plug back in.

    cut() drops every connection through it and refuses new ones, as a host losing its
    network (or a proxy or server failover) would; plug() lets connections through again.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(url)
        self._target = (info.get("host") or "localhost", int(info.get("port") or 5432))
        self._pairs: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.plug()

    def url(self, schema_url: str) -> str:
        """schema_url, routed through this cable."""
        return re.sub(r"@[^/@]+/", f"@127.0.0.1:{self.port}/", schema_url, count=1)

    def plug(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
        for sock in pairs:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._pairs += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass  # the cable was cut
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def run_together(argvs: list[list[str]], go: Path, timeout: float = 120) -> list[tuple[int, str, str]]:
    """Start one process per argv, let them all begin at once, return (code, stdout, stderr).

    Each process is handed `go` as its last argument: it creates `<go>.ready<n>` once set up
    (n: its own first argument), then waits for `go` to exist.
    """
    procs = [subprocess.Popen([sys.executable, "-c", *argv, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    try:
        wait_until(lambda: len(list(go.parent.glob(f"{go.name}.ready*"))) == len(procs)
                   or any(p.poll() is not None for p in procs), timeout=60)
        go.write_text("")
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, results)]
