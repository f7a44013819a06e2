"""`mlprefs watch`: print every change as the watcher applies it, and every rejected edit."""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError
from ..values import ChangeSet, format_value, show_path

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {"watch": "mlprefs watch --json"}


def register(sub: SubParsers) -> None:
    p = sub.add_parser("watch", help="print each change as it is applied, until interrupted")
    # Also accepted after the verb; SUPPRESS keeps `mlprefs --json watch` working too.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object a line")
    p.set_defaults(func=cmd_watch)


def cmd_watch(ctx: Context) -> int:
    client = ctx.client()
    lock = threading.Lock()  # changes arrive on the watcher thread
    edits = itertools.count(1)  # numbers the applied and rejected edits

    def out(data: dict[str, Any], text: str) -> None:
        with lock:
            ctx.emit(data, text)
            ctx.out.flush()

    def on_change(changes: ChangeSet) -> None:
        at, edit = datetime.now(UTC), next(edits)
        for c in changes:
            out({"event": "change", "time": _iso(at), "edit": edit, "key": c.key, "old": c.old,
                 "new": c.new, "source": _source(c.source)},
                f"{_clock(at)}  {c.key}  {format_value(c.old)} → {format_value(c.new)}  "
                f"({c.source})")

    def on_error(err: MlprefsError) -> None:
        at, edit = datetime.now(UTC), next(edits)
        for p in getattr(err, "problems", None) or []:
            src = p.source
            where = (show_path(src.path) + (f":{src.line}" if src.line else "")
                     if src is not None and src.path else str(src or "?"))
            out({"event": "rejected", "time": _iso(at), "edit": edit,
                 "path": src.path if src else None, "line": src.line if src else None,
                 "key": p.key or None, "value": p.value, "rule": p.rule, "message": p.message},
                f"{_clock(at)}  rejected: {p.message}" if where in p.message
                else f"{_clock(at)}  rejected {where}: {p.message}")

    client.on_change("*", on_change)
    client.on_error(on_error)
    undo = _print_each_rejection_once()
    client.watch()
    watcher = client.watcher
    assert watcher is not None  # watch() returned: it is armed
    shown = [show_path(p) for p in watcher.paths]
    out({"event": "watching", "time": _iso(datetime.now(UTC)),
         "backend": watcher.backend, "paths": watcher.paths},
        f"watching {len(shown)} files ({watcher.backend} events); Ctrl-C to stop:\n  "
        + "\n  ".join(shown))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly as on Ctrl-C
    try:
        while watcher.alive:
            time.sleep(0.25)
    finally:
        undo()  # main() may run inside a longer-lived process
    raise MlprefsError("the watcher stopped unexpectedly; see the log above")


class _Reported(logging.Filter):
    """Drops the library's own log record of a rejected edit: this verb prints it already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("mlprefs") or record.levelno < logging.WARNING:
            return True
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        return not (any(isinstance(a, MlprefsError) for a in args)
                    or "rejected" in str(record.msg))


def _print_each_rejection_once() -> Callable[[], None]:
    """The watcher logs a rejected edit (for programs that only log) and calls on_error,
    which this verb prints: keep the printed line, drop the log record — on the library's
    loggers that create it, and on every handler already there that would show it."""
    reported = _Reported()
    names = ("mlprefs", "mlprefs_sdk", "mlprefs_sdk.client", "mlprefs_sdk.watch")
    filtered: list[logging.Filterer] = [logging.getLogger(name) for name in names]
    filtered += [h for name in ("", *names) for h in logging.getLogger(name).handlers]
    for f in filtered:
        f.addFilter(reported)

    def undo() -> None:
        for f in filtered:
            f.removeFilter(reported)

    return undo


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _source(source: Any) -> dict[str, Any]:
    return {"layer": source.layer, "path": source.path, "line": source.line,
            "detail": source.detail}


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"
