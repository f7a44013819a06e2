"""prefs.data.filter (SPEC section 10): consent enforced where the training data is read.

Real SQLite store, real consent changes (this process, another process, the CLI), a real torch
DataLoader with forked worker processes, and a byte scan of the store files for raw ids.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from mlprefs_sdk import (
    Client,
    DatasetNotIndexableError,
    SubjectIdError,
    ViewChangedError,
)

SUBJECTS = [f"patient-{i:03d}@clinic.example" for i in range(6)]


def samples(per_subject: int = 4) -> list[dict]:
    return [{"subject": s, "x": float(i)} for i, s in
            enumerate(s for s in SUBJECTS for _ in range(per_subject))]


def subject_of(sample: dict) -> str:
    return sample["subject"]


def consent_all(prefs: Client) -> None:
    for s in SUBJECTS:
        prefs.data.grant_consent(s)


def subjects_in(view) -> set[str]:
    return {view[i]["subject"] for i in range(len(view))}


def cli(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "mlprefs_sdk", *argv], check=True, timeout=60,
                   capture_output=True)


# -- the decision ---------------------------------------------------------------------------
def test_only_consented_subjects_are_kept_and_the_others_counted_by_reason(home):
    with Client() as prefs:
        for s in SUBJECTS[:3]:
            prefs.data.grant_consent(s)
        prefs.data.opt_out(SUBJECTS[3])
        view = prefs.data.filter(samples(), subject_of)
        assert len(view) == 12
        assert subjects_in(view) == set(SUBJECTS[:3])
        assert view.excluded == {"no consent": 8, "opted out": 4}


def test_the_view_indexes_like_a_sequence(home):
    with Client() as prefs:
        prefs.data.grant_consent(SUBJECTS[1])
        data = samples()
        view = prefs.data.filter(data, subject_of)
        assert [view[i] for i in range(len(view))] == data[4:8]
        assert view[-1] == data[7] and view.indices() == [4, 5, 6, 7]
        with pytest.raises(IndexError):
            view[4]


STATES = ["none", "granted", "revoked", "opted out"]
MODES = [("strict", True), ("moderate", True), ("moderate", False), ("permissive", True),
         ("permissive", False)]


@pytest.mark.parametrize("mode,anonymise", MODES)
def test_the_filter_decides_exactly_like_may_train_on(home, mode, anonymise):
    overrides = {"ml.data.privacy_mode": mode, "ml.data.anonymization_enabled": anonymise}
    for required in (True, False):
        overrides["ml.data.user_consent_required"] = required
        with Client(overrides=overrides, store=str(home / f"{mode}{anonymise}{required}.db")) as prefs:
            subjects = [f"s-{state}" for state in STATES]
            prefs.data.grant_consent("s-granted")
            prefs.data.grant_consent("s-revoked")
            prefs.data.revoke_consent("s-revoked")
            prefs.data.opt_out("s-opted out")
            view = prefs.data.filter([{"subject": s} for s in subjects], subject_of)
            expected = {s for s in subjects if prefs.data.may_train_on(s)}
            assert subjects_in(view) == expected, (mode, anonymise, required)


def test_a_row_stored_raw_before_anonymisation_was_turned_on_still_counts(home):
    with Client(overrides={"ml.data.privacy_mode": "permissive",
                           "ml.data.anonymization_enabled": False}) as prefs:
        prefs.data.grant_consent(SUBJECTS[0])
    with Client(overrides={"ml.data.privacy_mode": "permissive",
                           "ml.data.user_consent_required": True}) as prefs:
        assert prefs.data.may_train_on(SUBJECTS[0])
        assert subjects_in(prefs.data.filter(samples(1), subject_of)) == {SUBJECTS[0]}


# -- passes -----------------------------------------------------------------------------------
def test_a_revocation_is_honoured_from_the_next_pass_not_within_one(home):
    with Client() as prefs:
        consent_all(prefs)
        view = prefs.data.filter(samples(), subject_of)
        n = len(view)  # pass 1 starts
        prefs.data.revoke_consent(SUBJECTS[0])
        assert view[0]["subject"] == SUBJECTS[0] and n == 24  # the pass in progress keeps its map
        assert len(view) == 20  # pass 2
        assert SUBJECTS[0] not in subjects_in(view)
        assert view.excluded == {"no consent": 4}


def test_a_revocation_by_another_client_is_honoured_on_either_store(store_url):
    with Client(store=store_url) as prefs, Client(store=store_url) as other:
        consent_all(prefs)
        view = prefs.data.filter(samples(), subject_of)
        assert len(view) == 24
        other.data.revoke_consent(SUBJECTS[0])
        other.data.opt_out(SUBJECTS[1])
        assert len(view) == 16 and view.excluded == {"no consent": 4, "opted out": 4}
        other.data.erase(SUBJECTS[1])
        assert len(view) == 16 and view.excluded == {"no consent": 8}


def test_refresh_reports_whether_the_view_changed(home):
    with Client() as prefs:
        consent_all(prefs)
        view = prefs.data.filter(samples(), subject_of)
        assert view.refresh() is False and view.generation == 1
        prefs.data.opt_out(SUBJECTS[2])
        assert view.refresh() is True and view.generation == 2
        assert view.excluded == {"opted out": 4}


def test_a_policy_edit_applies_at_the_next_pass(home, project_dir):
    (project_dir / "mlprefs.toml").write_text('[ml.data]\nprivacy_mode = "permissive"\n'
                                              "user_consent_required = false\n")
    with Client() as prefs:
        view = prefs.data.filter(samples(), subject_of)
        assert len(view) == 24
        (project_dir / "mlprefs.toml").write_text('[ml.data]\nprivacy_mode = "permissive"\n')
        prefs.reload()
        assert len(view) == 0 and view.excluded == {"no consent": 24}


def test_a_revocation_by_another_process_and_by_the_cli_is_honoured(home):
    with Client() as prefs:
        consent_all(prefs)
        view = prefs.data.filter(samples(), subject_of)
        assert len(view) == 24
        code = ("from mlprefs_sdk import Client\n"
                f"with Client() as p: p.data.revoke_consent({SUBJECTS[1]!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert len(view) == 20
        cli("data", "opt-out", SUBJECTS[2])
        assert len(view) == 16
        assert view.excluded == {"no consent": 4, "opted out": 4}
        cli("data", "erase", SUBJECTS[3])
        assert len(view) == 12 and view.excluded["no consent"] == 8


# -- torch ------------------------------------------------------------------------------------
def epochs_through_a_loader(prefs, view, change, persistent: bool = False):
    """Two epochs over a DataLoader with two forked workers; change() runs between them."""
    torch = pytest.importorskip("torch")
    import multiprocessing

    loader = torch.utils.data.DataLoader(
        view, batch_size=4, shuffle=True, num_workers=2, persistent_workers=persistent,
        multiprocessing_context=multiprocessing.get_context("fork"),
        collate_fn=lambda batch: [s["subject"] for s in batch])
    seen = []
    for epoch in range(2):
        seen.append([s for batch in loader for s in batch])
        if epoch == 0:
            change()
    return seen


@pytest.mark.parametrize("persistent", [False, True], ids=["fresh-workers", "persistent-workers"])
def test_dataloader_workers_honour_a_revocation_at_the_next_epoch(home, persistent):
    pytest.importorskip("torch")
    with Client() as prefs:
        consent_all(prefs)
        view = prefs.data.filter(samples(), subject_of)
        first, second = epochs_through_a_loader(
            prefs, view, lambda: cli("data", "revoke", SUBJECTS[4]), persistent)
    assert sorted(first) == sorted(s["subject"] for s in samples())
    assert SUBJECTS[4] not in second and len(second) == 20
    assert sorted(second) == sorted(s for s in first if s != SUBJECTS[4])


def test_spawned_persistent_workers_index_the_map_the_main_process_refreshed(home):
    torch = pytest.importorskip("torch")
    import multiprocessing

    with Client() as prefs:
        prefs.data.grant_consent(SUBJECTS[0])
        view = prefs.data.filter(samples(2), subject_of)  # the worker gets a pickled copy
        loader = torch.utils.data.DataLoader(
            view, batch_size=2, num_workers=1, persistent_workers=True,
            multiprocessing_context=multiprocessing.get_context("spawn"))
        first = [s for batch in loader for s in batch["subject"]]
        prefs.data.revoke_consent(SUBJECTS[0])
        prefs.data.grant_consent(SUBJECTS[5])
        second = [s for batch in loader for s in batch["subject"]]
    assert first == [SUBJECTS[0]] * 2 and second == [SUBJECTS[5]] * 2


def test_a_torch_tensor_dataset_is_filtered_by_a_label_column(home):
    torch = pytest.importorskip("torch")
    ids = torch.arange(12) % 3
    dataset = torch.utils.data.TensorDataset(torch.randn(12, 2), ids)
    with Client() as prefs:
        prefs.data.grant_consent("user-1")
        view = prefs.data.filter(dataset, lambda sample: f"user-{int(sample[1])}")
        batch = next(iter(torch.utils.data.DataLoader(view, batch_size=len(view))))
    assert batch[1].tolist() == [1, 1, 1, 1]


# -- raw ids never leave subject_of ------------------------------------------------------------
def test_no_raw_id_reaches_the_store_files_or_the_log(home, caplog):
    caplog.set_level(logging.DEBUG)
    with Client() as prefs:
        for s in SUBJECTS[:4]:
            prefs.data.grant_consent(s)
        view = prefs.data.filter(samples(), subject_of)
        for _ in range(3):
            len(view)
            cli("data", "revoke", SUBJECTS[len(view) // 4 - 1])
        repr(view), view.excluded
        files = {p.name: p.read_bytes() for p in home.iterdir() if p.name.startswith("prefs.db")}
    assert {"prefs.db", "prefs.db-wal"} <= set(files)
    for s in SUBJECTS:
        assert not [name for name, data in files.items() if s.encode() in data], s
        assert s not in caplog.text and s not in repr(view)


# -- bad input --------------------------------------------------------------------------------
def test_a_dataset_without_len_is_refused_naming_what_is_missing(home):
    with Client() as prefs:
        with pytest.raises(DatasetNotIndexableError, match=r"generator has no len\(\)"):
            prefs.data.filter((s for s in samples()), subject_of)
        with pytest.raises(TypeError, match=r"has no indexing"):
            prefs.data.filter(set(), subject_of)


def test_a_subject_of_that_raises_names_the_sample_index_not_the_id(home):
    data = samples()
    data[5] = {"x": 1.0}

    def raw_in_message(sample):
        if "subject" not in sample:
            raise KeyError("subject")
        return sample["subject"]

    with Client() as prefs, pytest.raises(SubjectIdError, match="raised KeyError for sample 5") as info:
        prefs.data.filter(data, raw_in_message)
    assert info.value.index == 5
    assert not any(s in str(info.value) for s in SUBJECTS)


@pytest.mark.parametrize("returned,problem", [(42, "returned a int"), ("  ", "an empty string"),
                                              (None, "returned a NoneType")])
def test_a_subject_of_that_returns_no_id_is_refused(home, returned, problem):
    with Client() as prefs, pytest.raises(SubjectIdError, match=f"{problem} for sample 0"):
        prefs.data.filter(samples(), lambda sample: returned)


def test_a_dataset_that_changes_length_asks_for_a_new_filter(home):
    data = samples()
    with Client() as prefs:
        consent_all(prefs)
        view = prefs.data.filter(data, subject_of)
        data.append(data[0])
        with pytest.raises(ViewChangedError, match="had 24 samples .* has 25 now"):
            len(view)

