"""Where files live: explicit argument, then environment variable, then platformdirs."""

from __future__ import annotations

import os
from typing import Mapping

import attrs

__all__ = ["Locations", "locate", "find_project_file"]

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

    Returns (path, section) where section is "tool.mlprefs" for a pyproject.
    """
    from pathlib import Path

    here = Path(start or os.getcwd()).resolve()
    chain = [here, *here.parents]
    for d in chain:
        candidate = d / "mlprefs.toml"
        if _present(str(candidate)):  # a directory or FIFO there is reported, not skipped
            return str(candidate), None
    for d in chain:
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            try:
                text = candidate.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            if "[tool.mlprefs" in text or "tool.mlprefs" in text:
                return str(candidate), "tool.mlprefs"
            return None
    return None


def _present(path: str) -> bool:
    """Something is there (even a FIFO, a directory or a symlink loop); not dangling/absent."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:  # a symlink loop, permission denied: the reader reports it
        return True
    return True
