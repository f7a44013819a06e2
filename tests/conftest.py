"""Shared fixtures: every test gets its own home, policy path and project directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pgtest import fresh_store_url, require_server  # reads MLPREFS_TEST_PG before `home` clears it


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private MLPREFS_HOME; the working directory is an empty project dir inside tmp_path.

    Returns the home directory (store: home/prefs.db, user overrides: home/overrides.toml).
    The policy file is tmp_path/policy.toml (absent until a test writes it).
    """
    for name in list(os.environ):
        if name.upper().startswith("MLPREFS"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("MLPREFS_HOME", str(home))
    monkeypatch.setenv("MLPREFS_POLICY", str(tmp_path / "policy.toml"))
    monkeypatch.chdir(project)
    return home


@pytest.fixture
def project_dir(home: Path) -> Path:
    """The working directory of the test (where mlprefs.toml is discovered)."""
    return Path.cwd()


@pytest.fixture
def policy_file(home: Path) -> Path:
    return Path(os.environ["MLPREFS_POLICY"])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, home: Path):
    """Where the store lives: a SQLite file in the test's home, or a fresh PostgreSQL schema
    (skipped without MLPREFS_TEST_PG; see tests/pgtest.py)."""
    if request.param == "sqlite":
        yield str(home / "prefs.db")
        return
    require_server()
    with fresh_store_url() as url:
        yield url
