"""The SQLite store: file mode, WAL, durability level, migrations, refusing what it cannot use."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlprefs_sdk import Client, StoreError
from mlprefs_sdk._migrations import MIGRATIONS
from mlprefs_sdk.store import SQLiteStore

BATCH = "ml.performance.batch_size"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_store_file_is_created_readable_by_its_owner_only(home):
    with Client() as prefs:
        prefs.set(BATCH, 64)
        db = home / "prefs.db"
        assert _mode(db) == 0o600
        assert _mode(Path(str(db) + "-wal")) == 0o600  # the WAL holds the same data


def test_the_store_runs_in_wal_mode_with_synchronous_full(home):
    with Client() as prefs:
        assert prefs.store.query("PRAGMA journal_mode") == [("wal",)]
        # FULL (2): in WAL mode a commit is fsynced before it returns; NORMAL (1) may lose
        # the last commits on power loss.
        assert prefs.store.query("PRAGMA synchronous") == [(2,)]


def test_a_new_store_is_migrated_to_the_current_schema(tmp_path):
    store = SQLiteStore(str(tmp_path / "new.db"))
    try:
        assert store.schema_version == len(MIGRATIONS)
        tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"prefs", "history", "templates"} <= tables
    finally:
        store.close()


def _old_store(path: Path, version: int) -> None:
    """A store as an older mlprefs-sdk left it: the first `version` migrations applied."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migrate in MIGRATIONS[:version]:
        migrate(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO prefs (scope, scope_id, key, value, updated_at, actor) "
                 "VALUES ('user', 'alice', ?, '128', 0, 'alice')", (BATCH,))
    conn.close()


def test_an_older_store_is_migrated_on_open_and_keeps_its_values(home, tmp_path):
    path = tmp_path / "old.db"
    _old_store(path, version=2)
    with Client(store=str(path), user="alice") as prefs:
        assert prefs.store.schema_version == len(MIGRATIONS)
        assert prefs.get(BATCH) == 128


def test_each_migration_runs_in_its_own_transaction(tmp_path, monkeypatch):
    def m003_breaks_halfway(db):
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("SELECT missing FROM no_such_table")

    monkeypatch.setattr("mlprefs_sdk.store.MIGRATIONS", [*MIGRATIONS[:2], m003_breaks_halfway])
    path = tmp_path / "partial.db"
    with pytest.raises(StoreError, match="schema migration m003_breaks_halfway failed \\(no such "
                                         "table: no_such_table\\); the store stays at schema "
                                         "version 2"):
        SQLiteStore(str(path))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "templates" in tables and "half_done" not in tables
    finally:
        conn.close()


def test_a_store_from_a_newer_schema_is_refused_untouched(home, tmp_path):
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as e:
        Client(store=str(path))
    assert str(e.value) == (f"{path} has schema version 99, newer than this mlprefs-sdk knows "
                            f"({len(MIGRATIONS)}); upgrade mlprefs-sdk, or point MLPREFS_STORE "
                            "at another file")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "newer.db", "project"]


def test_a_file_that_is_not_sqlite_is_refused_untouched(home, tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=f"{path}: not an mlprefs store \\(file is not a database\\)"):
        Client(store=str(path))
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists()


def test_store_error_is_an_os_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not sqlite " * 200)
    with pytest.raises(OSError):
        SQLiteStore(str(path))


@contextlib.contextmanager
def read_only(directory: Path):
    """A directory nobody may write to: mode 0500, and for root (who ignores modes) the
    filesystem's immutable flag."""
    directory.chmod(0o500)
    immutable = False
    if os.access(directory, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
        if not immutable:
            directory.chmod(0o700)
            pytest.skip("cannot make a directory unwritable for this user")
    try:
        yield directory
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o700)


def test_an_unwritable_home_is_a_store_error_that_says_what_to_do(home, monkeypatch, tmp_path):
    locked_home = tmp_path / "locked-home"
    locked_home.mkdir()
    monkeypatch.setenv("MLPREFS_HOME", str(locked_home))
    with read_only(locked_home):
        with pytest.raises(StoreError) as e:
            Client()
    assert str(e.value).startswith(f"cannot create the store {locked_home / 'prefs.db'}: ")
    assert str(e.value).endswith("set MLPREFS_HOME or MLPREFS_STORE to a writable location")
    assert list(locked_home.iterdir()) == []


def test_a_home_below_a_file_is_a_store_error(home, monkeypatch, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("MLPREFS_HOME", str(blocker / "home"))
    with pytest.raises(StoreError, match="Not a directory"):
        Client()






def test_a_successful_write_also_brings_in_other_processes_changes(home):
    with Client(user="alice") as a, Client(user="alice") as b:
        a.set("ml.training.max_iterations", 50)
        b.set(BATCH, 64)
        assert b.get("ml.training.max_iterations") == 50






def test_an_in_memory_store_is_private_to_its_client(home):
    with Client(store=":memory:") as a, Client(store=":memory:") as b:
        a.set(BATCH, 64)
        assert b.get(BATCH) == 32
    assert not (home / "prefs.db").exists()


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()  # hold the write lock until the test says so
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def foreign_write_lock(path: Path):
    """Another process holding the store's write lock (BEGIN IMMEDIATE) until the block ends."""
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline() == "held\n"
            yield proc
        finally:
            proc.stdin.close()  # readline() returns: the holder commits and exits
            proc.wait(timeout=30)


def _in_thread(fn):
    """Run fn on a thread; return (thread, box) where box gets "result" or "error"."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test, which asserts on it
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _writer_is_waiting(box: dict, thread: threading.Thread) -> None:
    """Give the set() time to reach BEGIN IMMEDIATE; it must still be waiting afterwards."""
    thread.join(0.3)
    assert thread.is_alive(), box


def test_a_reload_and_history_carry_on_while_a_set_waits_for_another_process(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\nmax_iterations = 10\n")
    with Client() as prefs:
        prefs.set(BATCH, 16)
        with foreign_write_lock(home / "prefs.db"):
            writer, wrote = _in_thread(lambda: prefs.set(BATCH, 64))
            _writer_is_waiting(wrote, writer)
            (project_dir / "mlprefs.toml").write_text("[ml.training]\nmax_iterations = 20\n")
            reloader, reloaded = _in_thread(prefs.reload)
            reloader.join(30)  # the foreign lock is held until we leave the block
            assert not reloader.is_alive() and "error" not in reloaded
            assert prefs.get("ml.training.max_iterations") == 20
            reader, history = _in_thread(lambda: prefs.history(BATCH))
            reader.join(30)
            assert [e.new for e in history["result"]] == [16]
            assert writer.is_alive()  # still waiting for the lock
        writer.join(30)
    assert wrote["result"].new == 64


def test_a_set_that_cannot_get_the_lock_in_its_budget_says_who_holds_it(home, monkeypatch):
    monkeypatch.setenv("MLPREFS_LOCK_TIMEOUT", "0.5")
    with Client() as prefs:
        with foreign_write_lock(home / "prefs.db") as holder:
            with pytest.raises(StoreError) as e:
                prefs.set(BATCH, 64)
        assert prefs.get(BATCH) == 32
    message = str(e.value)
    assert message.startswith(f"{home / 'prefs.db'}: gave up waiting for the write lock after 0.")
    assert f"it is held by pid {holder.pid} ({sys.executable} -c" in message
    assert message.endswith("nothing was changed")


def test_a_bad_lock_timeout_is_a_store_error_naming_the_variable(home, monkeypatch):
    monkeypatch.setenv("MLPREFS_LOCK_TIMEOUT", "soon")
    with pytest.raises(StoreError, match="MLPREFS_LOCK_TIMEOUT='soon' is not a number of seconds"):
        Client()


def damage_history_pages(db: Path) -> None:
    """Fill a real store's history with rows, then overwrite some of its pages with junk."""
    with Client() as prefs:
        for i in range(300):
            prefs.set(BATCH, 2 ** (i % 10 + 1), reason="x" * 200)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = [r[0] for r in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'history' AND pagetype = 'leaf'")]
    conn.close()
    with open(db, "r+b") as f:
        for page in pages[len(pages) // 2:][:3]:
            f.seek((page - 1) * size)
            f.write(b"\xa5" * size)


def test_reading_damaged_pages_is_a_store_error_naming_the_store_and_what_to_do(home):
    db = home / "prefs.db"
    damage_history_pages(db)
    with Client() as prefs:
        assert prefs.get(BATCH) == 1024  # the prefs table is intact: reads of it still work
        with pytest.raises(StoreError) as e:
            prefs.history(limit=300)
    assert str(e.value).startswith(f"{db}: the store is damaged (database disk image is "
                                   "malformed); see `mlprefs doctor` for its integrity report")
    assert f"sqlite3 {db} .recover" in str(e.value)


def test_a_directory_at_the_store_path_is_a_store_error_naming_it(home, tmp_path):
    (tmp_path / "prefs.db").mkdir()
    with pytest.raises(StoreError) as e:
        Client(store=str(tmp_path / "prefs.db"))
    assert str(e.value) == (f"cannot create the store {tmp_path / 'prefs.db'}: it is a directory, "
                            "not a store file; set MLPREFS_HOME or MLPREFS_STORE to a writable "
                            "location")
    assert isinstance(e.value.__cause__, IsADirectoryError)


def test_a_store_in_a_missing_directory_that_cannot_be_made_names_the_path(home, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=f"cannot create the store {blocker}/sub/prefs.db: "
                                         "Not a directory"):
        Client(store=str(blocker / "sub" / "prefs.db"))


def test_a_change_callback_that_writes_does_not_deadlock_with_a_waiting_set(home, project_dir):
    """A reload runs change callbacks under the client's lock; one that calls set() must not
    deadlock with another thread's set() that got the store lock meanwhile."""
    (project_dir / "mlprefs.toml").write_text("[ml.training]\nmax_iterations = 10\n")
    with Client() as prefs:
        prefs.on_change("ml.training.max_iterations",
                        lambda changes: prefs.set("ml.training.learning_rate", 0.02))
        with foreign_write_lock(home / "prefs.db"):
            writer, wrote = _in_thread(lambda: prefs.set(BATCH, 64))
            _writer_is_waiting(wrote, writer)
            (project_dir / "mlprefs.toml").write_text("[ml.training]\nmax_iterations = 20\n")
            reloader, reloaded = _in_thread(prefs.reload)  # its callback waits for the store
            reloader.join(0.3)
        writer.join(30)
        reloader.join(30)
        assert not writer.is_alive() and not reloader.is_alive()
        assert "error" not in wrote and "error" not in reloaded
        assert (prefs.get(BATCH), prefs.get("ml.training.learning_rate")) == (64, 0.02)


def test_a_single_write_statement_that_cannot_get_the_lock_is_a_store_error(home, monkeypatch):
    monkeypatch.setenv("MLPREFS_LOCK_TIMEOUT", "0.2")
    with Client() as prefs:
        with foreign_write_lock(home / "prefs.db") as holder:
            with pytest.raises(StoreError, match=f"database is locked \\(held by pid {holder.pid} "):
                prefs.store.query("DELETE FROM templates WHERE name = ?", ("nope",))


OPEN_AT_ONCE = """
import sys, time
start = float(sys.argv[1])
while time.time() < start:
    pass
from mlprefs_sdk import Client
with Client(discover=False) as prefs:
    prefs.set("ml.performance.batch_size", 64)
print("ok")
"""


def test_processes_opening_a_new_store_at_the_same_moment_all_start(tmp_path):
    """DDP ranks start together: switching a new file to WAL makes SQLite refuse at once,
    without waiting, when two openers deadlock on the upgrade; the open retries instead."""
    import time

    for round_ in range(4):
        home = tmp_path / f"round{round_}"
        env = {**os.environ, "MLPREFS_HOME": str(home), "MLPREFS_POLICY": str(tmp_path / "none.toml")}
        start = str(time.time() + 1.0)
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, start], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [out for out, _ in results] == ["ok\n"] * 6, [err for _, err in results if err]
