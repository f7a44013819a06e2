"""Change subscriptions and named events; a raising callback never stops the others."""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .values import ChangeSet

__all__ = ["Subscription", "Dispatcher"]

log = logging.getLogger(__name__)

DELIVERY = ("immediate", "deferred")


class Subscription:
    """Handle returned by on_change(); cancel() stops delivery, including queued sets."""

    __slots__ = ("pattern", "callback", "deliver", "matches", "_dispatcher", "active")

    def __init__(self, pattern: str, callback: Callable[[ChangeSet], Any], deliver: str,
                 dispatcher: Dispatcher) -> None:
        if deliver not in DELIVERY:
            raise ValueError(f"deliver must be 'immediate' or 'deferred', not {deliver!r}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self.pattern, self.callback, self.deliver = pattern, callback, deliver
        self.matches = re.compile(fnmatch.translate(pattern)).match  # key -> match or None
        self._dispatcher = dispatcher
        self.active = True

    def cancel(self) -> None:
        self.active = False
        self._dispatcher.unsubscribe(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.pattern!r} {self.deliver}{'' if self.active else ' cancelled'}>"


class Dispatcher:
    """Delivers ChangeSets to subscribers (now, or queued until apply_pending) and named events."""

    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()
        self._listeners: dict[str, tuple[Callable[[Any], Any], ...]] = {}
        self._pending: deque[tuple[Subscription, ChangeSet]] = deque()
        self._lock = threading.Lock()

    def subscribe(self, pattern: str, callback: Callable[[ChangeSet], Any],
                  deliver: str = "immediate") -> Subscription:
        sub = Subscription(pattern, callback, deliver, self)
        with self._lock:
            self._subs = self._subs + (sub,)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` (Subscription.cancel() calls this)."""
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def listen(self, kind: str, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Register for a named event ("error", "alert", "retrain", ...); returns a remover."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            self._listeners[kind] = self._listeners.get(kind, ()) + (callback,)

        def remove() -> None:
            with self._lock:
                self._listeners[kind] = tuple(c for c in self._listeners.get(kind, ())
                                              if c is not callback)
        return remove

    def fire(self, kind: str, payload: Any) -> None:
        for cb in self._listeners.get(kind, ()):
            _call(cb, payload, kind)

    def emit(self, changes: ChangeSet) -> None:
        if not changes:
            return
        for sub in self._subs:
            mine = tuple(c for c in changes.changes if sub.matches(c.key))
            if not mine:
                continue
            cs = changes if len(mine) == len(changes.changes) else ChangeSet(mine)
            if sub.deliver == "immediate":
                _call(sub.callback, cs, sub.pattern)
            else:
                self._pending.append((sub, cs))

    @property
    def pending(self) -> deque[tuple[Subscription, ChangeSet]]:
        """The deferred queue itself (the same object for the dispatcher's life): truthy while
        something waits for apply_pending(); the training driver tests it on every step."""
        return self._pending

    @property
    def lock(self) -> threading.Lock:
        """Guards the subscriber and listener lists (held across fork(): see _watchfork)."""
        return self._lock

    def renew_lock(self) -> None:
        """In a forked child whose parent thread held the lock: a fresh one."""
        self._lock = threading.Lock()

    def apply_pending(self) -> int:
        """Deliver queued ChangeSets on the caller's thread, oldest first; returns how many."""
        n = 0
        while True:
            try:
                sub, cs = self._pending.popleft()
            except IndexError:
                return n
            if sub.active:
                _call(sub.callback, cs, sub.pattern)
                n += 1


def _call(callback: Callable[[Any], Any], payload: Any, what: str) -> None:
    try:
        callback(payload)
    except Exception:  # a user's callback must not break delivery to the others
        log.exception("mlprefs callback %r for %s raised; other callbacks still run",
                      callback, what)
