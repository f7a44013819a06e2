"""After a real os.fork() the child has the snapshot and no watcher thread until it asks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from _watch_helpers import TIMEOUT_S, lr_toml, save_atomic, toml, wait_for  # noqa: F401
from mlprefs_sdk import Client

LR = "ml.training.learning_rate"

# Python 3.12+ warns on any fork of a process with threads; forking one is what is tested here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


def in_child(body: Callable[[], None]) -> str:
    """Run body in a forked child; return "ok" or the child's error (the child never hangs us)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        os.close(read)
        code = 1
        try:
            body()
            os.write(write, b"ok")
            code = 0
        except BaseException as e:
            os.write(write, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + TIMEOUT_S
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
            return "the child hung"
        time.sleep(0.005)
    with os.fdopen(read, "rb") as f:
        return f.read().decode() or "the child died without a word"


def test_forked_child_has_the_snapshot_and_no_watcher_thread(home, toml):
    with Client(watch=True) as prefs:
        def child() -> None:
            assert prefs.get(LR) == 0.01
            assert prefs._watcher is None
            assert [t.name for t in threading.enumerate()] == [threading.current_thread().name]
            prefs.set("ml.performance.batch_size", 64)  # its own store connection
            assert prefs.get("ml.performance.batch_size") == 64

        assert in_child(child) == "ok"
        assert prefs._watcher.alive


def test_watch_in_the_child_starts_its_own_watcher(home, toml):
    with Client(watch=True) as prefs:
        def child() -> None:
            prefs.watch()
            assert prefs._watcher.alive
            save_atomic(toml, lr_toml(0.05))
            assert wait_for(lambda: prefs.get(LR) == 0.05), "the child's watcher saw no edit"
            prefs.close()

        assert in_child(child) == "ok"
        assert wait_for(lambda: prefs.get(LR) == 0.05), "the parent's watcher survives the fork"


def test_child_forked_while_the_watcher_is_busy_gets_usable_locks(home, toml):
    with Client(watch=True) as prefs:
        inside, release = threading.Event(), threading.Event()

        def slow_callback(changes) -> None:  # runs on the watcher thread, under the client lock
            inside.set()
            release.wait(TIMEOUT_S)

        prefs.on_change(LR, slow_callback)
        save_atomic(toml, lr_toml(0.03))
        assert inside.wait(TIMEOUT_S)

        def child() -> None:
            prefs.set("ml.performance.batch_size", 64)  # takes the locks the watcher held
            assert prefs.get("ml.performance.batch_size") == 64

        try:
            assert in_child(child) == "ok"
        finally:
            release.set()


def test_fork_waits_for_a_reload_in_progress(home, toml, caplog):
    with Client(watch=True) as prefs:
        inside = threading.Event()

        def brief_callback(changes) -> None:  # a reload still running when fork() is called
            inside.set()
            time.sleep(0.1)

        prefs.on_change(LR, brief_callback)
        save_atomic(toml, lr_toml(0.03))
        assert inside.wait(TIMEOUT_S)

        def child() -> None:
            assert not [r for r in caplog.records if "busy" in r.getMessage()], \
                "fork() should have waited for the reload instead of renewing the locks"
            assert prefs.get(LR) == 0.03

        assert in_child(child) == "ok"
