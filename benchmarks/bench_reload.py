"""Hot-reload figures in one command: python benchmarks/bench_reload.py [--quick] [--only ...]

Everything runs in one go on this machine, beside the baseline it is judged against:
- file saved -> new value returned by get(), over atomic and in-place saves, for the native
  and the stat-loop backend, beside raw watchfiles (the event floor, same step) and
  LaunchDarkly's file data source with auto_update=True (watchdog events when installed,
  and its mtime poller at the default 1 s interval);
- bursts of 25 saves 4 ms apart: how often the last value is not the one applied;
- in-place writers pausing 1-9 ms half-way: how many half-written files were applied, per
  backend (should be 0 of N), beside how often the pause really lasted the quiet period;
- 20 Clients with watch=True dropped without close(): watcher threads left after gc;
- forks at random moments while edits stream in: children that hung (timeout 10 s);
- another process's set() -> visible in get(), beside a raw PRAGMA data_version poller;
- idle CPU of a watching Client, beside a bare 10 ms sleep loop and raw watchfiles;
- close() time, and how long real writers leave a file torn (what the quiet period covers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _edits import (
    cpu_percent,
    idle_raw_watchfiles,
    idle_sleep_loop,
    pct,
    save_atomic,
    save_in_place,
    save_latencies,
    save_paused,
    toml,
    wait_until,
)

from mlprefs_sdk import Client
from mlprefs_sdk._statpoll import DEBOUNCE_MS, GRACE_S, QUIET_S, STEP_MS

LR = "ml.training.learning_rate"
ROWS: list[tuple[str, str, str, str, str]] = []


def row(name: str, ours: str, base: str, ratio: str, target: str) -> None:
    ROWS.append((name, ours, base, ratio, target))


def latency_rows(label: str, ours: dict[str, list[float]], base: dict[str, list[float]],
                 base_name: str, p50_target: str, p95_target: str) -> None:
    for kind in ("atomic", "in-place"):
        a, b = ours[kind], base[kind]
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            row(f"{label} {kind} {name} ms", f"{pct(a, q):.1f}", f"{pct(b, q):.1f} {base_name}",
                f"{pct(a, q) / pct(b, q):.2f}x", p50_target if name == "p50" else p95_target)


# -- file -> get() ---------------------------------------------------------------------------
def bench_client(work: Path, backend: str, n: int) -> dict[str, list[float]]:
    """backend "watchfiles": the native backend on watchfiles' notifier, as off Linux."""
    os.environ["MLPREFS_WATCH"] = expected = "native" if backend == "watchfiles" else backend
    path = work / "mlprefs.toml"
    path.write_text(toml(0.1))
    with native_source(backend), Client(watch=True) as prefs:
        assert prefs._watcher.backend == expected, prefs._watcher.backend
        return save_latencies(path, n, lambda v: prefs.get(LR) == v)


@contextlib.contextmanager
def native_source(backend: str) -> Any:
    """Make the native backend use watchfiles' notifier instead of inotify (if asked)."""
    if backend != "watchfiles":
        yield
        return
    from mlprefs_sdk import _inotify

    available = _inotify.available
    _inotify.available = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        _inotify.available = available  # type: ignore[assignment]


def bench_raw_watchfiles(work: Path, n: int) -> dict[str, list[float]]:
    """The floor: watchfiles' Rust notifier on the directory, same step, no reading at all."""
    from watchfiles._rust_notify import RustNotify

    path = work / "raw.toml"
    path.write_text(toml(0.1))
    stop, batches = threading.Event(), [0]
    notify = RustNotify([str(work)], False, False, 0, False, False)

    def loop() -> None:
        while not stop.is_set():
            raw = notify.watch(DEBOUNCE_MS, STEP_MS, STEP_MS, stop)
            if isinstance(raw, set) and any(p == str(path) for _, p in raw):
                batches[0] += 1

    t = threading.Thread(target=loop)
    t.start()
    try:
        count = [0]

        def seen(_value: float) -> bool:  # a batch arrived since this save
            if batches[0] > count[0]:
                count[0] = batches[0]
                return True
            return False

        return save_latencies(path, n, seen)
    finally:
        stop.set()
        t.join()
        notify.close()


def bench_launchdarkly(work: Path, n: int, force_polling: bool) -> tuple[dict[str, list[float]], int] | None:
    """LaunchDarkly's file data source with auto_update=True; also counts its failed reloads."""
    try:
        from ldclient import Context, LDClient
        from ldclient.config import Config
        from ldclient.integrations import Files
        if not force_polling:
            import watchdog  # noqa: F401  (without it auto_update polls even when not forced)
    except ImportError:
        return None
    path = work / "flags.json"
    render = lambda v: json.dumps({"flagValues": {"lr": v}})  # noqa: E731
    path.write_text(render(0.1))
    failures = _CountErrors()
    ld_log = logging.getLogger("ldclient")
    ld_log.addHandler(failures)
    ld_log.setLevel(logging.ERROR)
    ld_log.propagate = False
    source = Files.new_data_source(paths=[str(path)], auto_update=True,
                                   force_polling=force_polling)
    client = LDClient(config=Config("sdk-key", update_processor_class=source, send_events=False,
                                    diagnostic_opt_out=True))
    ctx = Context.builder("bench").build()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # it prints a traceback per failed read
            return save_latencies(path, n, lambda v: client.variation("lr", ctx, None) == v,
                                  render), failures.count
    finally:
        client.close()
        ld_log.removeHandler(failures)


class _CountErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


# -- bursts ------------------------------------------------------------------------------------
def bench_burst(work: Path, backend: str, rounds: int) -> tuple[int, int, int]:
    """(lost final values, bursts, error events) over bursts of 25 saves 4 ms apart."""
    os.environ["MLPREFS_WATCH"] = backend
    path = work / "mlprefs.toml"
    path.write_text(toml(0.1))
    lost = 0
    with Client(watch=True) as prefs:
        failures: list[Any] = []
        prefs.on_error(failures.append)
        for r in range(rounds):
            save = save_atomic if r % 2 else save_in_place
            values = [round(0.2 + r * 0.01 + i * 0.0001, 6) for i in range(25)]
            for v in values:
                save(path, toml(v))
                time.sleep(0.004)
            if wait_until(lambda: prefs.get(LR) == values[-1], timeout=2.0) is None:
                lost += 1
    return lost, rounds, len(failures)


# -- half-written saves -------------------------------------------------------------------
ITERS, PATIENCE = "ml.training.max_iterations", "ml.training.early_stopping_patience"


def bench_half_written(work: Path, backend: str, per_pause: int) -> dict[int, tuple[int, int, int, int]]:
    """Per pause in ms: (half-written files applied although the file cannot have sat still
    for QUIET_S, saves, saves that may have sat half-written QUIET_S or longer - a loaded
    machine oversleeps -, half-written files applied among those).

    The head alone is valid TOML (iterations without their patience), so applying it shows
    as a view whose patience does not match its iterations.
    """
    os.environ["MLPREFS_WATCH"] = "native" if backend == "watchfiles" else backend
    path = work / "mlprefs.toml"
    path.write_text(toml(0.1))
    out = {}
    with native_source(backend), Client(watch=True) as prefs:
        applied: list[tuple[int, int]] = []
        prefs.on_change("ml.training.*", lambda cs: applied.append((prefs.get(ITERS),
                                                                    prefs.get(PATIENCE))))
        n = 0
        for pause_ms in range(1, 10):
            overslept: set[int] = set()
            first = len(applied)
            for _ in range(per_pause):
                n += 1
                window = save_paused(path, f"[ml.training]\nmax_iterations = {1000 + n}\n",
                                     f"early_stopping_patience = {n % 999 + 1}\n",
                                     pause_ms / 1000)
                if window >= QUIET_S:
                    overslept.add(1000 + n)
                wait_until(lambda n=n: prefs.get(PATIENCE) == n % 999 + 1 and  # type: ignore[misc]
                           prefs.get(ITERS) == 1000 + n)
                time.sleep(random.random() * 0.01)
            half = [it for it, p in applied[first:] if p != (it - 1000) % 999 + 1]
            wrong = sum(it not in overslept for it in half)
            out[pause_ms] = (wrong, per_pause, len(overslept), len(half) - wrong)
    return out


# -- dropped clients and forks ------------------------------------------------------------------
def watcher_threads() -> int:
    return sum(t.name == "mlprefs-watcher" for t in threading.enumerate())


def bench_dropped(backend: str, clients: int = 20) -> tuple[int, int, int]:
    """(watcher threads before, with the clients alive, after dropping them and gc)."""
    import gc

    os.environ["MLPREFS_WATCH"] = backend
    before = watcher_threads()
    alive = [Client(watch=True) for _ in range(clients)]
    during = watcher_threads()
    del alive
    gc.collect()
    wait_until(lambda: watcher_threads() <= before, timeout=2.0)
    return before, during, watcher_threads()


FORK_CHILD_TIMEOUT_S = 10.0


STORE_WRITER = """
import sys, time
from mlprefs_sdk import Client
prefs, i = Client(discover=False), 0
while True:
    i += 1
    prefs.set("ml.training.max_iterations", 100 + i % 500)
    time.sleep(0.007)
"""


def bench_forks(work: Path, forks: int) -> tuple[int, int, int]:
    """(children that hung or failed, forks, file edits saved meanwhile): each child forked
    at a random moment must get(), set(), reload() and watch() within FORK_CHILD_TIMEOUT_S,
    while a thread saves the file, another process writes the store every 7 ms, and a
    callback holds the client's rebuild lock for 0-300 ms."""
    os.environ["MLPREFS_WATCH"] = "native"
    path = work / "mlprefs.toml"
    path.write_text(toml(0.1))
    bad, saves, stop = 0, [0], threading.Event()

    def stream() -> None:
        while not stop.is_set():
            saves[0] += 1
            save_atomic(path, toml(round(0.01 + saves[0] % 50 * 0.001, 4)))
            time.sleep(random.random() * 0.015)

    store_writer = subprocess.Popen([sys.executable, "-c", STORE_WRITER], cwd=work)
    with Client(watch=True) as prefs:
        prefs.on_change("ml.*", lambda cs: time.sleep(random.choice([0, 0.001, 0.003, 0.3])))
        writer = threading.Thread(target=stream)
        writer.start()
        try:
            for i in range(forks):
                time.sleep(random.random() * 0.03)
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        prefs.get(LR)
                        prefs.set("ml.performance.batch_size", 64 + i)
                        prefs.reload()
                        prefs.watch()
                        prefs.close()
                        code = 0
                    finally:
                        os._exit(code)
                end = time.monotonic() + FORK_CHILD_TIMEOUT_S
                while (status := os.waitpid(pid, os.WNOHANG)) == (0, 0):
                    if time.monotonic() > end:
                        os.kill(pid, 9)
                        status = os.waitpid(pid, 0)
                        break
                    time.sleep(0.005)
                bad += os.waitstatus_to_exitcode(status[1]) != 0
        finally:
            stop.set()
            writer.join()
            store_writer.kill()
            store_writer.wait()
    return bad, forks, saves[0]


# -- the store -----------------------------------------------------------------------------------
WRITER = """
import sys, time
from mlprefs_sdk import Client
prefs = Client()
for line in sys.stdin:
    t0 = time.perf_counter()
    prefs.set("ml.performance.batch_size", int(line))
    print(t0, time.perf_counter(), flush=True)
"""


def bench_store(work: Path, n: int, gap: float) -> tuple[list[float], list[float], list[float]]:
    """ms from another process's set() call (and return) to get(); raw data_version poller.

    Writes come gap to 1.5 x gap seconds apart. With gaps over 2 s the writer's set() starts
    cold, as when someone runs `mlprefs set` in a terminal while a run trains.
    """
    os.environ["MLPREFS_WATCH"] = "native"
    with Client(watch=True) as prefs:
        raw = sqlite3.connect(prefs.locations.store, check_same_thread=False)
        stop, commits = threading.Event(), []

        def raw_poll() -> None:  # the floor: PRAGMA data_version every 10 ms, nothing else
            version = raw.execute("PRAGMA data_version").fetchone()[0]
            while not stop.is_set():
                time.sleep(0.010)
                v = raw.execute("PRAGMA data_version").fetchone()[0]
                if v != version:
                    version = v
                    commits.append(time.perf_counter())

        poller = threading.Thread(target=raw_poll)
        poller.start()
        writer = subprocess.Popen([sys.executable, "-c", WRITER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=work)
        from_call, from_return, floor = [], [], []
        try:
            for i in range(n):
                time.sleep(gap * (1 + random.random() / 2))
                value = 64 + i
                seen_commits = len(commits)
                writer.stdin.write(f"{value}\n")
                writer.stdin.flush()
                t_seen = wait_until(lambda: prefs.get("ml.performance.batch_size") == value)
                t_call, t_return = map(float, writer.stdout.readline().split())
                wait_until(lambda: len(commits) > seen_commits, timeout=1.0)
                if t_seen is None or len(commits) <= seen_commits:
                    continue
                from_call.append((t_seen - t_call) * 1000)
                from_return.append((t_seen - t_return) * 1000)
                floor.append((commits[seen_commits] - t_call) * 1000)
        finally:
            writer.stdin.close()
            writer.wait()
            stop.set()
            poller.join()
            raw.close()
    return from_call, from_return, floor


# -- idle CPU and close ---------------------------------------------------------------------------
def idle_client(backend: str) -> Callable[[], Callable[[], None]]:
    def setup() -> Callable[[], None]:
        os.environ["MLPREFS_WATCH"] = backend
        prefs = Client(watch=True)
        return prefs.close
    return setup


def bench_close(cycles: int) -> list[float]:
    os.environ["MLPREFS_WATCH"] = "native"
    times = []
    for _ in range(cycles):
        prefs = Client(watch=True)
        t0 = time.perf_counter()
        prefs.close()
        times.append((time.perf_counter() - t0) * 1000)
    return times


# -- how long real writers leave a file torn ----------------------------------------------------
WRITERS = {
    "python open('w').write": [sys.executable, "-c",
                               "import sys, time\nfor i in range(int(sys.argv[2])):\n"
                               "    open(sys.argv[1], 'w').write(open(sys.argv[3]).read())\n"
                               "    time.sleep(0.02)", "{dst}", "{n}", "{src}"],
    "sh: cat src > dst": ["sh", "-c", 'for i in $(seq {n}); do cat "{src}" > "{dst}"; '
                          'sleep 0.02; done'],
    "cp src dst": ["sh", "-c", 'for i in $(seq {n}); do cp "{src}" "{dst}"; sleep 0.02; done'],
}


def torn_windows(work: Path, n: int) -> dict[str, tuple[float, float, int, int]]:
    """Per writer: p50 and max ms of spells where a stat showed a torn size, how many spells,
    and how many of them showed a partly written (not empty) file."""
    src, dst = work / "src.toml", work / "dst.toml"
    text = "".join(f"[t{i}]\nlearning_rate = 0.{i:04d}\n" for i in range(80))  # ~2 KB
    src.write_text(text)
    full = len(text.encode())
    out = {}
    for name, argv in WRITERS.items():
        dst.write_text(text)
        cmd = [a.format(src=src, dst=dst, n=n) for a in argv]
        proc = subprocess.Popen(cmd)
        spells, torn_since, partial = [], None, 0
        while proc.poll() is None:
            try:
                size = os.stat(dst).st_size
            except FileNotFoundError:
                size = -1
            now = time.perf_counter()
            if size != full and torn_since is None:
                torn_since = now
            if 0 < size < full:
                partial += 1
            elif size == full and torn_since is not None:
                spells.append((now - torn_since) * 1000)
                torn_since = None
        out[name] = ((statistics.median(spells), max(spells), len(spells), partial) if spells
                     else (0.0, 0.0, 0, partial))
    return out


def run_latency(work: Path, n: int, with_ld: bool) -> None:
    print(f"file -> get(): {n} atomic + {n} in-place saves each ...", flush=True)
    raw = bench_raw_watchfiles(work, n)
    native = bench_client(work, "native", n)
    poll = bench_client(work, "poll", n)
    latency_rows("native", native, raw, "raw watchfiles", "<= 15", "<= 25")
    latency_rows("poll", poll, raw, "raw watchfiles", "", "")
    try:
        via_watchfiles = bench_client(work, "watchfiles", n)
    except ImportError as e:  # an mlprefs-sdk from before the inotify source
        row(f"native via watchfiles: not measured ({e})", "", "", "", "")
    else:
        latency_rows("native via watchfiles (off Linux)", via_watchfiles, raw, "raw watchfiles",
                     "", "")
    if not with_ld:
        return
    print("LaunchDarkly file data source ...", flush=True)
    ld = bench_launchdarkly(work, n, force_polling=False)
    ld_poll = bench_launchdarkly(work, max(3, n // 5), force_polling=True)
    for label, res in (("LD watchdog", ld), ("LD 1 s poller", ld_poll)):
        if res is None:
            row(f"{label}: not installed (pip install mlprefs-sdk[bench])", "", "", "", "")
            continue
        lat, failed = res
        for kind in ("atomic", "in-place"):
            ours, theirs = pct(native[kind], 0.5), pct(lat[kind], 0.5)
            row(f"native vs {label} {kind} p50 ms", f"{ours:.1f}", f"{theirs:.1f} {label}",
                f"{ours / theirs:.2f}x", "")
        row(f"{label}: failed reloads (torn reads)", "0 error events", f"{failed}", "", "")


def run_half(work: Path, per_pause: int) -> None:
    print(f"half-written saves: {per_pause} per pause of 1-9 ms ...", flush=True)
    quiet = f"{QUIET_S * 1000:.0f} ms"
    for backend in ("native", "poll", "watchfiles"):
        try:
            res = bench_half_written(work, backend, per_pause)
        except ImportError as e:  # an mlprefs-sdk from before the inotify source
            row(f"{backend}: not measured ({e})", "", "", "", "")
            continue
        wrong, total, over, over_half = (sum(r[i] for r in res.values()) for i in range(4))
        row(f"{backend}: half-written files applied, in-place writer pausing 1-9 ms",
            f"{wrong} of {total - over}",
            f"{over} saves overslept to >= {quiet} ({over_half} of them applied half)", "", "0")
        for pause_ms, (w, t, o, oh) in res.items():
            row(f"  {backend} pause {pause_ms} ms", f"{w} of {t - o}", f"{o} overslept ({oh})",
                "", "0")


def run_lifetime(work: Path, forks: int) -> None:
    print("dropped clients and forks ...", flush=True)
    for backend in ("native", "poll"):
        before, during, after = bench_dropped(backend)
        row(f"{backend}: watcher threads, 20 dropped clients (before / alive / after gc)",
            f"{before} / {during} / {after}", "", "", "after = before")
    hung, forks, saves = bench_forks(work, forks)
    row(f"forks at random moments, {saves} file edits + store writes: children hung or failed",
        f"{hung} of {forks}", "", "", "0")


def run_bursts(work: Path, rounds: int) -> None:
    print("bursts ...", flush=True)
    for backend in ("native", "poll"):
        lost, rounds, errors = bench_burst(work, backend, rounds)
        row(f"{backend} burst of 25 saves 4 ms apart: lost final values",
            f"{lost} of {rounds}", "", "", "0")
        row(f"{backend} burst: error events from torn reads", f"{errors}", "", "", "0")


def run_store(work: Path, n: int, idle_count: int) -> None:
    print("store ...", flush=True)
    for label, count, gap in (("", n, 0.03), (" after 2 s idle", idle_count, 2.2)):
        call, ret, floor = bench_store(work, count, gap)
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            row(f"other process set() -> get(){label} {name} ms", f"{pct(call, q):.1f}",
                f"{pct(floor, q):.1f} raw data_version poll",
                f"{pct(call, q) / pct(floor, q):.2f}x", "<= 15" if name == "p50" else "")
        row(f"other process set() returned -> get(){label} p50 ms", f"{pct(ret, 0.5):.1f}",
            "", "", "")


def run_idle(work: Path, idle_s: float) -> None:
    print("idle CPU ...", flush=True)
    floor_cpu = cpu_percent(idle_s, idle_sleep_loop)
    raw_cpu = cpu_percent(idle_s, idle_raw_watchfiles(work))
    for backend in ("native", "poll"):
        cpu = cpu_percent(idle_s, idle_client(backend))
        row(f"idle CPU, {backend} watcher (% of a core)", f"{cpu:.2f}",
            f"{floor_cpu:.2f} bare 10 ms sleep loop / {raw_cpu:.2f} raw watchfiles",
            f"{cpu / floor_cpu:.2f}x", "<= 1" if backend == "native" else "")
    closes = bench_close(20)
    row("close() ms (20 cycles) p50 / max", f"{pct(closes, 0.5):.1f} / {max(closes):.1f}",
        "", "", "<= 100")


def run_torn(work: Path, n: int) -> None:
    print("torn windows of real writers ...", flush=True)
    for name, (p50, worst, count, partial) in torn_windows(work, n).items():
        row(f"torn window, {name}: p50 / max ms ({count} seen, {partial} partly written)",
            f"{p50:.3f} / {worst:.3f}", f"quiet {QUIET_S * 1000:.0f} / empty {GRACE_S * 1000:.0f}",
            "", "")


SECTIONS = ("latency", "ld", "half", "lifetime", "bursts", "store", "idle", "torn")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)} "
                                       "(ld implies latency)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if only - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(only - set(SECTIONS)))}")
    quick = args.quick
    n, idle_s = (10, 1.5) if quick else (50, 5.0)
    random.seed(7)
    logging.basicConfig(level=logging.CRITICAL)  # the burst and LD runs log expected errors
    with tempfile.TemporaryDirectory(prefix="mlprefs-bench-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        # As installed: the store in the data dir, overrides.toml in the config dir.
        os.environ["MLPREFS_HOME"] = str(work / "home")
        os.environ["MLPREFS_STORE"] = str(work / "data" / "prefs.db")
        os.environ["MLPREFS_POLICY"] = str(work / "policy.toml")
        os.chdir(work)
        if only & {"latency", "ld"}:
            run_latency(work, n, with_ld="ld" in only)
        if "half" in only:
            run_half(work, 5 if quick else 20)
        if "lifetime" in only:
            run_lifetime(work, 10 if quick else 40)
        if "bursts" in only:
            run_bursts(work, 10 if quick else 20)
        if "store" in only:
            run_store(work, n, 3 if quick else 8)
        if "idle" in only:
            run_idle(work, idle_s)
        if "torn" in only:
            run_torn(work, n)
    os.environ.pop("MLPREFS_WATCH", None)
    widths = [max(len(r[i]) for r in ROWS + [HEADER]) for i in range(5)]
    for r in [HEADER, tuple("-" * w for w in widths), *ROWS]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    return 0


HEADER = ("measure", "mlprefs", "baseline (same run)", "ratio", "target")

if __name__ == "__main__":
    raise SystemExit(main())
