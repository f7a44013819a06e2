"""Where change signals come from, and when a changed file has settled enough to read.

Editors and scripts do not write a file in one step: an in-place save truncates first and
writes after, and a slow writer can pause half-way. A file is therefore applied only once its
stat signature (mtime_ns, ctime_ns, size, inode, device, file type) has held still for QUIET_S
by this process's monotonic clock, counted from the moment the watcher first saw that
signature, and confirmed by a fresh stat when the quiet period ends. The file's mtime is never
trusted for this: the kernel's timestamp is often coarser than the write, and judged by it a
writer pausing 5-9 ms half-way looked settled. States that are usually the middle of a save rather than
its end - the file gone (vim renames the original away before writing the new one) or emptied
in place - must hold still for GRACE_S, as must a read that fails to parse or validate before
it is reported: a torn write that is completed within 100 ms never raises an error event.

Signals: `Inotify` (Linux, in _inotify) and `NativeEvents` (watchfiles, elsewhere) say
"something happened here, stat your files"; `StatPoll`, for where native events are missing
(network filesystems, some container mounts, MLPREFS_WATCH=poll), says so every TICK_S;
`StoreProbe` tells whether another process committed to the store. Nothing here opens a
followed file: a FIFO or a device at a followed path is only ever stat'ed.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["QUIET_S", "GRACE_S", "TICK_S", "Sig", "UNKNOWN", "signature", "Tracked",
           "settle_wait", "StatPoll", "NativeEvents", "StoreProbe", "existing_ancestor",
           "remote_filesystem"]

log = logging.getLogger(__name__)

TICK_S = 0.010    # the watcher's loop period: stat loop, store poll, native step
QUIET_S = 0.010   # an ordinary save must have held still this long (see docs/hot-reload.md)
GRACE_S = 0.150   # a vanished, emptied or invalid file must hold still this long
STEP_MS = round(TICK_S * 1000)  # watchfiles' step: p50 latency is about 1.5 x step
DEBOUNCE_MS = 20  # a stream of changes elsewhere in a directory cannot hold a batch longer
# Filesystems whose changes made on another host raise no local inotify event.
REMOTE_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre",
    "gpfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.grpcfuse", "virtiofs", "vboxsf",
    "drvfs",
})

# (mtime_ns, ctime_ns, size, inode, device, file type) of an existing entry; ("error", errno)
# when it cannot be stat'ed for another reason than absence (a symlink loop, permission
# denied); None when it does not exist.
Sig = tuple[Any, ...]
UNKNOWN: Any = ("unknown",)  # not yet handled: the first pass re-reads the file


def signature(path: str) -> Sig | None:
    try:
        st = os.stat(path)  # follows symlinks: a swapped ConfigMap ..data link changes st_ino
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # a symlink loop, permission denied: reading it reports the problem
        return ("error", e.errno)
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev,
            stat.S_IFMT(st.st_mode))


def _is_file(sig: Sig | None) -> bool:
    """A regular file (a directory or FIFO in its place is reported, not waited for)."""
    return sig is not None and len(sig) == 6 and sig[5] == stat.S_IFREG


@attrs.define(slots=True, eq=False)
class Tracked:
    """One file the watcher follows: what it last saw, since when, and what it last applied."""

    path: str
    seen: Sig | None = UNKNOWN
    seen_at: float = 0.0       # time.monotonic() when `seen` was first observed
    handled: Sig | None = UNKNOWN
    first: Sig | None = UNKNOWN  # as found when the watcher armed: what the view was read from

    def observe(self, now: float) -> bool:
        """Stat the file; True when its signature differs from the last one seen."""
        sig = signature(self.path)
        if sig == self.seen:
            return False
        if self.seen is UNKNOWN:
            self.first = sig
        self.seen, self.seen_at = sig, now
        return True

    @property
    def dirty(self) -> bool:
        return self.seen != self.handled

    def age(self, now: float) -> float:
        """Seconds this process has seen the current signature hold still (monotonic clock)."""
        return now - self.seen_at

    @property
    def suspicious(self) -> bool:
        """Gone or emptied after having content: most likely mid-save, so wait longer."""
        before, now = (self.first if self.handled is UNKNOWN else self.handled), self.seen
        if before is None or not _is_file(before):
            return False
        return now is None or (_is_file(now) and now[2] == 0 and before[2] > 0)


def settle_wait(files: Sequence[Tracked], now: float) -> tuple[float, bool]:
    """(seconds still to wait before reading, whether a bad read may be reported now).

    `now` must be the time of the stat that confirmed each file's signature: a read is only
    allowed once two stats QUIET_S apart (by this process's clock) saw the same file.
    """
    wait, report = 0.0, True
    for f in files:
        if not f.dirty:
            continue
        age = f.age(now)
        wait = max(wait, (GRACE_S if f.suspicious else QUIET_S) - age)
        report = report and age >= GRACE_S
    return wait, report


class StatPoll:
    """The stat-loop backend: wake every tick and have every file stat'ed."""

    name = "poll"

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Sleep until the next tick; True means 'stat every file now'.

        time.sleep costs half of Event.wait per wake-up; stop() still lands within a tick.
        """
        time.sleep(timeout)
        return True

    def retarget(self, dirs: Sequence[str], names: Sequence[str] | None = None) -> None:
        """Nothing to do: stat() follows the files wherever their directories are."""

    def close(self) -> None:
        """Nothing to release."""


class StoreProbe:
    """Has another process committed to the store? Called every tick, so it must be cheap.

    For SQLite an fstat of the -wal file gates PRAGMA data_version: on a cold cache, after a
    10 ms sleep, the pragma costs about 100 us here, a stat by path 30 us, an fstat 15 us.
    (The -wal keeps its inode while this process holds a connection.) A commit writes the
    -wal first and becomes visible only after its fsync, so once the -wal moved the pragma
    runs on every tick for HOT_TICKS; it also runs every SAFETY_TICKS regardless, in case
    two commits leave the same stat behind.
    """

    HOT_TICKS = 10
    SAFETY_TICKS = 10

    def __init__(self, store: Any) -> None:
        location = getattr(store, "location", "")
        self._store = store
        self._off = location == ":memory:"  # private to this connection: nobody else writes
        self._wal = store.change_file
        self._fd = -1
        self._last: Any = None
        self._hot = self._ticks = 0
        self._unsubscribe: Any = lambda: None
        if not self._off:
            store.follow()  # a store that must start listening for other clients does so now

    def _wal_signature(self, wal: str) -> Sig | None:
        if self._fd < 0:
            try:  # O_NONBLOCK: a FIFO planted at the -wal path must not hang the thread
                self._fd = os.open(wal, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError:  # not created yet: stat by path until it is
                return signature(wal)
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                self.close()  # not SQLite's file: watch it by path, never hold it open
                return signature(wal)
        st = os.fstat(self._fd)
        if st.st_nlink == 0:  # replaced after all (the last connection went away): reopen
            self.close()
            return None
        return (st.st_mtime_ns, st.st_size)

    def on_change(self, callback: Any) -> None:
        """Have the store call `callback` the moment it hears of a change (until close())."""
        self._unsubscribe = self._store.on_change(callback)

    def close(self) -> None:
        self._unsubscribe()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __call__(self) -> bool:
        if self._off:
            return False
        if self._wal is not None:
            sig = self._wal_signature(self._wal)
            self._ticks += 1
            if sig != self._last:
                self._last, self._hot = sig, self.HOT_TICKS
            elif self._hot:
                self._hot -= 1
            elif self._ticks < self.SAFETY_TICKS:
                return False
            self._ticks = 0
        return self._store.changed()


class NativeEvents:
    """watchfiles' Rust notifier on a set of directories, non-recursive (where no inotify)."""

    name = "native"

    def __init__(self, dirs: Sequence[str], names: Sequence[str] = ()) -> None:
        # The Rust backend directly (documented in watchfiles' API docs): watchfiles.watch()
        # logs every batch at INFO and would honour WATCHFILES_FORCE_POLLING, which loses saves.
        from watchfiles._rust_notify import RustNotify

        self._cls = RustNotify
        self.dirs = tuple(dirs)
        self._notify = RustNotify(list(self.dirs), False, False, 0, False, False)
        self.structural = False  # a batch held something other than a modification

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        if timeout < TICK_S:  # the notifier sleeps a whole step: end a quiet period on time
            time.sleep(timeout)  # (an event meanwhile waits for the next call; the stat at
            return False         # the deadline sees the change it made anyway)
        raw = self._notify.watch(DEBOUNCE_MS, STEP_MS, max(1, int(timeout * 1000)), stop)
        if isinstance(raw, set):
            if any(change != 2 for change, _ in raw):  # 2 = modified
                self.structural = True
            return True
        return False

    def retarget(self, dirs: Sequence[str], names: Sequence[str] | None = None) -> None:
        dirs = tuple(dirs)
        if dirs == self.dirs:
            return
        fresh = self._cls(list(dirs), False, False, 0, False, False)  # new first: no gap
        self._notify.close()
        self._notify, self.dirs = fresh, dirs

    def close(self) -> None:
        self._notify.close()


def existing_ancestor(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def remote_filesystem(dirs: Sequence[str], mounts: str | None = None) -> tuple[str, str] | None:
    """(directory, fstype) of the first directory on a network filesystem (Linux only)."""
    if mounts is None:
        try:
            with open("/proc/self/mounts", encoding="utf-8") as f:
                mounts = f.read()
        except OSError:  # not Linux: assume local, native events
            return None
    rows = [line.split()[1:3] for line in mounts.splitlines() if len(line.split()) >= 3]
    table = sorted(((_unescape(m), t) for m, t in rows), key=lambda mt: len(mt[0]),
                   reverse=True)
    for d in dirs:
        for mount, fstype in table:
            if d == mount or d.startswith(mount.rstrip("/") + "/"):
                if fstype in REMOTE_FS:
                    return d, fstype
                break
    return None


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
