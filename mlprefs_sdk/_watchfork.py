"""Fork safety for watchers: the child never inherits a lock held by a thread it lacks.

os.fork() copies only the calling thread. If the watcher thread held the client's rebuild
lock (or the store's, or the dispatcher's) at that moment, the child would wait on it
forever. So, once any watcher has started, fork() first takes those locks for every live
watcher of this process (waiting up to FORK_WAIT_S for a reload in progress), and both
sides release them after. A lock the watcher keeps longer (a slow immediate callback) is
replaced by a fresh one in the child. The child's watchers are stopped and kept forever:
watchfiles' notifier must never be dropped there (its thread and locks are the parent's).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Protocol

__all__ = ["FORK_WAIT_S", "Forkable", "client_locks", "keep_forever", "register", "renew_locks",
           "unregister"]

log = logging.getLogger(__name__)

FORK_WAIT_S = 0.25  # how long fork() waits for a refresh in progress to finish


class Forkable(Protocol):
    """What the hooks need of a watcher."""

    @property
    def in_this_process(self) -> bool: ...

    def hold_for_fork(self) -> None: ...

    def release_after_fork(self, child: bool) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_orphans: list[Any] = []
_installed = False


def register(watcher: Forkable) -> None:
    """Hold this watcher's locks across every fork() from now on (hooks installed once)."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                            after_in_child=_after_in_child)
        _installed = True
    _live.add(watcher)


def unregister(watcher: Forkable) -> None:
    _live.discard(watcher)


def keep_forever(watcher: Forkable) -> None:
    """In a child: never collect this stopped watcher (see the module docstring)."""
    _orphans.append(watcher)


def client_locks(client: Any) -> list[Any]:
    """The locks a watcher thread takes: the client's, its store's and its dispatcher's."""
    locks = [client._lock, getattr(client.store, "_lock", None),
             getattr(client._events, "_lock", None)]
    return [lock for lock in locks if lock is not None]


def renew_locks(client: Any) -> None:
    """In a child: fresh locks for the ones a thread that does not exist here still holds."""
    log.warning("mlprefs: forked while the watcher was busy for over %.2f s; the child gets "
                "fresh locks", FORK_WAIT_S)
    client._lock = threading.RLock()
    store = client.store
    if hasattr(store, "_lock"):
        store._lock = threading.RLock()
    if hasattr(client._events, "_lock"):
        client._events._lock = threading.Lock()


def _before() -> None:
    for w in list(_live):
        if w.in_this_process:
            w.hold_for_fork()


def _after_in_parent() -> None:
    for w in list(_live):
        w.release_after_fork(child=False)


def _after_in_child() -> None:
    for w in list(_live):
        w.release_after_fork(child=True)
    _live.clear()
