"""How editors save files, waiting on a condition, and fixtures: shared by the hot-reload tests.

Test modules import the fixtures they use (`from _watch_helpers import backend, toml`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TIMEOUT_S = 10.0  # generous: the machine is shared; a passing wait returns in milliseconds


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT_S) -> bool:
    """Poll condition every 2 ms until it is true or timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.002)
    return bool(condition())


def save_in_place(path: Path, text: str) -> None:
    """Truncate and rewrite the same inode (what `open(path, "w")` and many tools do)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_atomic(path: Path, text: str) -> None:
    """Write a temporary file and rename it over the target (vim's default, VS Code)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_vim_backup(path: Path, text: str) -> None:
    """Rename the original to a backup, write a new file, then drop the backup (vim 'backup')."""
    backup = path.with_name(path.name + "~")
    os.replace(path, backup)
    path.write_text(text, encoding="utf-8")
    backup.unlink()


class Recorder:
    """Collects what callbacks receive, from whichever thread calls them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)
            self.threads.append(threading.current_thread())

    def __len__(self) -> int:
        return len(self.items)

    def values(self, key: str) -> list[Any]:
        """Every new value one key took, in order, over the change sets received."""
        return [c.new for cs in self.items for c in cs if c.key == key]


def lr_toml(value: float) -> str:
    return f"[ml.training]\nlearning_rate = {value}\n"


@pytest.fixture(params=["native", "poll"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test under each watcher backend (MLPREFS_WATCH)."""
    monkeypatch.setenv("MLPREFS_WATCH", request.param)
    return request.param


@pytest.fixture
def toml(project_dir: Path) -> Path:
    """The project's mlprefs.toml, setting the learning rate to 0.01."""
    path = project_dir / "mlprefs.toml"
    path.write_text(lr_toml(0.01))
    return path


def save_paused(path: Path, head: str, tail: str, pause: float) -> float:
    """Truncate in place, write head, pause, write tail (a slow chunked writer).

    Returns the longest the file can have sat half-written (from just before the first write
    to just after the second): a loaded machine can oversleep the pause asked for.
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        started = time.perf_counter()
        os.write(fd, head.encode())
        time.sleep(pause)
        os.write(fd, tail.encode())
        done = time.perf_counter()
    finally:
        os.close(fd)
    return done - started
