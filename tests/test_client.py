"""The Client (SPEC section 4): reading, writing, sections, overrides, registration, events."""

from __future__ import annotations

import logging
import os
import threading

import attrs
import pytest

from mlprefs_sdk import (
    ChangeSet,
    Client,
    ConfigFileError,
    HistoryEntry,
    MlprefsError,
    UnknownKeyError,
    ValidationError,
)

LR = "ml.training.learning_rate"
BATCH = "ml.performance.batch_size"


@pytest.fixture
def prefs(home):
    with Client(user="alice", project="churn") as client:
        yield client


# -- reading -------------------------------------------------------------------------


def test_get_and_item_return_the_resolved_value(prefs):
    assert prefs.get(LR) == 0.001 and prefs[LR] == 0.001
    assert LR in prefs and "ml.nothing.here" not in prefs


def test_get_of_an_unknown_key_raises_with_a_suggestion(prefs):
    with pytest.raises(UnknownKeyError, match="did you mean ml.training.learning_rate"):
        prefs.get("ml.training.learning_rat")
    with pytest.raises(UnknownKeyError):
        prefs["ml.training.learning_rat"]


def test_get_with_a_default_returns_it_for_an_unknown_key(prefs):
    assert prefs.get("team.unknown.key", default=7) == 7
    assert prefs.get("team.unknown.key", None) is None


def test_feature_flags_are_off_unless_the_global_switch_is_on(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("ml.features.experiment_tracking = true\n")
    with Client() as prefs:
        assert prefs.get("ml.features.experiment_tracking") is True
        assert prefs.enabled("ml.features.experiment_tracking") is False
        assert prefs.enabled("ml.models.fallback_enabled") is True  # not a feature flag
        prefs.set("ml.global.enabled", True)
        assert prefs.enabled("ml.features.experiment_tracking") is True


def test_enabled_refuses_a_key_that_is_not_a_flag(prefs):
    with pytest.raises(TypeError, match="is a float key, not a flag"):
        prefs.enabled(LR)
    with pytest.raises(UnknownKeyError):
        prefs.enabled("ml.features.nothing")


def test_a_snapshot_is_immutable_and_does_not_follow_later_changes(prefs):
    snap = prefs.snapshot()
    with pytest.raises(TypeError):
        snap[LR] = 0.5  # type: ignore[index]
    prefs.set(LR, 0.5)
    assert snap[LR] == 0.001 and prefs.snapshot()[LR] == 0.5
    assert len(snap) == 62


def test_the_spec_message_format(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\n\nlearning_rate = 5.0\n")
    with pytest.raises(ValidationError) as e:
        Client()
    assert str(e.value) == "ml.training.learning_rate = 5.0 in ./mlprefs.toml:3 is above the maximum 1.0"
    (p,) = e.value.problems
    assert (p.key, p.value, p.rule, p.source.line) == (LR, 5.0, "max", 3)


# -- writing -------------------------------------------------------------------------


def test_set_stores_validates_and_updates_the_view_at_once(prefs):
    entry = prefs.set(BATCH, 64, scope="project", reason="fits GPU")
    assert isinstance(entry, HistoryEntry)
    assert (entry.scope, entry.key, entry.old, entry.new, entry.actor, entry.reason) == (
        "project", BATCH, None, 64, "alice", "fits GPU")
    assert prefs.get(BATCH) == 64
    assert prefs.explain(BATCH).source.layer == "project"


def test_a_set_never_installs_a_store_read_older_than_one_the_client_already_has(prefs,
                                                                                 monkeypatch):
    """set() installs what its validation read under the write's locks, unless a newer read
    of the store (a watcher's) was installed meanwhile: then it reads the store again."""
    other = Client(user="alice", project="churn")
    write = prefs.store.write

    def commit_then_another_host_writes_and_is_heard(*args, **kwargs):
        entries = write(*args, **kwargs)
        other.set(BATCH, 48)  # committed after ours...
        prefs.reload()        # ...and installed here, as the watcher would
        return entries

    monkeypatch.setattr(prefs.store, "write", commit_then_another_host_writes_and_is_heard)
    with other:
        prefs.set(LR, 0.02)
    assert (prefs.get(LR), prefs.get(BATCH)) == (0.02, 48)


def test_set_of_a_wrong_type_writes_nothing(prefs):
    with pytest.raises(ValidationError, match=r"ml.performance.batch_size = \"64\" in user "
                                              r"\(user 'alice'\) has type str"):
        prefs.set(BATCH, "64")
    assert prefs.history() == [] and prefs.get(BATCH) == 32


def test_set_checks_cross_key_rules_before_writing(prefs):
    with pytest.raises(ValidationError) as e:
        prefs.set("ml.performance.parallel_workers", 16)
    assert e.value.problems[0].rule == "memory-per-worker"
    assert prefs.history() == [] and prefs.get("ml.performance.parallel_workers") == 4
    assert prefs.store.scope_values("user", "alice") == {}


def test_set_of_an_unknown_key_raises_with_a_suggestion(prefs):
    with pytest.raises(UnknownKeyError, match="did you mean ml.performance.batch_size"):
        prefs.set("ml.training.batch", 64)


def test_set_of_a_non_power_of_two_batch_succeeds_with_a_warning(prefs):
    prefs.set(BATCH, 48)
    assert [w.rule for w in prefs.warnings] == ["batch-power-of-two"]


def test_the_project_scope_needs_a_project(home):
    with Client() as prefs:
        with pytest.raises(MlprefsError, match="scope 'project' needs a project"):
            prefs.set(BATCH, 64, scope="project")
        with pytest.raises(ValueError, match="scope must be 'user' or 'project'"):
            prefs.set(BATCH, 64, scope="team")


def test_unset_removes_the_stored_value(prefs):
    prefs.set(BATCH, 64)
    entry = prefs.unset(BATCH)
    assert (entry.old, entry.new) == (64, None)
    assert prefs.get(BATCH) == 32
    assert prefs.unset(BATCH) is None  # nothing stored: nothing recorded
    assert len(prefs.history(BATCH)) == 2


def test_history_is_newest_first_and_filters_by_key_and_limit(prefs):
    prefs.set(BATCH, 64)
    prefs.set(BATCH, 128, scope="project")
    prefs.set(LR, 0.01)
    assert [(e.key, e.new) for e in prefs.history()] == [(LR, 0.01), (BATCH, 128), (BATCH, 64)]
    assert [e.new for e in prefs.history(BATCH)] == [128, 64]
    assert len(prefs.history(limit=1)) == 1
    assert [e.scope for e in prefs.history(BATCH, scope="user")] == ["user"]


def test_history_of_an_unknown_key_raises(prefs):
    with pytest.raises(UnknownKeyError):
        prefs.history("ml.training.batch")


def test_the_actor_defaults_to_the_os_login(home):
    import getpass

    with Client() as prefs:
        assert prefs.set(BATCH, 64).actor == getpass.getuser()


def test_rollback_restores_the_value_an_entry_set_as_a_new_entry(prefs):
    first = prefs.set(BATCH, 64, scope="project")
    prefs.set(BATCH, 128, scope="project")
    restored = prefs.rollback(BATCH, scope="project", to=first.id)
    assert prefs.get(BATCH) == 64
    assert (restored.old, restored.new, restored.reason) == (128, 64, f"rollback to #{first.id}")
    assert len(prefs.history(BATCH)) == 3


def test_rollback_to_an_unset_entry_removes_the_value(prefs):
    prefs.set(BATCH, 64)
    removal = prefs.unset(BATCH)
    prefs.set(BATCH, 128)
    prefs.rollback(BATCH, to=removal.id)
    assert prefs.get(BATCH) == 32 and prefs.explain(BATCH).source.layer == "defaults"


def test_rollback_refuses_an_entry_of_another_key_or_scope(prefs):
    entry = prefs.set(BATCH, 64)
    with pytest.raises(MlprefsError, match=f"history entry #{entry.id} is not a change of "
                                           f"{LR} in scope user 'alice'"):
        prefs.rollback(LR, to=entry.id)
    with pytest.raises(MlprefsError, match="not a change of"):
        prefs.rollback(BATCH, scope="project", to=entry.id)
    with pytest.raises(MlprefsError, match="#999"):
        prefs.rollback(BATCH, to=999)


# -- sections and attrs classes --------------------------------------------------------


def test_a_section_is_a_frozen_typed_attrs_object(prefs):
    training = prefs.section("ml.training")
    assert training.learning_rate == 0.001 and training.max_iterations == 1000
    assert attrs.fields_dict(type(training))["max_iterations"].type is int
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        training.learning_rate = 0.1


def test_a_section_follows_changes_and_nests_deeper_keys(prefs):
    before = prefs.section("ml")
    prefs.set(LR, 0.02)
    after = prefs.section("ml")
    assert before.training.learning_rate == 0.001 and after.training.learning_rate == 0.02
    assert after.global_.enabled is False  # `global` is a keyword: PEP 8's trailing underscore


def test_a_section_of_an_unknown_prefix_raises(prefs):
    with pytest.raises(UnknownKeyError):
        prefs.section("ml.trainin")


@attrs.frozen
class Training:
    learning_rate: float
    max_iterations: int
    early_stopping_patience: int = 99


def test_load_builds_the_users_attrs_class_from_its_fields_only(prefs):
    prefs.set("ml.training.early_stopping_patience", 7)
    loaded = prefs.load(Training, prefix="ml.training")
    assert loaded == Training(0.001, 1000, 7)


def test_load_uses_the_class_default_for_a_field_with_no_key(prefs):
    @attrs.frozen
    class WithExtra:
        learning_rate: float
        not_a_key: str = "kept"

    assert prefs.load(WithExtra, prefix="ml.training") == WithExtra(0.001, "kept")


def test_load_of_a_required_field_with_no_key_raises(prefs):
    @attrs.frozen
    class Missing:
        learning_rat: float

    with pytest.raises(UnknownKeyError, match="did you mean ml.training.learning_rate"):
        prefs.load(Missing, prefix="ml.training")


def test_load_into_a_field_of_the_wrong_type_is_a_validation_error(prefs):
    @attrs.frozen
    class Wrong:
        early_stopping_metric: int

    with pytest.raises(ValidationError) as e:
        prefs.load(Wrong, prefix="ml.training")
    assert str(e.value) == ('ml.training.early_stopping_metric = "val_loss" does not fit '
                            "Wrong.early_stopping_metric: invalid value for type, expected int")


@pytest.mark.parametrize("field_type, key, value", [
    (int, LR, 0.02),                                  # would be cut to 0
    (str, "ml.training.max_iterations", 500),         # would become "500"
    (bool, "ml.training.early_stopping_metric", "x"),  # any non-empty string would be True
])
def test_load_never_converts_a_value_that_does_not_fit_its_field(prefs, field_type, key, value):
    prefs.set(key, value)
    cls = attrs.make_class("Fields", {key.rsplit(".", 1)[1]: attrs.field(type=field_type)})
    with pytest.raises(ValidationError, match=rf"{key} = .* does not fit Fields\."):
        prefs.load(cls, prefix=key.rsplit(".", 1)[0])


def test_load_takes_a_whole_float_for_an_int_field_and_an_int_for_a_float(prefs):
    @attrs.frozen
    class Mixed:
        learning_rate: int      # a float key holding a whole number
        max_iterations: float   # an int key

    prefs.set(LR, 1.0)
    assert prefs.load(Mixed, prefix="ml.training") == Mixed(1, 1000.0)


# -- overrides -------------------------------------------------------------------------


def test_overrides_nest_and_unwind(prefs):
    with prefs.override({LR: 0.5, BATCH: 8}):
        assert prefs.get(LR) == 0.5
        with prefs.override({LR: 0.25}):
            assert (prefs.get(LR), prefs.get(BATCH)) == (0.25, 8)
        assert prefs.get(LR) == 0.5
    assert (prefs.get(LR), prefs.get(BATCH)) == (0.001, 32)


def test_an_override_unwinds_when_the_block_raises(prefs):
    with pytest.raises(RuntimeError):
        with prefs.override({LR: 0.5}):
            raise RuntimeError("boom")
    assert prefs.get(LR) == 0.001


def test_an_invalid_override_raises_and_changes_nothing(prefs):
    with pytest.raises(ValidationError, match="is above the maximum 1.0"):
        with prefs.override({LR: 5.0}):
            pytest.fail("the block must not run")
    assert prefs.get(LR) == 0.001
    with prefs.override({LR: 0.5}):
        assert prefs.get(LR) == 0.5


def test_constructor_overrides_sit_in_the_runtime_layer(home):
    with Client(overrides={LR: 0.3}) as prefs:
        assert prefs.explain(LR).source.layer == "runtime"
        with prefs.override({LR: 0.4}):
            assert prefs.get(LR) == 0.4
        assert prefs.get(LR) == 0.3


# -- registered keys ---------------------------------------------------------------------


def test_a_registered_key_behaves_like_a_built_in_one(prefs, monkeypatch):
    spec = prefs.register("team.eval.every_n_steps", int, 500, min=1, description="eval cadence")
    assert spec.type is int and prefs.get("team.eval.every_n_steps") == 500
    assert prefs.explain("team.eval.every_n_steps").source.detail == "registered"
    prefs.set("team.eval.every_n_steps", 100)
    assert prefs.section("team.eval").every_n_steps == 100
    with pytest.raises(ValidationError, match="team.eval.every_n_steps = 0 .* below the minimum 1"):
        prefs.set("team.eval.every_n_steps", 0)
    assert [e.new for e in prefs.history("team.eval.every_n_steps")] == [100]


def test_a_file_value_given_before_registration_applies_once_registered(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[team.eval]\nevery_n_steps = 250\n")
    with Client() as prefs:
        assert prefs.get("team.eval.every_n_steps", None) is None
        assert [w.rule for w in prefs.warnings] == ["unregistered"]
        prefs.register("team.eval.every_n_steps", int, 500, min=1)
        assert prefs.get("team.eval.every_n_steps") == 250
        assert prefs.explain("team.eval.every_n_steps").source.line == 2
        assert prefs.warnings == ()


def test_an_env_value_for_a_registered_key_is_coerced(home, monkeypatch):
    monkeypatch.setenv("MLPREFS__TEAM__EVAL__ENABLED", "yes")
    with Client() as prefs:
        prefs.register("team.eval.enabled", bool, False)
        assert prefs.enabled("team.eval.enabled") is True


def test_registering_a_key_whose_file_value_is_invalid_fails_and_leaves_it_unknown(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("team.eval.every_n_steps = 0\n")
    with Client() as prefs:
        with pytest.raises(ValidationError, match=r"team.eval.every_n_steps = 0 in ./mlprefs.toml:1 "
                                                  r"is below the minimum 1"):
            prefs.register("team.eval.every_n_steps", int, 500, min=1)
        assert "team.eval.every_n_steps" not in prefs
        assert "team.eval.every_n_steps" not in prefs.catalog


def test_registration_is_idempotent_but_refuses_a_different_definition(prefs):
    prefs.register("team.eval.every_n_steps", int, 500)
    prefs.register("team.eval.every_n_steps", int, 500)
    with pytest.raises(ValueError, match="already defined differently"):
        prefs.register("team.eval.every_n_steps", int, 600)


def test_registering_a_key_announces_it(prefs):
    seen: list[ChangeSet] = []
    prefs.on_change("team.*", seen.append)
    prefs.register("team.eval.every_n_steps", int, 500)
    assert [(c.key, c.old, c.new) for c in seen[0]] == [("team.eval.every_n_steps", None, 500)]


def test_registered_keys_are_private_to_their_client(home):
    with Client() as a, Client() as b:
        a.register("team.eval.every_n_steps", int, 500)
        assert "team.eval.every_n_steps" not in b


# -- change and error callbacks ---------------------------------------------------------


def test_on_change_gets_one_changeset_per_edit(prefs):
    seen: list[ChangeSet] = []
    prefs.on_change("ml.training.*", seen.append)
    prefs._set_many({LR: 0.02, "ml.training.max_iterations": 50, BATCH: 64}, "user")
    (cs,) = seen
    assert sorted(cs.keys) == [LR, "ml.training.max_iterations"]
    change = cs.get(LR)
    assert (change.old, change.new, change.source.layer) == (0.001, 0.02, "user")


def test_on_change_covers_set_unset_override_and_reload(prefs, project_dir):
    seen: list[tuple[str, ...]] = []
    prefs.on_change("*", lambda cs: seen.append(cs.keys))
    prefs.set(BATCH, 64)
    prefs.unset(BATCH)
    with prefs.override({LR: 0.5}):
        pass
    (project_dir / "mlprefs.toml").write_text("ml.training.max_iterations = 20\n")
    prefs.reload()
    assert seen == [(BATCH,), (BATCH,), (LR,), (LR,), ("ml.training.max_iterations",)]


def test_a_cancelled_subscription_hears_nothing(prefs):
    seen = []
    sub = prefs.on_change("*", seen.append)
    sub.cancel()
    prefs.set(BATCH, 64)
    assert seen == []


def test_a_raising_callback_is_logged_and_does_not_stop_the_others(prefs, caplog):
    seen = []

    def broken(cs):
        raise RuntimeError("callback bug")

    prefs.on_change("*", broken)
    prefs.on_change("*", seen.append)
    with caplog.at_level(logging.ERROR):
        prefs.set(BATCH, 64)
    assert len(seen) == 1
    assert "callback bug" in caplog.text


def test_a_bad_reload_keeps_the_last_good_view_and_tells_on_error(prefs, project_dir):
    errors = []
    prefs.on_error(errors.append)
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 0.01\n")
    prefs.reload()
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 7.0\n")
    with pytest.raises(ValidationError):
        prefs.reload()
    assert prefs.get(LR) == 0.01
    (err,) = errors
    assert "ml.training.learning_rate = 7.0 in ./mlprefs.toml:1 is above the maximum 1.0" in str(err)


def test_a_reload_of_broken_toml_raises_config_file_error(prefs, project_dir):
    (project_dir / "mlprefs.toml").write_text("learning_rate = \n")
    with pytest.raises(ConfigFileError):
        prefs.reload()
    assert prefs.get(LR) == 0.001


def test_reload_sees_another_clients_store_write(home):
    with Client(user="alice") as reader, Client(user="alice") as writer:
        writer.set(BATCH, 256)
        assert reader.get(BATCH) == 32
        assert reader.reload().keys == (BATCH,)
        assert reader.get(BATCH) == 256


def test_readers_never_see_a_half_applied_change(prefs):
    """get() takes no lock: it reads one immutable view, swapped whole."""
    stop = threading.Event()
    torn = []

    def read():
        while not stop.is_set():
            snap = prefs.snapshot()
            if (snap[LR] == 0.5) != (snap["ml.training.max_iterations"] == 50):
                torn.append(snap)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            with prefs.override({LR: 0.5, "ml.training.max_iterations": 50}):
                pass
    finally:
        stop.set()
        reader.join()
    assert torn == []


# -- lifecycle ---------------------------------------------------------------------------


def test_close_is_idempotent_and_the_context_manager_closes(home):
    with Client() as prefs:
        pass
    prefs.close()
    assert prefs._closed


def test_repr_names_user_project_and_store(home):
    with Client(user="alice", project="churn") as prefs:
        assert repr(prefs).startswith("<mlprefs Client user='alice' project='churn' store=")


def test_watched_paths_cover_every_file_layer_and_where_a_project_file_would_appear(home, project_dir):
    (project_dir / "extra.toml").write_text("")
    with Client(files=["extra.toml"]) as prefs:
        paths = prefs.watched_paths()
    assert paths == [os.environ["MLPREFS_POLICY"], str(home / "overrides.toml"),
                     str(project_dir / "extra.toml"), str(project_dir / "mlprefs.toml")]
    with Client(discover=False) as prefs:
        assert str(project_dir / "mlprefs.toml") not in prefs.watched_paths()


def test_a_project_file_created_after_start_is_read_by_reload(home, project_dir):
    with Client() as prefs:
        (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 16\n")
        prefs.reload()
        assert prefs.get(BATCH) == 16
        assert prefs.project_file == (str(project_dir / "mlprefs.toml"), None)
