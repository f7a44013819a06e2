"""Several real processes on one store: nothing lost, never "database is locked", kill -9 safe."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mlprefs_sdk.store import SQLiteStore

WRITERS = 6
WRITES = 40

# Each writer says it is ready, then waits for the go file, so all six open the (fresh) store,
# migrate it and write at the same moment. Each returned write prints its history id.
WRITER = """
import os, sys, time
from mlprefs_sdk import Client

worker, writes, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open(f"{go}.ready{worker}", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
with Client(user="team", discover=False) as prefs:
    key = f"team.w{worker}.count"
    prefs.register(key, int, 0)
    for i in range(1, writes + 1):
        mine = prefs.set(key, i)
        shared = prefs.set("ml.training.max_iterations", 1000 + worker * 100 + i)
        print(mine.id, shared.id, flush=True)
"""

# Writes forever, printing "value id" after each set() returns, until it is killed.
ENDLESS = """
import sys
from mlprefs_sdk import Client

with Client(user="team", discover=False) as prefs:
    i = 0
    while True:
        i += 1
        entry = prefs.set("ml.training.max_iterations", 10 + i % 99990)
        print(entry.new, entry.id, flush=True)
"""


def test_six_processes_writing_at_once_lose_nothing(home, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(WRITES), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(WRITERS)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready*"))) < WRITERS and time.monotonic() < deadline:
        time.sleep(0.01)
    go.write_text("")
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    returned = [int(i) for out, _ in results for i in out.split()]
    assert len(returned) == 2 * WRITERS * WRITES == len(set(returned))

    store = SQLiteStore(str(home / "prefs.db"))
    try:
        rows = store.query("SELECT id FROM history")
        assert sorted(r[0] for r in rows) == sorted(returned)
        values = store.scope_values("user", "team")
        for w in range(WRITERS):
            assert values[f"team.w{w}.count"][0] == WRITES
        history = store.history(key="team.w0.count", limit=1000)
        assert [e.new for e in reversed(history)] == list(range(1, WRITES + 1))
        assert [e.old for e in reversed(history)] == [None, *range(1, WRITES)]
        assert store.query("PRAGMA integrity_check") == [("ok",)]
    finally:
        store.close()


def test_a_writer_killed_mid_stream_leaves_a_sound_store_with_every_returned_write(home):
    proc = subprocess.Popen([sys.executable, "-c", ENDLESS], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    acknowledged = []
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            value, entry_id = line.split()
            acknowledged.append((int(entry_id), int(value)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert len(acknowledged) == 150, "the writer stopped before it was killed"

    store = SQLiteStore(str(Path(home) / "prefs.db"))
    try:
        assert store.query("PRAGMA integrity_check") == [("ok",)]
        stored = dict(store.query("SELECT id, new FROM history"))
        for entry_id, value in acknowledged:
            assert int(stored[entry_id]) == value
        last_id = max(stored)
        assert last_id >= acknowledged[-1][0]
        (current,) = store.query("SELECT value FROM prefs WHERE key = 'ml.training.max_iterations'")
        assert int(current[0]) == int(stored[last_id])
    finally:
        store.close()
