"""One behaviour, two backends: every test here runs on SQLite and on PostgreSQL.

`store_url` (tests/conftest.py) is a SQLite file or a fresh PostgreSQL schema; the PostgreSQL
half needs MLPREFS_TEST_PG (see tests/pgtest.py) and skips without it.
"""

from __future__ import annotations

import os

import pytest
from pgtest import run_together, wait_until

from mlprefs_sdk import Client, StoreError, ValidationError
from mlprefs_sdk._migrations import MIGRATIONS
from mlprefs_sdk.store import open_store

BATCH = "ml.performance.batch_size"
LR = "ml.training.learning_rate"
TABLES = {"prefs", "history", "templates", "runs", "consent", "feedback", "monitor_samples",
          "model_versions", "experiments"}


def _tables(store) -> set[str]:
    if type(store).__name__ == "SQLiteStore":
        rows = store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = store.query("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = current_schema()")
    return {r[0] for r in rows}


def _use_migrations(monkeypatch: pytest.MonkeyPatch, store_url: str, migrations: list) -> None:
    """Pretend this mlprefs-sdk knows only `migrations` (an older or a broken release)."""
    module = "mlprefs_sdk.pgstore" if "://" in store_url else "mlprefs_sdk.store"
    monkeypatch.setattr(f"{module}.MIGRATIONS", migrations)


def test_a_set_value_is_stored_for_every_later_client(store_url):
    with Client(store=store_url, user="alice") as prefs:
        entry = prefs.set(BATCH, 64, reason="fits GPU")
        assert prefs.get(BATCH) == 64
    assert (entry.key, entry.old, entry.new, entry.actor, entry.reason) == (
        BATCH, None, 64, "alice", "fits GPU")
    with Client(store=store_url, user="alice") as again:
        assert again.get(BATCH) == 64
        assert again.explain(BATCH).source.layer == "user"


def test_unset_removes_the_stored_value_and_records_it(store_url):
    with Client(store=store_url, user="alice") as prefs:
        prefs.set(BATCH, 64)
        entry = prefs.unset(BATCH)
        assert prefs.get(BATCH) == 32
        assert (entry.old, entry.new) == (64, None)
        assert prefs.unset(BATCH) is None  # nothing stored: nothing recorded
        assert len(prefs.history(BATCH)) == 2


def test_history_lists_changes_newest_first(store_url):
    with Client(store=store_url, user="alice") as prefs:
        for size in (64, 128, 256):
            prefs.set(BATCH, size, reason=f"try {size}")
        prefs.set(LR, 0.01)
        history = prefs.history(BATCH)
        assert [(e.old, e.new, e.reason) for e in history] == [
            (128, 256, "try 256"), (64, 128, "try 128"), (None, 64, "try 64")]
        assert [e.new for e in prefs.history(limit=2)] == [0.01, 256]
        assert all(e.actor == "alice" and e.scope == "user" for e in history)
        assert history[0].id > history[1].id > history[2].id


def test_rollback_restores_an_earlier_value_as_a_new_entry(store_url):
    with Client(store=store_url, user="alice") as prefs:
        first = prefs.set(BATCH, 64)
        prefs.set(BATCH, 512)
        restored = prefs.rollback(BATCH, to=first.id)
        assert prefs.get(BATCH) == 64
        assert (restored.old, restored.new, restored.reason) == (512, 64, f"rollback to #{first.id}")
        assert prefs.history(BATCH, limit=1)[0].id == restored.id


def test_user_and_project_scopes_keep_their_own_values(store_url):
    with Client(store=store_url, user="alice", project="churn") as alice:
        alice.set(BATCH, 64)
        alice.set(BATCH, 128, scope="project")
        assert alice.get(BATCH) == 128  # the project layer is above the user layer
    with Client(store=store_url, user="bob", project="churn") as bob:
        assert bob.get(BATCH) == 128
        bob.unset(BATCH, scope="project")
        assert bob.get(BATCH) == 32  # alice's user value is hers alone
    with Client(store=store_url, user="alice") as alice:
        assert alice.store.scope_values("user", "alice")[BATCH][0] == 64
        assert alice.store.scope_values("project", "churn") == {}


def test_saved_templates_are_shared_through_the_store(store_url):
    with Client(store=store_url, user="alice") as alice:
        alice.templates.save("small", {BATCH: 16})
        alice.templates.save("small", {BATCH: 8})
    with Client(store=store_url, user="bob", template="small") as bob:
        assert bob.get(BATCH) == 8
        assert bob.explain(BATCH).source.layer == "template"


def test_a_new_store_is_migrated_to_the_current_schema(store_url):
    store = open_store(store_url)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert TABLES <= _tables(store)
    finally:
        store.close()


def test_an_older_store_is_migrated_on_open_and_keeps_its_values(store_url, monkeypatch):
    _use_migrations(monkeypatch, store_url, MIGRATIONS[:2])
    old = open_store(store_url)
    try:
        assert old.schema_version == 2
        old.write("user", "alice", [(BATCH, 128)], "alice")
    finally:
        old.close()
    monkeypatch.undo()
    with Client(store=store_url, user="alice") as prefs:
        assert prefs.store.schema_version == len(MIGRATIONS)
        assert prefs.get(BATCH) == 128


def test_a_failed_migration_leaves_the_previous_version(store_url, monkeypatch):
    def m003_breaks_halfway(db):
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("SELECT missing FROM no_such_table")

    _use_migrations(monkeypatch, store_url, [*MIGRATIONS[:2], m003_breaks_halfway])
    with pytest.raises(StoreError, match="schema migration m003_breaks_halfway failed .*"
                                         "no_such_table.*; the store stays at schema version 2"):
        open_store(store_url)
    _use_migrations(monkeypatch, store_url, MIGRATIONS[:2])
    store = open_store(store_url)
    try:
        assert store.schema_version == 2
        assert "templates" in _tables(store) and "half_done" not in _tables(store)
    finally:
        store.close()


def test_a_store_from_a_newer_schema_is_refused(store_url):
    store = open_store(store_url)
    store.query("PRAGMA user_version = 99")
    store.close()
    with pytest.raises(StoreError, match=f"schema version 99, newer than this mlprefs-sdk knows "
                                         f"\\({len(MIGRATIONS)}\\); upgrade mlprefs-sdk"):
        Client(store=store_url)


def test_preference_and_history_rows_change_together_or_not_at_all(store_url):
    store = open_store(store_url)
    try:
        def veto():
            assert store.scope_values("user", "alice")[BATCH][0] == 64  # sees the pending row
            raise ValidationError([])

        with pytest.raises(ValidationError):
            store.write("user", "alice", [(BATCH, 64)], "alice", check=veto)
        assert store.scope_values("user", "alice") == {}
        assert store.history() == []
        (entry,) = store.write("user", "alice", [(BATCH, 64)], "alice", run_id="r1", step=3)
        assert store.query("SELECT run_id, step FROM history WHERE id = ?", (entry.id,)) == [("r1", 3)]
    finally:
        store.close()


def test_a_write_is_validated_against_what_other_clients_committed(store_url):
    """Two clients with stale views cannot together store a pair that breaks a rule."""
    with Client(store=store_url, user="alice") as a, Client(store=store_url, user="alice") as b:
        a.set("ml.performance.memory_limit_mb", 4096)
        a.set("ml.performance.parallel_workers", 16)  # needs 4096 MB: fine
        with pytest.raises(ValidationError) as e:
            b.set("ml.performance.memory_limit_mb", 1024)  # whatever b last read
        assert e.value.problems[0].rule == "memory-per-worker"
    with Client(store=store_url, user="alice") as fresh:
        assert fresh.get("ml.performance.memory_limit_mb") == 4096


def test_changed_reports_another_clients_commit_once_and_never_its_own(store_url):
    watcher, writer = open_store(store_url), open_store(store_url)
    try:
        assert watcher.changed() is False
        writer.write("user", "alice", [(BATCH, 64)], "alice")
        wait_until(watcher.changed, what="another client's commit")
        assert watcher.changed() is False
        watcher.write("user", "alice", [(BATCH, 128)], "alice")
        watcher.health()  # a round trip through the notification channel, after our commit
        assert watcher.changed() is False
    finally:
        watcher.close()
        writer.close()


# Python 3.12+ warns on any fork of a process with threads (PostgreSQL's listener is one);
# the child uses only connections it opens itself, which is what is tested here.
@pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_child_opens_its_own_connection(store_url):
    with Client(store=store_url, user="alice") as prefs:
        prefs.set(BATCH, 64)
        pid = os.fork()
        if pid == 0:  # the child: write through the inherited client, then leave at once
            code = 1
            try:
                prefs.set(BATCH, 256)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        prefs.reload()
        assert prefs.get(BATCH) == 256
        prefs.set(BATCH, 512)  # the parent's own connection survived the child's exit
        assert prefs.history(BATCH, limit=1)[0].old == 256


WRITERS = 4
WRITES = 25

# Each writer says it is ready, then waits for the go file, so all of them write at once. It
# prints the history ids of its preference writes, and bumps a counter by read-then-write
# inside store.transaction(), as the services do.
WRITER = """
import os, sys, time
from mlprefs_sdk import Client

worker, url, writes, go = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
with Client(store=url, user="team", discover=False) as prefs:
    key = f"team.w{worker}.count"
    prefs.register(key, int, 0)
    open(f"{go}.ready{worker}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(1, writes + 1):
        mine = prefs.set(key, i)
        shared = prefs.set("ml.training.max_iterations", 1000 + worker * 100 + i)
        with prefs.store.transaction() as db:
            (n,) = db.execute("SELECT n FROM counter").fetchone()
            db.execute("UPDATE counter SET n = ?", (n + 1,))
        print(mine.id, shared.id, flush=True)
"""


def test_writers_in_several_processes_lose_nothing(store_url, tmp_path):
    store = open_store(store_url)
    try:
        store.query("CREATE TABLE counter (n INTEGER NOT NULL)")
        store.query("INSERT INTO counter (n) VALUES (0)")
        results = run_together([[WRITER, str(w), store_url, str(WRITES)] for w in range(WRITERS)],
                               tmp_path / "go")
        for code, _out, err in results:
            assert code == 0, err
        returned = [int(i) for _, out, _ in results for i in out.split()]
        assert len(returned) == 2 * WRITERS * WRITES == len(set(returned))
        assert sorted(r[0] for r in store.query("SELECT id FROM history")) == sorted(returned)
        assert store.query("SELECT n FROM counter") == [(WRITERS * WRITES,)]
        values = store.scope_values("user", "team")
        assert {w: values[f"team.w{w}.count"][0] for w in range(WRITERS)} == dict.fromkeys(
            range(WRITERS), WRITES)
        mine = [(e.old, e.new) for e in reversed(store.history(key="team.w0.count", limit=1000))]
        assert mine == list(zip([None, *range(1, WRITES)], range(1, WRITES + 1)))
        shared = store.history(key="ml.training.max_iterations", limit=1000)
        assert [e.old for e in shared[:-1]] == [e.new for e in shared[1:]]  # an unbroken chain
    finally:
        store.close()


# One half of a pair that breaks memory-per-worker only together (8 workers need 2048 MB).
# The validation's first read of the store waits until both processes are inside their
# write transactions, so the two writes overlap whatever locking the backend uses (with a
# store-wide lock the second never gets in, and the wait just runs out).
HALF = """
import os, sys, time
from mlprefs_sdk import Client, ValidationError

half, url, go = sys.argv[1], sys.argv[2], sys.argv[3]
scope, key, value = {"project": ("project", "ml.performance.parallel_workers", 8),
                     "user": ("user", "ml.performance.memory_limit_mb", 1024)}[half]
with Client(store=url, user="alice", project="churn", discover=False) as prefs:
    store, read = prefs.store, prefs.store.scope_values
    def scope_values(*args):
        if not os.path.exists(f"{go}.in.{half}"):
            open(f"{go}.in.{half}", "w").close()
            deadline = time.monotonic() + 2
            while len([p for p in os.listdir(os.path.dirname(go)) if ".in." in p]) < 2 \\
                    and time.monotonic() < deadline:
                time.sleep(0.001)
        return read(*args)
    store.scope_values = scope_values
    open(f"{go}.ready{half}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        prefs.set(key, value, scope=scope)
        print("stored")
    except ValidationError as e:
        print("refused", e.problems[0].rule)
"""


def test_two_writers_of_the_two_halves_of_a_broken_pair_do_not_both_succeed(
        store_url, tmp_path):
    results = run_together([[HALF, half, store_url] for half in ("project", "user")],
                           tmp_path / "go")
    for code, _out, err in results:
        assert code == 0, err
    assert sorted(out.split()[0] for _, out, _ in results) == ["refused", "stored"]
    assert "memory-per-worker" in "".join(out for _, out, _ in results)
    store = open_store(store_url)
    try:
        stored = {**store.scope_values("user", "alice"), **store.scope_values("project", "churn")}
    finally:
        store.close()
    assert len(stored) == 1  # one half, never both


def test_many_rows_inserted_at_once_read_back_exactly(store_url):
    """The bulk path (COPY on PostgreSQL) keeps NULLs, bools as 0/1, floats and text."""
    store = open_store(store_url)
    try:
        rows = [("m", f"v{i}", None if i % 3 == 0 else i / 7, float(i), 1e9 + i)
                for i in range(2500)]
        with store.transaction() as db:
            db.executemany("INSERT INTO monitor_samples (model, version, accuracy, latency_ms, "
                           "at) VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO consent (subject, consented, opted_out, updated_at) "
                           "VALUES (?, ?, ?, ?)", [("s1", True, False, 1.0), ("it's", False, True, 2.0)])
        assert store.query("SELECT model, version, accuracy, latency_ms, at FROM monitor_samples "
                           "ORDER BY id") == rows
        assert store.query("SELECT subject, consented, opted_out FROM consent ORDER BY subject") \
            == [("it's", 0, 1), ("s1", 1, 0)]
    finally:
        store.close()


def test_every_backend_offers_what_callers_use_without_asking_which_it_is(store_url):
    """Doctor, the watcher, the privacy service and repr() use only the Store protocol."""
    from mlprefs_sdk.store import Store

    store = open_store(store_url)
    try:
        members = [m for m in vars(Store) if not m.startswith("_")] + ["location", "shown"]
        assert [m for m in members if not hasattr(store, m)] == []
        password = "://" in store_url and store_url.split("@")[0].rsplit(":", 1)[1]
        assert not password or password not in store.shown
        assert store.schema_version == len(MIGRATIONS)
        assert store.integrity() in (["ok"], [])
        assert store.health()["healthy"] is True
        store.purge_erased()
        assert (store.local_file is None) == ("://" in store_url)
    finally:
        store.close()
