"""After a real os.fork() the child has the snapshot and no watcher thread until it asks."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pytest
from _fork_helpers import in_child as run_in_child
from _watch_helpers import TIMEOUT_S, Recorder, lr_toml, save_atomic, toml, wait_for  # noqa: F401

from mlprefs_sdk import Client

LR = "ml.training.learning_rate"

# Python 3.12+ warns on any fork of a process with threads; forking one is what is tested here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


def in_child(body) -> str:
    return run_in_child(body, TIMEOUT_S)


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


# -- forks at random moments while the watcher works ------------------------------------------
BATCH = "ml.performance.batch_size"
ITERS = "ml.training.max_iterations"


STORE_WRITER = f"""
import time
from mlprefs_sdk import Client
prefs, i = Client(discover=False), 0
while True:
    i += 1
    prefs.set({ITERS!r}, 100 + i % 500)
    time.sleep(0.007)
"""


class EditStream:
    """A thread saving new learning rates atomically, back to back, until stopped; with
    `store=True` another process also writes the store every 7 ms, so the watcher reloads
    the store layers (taking the store's lock) while forks happen."""

    def __init__(self, path: Path, store: bool = False) -> None:
        self.path, self.count, self.store = path, 0, store
        self._writer: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edit-stream")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1
            save_atomic(self.path, lr_toml(round(0.01 + (self.count % 50) * 0.001, 4)))
            time.sleep(random.uniform(0.0, 0.015))

    def __enter__(self) -> Self:
        if self.store:
            self._writer = subprocess.Popen([sys.executable, "-c", STORE_WRITER])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._writer is not None:
            self._writer.kill()
            self._writer.wait()


def busy_callback(changes) -> None:
    """Holds the client's rebuild lock on the watcher thread: mostly briefly, now and then
    longer than fork() waits for it (so the child must replace the lock)."""
    time.sleep(random.choice([0.0, 0.001, 0.003, 0.003, 0.3]))


def child_uses_everything(prefs: Client, value: int) -> Callable[[], None]:
    def body() -> None:
        assert 0.0 < prefs.get(LR) < 1.0
        prefs.set(BATCH, value)
        assert prefs.get(BATCH) == value
        prefs.reload()
        prefs.watch()
        assert prefs._watcher.alive
        prefs.set(BATCH, value + 1)  # the child's own watcher runs beside its writes
        assert prefs.get(BATCH) == value + 1
        prefs.close()
    return body


def test_forks_at_random_moments_while_edits_stream_never_hang_the_child(home, toml):
    random.seed(os.getpid())
    with Client(watch=True) as prefs, EditStream(toml, store=True) as edits:
        reloads = Recorder()
        prefs.on_change(ITERS, reloads)  # store edits reach the watcher
        prefs.on_change("ml.*", busy_callback)
        outcomes = []
        for i in range(24):
            time.sleep(random.uniform(0.0, 0.03))
            outcomes.append(in_child(child_uses_everything(prefs, 64 + 2 * i)))
        assert outcomes == ["ok"] * 24
        assert edits.count > 24, "the edits did not stream while forking"
        assert len(reloads) > 0, "the watcher never reloaded the store meanwhile"
        assert prefs.history(BATCH, limit=1)[0].new == 64 + 2 * 23 + 1
        assert prefs._watcher.alive


def test_multiprocessing_fork_pool_workers_use_the_client_while_it_reloads(home, toml):
    import multiprocessing

    global _POOL_PREFS
    with Client(watch=True) as prefs, EditStream(toml):
        prefs.on_change("ml.*", busy_callback)
        _POOL_PREFS = prefs
        try:
            ctx = multiprocessing.get_context("fork")
            for _ in range(4):
                time.sleep(random.uniform(0.0, 0.03))
                with ctx.Pool(2) as pool:
                    result = pool.map_async(_pool_task, range(4))
                    values = result.get(timeout=TIMEOUT_S)  # a hung worker fails here
                assert all(0.0 < v < 1.0 for v in values), values
        finally:
            _POOL_PREFS = None


_POOL_PREFS: Client | None = None


def _pool_task(i: int) -> float:
    prefs = _POOL_PREFS
    assert prefs is not None
    prefs.reload()
    return prefs.get(LR)


def test_dataloader_fork_workers_read_and_reload_while_the_parent_watches(home, toml):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, Dataset

    class Prefs(Dataset):
        def __init__(self, prefs: Client) -> None:
            self.prefs = prefs

        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> float:
            self.prefs.reload()  # takes the locks the parent's watcher may have held
            return self.prefs.get(LR)

    with Client(watch=True) as prefs, EditStream(toml):
        prefs.on_change("ml.*", busy_callback)
        for _epoch in range(3):
            time.sleep(random.uniform(0.0, 0.03))
            loader = DataLoader(Prefs(prefs), batch_size=4, num_workers=2,
                                multiprocessing_context="fork", timeout=TIMEOUT_S)
            batches = list(loader)  # a hung worker raises after TIMEOUT_S
            assert sum(len(b) for b in batches) == 8
            assert all(0.0 < float(v) < 1.0 for b in batches for v in b)
        del torch


def test_fork_while_another_client_in_this_process_writes_never_hangs_the_child(home, toml):
    random.seed(os.getpid())
    writer, stop = Client(discover=False), threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            writer.set(ITERS, 100 + i % 500)

    thread = threading.Thread(target=write)
    with Client(watch=True) as prefs:
        thread.start()
        try:
            for i in range(30):
                time.sleep(random.uniform(0.0, 0.01))
                outcome = in_child(child_uses_everything(prefs, 64 + 2 * i))
                assert outcome == "ok", f"fork {i}: {outcome}"
        finally:
            stop.set()
            thread.join()
            writer.close()
