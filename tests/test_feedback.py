"""prefs.feedback: stored only as the data policy allows; rolling accuracy; retrain signals."""

from __future__ import annotations

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.services.feedback import RetrainSignal

NO_AUTO = {"ml.data.auto_cleanup_enabled": False}
OPEN = {**NO_AUTO, "ml.data.privacy_mode": "permissive", "ml.data.user_consent_required": False}


def small_window(n: int, **extra):
    return {**OPEN, "ml.feedback.min_samples": n, **extra}


def test_feedback_of_a_consenting_subject_is_stored_under_its_pseudonym(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        assert prefs.feedback.record("alice", "churn", "1", prediction=1, actual=1)
        rows = prefs.store.query("SELECT subject, prediction, actual, correct FROM feedback")
        assert rows == [(prefs.data.pseudonym("alice"), "1", "1", 1)]


def test_feedback_without_consent_is_counted_not_stored(home):
    with Client(overrides=NO_AUTO) as prefs:
        assert not prefs.feedback.record("bob", "churn", "1", 1, 0)
        stats = prefs.feedback.stats("churn", "1")
    assert stats.stored == 0 and stats.refused == {"no_consent": 1}


def test_feedback_after_revoked_consent_is_refused(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        prefs.data.revoke_consent("alice")
        assert not prefs.feedback.record("alice", "churn", "1", 1, 1)


def test_feedback_of_an_opted_out_subject_is_refused(home):
    with Client(overrides=OPEN) as prefs:
        assert prefs.feedback.record("carol", "churn", "1", 1, 1)
        prefs.data.opt_out("carol")
        assert not prefs.feedback.record("carol", "churn", "1", 1, 1)
        assert prefs.feedback.stats("churn", "1").refused == {"opted_out": 1}


def test_feedback_disabled_stores_nothing(home):
    with Client(overrides={**OPEN, "ml.feedback.user_feedback_enabled": False}) as prefs:
        assert not prefs.feedback.record("dave", "churn", "1", 1, 1)
        stats = prefs.feedback.stats("churn", "1")
    assert stats.stored == 0 and stats.refused == {"disabled": 1}


def test_feedback_rejects_a_non_string_subject(home):
    with Client(overrides=OPEN) as prefs:
        with pytest.raises(TypeError, match="subject id as a str"):
            prefs.feedback.record(7, "churn", "1", 1, 1)


def test_feedback_rejects_values_that_are_not_json(home):
    with Client(overrides=OPEN) as prefs:
        with pytest.raises(TypeError, match="JSON"):
            prefs.feedback.record("erin", "churn", "1", object(), 1)


def test_accuracy_rolls_over_the_last_window(home):
    with Client(overrides=small_window(4)) as prefs:
        for correct in [0, 0, 0, 0, 1, 1, 1, 0]:
            prefs.feedback.record("u", "churn", "1", 1, correct)
        assert prefs.feedback.accuracy("churn", "1") == 0.75
        assert prefs.feedback.accuracy("churn", "1", window=8) == 0.375
        assert prefs.feedback.accuracy("churn", "2") is None


def test_retrain_is_not_needed_before_min_samples(home):
    with Client(overrides=small_window(10)) as prefs:
        for _ in range(9):
            prefs.feedback.record("u", "churn", "1", 1, 0)
        assert not prefs.feedback.retrain_needed("churn")


def test_retrain_needed_after_a_drop_from_the_first_window(home):
    signals = []
    with Client(overrides=small_window(10)) as prefs:
        prefs.on_retrain(signals.append)
        for _ in range(10):
            prefs.feedback.record("u", "churn", "1", 1, 1)  # first window: accuracy 1.0
        assert not prefs.feedback.retrain_needed("churn")
        for i in range(10):
            prefs.feedback.record("u", "churn", "1", 1, 1 if i < 9 else 0)  # 0.9: a 0.1 drop
        assert prefs.feedback.retrain_needed("churn")
    assert signals == [RetrainSignal("churn", "1", 1.0, "first window", 0.9, 10, 0.1)]
    assert "below the first window accuracy" in str(signals[0])


def test_a_smaller_drop_does_not_need_retraining(home):
    with Client(overrides=small_window(10, **{"ml.feedback.auto_retrain_threshold": 0.2})) as prefs:
        for i in range(20):
            prefs.feedback.record("u", "churn", "1", 1, 1 if i < 10 or i % 10 else 0)
        assert not prefs.feedback.retrain_needed("churn")


def test_retrain_compares_with_the_registrys_recorded_accuracy(home):
    signals = []
    with Client(overrides=small_window(10)) as prefs:
        prefs.on_retrain(signals.append)
        prefs.models.register("churn", "2", "sklearn", metrics={"accuracy": 0.95})
        prefs.models.promote("churn", "2")
        for i in range(10):
            prefs.feedback.record("u", "churn", "2", 1, 1 if i < 8 else 0)  # 0.8
        assert prefs.feedback.retrain_needed("churn")
    assert signals[0].baseline_source == "registry"
    assert signals[0].baseline == 0.95 and signals[0].accuracy == 0.8
