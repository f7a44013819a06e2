"""Keyed pseudonyms: HMAC-SHA256 under a per-installation secret kept beside the store (0600).

Unkeyed hashes of identifiers can be reversed by guessing; a keyed one cannot without the
secret, which never enters the store and is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat

__all__ = ["Pseudonymizer", "load_secret"]

log = logging.getLogger(__name__)

SECRET_BYTES = 32


def load_secret(path: str) -> bytes:
    """Read the secret, creating it atomically (0600) on first use; tighten loose modes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _create(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("mlprefs: %s was readable by others (mode %o); tightened to 0600",
                    path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o600)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) < 16:
        raise ValueError(f"{path}: pseudonymisation secret is too short ({len(key)} bytes); "
                         "restore it from backup (deleting it changes every pseudonym)")
    return key


def _create(path: str) -> bytes:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
    """subject -> hex HMAC-SHA256; the secret is read lazily, once."""

    def __init__(self, secret_path: str) -> None:
        self.secret_path = secret_path
        self._key: bytes | None = None

    def __call__(self, subject: str) -> str:
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str, got {type(subject).__name__}")
        key = self._key
        if key is None:
            key = self._key = load_secret(self.secret_path)
        return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()
