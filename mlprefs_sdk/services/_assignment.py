"""Deterministic, sticky A/B assignment and the write buffer behind experiments.

Assignment algorithm (the same in every process and on every machine, no state needed):

    h = SHA-256( salt as UTF-8  ||  0x00  ||  unit id as UTF-8 )
    u = (first 8 bytes of h, big-endian unsigned) / 2**64          # uniform in [0, 1)
    arm = "treatment" if u < traffic_split_ratio else "control"

The salt defaults to the experiment name, so two stores that create the same experiment
assign alike. Stickiness: every assignment is stored once per unit (experiment_units) and
the ratio's history is kept (experiment_splits). A unit's arm can depend on *when* it was
assigned only if u lies between the lowest and highest ratio the experiment has used; only
those units are looked up in the store, everyone else is computed. Known units are answered
from an in-memory cache, so a repeated assign costs a dict lookup.

Writes are buffered in memory (deques, safe across threads without a lock) and flushed in
one transaction: by the caller when 200,000 rows are waiting; by a timer thread once the
caller has been quiet for half a second, and at least every 3 s; and before analyze(), on
flush() and close(), on SIGTERM and SIGINT, and at interpreter exit (_lifecycle.py). A SIGKILL
can lose what came in during the last FLUSH_INTERVAL_S * MAX_TICKS seconds (3 s) at most, and
never more than FLUSH_ROWS rows; record(..., durable=True) writes before it returns.
Erasure is final: inside the flush's transaction the store is asked which subjects were
erased (by any process) since the oldest buffered row was recorded, and a buffered row of such
a subject recorded before its erasure is dropped, never stored after it.
Big sorted batches matter: unit rows are keyed by random pseudonyms, and a batch written in
key order rewrites far fewer index pages than the same rows in arrival order. Raw unit ids live
only in memory: with anonymisation on they are turned into pseudonyms at flush time, before
anything reaches the store.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import MlprefsError
from . import _lifecycle

__all__ = ["Live", "WriteBuffer", "unit_text", "InvalidUnitError", "HASH_SCALE",
           "KNOWN_UNITS_MAX"]

log = logging.getLogger(__name__)

FLUSH_ROWS = 200_000  # a batch: the caller that fills it writes it (~40 MB at most)
FLUSH_INTERVAL_S = 0.5  # the timer writes leftovers once no row came in for this long ...
MAX_TICKS = 6  # ... or after this many ticks (3 s) while rows keep coming in
KNOWN_UNITS_MAX = 500_000  # per experiment; beyond it the cache restarts (the store remembers)
HASH_SCALE = float(2 ** 64)


class InvalidUnitError(MlprefsError, TypeError):
    """A unit id must be a non-empty str (or an int, used as its decimal text)."""


def unit_text(unit_id: Any) -> str:
    if type(unit_id) is str and unit_id:
        return unit_id
    if isinstance(unit_id, int) and not isinstance(unit_id, bool):
        return str(unit_id)
    if isinstance(unit_id, str):
        raise InvalidUnitError("a unit id must not be empty")
    raise InvalidUnitError(f"a unit id must be a str or an int, got {type(unit_id).__name__} "
                           f"{unit_id!r}")


class Live:
    """What this process knows about one experiment: salt, ratio history, units seen."""

    __slots__ = ("name", "salt", "prefix", "fixed_ratio", "ratios", "since", "lo", "hi",
                 "anonymized", "metric", "known")

    def __init__(self, name: str, salt: str, fixed_ratio: float | None,
                 ratios: list[tuple[float, float]], anonymized: bool, metric: str) -> None:
        self.name, self.salt, self.fixed_ratio = name, salt, fixed_ratio
        self.prefix = salt.encode("utf-8") + b"\x00"
        self.set_ratios(ratios)
        self.anonymized, self.metric = anonymized, metric
        self.known: dict[str, str] = {}

    def set_ratios(self, ratios: list[tuple[float, float]]) -> None:
        """The split periods [(since, ratio)], oldest first, as the store holds them."""
        self.ratios = ratios
        self.since = ratios[-1][0]  # start of the current period
        self.lo = min(r for _, r in ratios)
        self.hi = max(r for _, r in ratios)


class WriteBuffer:
    """Pending assignment and outcome rows, flushed in batches (see the module docstring).

    The caller that fills a batch writes it: a writer thread would fight the caller for the
    GIL on every row sqlite3 binds, and lose (measured: slower than writing in line). The
    timer thread only writes what is left when the caller goes quiet.
    """

    def __init__(self, store: Any, pseudonym: Callable[[str], str],
                 anonymizing: Callable[[], bool],
                 erasures: Callable[[Any, float], dict[str, float]] | None = None) -> None:
        self._store = store
        self._pseudonym = pseudonym
        self._anonymizing = anonymizing  # the live preference, asked once per batch
        self._erasures = erasures  # (db, since) -> {pseudonym: erased at}, in the write's tx
        # units: (live, unit, arm, assigned at, split since); outcomes: (live, unit, arm,
        # value, at, recorded at) - "recorded at" is when record() was called
        self.units: collections.deque[tuple[Live, str, str, float, float]] = collections.deque()
        self.outcomes: collections.deque[tuple[Live, str, str, float, float, float]] = \
            collections.deque()
        self._flush_lock = _lifecycle.OwnedLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        ref = weakref.ref(self)

        def at_exit() -> None:
            buffer = ref()
            if buffer:  # collected, or nothing buffered (len 0): nothing to write
                buffer.close()

        self._atexit = at_exit
        atexit.register(self._atexit)
        _lifecycle.register(self)  # flushed on SIGTERM / SIGINT; fork-safe

    def __len__(self) -> int:
        return len(self.units) + len(self.outcomes)

    def added(self) -> None:
        """Called after rows were appended: write a full batch; keep the timer thread alive."""
        if len(self.outcomes) + len(self.units) >= FLUSH_ROWS:
            self.flush()
        elif self._thread is None and not self._closed:
            self._start()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="mlprefs-experiments-flush", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        """Write leftovers once the caller has gone quiet for a tick, or after MAX_TICKS."""
        seen, waited = 0, 0
        while True:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            pending = len(self)
            waited = waited + 1 if pending else 0
            if pending and (pending <= seen or waited >= MAX_TICKS):
                try:
                    self.flush()
                    waited = 0
                except Exception:  # rows stay queued; the next round retries
                    log.exception("mlprefs: experiment rows could not be written yet; they stay "
                                  "buffered and are retried in %.1fs", FLUSH_INTERVAL_S)
            seen = len(self)

    def flush(self) -> int:
        """Write every pending row in one transaction; on failure the rows stay queued."""
        try:
            with self._flush_lock:
                return self._flush_locked()
        finally:
            _lifecycle.write_ended()

    def _flush_locked(self) -> int:
        units = _drain(self.units)
        outcomes = _drain(self.outcomes)
        if not units and not outcomes:
            return 0
        try:
            self._write(units, outcomes)
        except BaseException:
            self.units.extendleft(reversed(units))
            self.outcomes.extendleft(reversed(outcomes))
            raise
        return len(units) + len(outcomes)

    def _write(self, units: list[tuple], outcomes: list[tuple]) -> None:
        names: dict[str, str] = {}
        pseudonym = self._pseudonym
        anonymizing = self._anonymizing()

        def stored(live: Live, unit: str) -> str:
            if not (live.anonymized or anonymizing):
                return unit
            p = names.get(unit)
            if p is None:
                p = names[unit] = pseudonym(unit)
            return p

        with self._store.transaction() as db:
            units, outcomes = self._drop_erased(db, units, outcomes)
            groups: dict[tuple[str, float, str], list[tuple]] = {}
            for live, u, arm, at, since in units:
                groups.setdefault((live.name, since, arm), []).append(
                    (live.name, stored(live, u), arm, at))
            outcome_rows = [(live.name, stored(live, u), arm, value, at)
                            for live, u, arm, value, at, _ in outcomes]
            outcome_rows.sort(key=_outcome_order)
            for (name, since, arm), rows in groups.items():
                # In index order: consecutive inserts share pages, which keeps the rewritten
                # part of the unit index (random pseudonyms) small.
                rows.sort()
                added = db.executemany(
                    "INSERT INTO experiment_units (experiment, unit, arm, assigned_at) VALUES "
                    "(?, ?, ?, ?) ON CONFLICT (experiment, unit) DO NOTHING", rows).rowcount
                if added > 0:  # units another process assigned first are not counted twice
                    db.execute(
                        "INSERT INTO experiment_assignments (experiment, since, arm, n) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (experiment, since, arm) "
                        "DO UPDATE SET n = experiment_assignments.n + excluded.n",
                        (name, since, arm, added))
            if outcome_rows:
                db.executemany("INSERT INTO experiment_outcomes (experiment, unit, arm, value, at) "
                               "VALUES (?, ?, ?, ?, ?)", outcome_rows)

    def _drop_erased(self, db: Any, units: list[tuple],
                     outcomes: list[tuple]) -> tuple[list[tuple], list[tuple]]:
        """The rows minus those of subjects erased after the row was recorded."""
        if self._erasures is None or not (units or outcomes):
            return units, outcomes
        oldest = min([u[3] for u in units] + [o[5] for o in outcomes])
        erased = self._erasures(db, oldest)
        if not erased:
            return units, outcomes
        names: dict[str, str] = {}

        def gone(unit: str, recorded: float) -> bool:
            p = names.get(unit)
            if p is None:
                p = names[unit] = self._pseudonym(unit)
            return p in erased and recorded <= erased[p]

        kept_units = [u for u in units if not gone(u[1], u[3])]
        kept_outcomes = [o for o in outcomes if not gone(o[1], o[5])]
        dropped = len(units) - len(kept_units) + len(outcomes) - len(kept_outcomes)
        if dropped:
            log.info("mlprefs: %d buffered experiment row(s) of erased subject(s) dropped, not "
                     "stored after the erasure", dropped)
            for live, u, *_ in units:  # forget the erased units' arms: they were deleted
                if gone(u, float("-inf")):
                    live.known.pop(u, None)
        return kept_units, kept_outcomes

    def stored_unit(self, live: Live, unit: str) -> str:
        """The unit id as the store holds it: its pseudonym while anonymisation is on (for
        the experiment when it was created, or now), else the id itself."""
        return self._pseudonym(unit) if live.anonymized or self._anonymizing() else unit

    def close(self) -> None:
        """Stop the timer thread and write what is left."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()

    # -- _lifecycle.Buffered ----------------------------------------------------------
    def flush_now(self) -> bool:
        """Flush unless a write is in progress (False): a signal handler must never wait on
        a lock the thread it interrupted may hold."""
        if not _lifecycle.take_in_handler(self._flush_lock):
            return False
        try:
            if _lifecycle.store_mid_write(self._store):
                return False
            self._flush_locked()
        finally:
            self._flush_lock.release()
        return True

    def wait_idle(self) -> None:
        with self._flush_lock:
            pass
        self._store.query("SELECT 1")  # waits for a write this thread's store has open

    def fork_locks(self) -> list[_lifecycle.OwnedLock]:
        return [self._flush_lock]

    def after_fork_in_child(self, renew: bool) -> None:
        self._forget()

    def _forget(self) -> None:
        """In a forked child: the parent flushes its own rows; the child starts empty."""
        self.units.clear()
        self.outcomes.clear()
        self._flush_lock = _lifecycle.OwnedLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None


def _outcome_order(row: tuple) -> tuple:
    return row[0], row[2], row[4]


def _drain(queue: collections.deque) -> list:
    out = []
    pop = queue.popleft
    for _ in range(len(queue)):
        out.append(pop())
    return out
