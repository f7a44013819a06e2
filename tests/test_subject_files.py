"""Files holding subject data are the owner's alone (0600, whatever the umask), and the CLI
answers an erase or export of an unknown subject in one plain line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import main

EXPERIMENTS = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_export_out_file_is_0600_under_umask_0(home, tmp_path, open_umask, capsys):
    assert main(["data", "consent", "alice"]) == 0
    out = tmp_path / "alice.json"
    assert main(["data", "export", "alice", "--out", str(out)]) == 0
    assert mode(out) == 0o600
    assert json.loads(out.read_text())["consent"][0]["consented"] == 1


def test_export_out_tightens_an_existing_file_that_others_could_read(home, tmp_path, capsys):
    out = tmp_path / "alice.json"
    out.write_text("old")
    out.chmod(0o644)
    assert main(["data", "consent", "alice"]) == 0
    assert main(["data", "export", "alice", "--out", str(out)]) == 0
    assert mode(out) == 0o600
    assert "old" not in out.read_text()


def test_export_out_naming_a_directory_is_a_one_line_user_error(home, tmp_path, capsys):
    assert main(["data", "export", "alice", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlprefs: --out ") and "\n" not in err


def test_store_files_and_secret_holding_subject_data_are_0600_under_umask_0(home, open_umask):
    with Client(overrides=EXPERIMENTS) as prefs:
        prefs.data.grant_consent("alice")
        prefs.feedback.record("alice", "churn", "1", 1, 0)
        prefs.experiments.create("checkout", "a", "b")
        prefs.experiments.record("checkout", "alice", 1)
        prefs.experiments.flush()
        files = [p for p in home.iterdir() if p.name.startswith("prefs.db") or p.name == "secret.key"]
        assert {p.name for p in files} >= {"prefs.db", "prefs.db-wal", "prefs.db-shm"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


@pytest.mark.parametrize("verb", ["erase", "export"])
def test_cli_erase_or_export_of_an_unknown_subject_says_so_in_one_line(home, verb):
    proc = subprocess.run([sys.executable, "-m", "mlprefs_sdk", "data", verb, "nobody"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mlprefs: ") and "no data" in lines[0]
    assert "Warning" not in proc.stderr and ".py" not in proc.stderr
