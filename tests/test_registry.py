"""The model registry: versions, the active pointer, selection, fallback loading, updates."""

from __future__ import annotations

import json
import logging

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import main
from mlprefs_sdk.services.registry import (
    DuplicateVersionError,
    InvalidModelError,
    ModelLoadError,
    ModelNotFoundError,
    ModelStateError,
    NoQualifyingModelError,
)


@pytest.fixture
def prefs(home):
    with Client(user="ana") as client:
        yield client


def version_count(prefs) -> int:
    return prefs.store.query("SELECT COUNT(*) FROM model_versions")[0][0]


def register_three(prefs):
    prefs.models.register("churn", 1, metrics={"accuracy": 0.90, "latency_ms": 20, "memory_mb": 300})
    prefs.models.register("churn", 2, metrics={"accuracy": 0.95, "latency_ms": 80, "memory_mb": 900})
    prefs.models.register("churn", 3, metrics={"accuracy": 0.87, "latency_ms": 5, "memory_mb": 600})


# -- versions ---------------------------------------------------------------------------
def test_registered_version_reads_back_with_everything_it_was_given(prefs):
    mv = prefs.models.register("churn", "1.0", "xgboost", metrics={"accuracy": 0.9},
                               config={"depth": 6}, tags={"team": "growth"},
                               source_uri="s3://models/churn/1.0", description="baseline")
    assert prefs.models.get("churn", "1.0") == mv
    assert (mv.framework, mv.status, mv.created_by) == ("xgboost", "experimental", "ana")
    assert dict(mv.metrics) == {"accuracy": 0.9} and dict(mv.config) == {"depth": 6}
    assert mv.uri == "models:/churn/1.0"


def test_framework_defaults_to_the_default_framework_preference(home):
    with Client(overrides={"ml.models.default_framework": "pytorch"}) as prefs:
        assert prefs.models.register("m", 1).framework == "pytorch"


def test_a_framework_outside_the_choices_is_refused_and_nothing_is_written(prefs):
    with pytest.raises(InvalidModelError, match="'jax'.*sklearn, pytorch, tensorflow, xgboost"):
        prefs.models.register("churn", 1, "jax")
    assert version_count(prefs) == 0


def test_registering_a_version_twice_is_refused_and_the_first_is_kept(prefs):
    prefs.models.register("churn", 1, metrics={"accuracy": 0.9})
    with pytest.raises(DuplicateVersionError, match="churn/1 is already registered"):
        prefs.models.register("churn", "1", metrics={"accuracy": 0.5})
    assert version_count(prefs) == 1
    assert prefs.models.get("churn", 1).metrics["accuracy"] == 0.9


@pytest.mark.parametrize("metrics", [{"accuracy": 1.5}, {"accuracy": float("nan")},
                                     {"latency_ms": -1}, {"accuracy": True}, {"f1": "high"}])
def test_malformed_metrics_are_refused(prefs, metrics):
    with pytest.raises(InvalidModelError):
        prefs.models.register("churn", 1, metrics=metrics)
    assert version_count(prefs) == 0


def test_unknown_model_and_unknown_version_raise_model_not_found(prefs):
    prefs.models.register("churn", 1)
    with pytest.raises(ModelNotFoundError, match="no model named 'fraud'"):
        prefs.models.get("fraud", 1)
    with pytest.raises(ModelNotFoundError, match="no version '9' .*its versions: 1"):
        prefs.models.promote("churn", 9)
    with pytest.raises(KeyError):
        prefs.models.select("fraud")


def test_list_filters_by_name_framework_and_status(prefs):
    prefs.models.register("churn", 1, "sklearn")
    prefs.models.register("churn", 2, "pytorch", status="active")
    prefs.models.register("fraud", 1, "pytorch")
    assert [(m.name, m.version) for m in prefs.models.list(framework="pytorch")] == [
        ("churn", "2"), ("fraud", "1")]
    assert [m.version for m in prefs.models.list("churn", status="active")] == ["2"]


# -- the active pointer ---------------------------------------------------------------
def test_promote_moves_the_pointer_and_records_who_when_from_and_to(prefs):
    register_three(prefs)
    prefs.models.promote("churn", 1)
    prefs.models.promote("churn", 2, reason="better recall")
    assert prefs.models.get("churn").version == "2"
    assert prefs.models.get("churn", 1).status == "experimental"
    move = prefs.models.moves("churn")[0]
    assert (move.kind, move.from_version, move.to_version, move.actor, move.reason) == (
        "promote", "1", "2", "ana", "better recall")
    assert move.at > 0


def test_rollback_returns_to_the_previous_active_version_and_walks_further_back(prefs):
    register_three(prefs)
    for v in (1, 2, 3):
        prefs.models.promote("churn", v)
    assert prefs.models.rollback("churn").version == "2"
    assert prefs.models.rollback("churn").version == "1"
    assert prefs.models.moves("churn")[0].kind == "rollback"
    with pytest.raises(ModelStateError, match="no earlier active version"):
        prefs.models.rollback("churn")


def test_rollback_skips_a_deprecated_version(prefs):
    register_three(prefs)
    for v in (1, 2, 3):
        prefs.models.promote("churn", v)
    prefs.models.deprecate("churn", 2)
    assert prefs.models.rollback("churn").version == "1"


def test_the_active_version_cannot_be_deprecated_and_a_deprecated_one_cannot_serve(prefs):
    register_three(prefs)
    prefs.models.promote("churn", 1)
    with pytest.raises(ModelStateError, match="active version; promote another"):
        prefs.models.deprecate("churn", 1)
    prefs.models.deprecate("churn", 2)
    with pytest.raises(ModelStateError, match="deprecated"):
        prefs.models.promote("churn", 2)


def test_registering_as_active_promotes_and_records_the_move(prefs):
    prefs.models.register("churn", 1, status="active")
    prefs.models.register("churn", 2, status="active")
    assert prefs.models.get("churn").version == "2"
    assert prefs.models.rollback("churn").version == "1"


def test_without_versioning_a_new_version_replaces_the_old_one(home):
    with Client(overrides={"ml.models.versioning_enabled": False}) as prefs:
        prefs.models.register("churn", 1, status="active")
        prefs.models.register("churn", 2)
        assert [m.version for m in prefs.models.list("churn")] == ["2"]
        assert prefs.models.get("churn").version == "2"
        assert prefs.models.moves("churn")[0].kind == "replace"
        with pytest.raises(ModelStateError, match="versioning is off"):
            prefs.models.rollback("churn")


def test_the_registry_is_shared_through_the_store(home):
    with Client(user="ana") as first:
        first.models.register("churn", 1, status="active")
    with Client(user="bo") as second:
        second.models.register("churn", 2)
        second.models.promote("churn", 2)
        assert [m.actor for m in second.models.moves("churn")] == ["bo", "ana"]


# -- selection ----------------------------------------------------------------------------
@pytest.mark.parametrize("criteria,expected", [("accuracy", "2"), ("speed", "3"),
                                               ("memory", "1")])
def test_select_ranks_by_the_selection_criteria(home, criteria, expected):
    with Client(overrides={"ml.models.selection_criteria": criteria}) as prefs:
        register_three(prefs)
        assert prefs.models.select("churn").version == expected


def test_balanced_selection_weighs_speed_by_speed_priority(home):
    scores = {}
    for priority in (0.0, 0.5, 1.0):
        with Client(overrides={"ml.performance.speed_priority": priority}) as prefs:
            if priority == 0.0:
                register_three(prefs)
            scores[priority] = prefs.models.select("churn").version
    # accuracy 0.90/0.95/0.87 -> 0.375/1/0; latency 20/80/5 -> 0.8/0/1 on [0, 1]
    assert scores == {0.0: "2", 0.5: "1", 1.0: "3"}


def test_select_skips_versions_below_the_accuracy_threshold_and_deprecated_ones(home):
    with Client(overrides={"ml.performance.accuracy_threshold": 0.88,
                           "ml.models.selection_criteria": "speed"}) as prefs:
        register_three(prefs)
        assert prefs.models.select("churn").version == "1"
        prefs.models.deprecate("churn", 1)
        assert prefs.models.select("churn").version == "2"


def test_ties_go_to_the_most_recently_registered_version(home):
    with Client(overrides={"ml.models.selection_criteria": "accuracy"}) as prefs:
        for v in ("a", "b", "c"):
            prefs.models.register("churn", v, metrics={"accuracy": 0.9})
        assert prefs.models.select("churn").version == "c"
        assert [m.version for m in prefs.models.ranked("churn")] == ["c", "b", "a"]


def test_select_without_a_name_looks_at_every_model(home):
    with Client(overrides={"ml.models.selection_criteria": "accuracy"}) as prefs:
        register_three(prefs)
        prefs.models.register("fraud", 1, metrics={"accuracy": 0.99})
        assert prefs.models.select().uri == "models:/fraud/1"


def test_select_explains_why_each_candidate_was_excluded(home):
    with Client(overrides={"ml.models.selection_criteria": "speed"}) as prefs:
        prefs.models.register("churn", 1, metrics={"accuracy": 0.5, "latency_ms": 3})
        prefs.models.register("churn", 2, metrics={"accuracy": 0.9})
        prefs.models.register("churn", 3)
        prefs.models.register("churn", 4, metrics={"accuracy": 0.99, "latency_ms": 1})
        prefs.models.deprecate("churn", 4)
        with pytest.raises(NoQualifyingModelError) as info:
            prefs.models.select("churn")
    assert info.value.excluded == {
        "churn/1": "accuracy 0.5 is below ml.performance.accuracy_threshold 0.85",
        "churn/2": "has no latency_ms metric (ml.models.selection_criteria = speed)",
        "churn/3": "has no accuracy metric",
        "churn/4": "deprecated",
    }
    assert "churn/2: has no latency_ms metric" in str(info.value)


# -- loading with fallback ------------------------------------------------------------
def failing_loader(bad: set[str]):
    calls = []

    def loader(mv):
        calls.append(mv.version)
        if mv.version in bad:
            raise OSError(f"weights of {mv.version} are corrupt")
        return f"model {mv.version}"

    return loader, calls


def test_load_uses_the_active_version(prefs):
    register_three(prefs)
    prefs.models.promote("churn", 1)
    loader, calls = failing_loader(set())
    assert prefs.models.load("churn", loader) == "model 1"
    assert calls == ["1"]


def test_load_falls_back_to_earlier_active_versions_then_the_ranked_ones(prefs, caplog):
    register_three(prefs)
    prefs.models.register("churn", 4, metrics={"accuracy": 0.99, "latency_ms": 1})
    for v in (3, 1, 2):
        prefs.models.promote("churn", v)
    loader, calls = failing_loader({"2", "1", "3"})
    with caplog.at_level(logging.WARNING, logger="mlprefs_sdk.services.registry"):
        assert prefs.models.load("churn", loader) == "model 4"
    assert calls == ["2", "1", "3", "4"]
    assert "loading models:/churn/2 failed: OSError: weights of 2 are corrupt" in caplog.text


def test_without_fallback_only_the_active_version_is_tried(home):
    with Client(overrides={"ml.models.fallback_enabled": False}) as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 2)
        loader, calls = failing_loader({"2"})
        with pytest.raises(ModelLoadError, match="weights of 2 are corrupt") as info:
            prefs.models.load("churn", loader)
    assert calls == ["2"] and len(info.value.failures) == 1


def test_when_every_candidate_fails_one_error_lists_every_cause(prefs):
    register_three(prefs)
    prefs.models.promote("churn", 1)
    loader, calls = failing_loader({"1", "2", "3"})
    with pytest.raises(ModelLoadError) as info:
        prefs.models.load("churn", loader)
    message = str(info.value)
    for v in ("1", "2", "3"):
        assert f"models:/churn/{v}: OSError: weights of {v} are corrupt" in message
    assert sorted(calls) == ["1", "2", "3"]


# -- updates ----------------------------------------------------------------------------
def with_policy(policy: str) -> Client:
    return Client(overrides={"ml.models.auto_update_policy": policy,
                             "ml.models.selection_criteria": "accuracy"})


def test_disabled_update_policy_checks_nothing(home):
    with with_policy("disabled") as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 1)
        check = prefs.models.check_updates("churn")
        assert check.better == () and "disabled" in check.message


def test_manual_update_policy_reports_better_versions_without_promoting(home):
    with with_policy("manual") as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 3)
        check = prefs.models.check_updates("churn")
        assert [m.version for m in check.better] == ["2", "1"]
        assert check.promoted is None and prefs.models.get("churn").version == "3"


def test_automatic_update_policy_promotes_the_best_and_records_it(home):
    with with_policy("automatic") as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 1)
        check = prefs.models.check_updates("churn")
        assert check.promoted.version == "2" and prefs.models.get("churn").version == "2"
        assert "auto-update" in prefs.models.moves("churn")[0].reason


def test_scheduled_update_policy_reports_the_due_promotion_and_update_performs_it(home):
    with with_policy("scheduled") as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 1)
        check = prefs.models.check_updates("churn")
        assert check.due.version == "2" and prefs.models.get("churn").version == "1"
        [done] = prefs.models.update()
        assert done.promoted.version == "2" and prefs.models.get("churn").version == "2"
        assert prefs.models.check_updates("churn").due is None


# -- CLI ----------------------------------------------------------------------------------
def test_cli_registers_lists_selects_promotes_and_rolls_back(home, capsys):
    assert main(["models", "register", "churn", "1", "--metric", "accuracy=0.9",
                 "--status", "active"]) == 0
    assert main(["models", "register", "churn", "2", "--metric", "accuracy=0.95",
                 "--metric", "latency_ms=4", "--framework", "pytorch"]) == 0
    capsys.readouterr()
    assert main(["--json", "models", "select", "churn"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "2"
    assert main(["models", "promote", "churn", "2"]) == 0
    assert main(["models", "rollback", "churn"]) == 0
    assert "models:/churn/1 is active again" in capsys.readouterr().out
    assert main(["models", "list", "churn"]) == 0
    assert "pytorch" in capsys.readouterr().out
    assert main(["models", "show", "churn"]) == 0
    assert "rollback  2 -> 1" in capsys.readouterr().out


def test_cli_refuses_bad_input_with_exit_code_1(home, capsys):
    assert main(["models", "register", "churn", "1", "--framework", "jax"]) == 1
    assert main(["models", "register", "churn", "1", "--metric", "accuracy"]) == 1
    assert main(["models", "show", "nope"]) == 1
    assert "no model named 'nope'" in capsys.readouterr().err


def test_cli_update_performs_due_promotions(home, capsys):
    with Client() as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 1)
    assert main(["set", "ml.models.selection_criteria", "accuracy"]) == 0
    assert main(["models", "update"]) == 0  # the default policy, manual, only reports
    assert "2 rank above 1" in capsys.readouterr().out
    assert main(["set", "ml.models.auto_update_policy", "scheduled"]) == 0
    assert main(["models", "update"]) == 0
    assert "churn: promoted 2 (was 1)" in capsys.readouterr().out


def test_the_registry_works_the_same_on_every_store_backend(store_url):
    with Client(store=store_url, user="ana",
                overrides={"ml.models.selection_criteria": "balanced"}) as prefs:
        register_three(prefs)
        prefs.models.promote("churn", 3)
        prefs.models.promote("churn", 2)
        assert prefs.models.rollback("churn").version == "3"
        assert prefs.models.select("churn").version == "1"
        with prefs.override({"ml.models.selection_criteria": "memory"}):
            assert prefs.models.select("churn").version == "1"
        assert [m.kind for m in prefs.models.moves("churn")] == ["rollback", "promote", "promote"]
