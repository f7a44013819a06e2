"""How editors save, and how long a change takes to be seen: helpers of bench_reload.py."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlprefs_sdk._statpoll import DEBOUNCE_MS, STEP_MS

TIMEOUT_S = 5.0

__all__ = ["TIMEOUT_S", "toml", "save_atomic", "save_in_place", "save_paused", "pct", "wait_until",
           "save_latencies", "cpu_percent", "idle_sleep_loop", "idle_raw_watchfiles"]


def toml(value: float) -> str:
    return f"[ml.training]\nlearning_rate = {value}\n"


def save_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_in_place(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_until(check: Callable[[], bool], timeout: float = TIMEOUT_S) -> float | None:
    """perf_counter() when check() first holds (polled every 0.2 ms), None on timeout."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if check():
            return time.perf_counter()
        time.sleep(0.0002)
    return None


def save_latencies(path: Path, n: int, seen: Callable[[float], bool],
                   render: Callable[[float], str] = toml) -> dict[str, list[float]]:
    """ms from each save to seen(value), n atomic and n in-place saves at random phase."""
    out: dict[str, list[float]] = {"atomic": [], "in-place": []}
    value = 0.1
    for i in range(2 * n):
        kind = "atomic" if i % 2 == 0 else "in-place"
        value = round(value + 0.0001, 6)
        time.sleep(0.02 + random.random() * 0.02)
        t0 = time.perf_counter()
        (save_atomic if kind == "atomic" else save_in_place)(path, render(value))
        t1 = wait_until(lambda: seen(value))
        out[kind].append((t1 - t0) * 1000 if t1 else TIMEOUT_S * 1000)
    return out


def save_paused(path: Path, head: str, tail: str, pause: float) -> float:
    """Truncate in place, write head, sleep, write tail; the longest it can have sat
    half-written (from just before the first write to just after the second)."""
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


def cpu_percent(seconds: float, setup: Callable[[], Callable[[], None]]) -> float:
    teardown = setup()
    time.sleep(0.3)
    c0, w0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    used = (time.process_time() - c0) / (time.perf_counter() - w0) * 100
    teardown()
    return used


def idle_sleep_loop() -> Callable[[], None]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            time.sleep(0.010)

    t = threading.Thread(target=loop)
    t.start()
    return lambda: (stop.set(), t.join())


def idle_raw_watchfiles(work: Path) -> Callable[[], Callable[[], None]]:
    def setup() -> Callable[[], None]:
        from watchfiles._rust_notify import RustNotify

        stop = threading.Event()
        notify = RustNotify([str(work)], False, False, 0, False, False)

        def loop() -> None:
            while not stop.is_set():
                notify.watch(DEBOUNCE_MS, STEP_MS, STEP_MS, stop)

        t = threading.Thread(target=loop)
        t.start()
        return lambda: (stop.set(), t.join(), notify.close())
    return setup
