"""Buffered service rows survive the process stopping, and a fork never inherits a held lock.

Services that buffer rows (experiment outcomes, monitoring samples) `register()` here.

Signals. The first registration made from the main thread installs handlers for SIGTERM and
SIGINT, once per process (a forked child inherits them). On either signal every registered
buffer is written, then the handler that was there before is called: a user's handler runs
as it did; Python's SIGINT handler still raises KeyboardInterrupt; where the disposition was
the default, it is restored and the signal sent again, so the process dies by the same signal
with the same exit status as without the SDK. A signal that was ignored stays ignored (no
handler is installed over SIG_IGN). A signal handler runs in the main thread between two
bytecodes; if that thread was itself in the middle of writing (it holds a buffer's lock, or
the store has a transaction open), writing from the handler could deadlock, so a helper
thread waits for that write to end, writes the rest, and sends the signal again. Python may
also run a handler inside a __del__ or a weakref callback (a garbage collection can start one
anywhere), where whatever it raises is printed as "Exception ignored" and dropped: a user's
sys.exit() or Ctrl-C would then not stop the process. So when the exception a chained handler
raised reaches sys.unraisablehook, the signal is sent again (from another thread, AGAIN_S
later) and the handler raises that same exception where the main thread then runs (not once
the interpreter shuts down). A
normal exit is covered by each buffer's atexit hook. SIGKILL cannot be caught: what it can lose is
bounded by each buffer's flush interval (see docs/reliability-services.md).

Fork. Before os.fork() every registered buffer's locks are taken (waiting up to FORK_WAIT_S
for a write in progress), and released on both sides after it, so no service thread is inside
a write at the moment of the fork and the child starts with free locks and empty buffers (the
parent writes what it buffered). A lock still busy after FORK_WAIT_S is replaced in the child.
"""

from __future__ import annotations

import _thread
import functools
import logging
import os
import signal
import sys
import threading
import weakref
from typing import Any, Protocol

__all__ = ["OwnedLock", "Buffered", "register", "store_mid_write", "write_ended",
           "take_in_handler", "pending", "FORK_WAIT_S", "HANDLER_WAIT_S", "SIGNALS"]

log = logging.getLogger(__name__)

FORK_WAIT_S = 2.0
HANDLER_WAIT_S = 0.05  # a handler waits this long for another thread; then the helper waits
AGAIN_S = 0.01  # a signal whose handler's exception was dropped is sent again this much later
SIGNALS = ("SIGTERM", "SIGINT")


class OwnedLock(_thread.RLock):  # type: ignore[misc]  # typeshed marks it final; CPython allows it
    """A lock that knows whether this thread holds it, so a signal handler can tell whether
    the code it interrupted is inside it (and then never takes it: see take_in_handler).

    It is the C RLock on purpose. A lock written in Python (acquire, then record the owner)
    has bytecodes between taking the lock and entering the `with` block, where a signal
    handler can run; an exception it raises there (a user's sys.exit) leaves the lock held
    by no one, and the exit hook's flush then waits for it forever. The C lock's __enter__
    and __exit__ leave no such gap, and a lock the main thread did leave held (after an
    explicit acquire()) does not stop that same thread's exit hook, which runs re-entrantly.
    """

    __slots__ = ()

    def held_here(self) -> bool:
        return bool(self._is_owned())  # type: ignore[attr-defined]  # C RLock's, as Condition uses


class Buffered(Protocol):
    """What a registered buffer offers."""

    def flush(self) -> int: ...

    def flush_now(self) -> bool:
        """Write now unless this thread is mid-write (then False: try again later)."""

    def wait_idle(self) -> None:
        """Return once no write of this buffer is in progress (blocking)."""

    def fork_locks(self) -> list[OwnedLock]: ...

    def after_fork_in_child(self, renew: bool) -> None:
        """Empty the buffer, forget the parent's threads; renew=True: replace the locks."""


_buffers: weakref.WeakSet[Any] = weakref.WeakSet()
_previous: dict[int, Any] = {}
_swallowed: list[BaseException] = []  # raised again by the next _on_signal
_chained = [int(signal.SIGTERM)]  # the signal _chain last handed on
_signals_installed = False
_fork_hooks_installed = False
_registry_lock = threading.Lock()
_held: list[OwnedLock] = []
_missed: list[Any] = []


def register(buffer: Any) -> None:
    """Cover `buffer` on SIGTERM, SIGINT and fork (installing the hooks on first use)."""
    global _fork_hooks_installed
    with _registry_lock:
        _buffers.add(buffer)
        if not _fork_hooks_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                                after_in_child=_after_fork_in_child)
            _fork_hooks_installed = True
    _install_signal_handlers()


def signal_handlers_installed() -> bool:
    return _signals_installed


def store_mid_write(store: Any) -> bool:
    """True while the store's connection has a write open (SQLite tells; others: False), in
    which case a signal handler must not start another on the same connection."""
    conn = getattr(store, "conn", None)
    return bool(getattr(conn, "in_transaction", False))


# -- signals --------------------------------------------------------------------------------
def _install_signal_handlers() -> None:
    """Once per process, from the main thread only (signal.signal works nowhere else)."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    global _installed_pid
    _signals_installed, _installed_pid = True, os.getpid()
    for name in SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN or previous is None:  # ignored, or set outside Python
            continue
        _previous[signum] = previous
        signal.signal(signum, _on_signal)
    sys.unraisablehook = functools.partial(_unraisable, sys.unraisablehook)


# Signals whose handling waits for a write in progress. Whoever removes one from the set
# (set.remove is atomic) finishes it: the main thread when its own write ends (write_ended),
# or the helper thread once no write is in progress (by sending the signal again).
pending: set[int] = set()
_in_handler = threading.Lock()  # held by the main thread while it runs _on_signal


_installed_pid = -1


def _on_signal(signum: int, frame: Any) -> None:
    if _swallowed:  # sent again by _unraisable: the buffers are written already
        raise _swallowed.pop()
    if os.getpid() != _installed_pid:  # a forked child (a Pool worker) being stopped: the
        _chain(signum, frame)          # buffers are the parent's; never hold its exit up
        return
    if not _in_handler.acquire(blocking=False):  # a signal inside our own handler: merge it
        pending.add(signum)
        return
    try:
        if not _flush_all_now():
            _defer(signum)
            return
    finally:
        _in_handler.release()
    _chain(signum, frame)


def _chain(signum: int, frame: Any) -> None:
    """Hand the signal on: the handler that was there before ours, else the default."""
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        _chained[0] = signum
        previous(signum, frame)
        return
    # The default disposition: die by this signal, exactly as the process would have.
    # (Nothing here raises, so nothing can be dropped by an unraisable context.)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    signal.signal(signum, _on_signal)  # only reached if the signal is blocked


def _unraisable(previous_hook: Any, unraisable: Any) -> None:
    """sys.unraisablehook: a chained handler's exception (its traceback passes through
    _chain) dropped by a __del__ or weakref callback is raised again: see the docstring."""
    exc = unraisable.exc_value
    if exc is not None and _passed_chain(exc) and threading.main_thread().is_alive():
        _swallowed.append(exc)
        log.warning("mlprefs: %r, raised by a signal handler, was dropped by %r; raising it "
                    "again", exc, unraisable.object)
        # Later, from another thread: sent now, the handler would run inside this hook.
        again = threading.Timer(AGAIN_S, os.kill, (os.getpid(), _chained[0]))
        again.daemon, again.name = True, "mlprefs-signal-again"
        again.start()
    previous_hook(unraisable)


def _passed_chain(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is _chain.__code__:
            return True
        tb = tb.tb_next
    return False


def take_in_handler(lock: OwnedLock) -> bool:
    """Acquire `lock` from a signal handler without deadlocking: False when the interrupted
    thread holds it (or another thread kept it past HANDLER_WAIT_S)."""
    if lock.held_here():  # the lock is re-entrant: check first, never take it over
        return False
    return lock.acquire(timeout=HANDLER_WAIT_S)


def _flush_all_now() -> bool:
    done = True
    for buffer in list(_buffers):
        try:
            if not buffer.flush_now():
                done = False
        except Exception:  # the signal must still take effect: report what was not written
            log.exception("mlprefs: buffered rows could not be written on a signal")
    return done


def _defer(signum: int) -> None:
    """A write is in progress: finish the signal when it ends, never by waiting here."""
    if signum in pending:
        return
    pending.add(signum)

    def finish() -> None:
        for buffer in list(_buffers):
            try:
                buffer.wait_idle()  # the write in progress, wherever it is, ends
            except Exception:
                log.exception("mlprefs: waiting for a write to end on a signal failed")
        with _in_handler:  # never re-signal while the main thread is inside our handler
            try:
                pending.remove(signum)
            except KeyError:
                return  # the main thread finished it first
            os.kill(os.getpid(), signum)  # the handler runs again, now unblocked

    threading.Thread(target=finish, name="mlprefs-signal-flush", daemon=True).start()


def write_ended() -> None:
    """Buffers call this after releasing their locks: a signal that arrived during the write
    is handled now, in the main thread, without a round trip through the helper."""
    if not pending or threading.current_thread() is not threading.main_thread():
        return
    for signum in list(pending):
        try:
            pending.remove(signum)
        except KeyError:
            continue
        _on_signal(signum, None)


# -- fork -----------------------------------------------------------------------------------
def _before_fork() -> None:
    _registry_lock.acquire()
    for buffer in list(_buffers):
        for lock in buffer.fork_locks():
            if lock.held_here():
                continue
            if lock.acquire(timeout=FORK_WAIT_S):
                _held.append(lock)
            else:
                _missed.append(buffer)


def _release_held() -> None:
    for lock in reversed(_held):
        lock.release()
    _held.clear()


def _after_fork_in_parent() -> None:
    _release_held()
    _missed.clear()
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _release_held()
    missed = set(map(id, _missed))
    _missed.clear()
    if missed:
        log.warning("mlprefs: forked while a service was writing for over %.1f s; the child "
                    "gets fresh locks", FORK_WAIT_S)
    for buffer in list(_buffers):
        buffer.after_fork_in_child(renew=id(buffer) in missed)
    _registry_lock = threading.Lock()
