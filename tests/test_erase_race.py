"""Erasure, revocation and opt-out are final under concurrency: several real processes record
feedback for one subject while another process erases it, revokes or opts it out; no row is
stored after that call returned (one SQLite file, and PostgreSQL when MLPREFS_TEST_PG is set)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlprefs_sdk import Client

RECORDERS = 3
RUNS = 2
SUBJECT = "racer@example.org"

# Records feedback for the subject in a loop until the stop file appears.
RECORDER = """
import os, sys
from mlprefs_sdk import Client

store, stop, ready, subject, consent = sys.argv[1:6]
overrides = {} if consent == "required" else {"ml.data.privacy_mode": "permissive",
                                              "ml.data.user_consent_required": False}
with Client(store=store, discover=False, overrides=overrides) as prefs:
    prefs.feedback.record(subject, "churn", "1", 1, 1)
    open(ready, "w").close()
    while not os.path.exists(stop):
        prefs.feedback.record(subject, "churn", "1", 1, 1)
"""


def rows_of(prefs: Client) -> int:
    return prefs.store.query("SELECT COUNT(*) FROM feedback WHERE subject IN (?, ?)",
                             (prefs.data.pseudonym(SUBJECT), SUBJECT))[0][0]


def race(store: str, tmp: Path, action: str, consent: str = "required") -> tuple[int, int]:
    """(rows right after the action returned, rows once every recorder stopped)."""
    overrides = {} if consent == "required" else {"ml.data.privacy_mode": "permissive",
                                                  "ml.data.user_consent_required": False}
    stop = tmp / "stop"
    stop.unlink(missing_ok=True)
    with Client(store=store, discover=False, overrides=overrides) as prefs:
        prefs.data.grant_consent(SUBJECT)
        ready = [tmp / f"ready{i}" for i in range(RECORDERS)]
        for r in ready:
            r.unlink(missing_ok=True)
        procs = [subprocess.Popen([sys.executable, "-c", RECORDER, store, str(stop), str(r),
                                   SUBJECT, consent]) for r in ready]
        try:
            deadline = time.monotonic() + 120
            while not all(r.exists() for r in ready):
                assert time.monotonic() < deadline, "recorders did not start"
                assert all(p.poll() is None for p in procs), "a recorder died"
                time.sleep(0.01)
            time.sleep(0.2)  # every recorder is in its loop
            getattr(prefs.data, action)(SUBJECT)
            after_action = rows_of(prefs)
            time.sleep(0.3)  # the recorders keep trying
        finally:
            stop.touch()
            codes = [p.wait(timeout=120) for p in procs]
        assert codes == [0] * RECORDERS
        return after_action, rows_of(prefs)


@pytest.mark.parametrize("action", ["erase", "revoke_consent", "opt_out"])
def test_no_feedback_row_is_stored_after_the_subject_is_erased_revoked_or_opted_out(
        store_url, tmp_path, action):
    for _ in range(RUNS):
        after_action, at_end = race(store_url, tmp_path, action)
        assert at_end == after_action
        if action == "erase":
            assert at_end == 0


def test_a_record_begun_before_an_erasure_is_never_stored_after_it(home, tmp_path):
    # consent not required: records made after the erasure may be stored again, but none
    # begun before it (feedback.at is the moment record() was called)
    store = str(home / "prefs.db")
    race(store, tmp_path, "erase", consent="not required")
    with Client(store=store, discover=False) as prefs:
        erased_at = prefs.store.query("SELECT MAX(at) FROM data_audit WHERE action = 'erase'")[0][0]
        older = prefs.store.query("SELECT COUNT(*) FROM feedback WHERE subject IN (?, ?) AND "
                                  "at <= ?", (prefs.data.pseudonym(SUBJECT), SUBJECT, erased_at))
    assert older == [(0,)]
