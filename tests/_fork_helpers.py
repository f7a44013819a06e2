"""Run a function in a real forked child, with a time limit, and hear how it went."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def in_child(body: Callable[[], None], timeout: float) -> str:
    """Run body in a forked child; "ok", the child's error, or "the child hung" (then it is
    killed): the child never hangs the test."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        os.close(read)
        code = 1
        try:
            body()
            os.write(write, b"ok")
            code = 0
        except BaseException as e:
            os.write(write, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
            return "the child hung"
        time.sleep(0.002)
    with os.fdopen(read, "rb") as f:
        return f.read().decode() or "the child died without a word"
