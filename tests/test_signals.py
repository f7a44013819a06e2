"""Every record() that returned is in the store after SIGTERM, SIGINT or a normal exit, with
the handler the user installed still called; real subprocesses, real signals, real SQLite."""

from __future__ import annotations

import mmap
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlprefs_sdk.store import SQLiteStore

# A child that records in a loop. After each record() returns it writes the count of returned
# calls into a shared 8-byte file (so the count survives its death). A signal can land between
# the return and that write: the store may then hold one row more than the count, never fewer.
CHILD = r"""
import mmap, os, signal, struct, sys
from mlprefs_sdk import Client

service, handler, counter, marker, limit, flush_each = sys.argv[1:7]
limit, flush_each = int(limit), flush_each == "1"

def users_handler(signum, frame):
    open(marker, "w").close()
    sys.exit(7)

if handler == "before":
    signal.signal(signal.SIGTERM, users_handler)
prefs = Client(overrides={"ml.features.experiment_tracking": True,
                          "ml.experiments.ab_testing_enabled": True})
if service == "experiments":
    prefs.experiments.create("checkout", "a", "b", metric="mean")
    record = lambda i: prefs.experiments.record("checkout", f"unit-{i}", float(i))
    flush = prefs.experiments.flush
else:
    record = lambda i: prefs.monitor.record("churn", "1", latency_ms=float(i))
    flush = prefs.monitor.flush
if handler == "after":
    signal.signal(signal.SIGTERM, users_handler)
with open(counter, "r+b") as f:
    shared = mmap.mmap(f.fileno(), 8)
i = 0
while limit == 0 or i < limit:
    record(i)
    i += 1
    shared[:8] = struct.pack("q", i)
    if flush_each:
        flush()
"""

SERVICES = ["experiments", "monitor"]


def stored_rows(home: Path, service: str) -> int:
    table = "experiment_outcomes" if service == "experiments" else "monitor_samples"
    store = SQLiteStore(str(home / "prefs.db"))
    try:
        return store.query(f"SELECT COUNT(*) FROM {table}")[0][0]
    finally:
        store.close()


def run_child(home: Path, service: str, *, handler: str = "none", signum: int | None = None,
              limit: int = 0, flush_each: bool = False, at_least: int = 300
              ) -> tuple[int, int, Path]:
    """Start the child, signal it once `at_least` calls returned; (returncode, count, marker)."""
    counter = home / "returned.bin"
    counter.write_bytes(b"\0" * 8)
    marker = home / "users-handler-ran"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, service, handler, str(counter),
                             str(marker), str(limit), "1" if flush_each else "0"])
    with open(counter, "rb") as f:
        shared = mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ)
        def count() -> int:
            return struct.unpack("q", shared[:8])[0]
        try:
            if signum is not None:
                deadline = time.monotonic() + 120
                while count() < at_least:
                    assert proc.poll() is None, "the child died before the signal"
                    assert time.monotonic() < deadline, "the child never got going"
                    time.sleep(0.005)
                proc.send_signal(signum)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        return code, count(), marker


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_loses_no_returned_record_and_the_process_still_dies_by_sigterm(home, service):
    code, returned, _ = run_child(home, service, signum=signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert returned <= stored_rows(home, service) <= returned + 1


@pytest.mark.parametrize("service", SERVICES)
def test_sigint_loses_no_returned_record_and_keyboard_interrupt_still_ends_it(home, service):
    code, returned, _ = run_child(home, service, signum=signal.SIGINT)
    assert code == -signal.SIGINT  # an uncaught KeyboardInterrupt, as without the SDK
    assert returned <= stored_rows(home, service) <= returned + 1


@pytest.mark.parametrize("service", SERVICES)
def test_a_normal_exit_loses_no_returned_record(home, service):
    code, returned, _ = run_child(home, service, limit=1500)
    assert (code, returned) == (0, 1500)
    assert stored_rows(home, service) == 1500


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("service", SERVICES)
def test_a_users_sigterm_handler_still_runs_and_no_returned_record_is_lost(home, service, when):
    code, returned, marker = run_child(home, service, handler=when, signum=signal.SIGTERM)
    assert code == 7 and marker.exists()  # the user's handler ran and chose the exit status
    assert returned <= stored_rows(home, service) <= returned + 1


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_landing_while_the_main_thread_writes_loses_nothing_and_does_not_hang(
        home, service):
    code, returned, _ = run_child(home, service, signum=signal.SIGTERM, flush_each=True,
                                  at_least=100)
    assert code == -signal.SIGTERM
    assert returned <= stored_rows(home, service) <= returned + 1


@pytest.mark.parametrize("service", SERVICES)
def test_durable_record_is_stored_before_it_returns(home, service):
    from mlprefs_sdk import Client

    with Client(overrides={"ml.features.experiment_tracking": True,
                           "ml.experiments.ab_testing_enabled": True}) as prefs:
        if service == "experiments":
            prefs.experiments.create("checkout", "a", "b", metric="mean")
            prefs.experiments.record("checkout", "unit-1", 1.0, durable=True)
        else:
            prefs.monitor.record("churn", "1", latency_ms=3.0, durable=True)
        assert stored_rows(home, service) == 1  # read through another connection


def test_monitor_samples_reach_the_store_without_another_record_or_flush(home):
    from mlprefs_sdk import Client
    from mlprefs_sdk.services.monitor import MAX_AGE, TICK

    with Client() as prefs:
        prefs.monitor.record("churn", "1", latency_ms=3.0)
        deadline = time.monotonic() + 30
        while stored_rows(home, "monitor") == 0:  # the timer writes it within MAX_AGE + TICK
            assert time.monotonic() < deadline, f"not written within {MAX_AGE + TICK}s and more"
            time.sleep(0.05)


# A service first created in a worker thread installs nothing (signal.signal works only in the
# main thread); the next one created in the main thread installs the handlers, once.
THREADS = r"""
import signal, threading
from mlprefs_sdk import Client

before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or a tool's (coverage's) handler
prefs = Client()
t = threading.Thread(target=lambda: prefs.monitor)
t.start(); t.join()
print(signal.getsignal(signal.SIGTERM) is before)
other = Client()
other.monitor
ours = signal.getsignal(signal.SIGTERM)
print(ours is not before)
third = Client()
third.monitor
print(signal.getsignal(signal.SIGTERM) is ours)
"""


def test_handlers_are_installed_from_the_main_thread_only_and_once(home):
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["True", "True", "True"]


# A handler that Python runs inside a weakref callback (as a garbage collection can, anywhere):
# whatever the handler raises there is printed as "Exception ignored" and dropped.
IN_A_CALLBACK = r"""
import os, signal, sys, time, weakref
from mlprefs_sdk import Client

if sys.argv[1] == "SIGTERM":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(7))
signum = getattr(signal, sys.argv[1])
prefs = Client(overrides={"ml.data.auto_cleanup_enabled": False})
for i in range(100):
    prefs.monitor.record("churn", "1", latency_ms=float(i))

class Thing:
    pass

def callback(ref):
    os.kill(os.getpid(), signum)
    for _ in range(10_000):  # the handler runs at one of these bytecodes, inside the callback
        pass

thing = Thing()
ref = weakref.ref(thing, callback)
del thing
time.sleep(3)
print("still running", flush=True)
"""


@pytest.mark.parametrize(("signame", "expected"), [("SIGTERM", 7), ("SIGINT", -signal.SIGINT)])
def test_a_handlers_exit_dropped_by_a_weakref_callback_still_ends_the_process(home, signame,
                                                                               expected):
    done = subprocess.run([sys.executable, "-c", IN_A_CALLBACK, signame], capture_output=True,
                          text=True, timeout=60)
    assert "still running" not in done.stdout
    assert done.returncode == expected
    assert stored_rows(home, "monitor") == 100
