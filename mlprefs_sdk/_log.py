"""Make a run's events visible when the application set up no logging, as Lightning does.

Every module logs under the package logger ``mlprefs_sdk`` (``logging.getLogger(__name__)``).
An applied change, an early stop and a rejected edit are worth seeing without any set-up, but
Python prints only warnings and errors by default, and a library must not take over an
application's logging. So, when a Client starts and the application has configured no handler
(none on the root logger, none on ``mlprefs_sdk``), the package logger gets level INFO and a
stderr handler that writes only while that stays true: once the application configures
logging (``logging.basicConfig``), records reach its handlers instead, each once.

``MLPREFS_LOG`` chooses: ``off`` (nothing from mlprefs), ``warning``, ``info`` (the default),
``debug``. Python code can do the same with ``logging.getLogger("mlprefs_sdk").setLevel(...)``
before the first Client: a level set by the application is never changed.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LOGGER_NAME", "ensure_visible"]

LOGGER_NAME = "mlprefs_sdk"
OFF = logging.CRITICAL + 10
LEVELS = {"off": OFF, "none": OFF, "0": OFF, "error": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG}


class _FallbackHandler(logging.StreamHandler):
    """Writes to stderr only while no other handler would receive the record."""

    def __init__(self) -> None:
        super().__init__()  # stream resolved at emit time: sys.stderr may be replaced later

    @property
    def stream(self):  # StreamHandler's attribute, read live
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; stderr is read live
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        if _other_handlers(record.name, self):
            return False
        return super().handle(record)


def _other_handlers(name: str, mine: logging.Handler) -> bool:
    """True when a record of logger `name` would reach a handler other than `mine`."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(h is not mine for h in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _level_from_env() -> int:
    raw = os.environ.get("MLPREFS_LOG", "").strip().lower()
    if not raw:
        return logging.INFO
    return LEVELS.get(raw, logging.INFO)


def ensure_visible() -> None:
    """Called by each Client: add the fallback handler once, unless the app configured logging."""
    lib = logging.getLogger(LOGGER_NAME)
    if any(isinstance(h, _FallbackHandler) for h in lib.handlers):
        return
    level = _level_from_env()
    if level == OFF:
        if lib.level == logging.NOTSET:
            lib.setLevel(OFF)
        return
    if logging.getLogger().handlers or lib.handlers:
        return  # the application decides what is shown, and how
    if lib.level == logging.NOTSET:
        lib.setLevel(level)
    handler = _FallbackHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    lib.addHandler(handler)
