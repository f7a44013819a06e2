"""Erasure, revocation and opt-out are final under concurrency: several real processes record
feedback for one subject while another process erases it, revokes or opts it out; no row is
stored after that call returned (one SQLite file, and PostgreSQL when MLPREFS_TEST_PG is set)."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.services.privacy import UnknownSubjectWarning

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


EXPERIMENTS = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True}


def test_buffered_experiment_rows_of_a_subject_erased_elsewhere_are_dropped(home):
    store = str(home / "prefs.db")
    with Client(store=store, discover=False, overrides=EXPERIMENTS) as recorder, \
            Client(store=store, discover=False, overrides=EXPERIMENTS) as eraser:
        recorder.experiments.create("checkout", "a", "b")
        recorder.experiments.record("checkout", SUBJECT, 1)
        recorder.experiments.record("checkout", "someone-else", 1)
        with pytest.warns(UnknownSubjectWarning):  # nothing of it is stored yet
            eraser.data.erase(SUBJECT)  # another client: it cannot flush the recorder's buffer
        recorder.experiments.flush()
        units = {u for (u,) in recorder.store.query("SELECT unit FROM experiment_units")}
        outcomes = {u for (u,) in recorder.store.query("SELECT unit FROM experiment_outcomes")}
    kept = {recorder.data.pseudonym("someone-else")}
    assert units == kept and outcomes == kept


EXPERIMENT_RECORDER = """
import os, sys
from mlprefs_sdk import Client

store, stop, ready, subject = sys.argv[1:5]
with Client(store=store, discover=False, overrides={"ml.features.experiment_tracking": True,
        "ml.experiments.ab_testing_enabled": True}) as prefs:
    i = 0
    while not os.path.exists(stop):
        prefs.experiments.record("checkout", subject, i % 2)
        prefs.experiments.record("checkout", f"other-{i}", i % 2)
        i += 1
        if i == 50:
            open(ready, "w").close()
"""


def test_no_experiment_row_recorded_before_an_erasure_is_stored_after_it(home, tmp_path):
    store = str(home / "prefs.db")
    stop = tmp_path / "stop"
    with Client(store=store, discover=False, overrides=EXPERIMENTS) as prefs:
        prefs.experiments.create("checkout", "a", "b")
        ready = [tmp_path / f"ready{i}" for i in range(RECORDERS)]
        procs = [subprocess.Popen([sys.executable, "-c", EXPERIMENT_RECORDER, store, str(stop),
                                   str(r), SUBJECT]) for r in ready]
        try:
            deadline = time.monotonic() + 120
            while not all(r.exists() for r in ready):
                assert time.monotonic() < deadline, "recorders did not start"
                assert all(p.poll() is None for p in procs), "a recorder died"
                time.sleep(0.01)
            with warnings.catch_warnings():  # the timer may not have stored any yet
                warnings.simplefilter("ignore", UnknownSubjectWarning)
                prefs.data.erase(SUBJECT)  # rows of it sit in every recorder's buffer now
            time.sleep(0.2)
        finally:
            stop.touch()
            codes = [p.wait(timeout=120) for p in procs]
        assert codes == [0] * RECORDERS
        ids = (prefs.data.pseudonym(SUBJECT), SUBJECT)
        erased_at = prefs.store.query("SELECT MAX(at) FROM data_audit WHERE action = 'erase'")[0][0]
        early = [prefs.store.query(f"SELECT COUNT(*) FROM {table} WHERE unit IN (?, ?) AND "
                                   f"{column} <= ?", (*ids, erased_at))[0][0]
                 for table, column in (("experiment_units", "assigned_at"),
                                       ("experiment_outcomes", "at"))]
        others = prefs.store.query("SELECT COUNT(*) FROM experiment_outcomes")[0][0]
    assert early == [0, 0]
    assert others > 0
