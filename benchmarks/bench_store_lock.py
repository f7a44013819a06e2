"""Hot reload while a set() waits on another process's store lock: python benchmarks/bench_store_lock.py

A second process holds the SQLite write lock (BEGIN IMMEDIATE) for --hold seconds (10 by
default) while one thread's set() waits for it. Meanwhile mlprefs.toml is saved every
--every seconds and each save is timed until get() returns the new value (the watcher's
reload), and history() is timed too. The baseline is the same loop in the same run with no
foreign lock and no waiting write. The figure that matters is the longest stall: before the
fix, a reload waited for the whole lock (5.7 s behind a 6 s lock).

With --store postgresql://..., the same on PostgreSQL: the other process holds the store's
advisory write lock in an open transaction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import isolate, print_table

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""
PG_HOLDER = """
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("BEGIN")
conn.execute("SELECT pg_advisory_xact_lock(%s)", [int(sys.argv[3])])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""
KEY = "ml.training.max_iterations"
TIMEOUT_S = 30.0


def save_and_time(prefs, toml: Path, value: int) -> float:
    """Save the project file (atomically) and return seconds until get() sees the value."""
    tmp = toml.with_suffix(".tmp")
    tmp.write_text(f"[ml.training]\nmax_iterations = {value}\n")
    start = time.perf_counter()
    os.replace(tmp, toml)
    while prefs.get(KEY) != value:
        if time.perf_counter() - start > TIMEOUT_S:
            raise SystemExit(f"no reload of {value} within {TIMEOUT_S} s")
        time.sleep(0.0005)
    return time.perf_counter() - start


def edit_loop(prefs, toml: Path, seconds: float, every: float, first: int) -> tuple[list, list]:
    """Save every `every` s for `seconds`; (reload latencies, history() latencies)."""
    reloads, histories, value = [], [], first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value += 1
        reloads.append(save_and_time(prefs, toml, value))
        start = time.perf_counter()
        prefs.history(limit=5)
        histories.append(time.perf_counter() - start)
        time.sleep(every)
    return reloads, histories


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold", type=float, default=10.0, help="seconds the foreign lock is held")
    ap.add_argument("--every", type=float, default=0.1, help="seconds between saves")
    ap.add_argument("--store", help="a postgresql:// URL (default: a SQLite file)")
    args = ap.parse_args()
    isolate()
    root = Path(tempfile.mkdtemp(prefix="mlprefs-bench-lock-"))
    os.environ["MLPREFS_HOME"] = str(root / "home")
    os.environ["MLPREFS_LOCK_TIMEOUT"] = str(args.hold + 30)
    project = root / "project"
    project.mkdir()
    toml = project / "mlprefs.toml"
    toml.write_text("[ml.training]\nmax_iterations = 1000\n")
    os.chdir(project)

    from mlprefs_sdk import Client

    with Client(watch=True, store=args.store) as prefs:
        prefs.set("ml.performance.batch_size", 16)
        base_reloads, base_hist = edit_loop(prefs, toml, min(args.hold, 3.0), args.every, 1000)

        if args.store:
            command = [PG_HOLDER, args.store, str(args.hold), str(prefs.store.lock_id)]
        else:
            command = [HOLDER, str(root / "home" / "prefs.db"), str(args.hold)]
        holder = subprocess.Popen([sys.executable, "-c", *command], stdout=subprocess.PIPE,
                                  text=True)
        assert holder.stdout.readline() == "held\n"
        locked_at = time.monotonic()
        waited: dict[str, float] = {}

        def write() -> None:
            start = time.monotonic()
            prefs.set("ml.performance.batch_size", 64)
            waited["set"] = time.monotonic() - start

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.2)  # the set() is now waiting in BEGIN IMMEDIATE
        remaining = args.hold - (time.monotonic() - locked_at) - 0.5
        reloads, hist = edit_loop(prefs, toml, remaining, args.every, 2000)
        still_waiting = writer.is_alive()
        writer.join()
        holder.wait()
        holder.stdout.close()

    worst, base_worst = max(reloads), max(base_reloads)
    print(f"foreign lock held {args.hold:g} s; the waiting set() returned after "
          f"{waited['set']:.2f} s; {len(reloads)} saves reloaded while it waited "
          f"(it was still waiting after the last: {still_waiting})")

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    rows = [
        ("longest reload stall while a set() waits", ms(worst), "-", ms(base_worst),
         f"{worst / base_worst:.2f}x", worst < 1.0),
        ("median save -> get() while a set() waits", ms(statistics.median(reloads)), "-",
         ms(statistics.median(base_reloads)),
         f"{statistics.median(reloads) / statistics.median(base_reloads):.2f}x", True),
        ("longest history() while a set() waits", ms(max(hist)), "-", ms(max(base_hist)),
         f"{max(hist) / max(base_hist):.2f}x", max(hist) < 1.0),
    ]
    return print_table(rows)


if __name__ == "__main__":
    raise SystemExit(main())
