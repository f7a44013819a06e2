"""Fork safety for watchers: the child never inherits a lock held by a thread it lacks.

os.fork() copies only the calling thread. If the watcher thread held the client's rebuild
lock (or the store's, or the dispatcher's) at that moment, the child would wait on it
forever. So, once any watcher has started, fork() first takes those locks for every live
watcher of this process (waiting up to FORK_WAIT_S for a reload in progress), and both
sides release them after. A lock the watcher keeps longer (a slow immediate callback) is
replaced by a fresh one in the child. Which locks those are is the Client's to say
(Client.fork_locks, Client.renew_fork_locks). The child's watchers are stopped and kept forever:
watchfiles' notifier must never be dropped there (its thread and locks are the parent's).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol

__all__ = ["FORK_WAIT_S", "Forkable", "keep_forever", "register", "unregister"]

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
