"""prefs.monitor: accuracy and latency samples, drift, resource use, and alerts about them.

record() is on the serving path, so it only appends to a buffer; samples reach the store in
batches: every BATCH samples, once the oldest is MAX_AGE seconds old (a timer thread writes
them even when no further sample comes), and at check(), flush(), close(), on SIGTERM and
SIGINT, and at interpreter exit (_lifecycle.py). A SIGKILL can lose the samples of the last
MAX_AGE + TICK seconds at most (and never more than BATCH); record(..., durable=True) writes
the sample before it returns. check() turns the stored windows into alerts; an alert
is stored and fired once when its condition starts, and resolved when the condition ends.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import numbers
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import attrs

from . import _lifecycle
from .drift import DriftResult, detect

if TYPE_CHECKING:
    from ..handle import ClientHandle

__all__ = ["Monitor", "Alert", "WindowStats", "process_rss_mb", "CpuMeter"]

log = logging.getLogger(__name__)

BATCH = 2000
MAX_AGE = 1.0
TICK = 0.25  # the timer thread looks at the buffer's age this often
WINDOW = 100


@attrs.frozen
class Alert:
    """kind is accuracy, latency, drift or resource; model/version are None for resource."""

    kind: str
    model: str | None
    version: str | None
    message: str

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class WindowStats:
    """The last `window` samples of one model version: accuracy mean and latency p95."""

    model: str
    version: str
    accuracy_samples: int
    accuracy: float | None
    latency_samples: int
    latency_p95: float | None


def process_rss_mb() -> float | None:
    """This process's resident memory in MB: /proc on Linux, else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass  # not Linux: fall back to the resource module below
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class CpuMeter:
    """Process CPU use since the previous reading, as a percent of the CPUs it may run on."""

    MIN_INTERVAL = 0.1

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu_seconds())

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def read(self) -> tuple[float, float] | None:
        """(percent, seconds measured), or None when too little time passed to tell."""
        wall, cpu = time.monotonic(), self._cpu_seconds()
        elapsed = wall - self._last[0]
        if elapsed < self.MIN_INTERVAL:
            return None
        used = cpu - self._last[1]
        self._last = (wall, cpu)
        return 100.0 * used / elapsed / _cpus(), elapsed


def _p95(values: list[float]) -> float:
    s = sorted(values)
    pos = 0.95 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _check_number(name: str, value: Any, lo: float, hi: float) -> float:
    if type(value) is float and lo <= value <= hi:
        return value  # the common case, without the slower ABC checks below
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise TypeError(f"monitor.record: {name} must be a finite number, got {value!r}")
    if not lo <= float(value) <= hi:
        bound = f"between {lo} and {hi}" if hi < sys.float_info.max else f">= {lo}"
        raise ValueError(f"monitor.record: {name} = {value!r} must be {bound}")
    return float(value)


def _flush_at_exit(ref: weakref.ref[Monitor]) -> None:
    monitor = ref()
    if monitor is not None:
        try:
            monitor.flush()
        except Exception:  # interpreter exit: report what was lost, do not raise
            log.exception("mlprefs: could not write %d buffered monitoring sample(s) at exit",
                          monitor.buffered)


class Monitor:
    """prefs.monitor: record serving metrics, check them against the preferences, raise alerts."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client
        self._store = client.store
        self._buf: list[tuple[str, str, float | None, float | None, float]] = []
        self._lock = _lifecycle.OwnedLock()  # the buffer (appends and swaps)
        self._flush_lock = _lifecycle.OwnedLock()  # one write at a time, swap to commit
        self._oldest = 0.0
        self._pid = os.getpid()
        self._cpu = CpuMeter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._atexit = functools.partial(_flush_at_exit, weakref.ref(self))
        atexit.register(self._atexit)
        _lifecycle.register(self)  # flushed on SIGTERM / SIGINT; fork-safe
        client.data  # first use of a data service starts the retention schedule
        self._cpu = CpuMeter()  # from here: the SDK's own start-up (plugins loading) is not the process's load

    # -- recording ------------------------------------------------------------------
    def record(self, model: str, version: str, accuracy: float | None = None,
               latency_ms: float | None = None, *, durable: bool = False) -> None:
        """Buffer one sample; a metric whose *_tracking key is off is dropped. Buffered samples
        survive SIGTERM, SIGINT and exit; durable=True writes before returning (SIGKILL-safe)."""
        get = self._client.get
        if accuracy is not None:
            accuracy = (_check_number("accuracy", accuracy, 0.0, 1.0)
                        if get("ml.monitoring.accuracy_tracking") else None)
        if latency_ms is not None:
            latency_ms = (_check_number("latency_ms", latency_ms, 0.0, sys.float_info.max)
                          if get("ml.monitoring.latency_tracking") else None)
        if accuracy is None and latency_ms is None:
            return
        if not isinstance(model, str) or not model:
            raise TypeError(f"monitor.record: model must be a non-empty str, got {model!r}")
        if not isinstance(version, str):
            if isinstance(version, bool) or not isinstance(version, int):
                raise TypeError(f"monitor.record: version must be a str, got {version!r}")
            version = str(version)
        now = time.time()
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent writes what it buffered
                self._buf, self._pid, self._thread = [], os.getpid(), None
            buf = self._buf
            if not buf:
                self._oldest = now
            buf.append((model, version, accuracy, latency_ms, now))
            due = durable or len(buf) >= BATCH or now - self._oldest >= MAX_AGE
        _lifecycle.write_ended()
        if due:
            self.flush()
        elif self._thread is None:
            self._start_timer()

    def _start_timer(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._timer,
                                            args=(weakref.ref(self), self._stop),
                                            name="mlprefs-monitor-flush", daemon=True)
        self._thread.start()

    @staticmethod
    def _timer(ref: weakref.ref[Monitor], stop: threading.Event) -> None:
        """Write samples once the oldest is MAX_AGE old, even if no further sample comes;
        holds the monitor only weakly, so a dropped monitor ends the thread."""
        while True:
            monitor = ref()
            if monitor is None or not monitor.flush_due():
                return
            del monitor
            if stop.wait(TICK):
                return

    def flush_due(self) -> bool:
        """For the timer: write the buffer if its oldest sample is MAX_AGE old. False once
        the monitor is closed, or in a forked child (the timer is the parent's)."""
        if self._stop.is_set() or self._pid != os.getpid():
            return False
        if self._buf and time.time() - self._oldest >= MAX_AGE:
            try:
                self.flush()
            except Exception:  # the samples stay buffered; the next tick retries
                log.exception("mlprefs: monitoring samples could not be written yet; they "
                              "stay buffered and are retried in %.2fs", TICK)
        return True

    @property
    def buffered(self) -> int:
        """Samples recorded but not yet written to the store."""
        return len(self._buf)

    def flush(self) -> int:
        """Write the buffered samples now; returns how many."""
        try:
            with self._flush_lock:
                return self._flush()
        finally:
            _lifecycle.write_ended()

    def _flush(self) -> int:
        with self._lock:
            batch, self._buf = self._buf, []
        if not batch:
            return 0
        last: dict[tuple[str, str], float] = {}
        for model, version, _, _, at in batch:
            last[(model, version)] = at
        try:
            with self._store.transaction() as db:
                db.executemany("INSERT INTO monitor_samples (model, version, accuracy, "
                               "latency_ms, at) VALUES (?, ?, ?, ?, ?)", batch)
                db.executemany("INSERT INTO monitor_series (model, version, last_at) "
                               "VALUES (?, ?, ?) ON CONFLICT (model, version) DO UPDATE "
                               "SET last_at = excluded.last_at",
                               [(m, v, at) for (m, v), at in last.items()])
        except BaseException:
            with self._lock:  # keep them for the next try rather than lose them
                self._buf[:0] = batch
            raise
        return len(batch)

    # -- reading --------------------------------------------------------------------
    def stats(self, model: str, version: str, window: int = WINDOW) -> WindowStats:
        """Accuracy mean and latency p95 over the last `window` samples of a model version."""
        self.flush()
        acc = [r[0] for r in self._store.query(
            "SELECT accuracy FROM monitor_samples WHERE model = ? AND version = ? AND "
            "accuracy IS NOT NULL ORDER BY id DESC LIMIT ?", (model, version, window))]
        lat = [r[0] for r in self._store.query(
            "SELECT latency_ms FROM monitor_samples WHERE model = ? AND version = ? AND "
            "latency_ms IS NOT NULL ORDER BY id DESC LIMIT ?", (model, version, window))]
        return WindowStats(model, version, len(acc), sum(acc) / len(acc) if acc else None,
                           len(lat), _p95(lat) if lat else None)

    def drift(self, reference: Any, current: Any, method: str | None = None, *,
              model: str | None = None, version: str | None = None) -> DriftResult:
        """PSI or KS (default ml.monitoring.drift_method) between two samples of a feature.

        With model and version the result is stored, so check() raises a drift alert while
        the latest result for that version says drifted (and ml.monitoring.drift_detection).
        """
        get = self._client.get
        result = detect(reference, current, method or get("ml.monitoring.drift_method"),
                        get("ml.monitoring.drift_threshold"), get("ml.monitoring.drift_p_value"))
        if model is not None:
            if version is None:
                raise ValueError(f"monitor.drift: model {model!r} given without version; pass "
                                 "version= too, or neither to skip storing the result")
            with self._store.transaction() as db:
                db.execute("INSERT INTO drift_results (model, version, method, score, p_value, "
                           "drifted, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (model, str(version), result.method, result.score, result.p_value,
                            int(result.drifted), time.time()))
        return result

    # -- alerts ---------------------------------------------------------------------
    def check(self, window: int = WINDOW) -> list[Alert]:
        """Alerts whose condition started since the last check (stored, sent to on_alert)."""
        found, unknown = self._conditions(window)
        now = time.time()
        new = []
        with self._store.transaction() as db:
            active = {(c, m, v): i for i, c, m, v in db.execute(
                "SELECT id, condition, model, version FROM alerts WHERE resolved_at IS NULL")}
            for key, alert in found.items():
                if key not in active:
                    db.execute("INSERT INTO alerts (kind, condition, model, version, message, "
                               "at) VALUES (?, ?, ?, ?, ?, ?)",
                               (alert.kind, key[0], key[1], key[2], alert.message, now))
                    new.append(alert)
            ended = [(now, i) for key, i in active.items() if key not in found
                     and key not in unknown]
            db.executemany("UPDATE alerts SET resolved_at = ? WHERE id = ?", ended)
        for alert in new:
            log.warning("mlprefs alert (%s): %s", alert.kind, alert.message)
            self._client.events.fire("alert", alert)
        return new

    def alerts(self, active: bool | None = None, limit: int = 100) -> list[Alert]:
        """Stored alerts, newest first; active=True only those whose condition persists."""
        where = {None: "", True: " WHERE resolved_at IS NULL",
                 False: " WHERE resolved_at IS NOT NULL"}[active]
        rows = self._store.query("SELECT kind, model, version, message FROM alerts" + where
                                 + " ORDER BY id DESC LIMIT ?", (limit,))
        return [Alert(k, m or None, v or None, msg) for k, m, v, msg in rows]

    def _conditions(self, window: int) -> tuple[dict[tuple[str, str, str], Alert], set]:
        """Every alerting condition now, keyed (condition, model, version); plus the keys
        that could not be judged this time (left as they are)."""
        self.flush()
        view = self._client.snapshot()
        found: dict[tuple[str, str, str], Alert] = {}
        unknown: set[tuple[str, str, str]] = set()
        series = self._store.query("SELECT model, version FROM monitor_series")
        threshold = view["ml.performance.accuracy_threshold"]
        budget = view["ml.monitoring.latency_budget_ms"]
        for model, version in series:
            s = self.stats(model, version, window)
            if view["ml.monitoring.accuracy_tracking"] and s.accuracy is not None \
                    and s.accuracy < threshold:
                found[("accuracy", model, version)] = Alert(
                    "accuracy", model, version,
                    f"{model} {version}: accuracy {s.accuracy:.3f} over the last "
                    f"{s.accuracy_samples} sample(s) is below "
                    f"ml.performance.accuracy_threshold {threshold}")
            if view["ml.monitoring.latency_tracking"] and s.latency_p95 is not None \
                    and s.latency_p95 > budget:
                found[("latency", model, version)] = Alert(
                    "latency", model, version,
                    f"{model} {version}: p95 latency {s.latency_p95:.1f} ms over the last "
                    f"{s.latency_samples} sample(s) is above ml.monitoring.latency_budget_ms "
                    f"{budget}")
        if view["ml.monitoring.drift_detection"]:
            found.update(self._drift_conditions())
        if view["ml.monitoring.resource_alerts"]:
            self._resource_conditions(view, found, unknown)
        return found, unknown

    def _drift_conditions(self) -> dict[tuple[str, str, str], Alert]:
        rows = self._store.query(
            "SELECT model, version, method, score, p_value FROM drift_results d WHERE drifted = 1 "
            "AND id = (SELECT MAX(id) FROM drift_results e WHERE e.model = d.model "
            "AND e.version = d.version)")
        out = {}
        for model, version, method, score, p in rows:
            how = (f"PSI {score:.3f}" if method == "psi"
                   else f"KS D {score:.3f}, p-value {p:.3g}")
            out[("drift", model, version)] = Alert(
                "drift", model, version, f"{model} {version}: input drift detected ({how}; "
                "see ml.monitoring.drift_threshold / drift_p_value)")
        return out

    def _resource_conditions(self, view: Any, found: dict, unknown: set) -> None:
        rss = process_rss_mb()
        limit_mb = view["ml.performance.memory_limit_mb"]
        if rss is None:
            unknown.add(("memory", "", ""))
        elif rss > limit_mb:
            found[("memory", "", "")] = Alert(
                "resource", None, None, f"process memory (RSS) {rss:.0f} MB is above "
                f"ml.performance.memory_limit_mb {limit_mb}")
        cpu = self._cpu.read()
        limit_pct = view["ml.performance.cpu_limit_percent"]
        if cpu is None:
            unknown.add(("cpu", "", ""))
        elif cpu[0] > limit_pct:
            found[("cpu", "", "")] = Alert(
                "resource", None, None, f"process CPU {cpu[0]:.0f}% of {_cpus()} CPU(s) over "
                f"the last {cpu[1]:.1f}s is above ml.performance.cpu_limit_percent {limit_pct}")

    def close(self) -> None:
        atexit.unregister(self._atexit)
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread() \
                and self._pid == os.getpid():
            thread.join()
        self.flush()

    # -- _lifecycle.Buffered ----------------------------------------------------------
    def flush_now(self) -> bool:
        """Flush unless a write or an append is in progress (False): a signal handler must
        never wait on a lock the thread it interrupted may hold."""
        if not _lifecycle.take_in_handler(self._flush_lock):
            return False
        try:
            if not _lifecycle.take_in_handler(self._lock):
                return False
            self._lock.release()
            if _lifecycle.store_mid_write(self._store):
                return False
            self._flush()
        finally:
            self._flush_lock.release()
        return True

    def wait_idle(self) -> None:
        with self._flush_lock, self._lock:
            pass
        self._store.query("SELECT 1")  # waits for a write this thread's store has open

    def fork_locks(self) -> list[_lifecycle.OwnedLock]:
        return [self._flush_lock, self._lock]

    def after_fork_in_child(self, renew: bool) -> None:
        """The parent writes what it buffered; the child starts empty, without the timer."""
        self._buf, self._pid, self._thread = [], os.getpid(), None
        if renew:
            self._lock, self._flush_lock = _lifecycle.OwnedLock(), _lifecycle.OwnedLock()
