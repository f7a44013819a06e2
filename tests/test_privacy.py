"""prefs.data: policy, consent, pseudonyms, anonymisation, retention, erasure, export, sharing."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
import time

import pytest

from mlprefs_sdk import Client, PolicyError
from mlprefs_sdk.cli import main
from mlprefs_sdk.hookspecs import hookimpl
from mlprefs_sdk.services.privacy import UnknownSubjectWarning

DAY = 86400.0
NO_AUTO = {"ml.data.auto_cleanup_enabled": False}
PERMISSIVE = {**NO_AUTO, "ml.data.privacy_mode": "permissive",
              "ml.data.user_consent_required": False}


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- policy ----------------------------------------------------------------------------
def test_default_policy_is_strict(home):
    with Client() as prefs:
        policy = prefs.data.policy
    assert policy.privacy_mode == "strict"
    assert policy.user_consent_required and policy.anonymization_enabled
    assert not policy.sharing_allowed
    assert policy.retention_days == 365


def test_strict_mode_requires_consent_whatever_the_key_says(home):
    with Client(overrides={"ml.data.user_consent_required": False}) as prefs:
        policy = prefs.data.policy
    assert policy.user_consent_required is True
    assert policy.implied == ("ml.data.user_consent_required",)


def test_moderate_mode_keeps_the_right_to_opt_out(home):
    overrides = {**NO_AUTO, "ml.data.privacy_mode": "moderate", "ml.data.opt_out_enabled": False,
                 "ml.data.user_consent_required": False}
    with Client(overrides=overrides) as prefs:
        policy = prefs.data.policy
        prefs.data.opt_out("dave")
    assert policy.opt_out_enabled and not policy.user_consent_required
    assert policy.implied == ("ml.data.opt_out_enabled",)


def test_permissive_mode_keeps_the_keys_as_set(home):
    with Client(overrides=PERMISSIVE) as prefs:
        policy = prefs.data.policy
    assert policy.user_consent_required is False
    assert policy.implied == ()


def test_policy_follows_a_stored_change(home):
    with Client(overrides=NO_AUTO) as prefs:
        assert prefs.data.policy.retention_days == 365
        prefs.set("ml.data.retention_days", 90)
        assert prefs.data.policy.retention_days == 90


# -- consent ---------------------------------------------------------------------------
def test_consent_granted_then_revoked(home):
    with Client(overrides=NO_AUTO) as prefs:
        assert not prefs.data.may_train_on("alice")
        prefs.data.grant_consent("alice")
        assert prefs.data.may_train_on("alice")
        prefs.data.revoke_consent("alice")
        assert not prefs.data.may_train_on("alice")


def test_opt_out_wins_when_consent_is_not_required(home):
    with Client(overrides=PERMISSIVE) as prefs:
        assert prefs.data.may_train_on("bob")
        prefs.data.opt_out("bob")
        assert not prefs.data.may_train_on("bob")
        assert prefs.data.status("bob").opted_out


def test_granting_consent_again_lifts_an_opt_out(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.opt_out("carol")
        prefs.data.grant_consent("carol")
        assert prefs.data.may_train_on("carol")


def test_opt_out_refused_when_the_policy_disables_it(home):
    with Client(overrides={**PERMISSIVE, "ml.data.opt_out_enabled": False}) as prefs:
        with pytest.raises(PolicyError, match="ml.data.opt_out_enabled"):
            prefs.data.opt_out("dave")


def test_consent_for_a_non_string_subject_is_a_type_error(home):
    with Client(overrides=NO_AUTO) as prefs:
        with pytest.raises(TypeError, match="str"):
            prefs.data.grant_consent(42)
        with pytest.raises(ValueError, match="non-empty"):
            prefs.data.revoke_consent("  ")


def test_status_of_an_unknown_subject_says_unknown(home):
    with Client(overrides=NO_AUTO) as prefs:
        status = prefs.data.status("nobody")
    assert not status.known and not status.may_train
    assert status.pseudonym != "nobody"


def test_consent_survives_a_new_client(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("erin")
    with Client(overrides=NO_AUTO) as prefs:
        assert prefs.data.may_train_on("erin")


# -- pseudonyms ------------------------------------------------------------------------
def test_pseudonym_is_hmac_sha256_under_the_secret_beside_the_store(home):
    with Client(overrides=NO_AUTO) as prefs:
        pseudonym = prefs.data.pseudonym("alice")
    key = (home / "secret.key").read_bytes()
    assert pseudonym == hmac.new(key, b"alice", hashlib.sha256).hexdigest()
    assert pseudonym != hashlib.sha256(b"alice").hexdigest()


def test_secret_file_is_private(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.pseudonym("alice")
    assert stat.S_IMODE(os.stat(home / "secret.key").st_mode) == 0o600


def test_pseudonyms_differ_between_installations(home, tmp_path, monkeypatch):
    with Client(overrides=NO_AUTO) as prefs:
        first = prefs.data.pseudonym("alice")
    other = tmp_path / "other-home"
    monkeypatch.setenv("MLPREFS_HOME", str(other))
    with Client(overrides=NO_AUTO) as prefs:
        assert prefs.data.pseudonym("alice") != first


def test_loose_secret_permissions_are_tightened_with_a_warning(home, caplog):
    with Client(overrides=NO_AUTO) as prefs:
        expected = prefs.data.pseudonym("alice")
    os.chmod(home / "secret.key", 0o644)
    with caplog.at_level(logging.WARNING, logger="mlprefs_sdk.pseudonym"):
        with Client(overrides=NO_AUTO) as prefs:
            assert prefs.data.pseudonym("alice") == expected
    assert "tightened to 0600" in caplog.text
    assert stat.S_IMODE(os.stat(home / "secret.key").st_mode) == 0o600


def test_mlprefs_secret_names_the_secret_file(home, tmp_path, monkeypatch):
    shared = tmp_path / "team" / "secret.key"
    monkeypatch.setenv("MLPREFS_SECRET", str(shared))
    with Client(overrides=NO_AUTO) as prefs:
        pseudonym = prefs.data.pseudonym("alice")
    assert pseudonym == hmac.new(shared.read_bytes(), b"alice", hashlib.sha256).hexdigest()
    assert not (home / "secret.key").exists()


def test_a_server_store_keeps_its_secret_on_this_machine(home):
    from mlprefs_sdk.locations import locate

    assert locate("postgresql://team:pw@db.example/prefs").secret == str(home / "secret.key")


def test_in_memory_store_keeps_its_secret_in_memory(home):
    with Client(store=":memory:", overrides=NO_AUTO) as prefs:
        assert prefs.data.pseudonym("x") == prefs.data.pseudonym("x")
    assert not os.path.exists("secret.key")


# -- anonymize -------------------------------------------------------------------------
def test_anonymize_pseudonymises_ids_drops_pii_and_scrubs_text(home):
    record = {"user_id": "alice", "order": 17, "email": "alice@example.com",
              "note": "reach me at alice@example.com or +44 20 7946 0958 from 10.1.2.3, "
                      "card 4111 1111 1111 1111; order 2024-01-15 cost 12.50",
              "tags": ["ip 2001:db8::1"]}
    with Client(overrides=NO_AUTO) as prefs:
        out = prefs.data.anonymize(record, id_fields=["user_id"], pii_fields=["email"])
        assert out["user_id"] == prefs.data.pseudonym("alice")
    assert "email" not in out and out["order"] == 17
    assert out["note"] == ("reach me at [email] or [phone] from [ip], card [card]; "
                           "order 2024-01-15 cost 12.50")
    assert out["tags"] == ["ip [ip]"]
    assert record["user_id"] == "alice"  # the input is not modified


def test_anonymize_accepts_integer_ids(home):
    with Client(overrides=NO_AUTO) as prefs:
        out = prefs.data.anonymize({"uid": 123}, id_fields="uid")
        assert out["uid"] == prefs.data.pseudonym("123")


def test_anonymize_rejects_fields_missing_from_the_record(home):
    with Client(overrides=NO_AUTO) as prefs:
        with pytest.raises(KeyError, match="phone_number"):
            prefs.data.anonymize({"user_id": "a", "phone": "1"}, id_fields=["user_id"],
                                 pii_fields=["phone_number"])


# -- retention -------------------------------------------------------------------------
def test_cleanup_deletes_only_what_is_older_than_retention(home):
    with Client(overrides=PERMISSIVE) as prefs:
        prefs.feedback.record("alice", "churn", "1", 1, 1)
        prefs.monitor.record("churn", "1", accuracy=0.9)
        prefs.monitor.flush()
        now = time.time()
        kept = prefs.data.cleanup(now=now + 365 * DAY - 3600)
        assert kept["feedback"] == 0 and kept["monitor_samples"] == 0
        gone = prefs.data.cleanup(now=now + 365 * DAY + 3600)
    assert gone["feedback"] == 1 and gone["monitor_samples"] == 1


def test_cleanup_covers_curves_and_experiment_outcomes(home):
    with Client(overrides=NO_AUTO) as prefs:
        now = time.time()
        with prefs.store.transaction() as db:
            db.execute("INSERT INTO curves (run_id, epoch, metric, value, at) "
                       "VALUES ('r', 0, 'loss', 1.0, ?)", (now - 400 * DAY,))
            db.execute("INSERT INTO experiment_outcomes (experiment, unit, arm, value, at) "
                       "VALUES ('e', 'u', 'control', 1.0, ?)", (now - 400 * DAY,))
            db.execute("INSERT INTO experiment_units (experiment, unit, arm, assigned_at) "
                       "VALUES ('e', 'u', 'control', ?)", (now - 400 * DAY,))
        counts = prefs.data.cleanup()
    assert counts["curves"] == 1 and counts["experiment_outcomes"] == 1
    assert counts["experiment_units"] == 1


def test_cleanup_keeps_consent_records(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.opt_out("alice")
        prefs.data.cleanup(now=time.time() + 3000 * DAY)
        assert prefs.data.status("alice").opted_out


def test_cleanup_is_written_to_the_audit_log(home):
    with Client(overrides=PERMISSIVE) as prefs:
        prefs.feedback.record("alice", "churn", "1", 1, 1)
        prefs.data.cleanup(now=time.time() + 400 * DAY)
        entry = prefs.data.audit(action="cleanup")[0]
    assert entry.detail["deleted"]["feedback"] == 1
    assert entry.actor == prefs.user


class RecordingPlugin:
    def __init__(self):
        self.cleanups, self.erasures = [], []

    @hookimpl
    def mlprefs_cleanup(self, client, before):
        self.cleanups.append(before)
        return 3

    @hookimpl
    def mlprefs_erase(self, client, pseudonym):
        self.erasures.append(pseudonym)
        return {"crm": 2}


def test_cleanup_calls_plugins_with_the_cutoff(home):
    plugin = RecordingPlugin()
    with Client(overrides=NO_AUTO) as prefs:
        prefs.plugin_manager.register(plugin)
        now = time.time()
        counts = prefs.data.cleanup(now=now)
    assert plugin.cleanups == [pytest.approx(now - 365 * DAY)]
    assert counts["plugins"] == 3


def expired_feedback(prefs: Client) -> int:
    return prefs.store.query("SELECT COUNT(*) FROM feedback WHERE at < ?",
                             (time.time() - 365 * DAY,))[0][0]


def test_auto_cleanup_runs_in_the_background_at_most_daily(home):
    with Client(overrides=PERMISSIVE) as prefs:
        with prefs.store.transaction() as db:
            db.execute("INSERT INTO feedback (subject, model, version, prediction, actual, "
                       "correct, at) VALUES ('p', 'm', '1', '1', '1', 1, ?)",
                       (time.time() - 400 * DAY,))
        assert expired_feedback(prefs) == 1
    with Client() as prefs:
        wait_for(lambda: prefs.data.last_cleanup is not None and expired_feedback(prefs) == 0)
        first = prefs.data.last_cleanup
    with Client() as prefs:
        prefs.data  # a new client within the day: no second run
        time.sleep(0.2)
        assert prefs.data.last_cleanup == first
        runs = prefs.data.audit(action="cleanup")
    assert [e.actor for e in runs] == ["auto-cleanup"]


def test_auto_cleanup_disabled_never_runs(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data
        time.sleep(0.2)
        assert prefs.data.last_cleanup is None


# -- erasure and export ----------------------------------------------------------------
def test_erase_removes_every_row_of_the_subject(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        prefs.data.grant_consent("bob")
        prefs.feedback.record("alice", "churn", "1", 1, 0)
        prefs.feedback.record("bob", "churn", "1", 1, 1)
        counts = prefs.data.erase("alice")
        assert counts["consent"] == 1 and counts["feedback"] == 1
        assert not prefs.data.status("alice").known
        assert prefs.data.export("bob")["feedback"]  # others are untouched
    with pytest.warns(UnknownSubjectWarning):
        with Client(overrides=NO_AUTO) as prefs:
            rows = prefs.data.export("alice")
    assert rows["consent"] == [] and rows["feedback"] == []


def test_erase_keeps_one_audit_entry_of_the_erasure(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        prefs.data.erase("alice")
        entries = prefs.data.audit(subject="alice")
    assert [e.action for e in entries] == ["erase"]
    assert entries[0].detail["deleted"]["consent"] == 1


def test_erase_calls_plugins_with_the_pseudonym(home):
    plugin = RecordingPlugin()
    with Client(overrides=NO_AUTO) as prefs:
        prefs.plugin_manager.register(plugin)
        prefs.data.grant_consent("alice")
        counts = prefs.data.erase("alice")
        assert plugin.erasures == [prefs.data.pseudonym("alice")]
    assert counts["plugin:crm"] == 2


def test_erasing_an_unknown_subject_warns(home):
    with Client(overrides=NO_AUTO) as prefs:
        with pytest.warns(UnknownSubjectWarning, match="no data"):
            counts = prefs.data.erase("nobody")
    assert not any(counts.values())


def test_erase_also_finds_rows_stored_before_anonymisation_was_on(home):
    with Client(overrides=PERMISSIVE | {"ml.data.anonymization_enabled": False}) as prefs:
        prefs.feedback.record("alice", "churn", "1", 1, 1)
    with Client(overrides=NO_AUTO) as prefs:
        assert prefs.data.erase("alice")["feedback"] == 1


def test_export_returns_the_subjects_rows_by_table(home):
    with Client(overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        prefs.feedback.record("alice", "churn", "1", "yes", "no")
        rows = prefs.data.export("alice")
        pseudonym = prefs.data.pseudonym("alice")
        assert prefs.data.audit(action="export")[0].pseudonym == pseudonym
    assert rows["consent"][0]["subject"] == pseudonym
    assert rows["feedback"][0]["prediction"] == "yes" and rows["feedback"][0]["actual"] == "no"
    assert [e["action"] for e in rows["data_audit"]] == ["consent.grant"]


# -- sharing and the audit log ----------------------------------------------------------
def test_sharing_is_refused_under_strict_privacy(home):
    with Client(overrides=NO_AUTO) as prefs:
        with pytest.raises(PolicyError, match="sharing_allowed"):
            prefs.data.check_sharing("s3://partner-bucket")
        assert prefs.data.audit()[0].action == "sharing.refused"


def test_sharing_is_allowed_when_the_policy_allows_it(home):
    with Client(overrides={**PERMISSIVE, "ml.data.sharing_allowed": True}) as prefs:
        prefs.data.check_sharing("s3://partner-bucket")
        entry = prefs.data.audit()[0]
    assert entry.action == "sharing.allowed"
    assert entry.detail == {"destination": "s3://partner-bucket"}


def test_audit_log_holds_time_actor_and_pseudonym(home):
    with Client(user="dpo", overrides=NO_AUTO) as prefs:
        before = time.time()
        prefs.data.grant_consent("alice")
        prefs.data.revoke_consent("alice")
        entries = prefs.data.audit(subject="alice")
        pseudonym = prefs.data.pseudonym("alice")
    assert [e.action for e in entries] == ["consent.revoke", "consent.grant"]
    assert all(e.actor == "dpo" and e.pseudonym == pseudonym and e.at >= before
               for e in entries)


# -- CLI -------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_cli_consent_status_revoke(home, capsys):
    assert run(capsys, "data", "consent", "alice")[1]["may_train"] is True
    assert run(capsys, "data", "status", "alice")[1]["consented"] is True
    assert run(capsys, "data", "revoke", "alice")[1]["may_train"] is False
    assert run(capsys, "data", "opt-out", "alice")[1]["opted_out"] is True


def test_cli_export_and_erase(home, capsys, tmp_path):
    run(capsys, "data", "consent", "alice")
    out = tmp_path / "alice.json"
    code, data = run(capsys, "data", "export", "alice", "--out", str(out))
    assert code == 0 and data["rows"]["consent"] == 1
    assert json.loads(out.read_text())["consent"][0]["consented"] == 1
    code, counts = run(capsys, "data", "erase", "alice")
    assert code == 0 and counts["consent"] == 1


def test_cli_policy_cleanup_and_audit(home, capsys):
    assert run(capsys, "data", "policy")[1]["privacy_mode"] == "strict"
    code, counts = run(capsys, "data", "cleanup")
    assert code == 0 and "feedback" in counts
    code, entries = run(capsys, "data", "audit", "--action", "cleanup")
    assert code == 0 and entries[0]["action"] == "cleanup"


def test_cli_non_json_status_never_prints_the_raw_id(home, capsys):
    assert main(["data", "status", "alice@example.com"]) == 0
    out = capsys.readouterr().out
    assert "no consent recorded" in out and "alice" not in out


# -- both backends ---------------------------------------------------------------------
def test_consent_feedback_export_erase_and_cleanup_on_each_backend(store_url):
    with Client(store=store_url, overrides=NO_AUTO) as prefs:
        prefs.data.grant_consent("alice")
        prefs.data.opt_out("bob")
        assert prefs.feedback.record("alice", "churn", "1", 1, 1)
        assert not prefs.feedback.record("bob", "churn", "1", 1, 1)
        assert [r["action"] for r in prefs.data.export("alice")["data_audit"]] == ["consent.grant"]
        assert prefs.data.erase("alice")["feedback"] == 1
        assert prefs.data.cleanup(now=time.time() + 400 * DAY)["data_audit"] == 2  # bob, erase
        assert prefs.data.audit()[0].action == "cleanup"
        with pytest.raises(PolicyError):
            prefs.data.check_sharing("s3://partner")
