"""Linux inotify on a set of directories: the native backend's event source on Linux.

watchfiles' notifier hands events over in batches, two 10 ms steps after the first one at
the earliest, so a save was seen 10-20 ms late and the quiet period came on top of that.
Here the watcher thread blocks in poll() on the inotify descriptor itself: it wakes the
moment a followed file changes, and its timeout doubles as the quiet-period timer and the
store poll tick. Modifications of files nobody follows (a log written next to
mlprefs.toml) are read and dropped without a pass; anything structural (create, delete,
rename, a directory going away, a queue overflow) always wakes the watcher.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import struct
import sys
import threading
from collections.abc import Iterable, Sequence

__all__ = ["Inotify", "available"]

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR = 0x4000, 0x8000, 0x01000000
_CONTENT = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE
_MASK = (_CONTENT | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF
         | _IN_MOVE_SELF | _IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


def available() -> bool:
    return sys.platform.startswith("linux")


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # dlopen(NULL): the process, libc included
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class Inotify:
    """One inotify descriptor watching directories (not recursively) for named files."""

    name = "native"

    def __init__(self, dirs: Sequence[str], names: Iterable[str]) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self._fd = fd
        self._poll = select.poll()  # not select(): a busy process may have fds above 1024
        self._poll.register(fd, select.POLLIN)
        self._wds: dict[str, int] = {}
        self._names: frozenset[str] = frozenset()
        self.dirs: tuple[str, ...] = ()
        self.structural = False  # something other than a content change happened
        try:
            self.retarget(dirs, names)
        except BaseException:
            self.close()
            raise

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Block until an event or timeout; True when a followed file may have changed."""
        if self._fd < 0:
            stop.wait(timeout)
            return False
        ready = self._poll.poll(max(0.0, timeout) * 1000)  # ms, rounded up
        return bool(ready) and self._drain()

    def _drain(self) -> bool:
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return relevant
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
                offset += _HEADER.size + length
                if mask & _IN_IGNORED:  # the directory went away: retarget re-adds its parent
                    self._wds = {d: w for d, w in self._wds.items() if w != wd}
                if mask & ~_CONTENT:
                    self.structural = relevant = True
                elif os.fsdecode(raw.rstrip(b"\0")) in self._names:
                    relevant = True

    def retarget(self, dirs: Sequence[str], names: Iterable[str] | None = None) -> None:
        """Watch exactly these directories (for these file names); OSError when one cannot."""
        if names is not None:
            self._names = frozenset(names)
        wanted = tuple(dict.fromkeys(dirs))
        for d in [d for d in self._wds if d not in wanted]:
            wd = self._wds.pop(d)
            if wd not in self._wds.values():  # two paths to one directory share a wd
                self._libc.inotify_rm_watch(self._fd, wd)
        for d in wanted:
            if d in self._wds:
                continue
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(d), _MASK)
            if wd < 0:
                e = ctypes.get_errno()
                hint = " (raise fs.inotify.max_user_watches)" if e == errno.ENOSPC else ""
                raise OSError(e, f"inotify_add_watch {d}: {os.strerror(e)}{hint}")
            self._wds[d] = wd
        self.dirs = wanted

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
