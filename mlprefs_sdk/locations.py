"""Where files live: explicit argument, then environment variable, then platformdirs."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

import attrs

__all__ = ["Locations", "locate", "find_project_file", "make_private_dirs", "file_kind"]

APP = "mlprefs"


@attrs.frozen
class Locations:
    store: str
    user_file: str
    policy: str

    @property
    def secret(self) -> str:
        """The pseudonymisation secret lives beside the store, never inside it."""
        if self.store == ":memory:":
            return ":memory:"  # an in-memory store gets an in-memory key, not ./secret.key
        explicit = os.environ.get("MLPREFS_SECRET")  # one key shared by a team's hosts
        if explicit:
            return os.path.abspath(os.path.expanduser(explicit))
        if "://" in self.store:  # a server store: the key stays on this machine, outside the URL
            return os.path.join(os.path.dirname(self.user_file), "secret.key")
        return os.path.join(os.path.dirname(self.store), "secret.key")


_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "is a FIFO (named pipe)"."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "is not a regular file"


def make_private_dirs(directory: str) -> None:
    """Create directory and any missing parents 0700, whatever the umask.

    The home holds the store and secret.key: under umask 000 os.makedirs would leave it 0777,
    so any local user could swap the secret. Directories that already exist are left alone.
    """
    missing = []
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not missing and not os.path.isdir(path):
        raise FileExistsError(errno.EEXIST, "File exists (not a directory)", path)
    for path in reversed(missing):  # below a file, the first mkdir fails: "Not a directory"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue  # another process made it first: its mode is its own
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def locate(store: str | None = None, env: Mapping[str, str] | None = None) -> Locations:
    env = os.environ if env is None else env
    home = env.get("MLPREFS_HOME")
    if home:
        data_dir = config_dir = os.path.abspath(os.path.expanduser(home))
    else:
        import platformdirs

        data_dir = platformdirs.user_data_dir(APP, appauthor=False)
        config_dir = platformdirs.user_config_dir(APP, appauthor=False)
    store = store or env.get("MLPREFS_STORE") or os.path.join(data_dir, "prefs.db")
    if store != ":memory:" and "://" not in store:
        store = os.path.abspath(os.path.expanduser(store))
    policy = env.get("MLPREFS_POLICY")
    if not policy:
        import platformdirs

        policy = os.path.join(platformdirs.site_config_dir(APP, appauthor=False), "policy.toml")
    return Locations(store=store, user_file=os.path.join(config_dir, "overrides.toml"),
                     policy=os.path.abspath(policy))


def find_project_file(start: str | None = None) -> tuple[str, str | None] | None:
    """mlprefs.toml in start or a parent; else the nearest pyproject.toml with [tool.mlprefs].

    Returns (path, section) where section is "tool.mlprefs" for a pyproject. Anything at the
    name counts as found — a directory, a FIFO, a symlink loop — so that reading it reports
    what is wrong there instead of the project layer silently falling back to defaults.
    """
    from pathlib import Path

    here = Path(start or os.getcwd()).resolve()
    chain = [here, *here.parents]
    for d in chain:
        candidate = d / "mlprefs.toml"
        if os.path.lexists(candidate):
            return str(candidate), None
    for d in chain:
        candidate = d / "pyproject.toml"
        if os.path.lexists(candidate):
            from .errors import ConfigFileError
            from .tomlfile import read_bytes

            try:
                raw = read_bytes(str(candidate))
            except ConfigFileError:
                return str(candidate), "tool.mlprefs"  # unreadable: reading the layer says why
            if raw is None:
                return None
            if b"tool.mlprefs" in raw:
                return str(candidate), "tool.mlprefs"
            return None
    return None
