"""Hot reload: one background thread per Client follows its TOML files and the shared store.

Files: native events (inotify on Linux, watchfiles' notifier elsewhere) on the *parent
directories*, non-recursively. A watch on the file itself loses it at the first atomic save
(temp + rename), and a directory watch also sees creation, deletion and Kubernetes-style
`..data` symlink swaps. Every relevant event makes the thread stat the files it follows; a
file whose signature changed is read once it has held still for the quiet period by this
process's clock (see _statpoll), on a timer of its own, re-validated with every other layer
and swapped in whole by Client.refresh, which tells the subscribers. MLPREFS_WATCH=poll, a
network filesystem, or a platform without native events selects the stat loop instead.
Nothing at a followed path is opened by the watcher itself: a FIFO, a directory or a symlink
loop there is stat'ed, and the reader reports it as a ConfigFileError (the last good view
stays).

Store: other processes' commits are seen through Store.changed() (PRAGMA data_version on
SQLite), gated by a stat of the -wal file and polled on the same 10 ms tick as the file
events, so the thread wakes once per tick in all.

Lifetime: the thread holds the Client only through a weak reference, between passes, so a
Client nobody references any more is collected and its watcher stops without close().

Fork: a forked child (DataLoader workers, gunicorn preload) keeps its read-only snapshot and
has no watcher thread; `watch()` in the child starts its own. The locks the watcher thread
takes are held across fork() so the child never inherits one locked by a thread it lacks
(see _watchfork; which locks, and what the child drops, is the Client's to say).

The watcher reads through the Client's public surface only: `client.sources.groups()` says
which files feed which layer slots, `client.refresh(slots, ...)` re-reads and swaps them in.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import attrs

from . import _inotify
from ._statpoll import (
    GRACE_S,
    TICK_S,
    NativeEvents,
    StatPoll,
    StoreProbe,
    Tracked,
    existing_ancestor,
    remote_filesystem,
    settle_wait,
    signature,
)
from ._watchfork import FORK_WAIT_S, keep_forever, register, unregister
from .errors import MlprefsError
from .sources import STORE_SLOTS
from .values import show_path

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Watcher", "choose_backend", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("native", "poll")
SWEEP_S = 1.0        # native mode stats every file this often too, in case an event was lost
MAX_BACKOFF_S = 5.0  # between retries of a pass that keeps failing (store gone, ...)
ARM_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 2.0


def choose_backend(explicit: str | None = None) -> str:
    """Explicit argument, then MLPREFS_WATCH, then "native" (which falls back to "poll")."""
    value = (explicit or os.environ.get("MLPREFS_WATCH") or "native").strip().lower()
    if value in ("auto", ""):
        value = "native"
    if value not in BACKENDS:
        raise ValueError(f"MLPREFS_WATCH must be 'native' or 'poll', not {value!r}")
    return value


@attrs.define(eq=False)
class _Group:
    """Files read together into the same layer slots (the policy file feeds org and locked)."""

    slots: tuple[str, ...]
    files: list[Tracked]
    held: tuple[Any, ...] | None = None  # signatures of a read that failed and is not yet reported


class Watcher:
    """Follows one Client's files and store; `alive` until stop() (or a fork, in the child)."""

    def __init__(self, client: Client, backend: str | None = None) -> None:
        self._client = weakref.ref(client)  # never a strong one: see "Lifetime" above
        self._finalizer: weakref.finalize | None = None
        self.backend = choose_backend(backend)
        self._stop = threading.Event()
        self._armed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._error: BaseException | None = None
        self._tracked: dict[str, Tracked] = {}
        self._groups: list[_Group] = []
        self._source: Any = None
        self._held_locks: list[Any] = []
        self._project_file: tuple[str, str | None] | None = None
        self._polled: list[Tracked] = []  # native mode: files stat'ed every tick (see _watch_dirs)
        self._names: list[str] = []  # file names whose changes wake the thread (see _watch_dirs)

    # -- lifecycle ----------------------------------------------------------------
    @property
    def alive(self) -> bool:
        t = self._thread
        return (t is not None and t.is_alive() and self._pid == os.getpid()
                and not self._stop.is_set())

    @property
    def paths(self) -> list[str]:
        """Every file followed: the layers' files plus project-file candidates."""
        return list(self._tracked)

    def start(self) -> None:
        """Start the thread; return once it is armed (an edit made afterwards is seen)."""
        client = self._client()
        if client is None or client.closed:
            raise MlprefsError("cannot watch a closed Client")
        # Collected without close(): stop the thread (it also notices on its next tick).
        self._finalizer = weakref.finalize(client, self._stop.set)
        del client
        register(self)  # hold this thread's locks across fork()
        self._thread = threading.Thread(target=self._run, name="mlprefs-watcher", daemon=True)
        self._thread.start()
        if not self._armed.wait(ARM_TIMEOUT_S):
            self.stop()
            raise MlprefsError(f"the mlprefs watcher did not start within {ARM_TIMEOUT_S:.0f} s")
        if self._error is not None:
            self.stop()
            raise self._error

    def stop(self) -> None:
        """Stop and join the thread (it notices within one 10 ms tick)."""
        self._stop.set()
        unregister(self)
        if self._finalizer is not None:
            self._finalizer.detach()
        t = self._thread
        if t is None or self._pid != os.getpid() or t is threading.current_thread():
            return  # in a forked child the thread does not exist; in a callback it ends soon
        t.join(JOIN_TIMEOUT_S)
        if t.is_alive():
            log.warning("mlprefs watcher thread still busy %.0f s after close() (a slow "
                        "on_change callback?); it ends when that returns", JOIN_TIMEOUT_S)

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"<mlprefs Watcher {self.backend} {state} files={len(self._tracked)}>"

    # -- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        client = self._client()
        try:
            if client is None:
                raise MlprefsError("the Client was collected before its watcher started")
            self._regroup(client, time.monotonic())
            self._source = self._open_source(client)
            store_moved = StoreProbe(client.store)
        except Exception as e:  # reported to the caller of start()
            self._error = e
            self._armed.set()
            return
        del client  # from here on only a weak reference: see "Lifetime" above
        self._armed.set()
        try:
            self._loop(store_moved)
        finally:
            store_moved.close()
            self._source.close()

    def _loop(self, store_moved: StoreProbe) -> None:
        stop = self._stop
        state = _LoopState()

        def store_changed() -> None:  # called by a store that pushes changes (PostgreSQL's listener)
            client = self._client()
            if client is not None:
                client.refresh(STORE_SLOTS, origin="a store write by another process")

        store_moved.on_change(store_changed)
        while not stop.is_set():
            timeout = TICK_S
            if state.pending:  # the quiet period ends on its own timer, not on a tick
                timeout = min(TICK_S, max(0.0002, state.deadline - time.monotonic()))
            try:
                events = self._source.wait(stop, timeout)
            except Exception as e:  # e.g. the inotify watch limit; the stat loop needs none
                self._fall_back(f"native file events failed ({e})")
                events = True
            if stop.is_set():
                return
            try:
                if not self._tick(events, store_moved, state):
                    return  # the Client was collected
                state.backoff = 0.0
            except Exception:  # never let one bad pass end hot reload
                state.backoff = min(max(2 * state.backoff, GRACE_S), MAX_BACKOFF_S)
                log.exception("mlprefs watcher: a reload pass failed; retrying in %.2f s",
                              state.backoff)
                state.pending = True
                stop.wait(state.backoff)

    def _tick(self, events: bool, store_moved: StoreProbe, state: _LoopState) -> bool:
        """One wake-up: poll the store, stat and apply what settled; False once collected.

        The strong reference taken here ends with the call, so while the thread waits it
        keeps no Client alive.
        """
        client = self._client()
        if client is None:
            return False
        if not events and self._polled:
            now = time.monotonic()
            events = sum(f.observe(now) for f in self._polled) > 0
        if store_moved():
            client.refresh(STORE_SLOTS, origin="a store write by another process")
        now = time.monotonic()
        if events or state.pending or now >= state.next_sweep:
            state.next_sweep = now + SWEEP_S
            state.deadline = self._pass(client, now)
            state.pending = state.deadline < math.inf
        return True

    def _pass(self, client: Client, now: float) -> float:
        """Stat every file, apply the groups that settled; return when to look again."""
        moved = False
        for f in self._tracked.values():
            moved |= f.observe(now)
        if self.backend == "native" and (moved or getattr(self._source, "structural", False)):
            self._source.structural = False
            self._retarget(client)
        nxt = math.inf
        for group in list(self._groups):
            if not any(f.dirty for f in group.files):
                continue
            wait, report = settle_wait(group.files, now)
            if wait <= 0 and group.held == tuple(f.seen for f in group.files) and not report:
                wait = min(GRACE_S - f.age(now) for f in group.files if f.dirty)
            if wait > 0 or not self._apply(client, group, report):
                nxt = min(nxt, now + max(wait, 0.001))
        return nxt

    def _apply(self, client: Client, group: _Group, report: bool) -> bool:
        """Read, validate and swap in one group; False when it must be tried again later."""
        before = tuple(f.seen for f in group.files)
        verdict: dict[str, bool] = {}

        def accept(valid: bool) -> bool:
            # A write that started after our stat may have been read half-done: drop the read.
            verdict["raced"] = any(signature(f.path) != s for f, s in zip(group.files, before))
            verdict["valid"] = valid
            return not verdict["raced"] and (valid or report)

        origin = "edit of " + ", ".join(show_path(f.path) for f in group.files if f.dirty)
        changes = client.refresh(group.slots, origin=origin, accept=accept)
        if changes is None:
            group.held = None if verdict.get("raced") else before
            return False
        group.held = None
        for f, sig in zip(group.files, before):
            f.handled = sig
        if client.project_file != self._project_file:  # discovery runs on every read
            log.info("mlprefs: project file is now %s",
                     client.project_file[0] if client.project_file else "(none)")
            self._regroup(client, time.monotonic())
            self._retarget(client)
        return True

    # -- what to follow --------------------------------------------------------------
    def _regroup(self, client: Client, now: float) -> None:
        """Follow the files client.sources says feed each slot (a file is tracked once)."""
        groups = []
        for slots, paths in client.sources.groups():
            files = []
            for path in dict.fromkeys(paths):
                f = self._tracked.get(path)
                if f is None:
                    f = self._tracked[path] = Tracked(path)
                    f.observe(now)
                files.append(f)
            groups.append(_Group(slots, files))
        self._project_file = client.project_file
        self._groups = groups

    def _watch_dirs(self, client: Client) -> list[str]:
        """Each file's directory (or its nearest existing ancestor), and its target's too.

        The store's own directory is left out: every commit writes there, and a watched
        directory that keeps changing holds watchfiles' batch open for a step or two, which
        would delay the store poll. Files that live there are stat'ed every tick instead.
        Also sets self._names: the file names whose content changes wake the thread.
        """
        store_dir = _store_dir(client.store)
        dirs: dict[str, None] = {}
        polled = []
        names: set[str] = set()
        for f in self._tracked.values():
            mine = [os.path.realpath(existing_ancestor(os.path.dirname(f.path)))]
            real_file = os.path.realpath(f.path)  # a symlinked file's target
            real = os.path.dirname(real_file)
            names.update((os.path.basename(f.path), os.path.basename(real_file)))
            if os.path.isdir(real):
                mine.append(real)
            if store_dir in mine:
                polled.append(f)
            dirs.update((d, None) for d in mine if d != store_dir)
        self._polled = polled
        self._names = sorted(names)
        return sorted(dirs)

    def _open_source(self, client: Client) -> Any:
        if self.backend == "poll":
            return StatPoll()
        dirs = self._watch_dirs(client)
        remote = remote_filesystem(dirs)
        if remote:
            log.info("mlprefs: %s is on a %s filesystem, which raises no events for other "
                     "hosts' writes; following files with the stat loop", *remote)
            self.backend = "poll"
            return StatPoll()
        try:
            if _inotify.available():
                return _inotify.Inotify(dirs, self._names)
            return NativeEvents(dirs, self._names)
        except (OSError, RuntimeError) as e:
            log.warning("mlprefs: native file events unavailable (%s); following files with "
                        "the stat loop instead", e)
            self.backend = "poll"
            return StatPoll()

    def _retarget(self, client: Client) -> None:
        for attempt in (1, 2):  # a directory can vanish between listing and watching it
            try:
                self._source.retarget(self._watch_dirs(client), self._names)
                return
            except (OSError, RuntimeError) as e:
                if attempt == 2:
                    self._fall_back(f"cannot watch the new directories ({e})")

    def _fall_back(self, why: str) -> None:
        log.warning("mlprefs: %s; following files with the stat loop instead", why)
        old, self._source, self.backend = self._source, StatPoll(), "poll"
        self._polled = []
        try:
            old.close()
        except Exception:  # the old source is being dropped anyway; say why it was odd
            log.debug("mlprefs: closing the native watcher failed", exc_info=True)

    # -- fork (see _watchfork) -------------------------------------------------------------
    @property
    def in_this_process(self) -> bool:
        return self._pid == os.getpid()

    def hold_for_fork(self) -> None:
        """Take the locks this thread uses, so the child never inherits them held."""
        client = self._client()
        self._held_locks = []
        for lock in client.fork_locks() if client is not None else ():
            if lock.acquire(timeout=FORK_WAIT_S):
                self._held_locks.append(lock)

    def release_after_fork(self, child: bool) -> None:
        for lock in reversed(self._held_locks):
            lock.release()
        client = self._client()
        if child and client is not None and any(lock not in self._held_locks
                                                for lock in client.fork_locks()):
            log.warning("mlprefs: forked while the watcher was busy for over %.2f s; the child "
                        "gets fresh locks", FORK_WAIT_S)
            client.renew_fork_locks()  # still held by the watcher thread, which is not here
        if child:
            self._stop.set()
            if client is not None:
                client.forget_watcher(self)
            if isinstance(self._source, _inotify.Inotify):
                self._source.close()  # a plain descriptor: closing the child's copy is safe
            keep_forever(self)
        self._held_locks = []


@attrs.define
class _LoopState:
    """What the watcher loop carries from one wake-up to the next."""

    pending: bool = True  # the first pass re-reads every file: edits made before arming count
    deadline: float = 0.0
    next_sweep: float = 0.0
    backoff: float = 0.0


def _store_dir(store: Any) -> str | None:
    """The directory of a local store file (None for :memory: and servers)."""
    location = store.local_file
    return None if location is None else os.path.dirname(os.path.realpath(location))
