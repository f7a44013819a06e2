"""Keyed pseudonyms: HMAC-SHA256 under a per-installation secret kept beside the store (0600).

Unkeyed hashes of identifiers can be reversed by guessing; a keyed one cannot without the
secret, which never enters the store and is never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from typing import Any

__all__ = ["Pseudonymizer", "load_secret"]

log = logging.getLogger(__name__)

SECRET_BYTES = 32
MEMORY = ":memory:"  # secret path of an in-memory store: an ephemeral key


def load_secret(path: str) -> bytes:
    """Read the secret, creating it atomically (0600) on first use; tighten loose modes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _create(path)
    _regular(path, st.st_mode)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("mlprefs: %s was readable by others (mode %o); tightened to 0600",
                    path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o600)
    # O_NONBLOCK, then fstat: a FIFO swapped in after the stat must not block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        _regular(path, os.fstat(fd).st_mode)
        key = f.read()
    if len(key) < 16:
        raise ValueError(f"{path}: pseudonymisation secret is too short ({len(key)} bytes); "
                         "restore it from backup (deleting it changes every pseudonym)")
    return key


def _regular(path: str, mode: int) -> None:
    """A secret that is a FIFO, a directory or a device would hang or break every read."""
    if not stat.S_ISREG(mode):
        from .locations import file_kind

        raise ValueError(f"{path}: the pseudonymisation secret {file_kind(mode)}, not a regular "
                         "file; move it aside and restore secret.key from backup")


def _create(path: str) -> bytes:
    from .locations import make_private_dirs

    make_private_dirs(os.path.dirname(path) or ".")  # 0700 whatever the umask
    key = secrets.token_bytes(SECRET_BYTES)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: use theirs
    except FileExistsError:
        os.unlink(tmp)
        return load_secret(path)
    os.unlink(tmp)
    return key


class Pseudonymizer:
    """subject -> hex HMAC-SHA256; the secret is read lazily, once.

    The HMAC's inner and outer hash states are keyed once and copied per call (RFC 2104,
    ~4x faster than hmac.new). A secret path of ":memory:" keeps a random key in memory only,
    for a store that is itself in memory.
    """

    def __init__(self, secret_path: str) -> None:
        self.secret_path = secret_path
        self._keyed: tuple[Any, Any] | None = None  # (inner, outer), set once as a pair

    def _load(self) -> tuple[Any, Any]:
        if self.secret_path == MEMORY:
            key = secrets.token_bytes(SECRET_BYTES)
        else:
            key = load_secret(self.secret_path)
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        keyed = self._keyed = (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
                               hashlib.sha256(bytes(b ^ 0x5C for b in key)))
        return keyed

    def __call__(self, subject: str) -> str:
        if not isinstance(subject, str):
            raise TypeError(f"a subject id must be a str, got {type(subject).__name__} "
                            f"(convert it with str() so the same subject always maps alike)")
        inner, outer = self._keyed or self._load()
        h = inner.copy()
        h.update(subject.encode("utf-8"))
        o = outer.copy()
        o.update(h.digest())
        return o.hexdigest()
