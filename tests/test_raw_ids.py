"""A raw subject id never reaches the store's files while anonymisation is on; erasure
removes it from them when it was stored raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlprefs_sdk import Client, ValidationError

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


# -- every privacy mode x anonymisation pair, scanned on disk -------------------------------
PAIRS = [(mode, anon) for mode in ("strict", "moderate", "permissive") for anon in (True, False)]
MAY_STORE_RAW = {("permissive", False)}


def _pair_id(pair: tuple[str, bool]) -> str:
    return f"{pair[0]}-anonymisation-{'on' if pair[1] else 'off'}"


@pytest.mark.parametrize("pair", [p for p in PAIRS if p != ("strict", False)], ids=_pair_id)
def test_raw_id_is_on_disk_only_under_permissive_with_anonymisation_off(home, pair):
    mode, anon = pair
    overrides = {**EXPERIMENTS, "ml.data.privacy_mode": mode,
                 "ml.data.anonymization_enabled": anon}
    with Client(overrides=overrides) as prefs:
        use_every_service(prefs)
        prefs.data.revoke_consent(SUBJECT)
        stored = {t: prefs.store.query(f"SELECT COUNT(*) FROM {t}")[0][0]
                  for t in ("consent", "feedback", "experiment_units", "experiment_outcomes",
                            "data_audit")}
        assert all(stored.values()), stored  # every kind of subject row was written
        open_holders = holders(home, SUBJECT)
    closed_holders = holders(home, SUBJECT)
    if pair in MAY_STORE_RAW:
        assert open_holders or closed_holders  # the scan does find a raw id where one is kept
    else:
        assert open_holders == [] and closed_holders == []


def test_strict_mode_with_anonymisation_off_is_refused_before_anything_is_stored(home):
    overrides = {**EXPERIMENTS, "ml.data.anonymization_enabled": False}
    with pytest.raises(ValidationError, match="strict-privacy|strict"):
        Client(overrides=overrides)
    assert holders(home, SUBJECT) == []


def test_moderate_mode_pseudonymises_whatever_the_anonymisation_key_says(home):
    overrides = {"ml.data.privacy_mode": "moderate", "ml.data.anonymization_enabled": False}
    with Client(overrides=overrides) as prefs:
        policy = prefs.data.policy
        assert policy.anonymization_enabled
        assert "ml.data.anonymization_enabled" in policy.implied
        assert prefs.data.stored_id(SUBJECT) == prefs.data.pseudonym(SUBJECT)
