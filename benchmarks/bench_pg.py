"""PostgreSQL store figures in one command: python benchmarks/bench_pg.py [--quick] [URL]

Each figure stands next to the same measurement on the SQLite store, taken in the same run
(the machine is shared and noisy; the ratio is what counts):

- cross-host change latency: from set() in one process ("host") to the on_change callback in
  another, whose get() already answers the new value; p50 and p95. PostgreSQL carries it by
  LISTEN/NOTIFY; SQLite by PRAGMA data_version on the watcher's 10 ms tick (one host only).
- writes/s with 8 writer processes at once (each its own user scope), and with 1: every one
  a set() that returns after a durable commit (SQLite: WAL, synchronous=FULL; PostgreSQL:
  synchronous_commit=on, fsync on), validated against the store inside its transaction.
- buffered records ingested, rows/s: monitor.record() then flush() (monitor samples) and
  experiments.record_many() then flush() (outcomes of units already assigned), end to end in
  one process, and the store-side flush alone (transaction + executemany of the outcome rows).
- get(): the same snapshot path whatever the store.
- changed(): what the watcher's 10 ms tick costs (a local flag against PRAGMA data_version).

The server: the URL argument, else $MLPREFS_TEST_PG, else .ci/postgres.sh starts one. The
figures land in a private schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlprefs_sdk import Client

HERE = Path(__file__).resolve().parent
KEY = "ml.training.max_iterations"
TARGET_P50_MS = 3.0           # set() in one process -> the other host's callback, PostgreSQL
TARGET_INGEST = 50_000        # buffered rows/s into PostgreSQL
ENABLE = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True,
          "ml.data.auto_cleanup_enabled": False}

# The watching host: prints "<value> <monotonic time>" from its on_change callback.
WATCHER = """
import sys, time
from mlprefs_sdk import Client

with Client(store=sys.argv[1], user="bench", discover=False, watch=True) as prefs:
    def seen(changes):
        for c in changes:
            if c.key == "ml.training.max_iterations":
                assert prefs.get(c.key) == c.new
                print(c.new, time.monotonic(), flush=True)
    prefs.on_change("ml.*", seen)
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""

# One writing host: waits for the go file, then set()s as fast as it can.
WRITER = """
import os, sys, time
from mlprefs_sdk import Client

url, n, writes, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with Client(store=url, user=f"writer{n}", discover=False) as prefs:
    open(f"{go}.ready{n}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.0005)
    start = time.monotonic()
    for i in range(writes):
        prefs.set("ml.training.max_iterations", 10 + i)
    print(start, time.monotonic(), flush=True)
"""


def server_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("MLPREFS_TEST_PG")
    if url:
        return url
    script = HERE.parent / ".ci" / "postgres.sh"
    return subprocess.run(["bash", str(script)], check=True, capture_output=True,
                          text=True).stdout.strip()


def private_schema(url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", drop


def change_latency(store: str, rounds: int) -> tuple[list[float], list[float]]:
    """(set() called -> the other host's callback, set() returned -> that callback), in seconds.

    set() returns after its commit and a re-read of its own scopes, so the second figure is
    negative when the other host's callback ran before set() had returned."""
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, store], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    total, after_commit = [], []
    try:
        assert watcher.stdout is not None and watcher.stdin is not None
        if watcher.stdout.readline().strip() != "ready":
            raise RuntimeError("the watching process did not start")
        with Client(store=store, user="bench", discover=False) as prefs:
            for i in range(rounds):
                time.sleep(random.uniform(0.0, 0.02))  # no lock-step with the 10 ms tick
                value = 2000 + i  # never the default (1000): that would be no change
                start = time.monotonic()
                prefs.set(KEY, value)
                committed = time.monotonic()
                seen, at = watcher.stdout.readline().split()
                if int(seen) != value:
                    raise RuntimeError(f"the watcher saw {seen}, expected {value}")
                total.append(float(at) - start)
                after_commit.append(float(at) - committed)
        watcher.stdin.close()
        watcher.wait(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    return total, after_commit


def writes_per_second(store: str, writers: int, writes: int, workdir: Path) -> float:
    go = workdir / f"go-{uuid.uuid4().hex[:6]}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store, str(n), str(writes), str(go)],
                              stdout=subprocess.PIPE, text=True) for n in range(writers)]
    try:
        while len(list(workdir.glob(f"{go.name}.ready*"))) < writers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a writer process failed to start")
            time.sleep(0.005)
        go.write_text("")
        spans = [tuple(map(float, p.communicate(timeout=300)[0].split())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError("a writer process failed")
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return writers * writes / wall


def ingest(store: str, rows: int) -> tuple[float, float, float]:
    """Rows/s: monitor samples (record + flush), outcomes (record_many + flush), and the
    store-side flush of outcome rows alone (what a service's flush costs the store)."""
    with Client(store=store, discover=False, env=False, overrides=ENABLE) as prefs:
        monitor, experiments = prefs.monitor, prefs.experiments
        start = time.perf_counter()
        for i in range(rows):
            monitor.record("ranker", "v1", accuracy=0.9, latency_ms=float(i % 50))
        monitor.flush()
        samples = rows / (time.perf_counter() - start)
        experiments.create("checkout", "old", "new", metric="mean", traffic_split_ratio=0.5)
        units = [f"user-{i}" for i in range(rows)]
        for u in units:  # assignment is not what is measured here
            experiments.assign("checkout", u)
        experiments.flush()
        start = time.perf_counter()
        experiments.record_many("checkout", [(u, 100.0 + i % 7) for i, u in enumerate(units)])
        experiments.flush()
        outcomes = rows / (time.perf_counter() - start)
        at = time.time()
        batch = [("baseline", f"{i:064x}", "control", float(i), at) for i in range(rows)]
        start = time.perf_counter()
        with prefs.store.transaction() as db:
            db.executemany("INSERT INTO experiment_outcomes (experiment, unit, arm, value, at) "
                           "VALUES (?, ?, ?, ?, ?)", batch)
        flush_only = rows / (time.perf_counter() - start)
    return samples, outcomes, flush_only


def per_call(stmt: Callable[[], Any], number: int, repeat: int = 5) -> float:
    return statistics.median(timeit.repeat(stmt, number=number, repeat=repeat)) / number


def best_of_alternating(call: Callable[[Client], Callable[[], Any]], a: Client, b: Client,
                        number: int, rounds: int = 3) -> tuple[float, float]:
    """Per-call seconds for a and b, measured in turns so that load on the machine hits both."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for side, client in enumerate((a, b)):
            times[side].append(per_call(call(client), number))
    return min(times[0]), min(times[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(what: str, pg: str, sqlite: str, ratio: str) -> None:
    print(f"  {what:<46} {pg:>13} {sqlite:>13}  {ratio}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", help="postgresql:// URL (default $MLPREFS_TEST_PG)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds, writes, rows = (40, 25, 10_000) if args.quick else (200, 400, 50_000)

    pg, drop = private_schema(server_url(args.url))
    with tempfile.TemporaryDirectory(prefix="mlprefs-bench-pg-") as tmp:
        work = Path(tmp)
        os.environ["MLPREFS_HOME"] = str(work / "home")
        os.environ["MLPREFS_POLICY"] = str(work / "no-policy.toml")
        for name in ("MLPREFS_STORE", "MLPREFS_PROJECT"):
            os.environ.pop(name, None)
        sqlite = str(work / "prefs.db")
        try:
            print(f"PostgreSQL store against the SQLite store, same run ({os.cpu_count()} cores, "
                  f"{rounds} changes, {writes} writes per writer)")
            row("figure", "PostgreSQL", "SQLite", "ratio PG/SQLite")
            lat = {name: change_latency(store, rounds) for name, store in
                   (("pg", pg), ("sqlite", sqlite))}
            for label, index in (("set() -> other host's callback", 0),
                                 ("set() returned -> other host's callback", 1)):
                for q in (0.50, 0.95):
                    a, b = (pct(lat[n][index], q) * 1e3 for n in ("pg", "sqlite"))
                    row(f"{label} p{round(q * 100)}", f"{a:.2f} ms", f"{b:.2f} ms", f"{a / b:.2f}x")
            w8 = (0.0, 0.0)
            for writers in (8, 1):
                a, b = (writes_per_second(s, writers, writes, work) for s in (pg, sqlite))
                w8 = (a, b) if writers == 8 else w8
                row(f"writes/s, {writers} writer process{'es' if writers > 1 else ''}",
                    f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}x")
            got = {name: ingest(store, rows) for name, store in (("pg", pg), ("sqlite", sqlite))}
            for i, what in enumerate(("monitor samples, record + flush",
                                      "experiment outcomes, record_many + flush",
                                      "outcome rows, store-side flush only")):
                a, b = got["pg"][i], got["sqlite"][i]
                row(f"{what}, rows/s", f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}x")
            with Client(store=pg, discover=False) as on_pg, \
                    Client(store=sqlite, discover=False) as on_sqlite:
                a, b = best_of_alternating(lambda c: lambda: c.get(KEY), on_pg, on_sqlite, 200_000)
                row("get()", f"{a * 1e9:.0f} ns", f"{b * 1e9:.0f} ns", f"{a / b:.2f}x")
                a, b = best_of_alternating(lambda c: c.store.changed, on_pg, on_sqlite, 20_000)
                row("changed() (the watcher's tick)", f"{a * 1e9:.0f} ns", f"{b * 1e9:.0f} ns",
                    f"{a / b:.2f}x")
            p50 = pct(lat["pg"][0], 0.5) * 1e3
            checks = [
                (f"cross-host change p50 <= {TARGET_P50_MS:g} ms on PostgreSQL", f"{p50:.2f} ms",
                 p50 <= TARGET_P50_MS),
                ("PostgreSQL writes/s from 8 processes >= SQLite's", f"{w8[0] / w8[1]:.2f}x",
                 w8[0] >= w8[1]),
                (f"buffered records >= {TARGET_INGEST:,} rows/s on PostgreSQL",
                 f"{min(got['pg'][:2]):,.0f} rows/s", min(got["pg"][:2]) >= TARGET_INGEST),
            ]
            for what, figure, ok in checks:
                print(f"target: {what}: {figure}, {'ok' if ok else 'MISSED'}")
            return 0 if all(ok for _, _, ok in checks) else 1
        finally:
            drop()


if __name__ == "__main__":
    raise SystemExit(main())
