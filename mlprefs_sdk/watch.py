"""Hot reload: one background thread per Client follows its TOML files and the shared store.

Files: watchfiles (inotify, FSEvents, ...) on the *parent directories*, non-recursively. A
watch on the file itself loses it at the first atomic save (temp + rename), and a directory
watch also sees creation, deletion and Kubernetes-style `..data` symlink swaps. Every event
in a watched directory makes the thread stat the files it follows; a file whose signature
changed is read once it has settled (see _statpoll), re-validated with every other layer and
swapped in whole by Client._refresh, which tells the subscribers. MLPREFS_WATCH=poll, a
network filesystem, or a platform without native events selects the stat loop instead.

Store: other processes' commits are seen through Store.changed() (PRAGMA data_version on
SQLite), gated by a stat of the -wal file and polled on the same 10 ms tick as the file
events, so the thread wakes once per tick in all.

Fork: a forked child (DataLoader workers, gunicorn preload) keeps its read-only snapshot and
has no watcher thread; `watch()` in the child starts its own. The locks the watcher thread
takes are held across fork() so the child never inherits one locked by a thread it lacks.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import attrs

from ._statpoll import (GRACE_S, TICK_S, NativeEvents, StatPoll, StoreProbe, Tracked,
                        existing_ancestor, remote_filesystem, settle_wait, signature)
from .errors import MlprefsError
from .values import show_path

__all__ = ["Watcher", "choose_backend", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("native", "poll")
SWEEP_S = 1.0        # native mode stats every file this often too, in case an event was lost
MAX_BACKOFF_S = 5.0  # between retries of a pass that keeps failing (store gone, ...)
ARM_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 2.0
FORK_WAIT_S = 0.25   # how long fork() waits for a refresh in progress to finish
STORE_SLOTS = ("template", "user", "project")


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

    def __init__(self, client: Any, backend: str | None = None) -> None:
        self._client = client
        self.backend = choose_backend(backend)
        self._stop = threading.Event()
        self._armed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._error: BaseException | None = None
        self._discovery_dirs: list[str] = []
        self._tracked: dict[str, Tracked] = {}
        self._groups: list[_Group] = []
        self._source: Any = None
        self._held_locks: list[Any] = []
        self._project_file: tuple[str, str | None] | None = None
        self._polled: list[Tracked] = []  # native mode: files stat'ed every tick (see _watch_dirs)

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
        if getattr(self._client, "_closed", False):
            raise MlprefsError("cannot watch a closed Client")
        _install_fork_hooks()
        _live.add(self)
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
        _live.discard(self)
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
        try:
            self._regroup(time.monotonic())
            self._source = self._open_source()
        except Exception as e:  # reported to the caller of start()
            self._error = e
            self._armed.set()
            return
        store_moved = StoreProbe(self._client._store)  # follows the store before start() returns
        self._armed.set()
        try:
            self._loop(store_moved)
        finally:
            store_moved.close()
            self._source.close()

    def _loop(self, store_moved: StoreProbe) -> None:
        stop, client = self._stop, self._client

        def store_changed() -> None:
            client._refresh(STORE_SLOTS, origin="a store write by another process")

        store_moved.on_change(store_changed)  # a store that pushes changes calls it at once
        pending = True  # the first pass re-reads every file: edits made before arming count
        next_sweep = deadline = 0.0
        backoff = 0.0
        while not stop.is_set():
            timeout = TICK_S
            if pending:
                timeout = min(TICK_S, max(0.001, deadline - time.monotonic()))
            try:
                events = self._source.wait(stop, timeout)
            except Exception as e:  # e.g. the inotify watch limit; the stat loop needs none
                self._fall_back(f"native file events failed ({e})")
                events = True
            if stop.is_set():
                return
            try:
                if not events and self._polled:
                    now = time.monotonic()
                    events = sum(f.observe(now) for f in self._polled) > 0
                if store_moved():
                    store_changed()
                now = time.monotonic()
                if events or pending or now >= next_sweep:
                    next_sweep = now + SWEEP_S
                    deadline = self._pass(now)
                    pending = deadline < math.inf
                backoff = 0.0
            except Exception:  # never let one bad pass end hot reload
                backoff = min(max(2 * backoff, GRACE_S), MAX_BACKOFF_S)
                log.exception("mlprefs watcher: a reload pass failed; retrying in %.2f s", backoff)
                pending = True
                stop.wait(backoff)

    def _pass(self, now: float) -> float:
        """Stat every file, apply the groups that settled; return when to look again."""
        moved = False
        for f in self._tracked.values():
            moved |= f.observe(now)
        if self.backend == "native" and (moved or getattr(self._source, "structural", False)):
            self._source.structural = False
            self._retarget()
        wall = time.time_ns()
        nxt = math.inf
        for group in list(self._groups):
            if not any(f.dirty for f in group.files):
                continue
            wait, report = settle_wait(group.files, now, wall)
            if wait <= 0 and group.held == tuple(f.seen for f in group.files) and not report:
                wait = min(GRACE_S - f.age(now, wall) for f in group.files if f.dirty)
            if wait > 0 or not self._apply(group, report):
                nxt = min(nxt, now + max(wait, 0.001))
        return nxt

    def _apply(self, group: _Group, report: bool) -> bool:
        """Read, validate and swap in one group; False when it must be tried again later."""
        client = self._client
        before = tuple(f.seen for f in group.files)
        verdict: dict[str, bool] = {}

        def accept(valid: bool) -> bool:
            # A write that started after our stat may have been read half-done: drop the read.
            verdict["raced"] = any(signature(f.path) != s for f, s in zip(group.files, before))
            verdict["valid"] = valid
            return not verdict["raced"] and (valid or report)

        origin = "edit of " + ", ".join(show_path(f.path) for f in group.files if f.dirty)
        changes = client._refresh(group.slots, origin=origin, accept=accept)
        if changes is None:
            group.held = None if verdict.get("raced") else before
            return False
        group.held = None
        for f, sig in zip(group.files, before):
            f.handled = sig
        if client.project_file != self._project_file:  # discovery runs on every read
            log.info("mlprefs: project file is now %s",
                     client.project_file[0] if client.project_file else "(none)")
            self._regroup(time.monotonic())
            self._retarget()
        return True

    # -- what to follow --------------------------------------------------------------
    def _regroup(self, now: float) -> None:
        client = self._client
        loc = client.locations
        plan: list[tuple[tuple[str, ...], list[str]]] = [
            (("org", "locked"), [loc.policy]),
            (("user-file",), [loc.user_file]),
        ]
        if client._files:
            plan.append((("file",), list(client._files)))
        if client._discover_from is not None:
            plan.append((("project-file",), self._discovery_files(client._discover_from)))
        elif client.project_file is not None:
            plan.append((("project-file",), [client.project_file[0]]))
        self._project_file = client.project_file
        groups = []
        for slots, paths in plan:
            files = []
            for path in dict.fromkeys(paths):
                f = self._tracked.get(path)
                if f is None:
                    f = self._tracked[path] = Tracked(path)
                    f.observe(now)
                files.append(f)
            groups.append(_Group(slots, files))
        self._groups = groups

    def _discovery_files(self, start: str) -> list[str]:
        """mlprefs.toml and pyproject.toml from the working directory up to the project file.

        Creating a nearer mlprefs.toml, adding [tool.mlprefs] to the pyproject.toml, or
        deleting the file in use changes which file is the project layer, as for a new Client.
        The directories followed only ever grow, so a deleted project file can come back.
        """
        here = Path(start).resolve()
        chain = [here, *here.parents]
        current = self._client.project_file
        stop_at: Path | None = Path(current[0]).parent if current else None
        if stop_at is None or stop_at not in chain:
            stop_at = next((d for d in chain if (d / "pyproject.toml").is_file()), here)
        for d in chain[: chain.index(stop_at) + 1] if stop_at in chain else [here]:
            if str(d) not in self._discovery_dirs:
                self._discovery_dirs.append(str(d))
        files = [os.path.join(d, name) for d in self._discovery_dirs
                 for name in ("mlprefs.toml", "pyproject.toml")]
        if current is not None and current[0] not in files:
            files.append(current[0])
        return files

    def _watch_dirs(self) -> list[str]:
        """Each file's directory (or its nearest existing ancestor), and its target's too.

        The store's own directory is left out: every commit writes there, and a watched
        directory that keeps changing holds watchfiles' batch open for a step or two, which
        would delay the store poll. Files that live there are stat'ed every tick instead.
        """
        store_dir = _store_dir(self._client._store)
        dirs: dict[str, None] = {}
        polled = []
        for f in self._tracked.values():
            mine = [os.path.realpath(existing_ancestor(os.path.dirname(f.path)))]
            real = os.path.dirname(os.path.realpath(f.path))  # a symlinked file's target
            if os.path.isdir(real):
                mine.append(real)
            if store_dir in mine:
                polled.append(f)
            dirs.update((d, None) for d in mine if d != store_dir)
        self._polled = polled
        return sorted(dirs)

    def _open_source(self) -> Any:
        if self.backend == "poll":
            return StatPoll()
        dirs = self._watch_dirs()
        remote = remote_filesystem(dirs)
        if remote:
            log.info("mlprefs: %s is on a %s filesystem, which raises no events for other "
                     "hosts' writes; following files with the stat loop", *remote)
            self.backend = "poll"
            return StatPoll()
        try:
            return NativeEvents(dirs)
        except (OSError, RuntimeError) as e:
            log.warning("mlprefs: native file events unavailable (%s); following files with "
                        "the stat loop instead", e)
            self.backend = "poll"
            return StatPoll()

    def _retarget(self) -> None:
        for attempt in (1, 2):  # a directory can vanish between listing and watching it
            try:
                self._source.retarget(self._watch_dirs())
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

    # -- fork ---------------------------------------------------------------------------
    def _hold_for_fork(self) -> None:
        """Take the locks this thread uses, so the child never inherits them held."""
        self._held_locks = []
        for lock in self._locks():
            if lock.acquire(timeout=FORK_WAIT_S):
                self._held_locks.append(lock)

    def _release_after_fork(self, child: bool) -> None:
        for lock in reversed(self._held_locks):
            lock.release()
        if child:
            missed = [lock for lock in self._locks() if lock not in self._held_locks]
            if missed:  # still held by the watcher thread, which does not exist here
                log.warning("mlprefs: forked while the watcher was busy for over %.2f s; the "
                            "child gets fresh locks", FORK_WAIT_S)
                _renew_locks(self._client)
            self._stop.set()
            if getattr(self._client, "_watcher", None) is self:
                self._client._watcher = None
            _orphans.append(self)  # never drop the parent's native watcher state in the child
        self._held_locks = []

    def _locks(self) -> list[Any]:
        client = self._client
        locks = [client._lock, getattr(client._store, "_lock", None),
                 getattr(client._events, "_lock", None)]
        return [lock for lock in locks if lock is not None]


def _store_dir(store: Any) -> str | None:
    """The directory of a local store file (None for :memory: and servers)."""
    location = store.local_file
    return None if location is None else os.path.dirname(os.path.realpath(location))


# -- fork hooks: registered once, the first time a watcher starts ------------------------
_live: "weakref.WeakSet[Watcher]" = weakref.WeakSet()
_orphans: list[Watcher] = []
_hooks_installed = False


def _install_fork_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
        _hooks_installed = True


def _before_fork() -> None:
    for w in list(_live):
        if w._pid == os.getpid():
            w._hold_for_fork()


def _after_fork_in_parent() -> None:
    for w in list(_live):
        w._release_after_fork(child=False)


def _after_fork_in_child() -> None:
    for w in list(_live):
        w._release_after_fork(child=True)
    _live.clear()


def _renew_locks(client: Any) -> None:
    client._lock = threading.RLock()
    store = client._store
    if hasattr(store, "_lock"):
        store._lock = threading.RLock()
    if hasattr(client._events, "_lock"):
        client._events._lock = threading.Lock()

