"""A raw subject id never reaches the store's files while anonymisation is on; erasure
removes it from them when it was stored raw."""

from __future__ import annotations

from pathlib import Path

from mlprefs_sdk import Client

SUBJECT = "raw-subject-7f3a9c@example.org"
EXPERIMENTS = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True}


def store_bytes(home: Path) -> dict[str, bytes]:
    """prefs.db and its -wal / -shm companions, as they are on disk now."""
    return {p.name: p.read_bytes() for p in home.iterdir() if p.name.startswith("prefs.db")}


def holders(home: Path, text: str) -> list[str]:
    needle = text.encode("utf-8")
    return [name for name, data in store_bytes(home).items() if needle in data]


def use_every_service(prefs: Client) -> None:
    prefs.data.grant_consent(SUBJECT)
    prefs.feedback.record(SUBJECT, "churn", "1", 1, 0)
    prefs.experiments.create("checkout", "a", "b")
    prefs.experiments.assign("checkout", SUBJECT)
    prefs.experiments.record("checkout", SUBJECT, 1)
    prefs.experiments.flush()
    prefs.data.export(SUBJECT)
    prefs.data.check_sharing("s3://ok") if prefs.data.policy.sharing_allowed else None


def test_raw_id_never_reaches_the_store_files_while_anonymising(home):
    with Client(overrides=EXPERIMENTS) as prefs:
        use_every_service(prefs)
        pseudonym = prefs.data.pseudonym(SUBJECT)
        assert prefs.store.query("SELECT COUNT(*) FROM experiment_units WHERE unit = ?",
                                 (pseudonym,))[0][0] == 1
        assert holders(home, pseudonym)  # the rows are there, under the pseudonym
        assert holders(home, SUBJECT) == []
        prefs.data.erase(SUBJECT)
        assert holders(home, SUBJECT) == []
    assert holders(home, SUBJECT) == []


def test_erasure_removes_a_raw_id_stored_without_anonymisation(home):
    permissive = {**EXPERIMENTS, "ml.data.privacy_mode": "permissive",
                  "ml.data.anonymization_enabled": False}
    with Client(overrides=permissive) as prefs:
        use_every_service(prefs)
        prefs.data.revoke_consent(SUBJECT)  # rewrites the consent row in place
        assert holders(home, SUBJECT)  # stored raw: the policy allowed it
        prefs.data.erase(SUBJECT)
        assert holders(home, SUBJECT) == []
        assert prefs.data.audit(subject=SUBJECT)[0].action == "erase"
    assert holders(home, SUBJECT) == []
