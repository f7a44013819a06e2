"""The key catalog (SPEC section 2): defaults.toml, KeySpec checks, suggestions, cross-key rules."""

from __future__ import annotations

import math

import pytest

from mlprefs_sdk import Client, UnknownKeyError, ValidationError
from mlprefs_sdk.catalog import Catalog, InvalidValueError, KeySpec

# The SPEC's table, row by row: key, type, default, (min, max) or choices, access.
SPEC_TABLE = [
    ("ml.global.enabled", bool, False, None, "admin"),
    ("ml.features.naive_enabled", bool, True, None, "user"),
    ("ml.features.advanced_enabled", bool, False, None, "admin"),
    ("ml.features.experiment_tracking", bool, False, None, "user"),
    ("ml.features.auto_optimization", bool, False, None, "admin"),
    ("ml.models.default_framework", str, "sklearn", ("sklearn", "pytorch", "tensorflow", "xgboost"), "user"),
    ("ml.models.selection_criteria", str, "balanced", ("accuracy", "speed", "memory", "balanced"), "user"),
    ("ml.models.fallback_enabled", bool, True, None, "user"),
    ("ml.models.versioning_enabled", bool, True, None, "user"),
    ("ml.models.auto_update_policy", str, "manual", ("disabled", "manual", "automatic", "scheduled"), "admin"),
    ("ml.models.mlflow_alias", str, "champion", None, "user"),
    ("ml.models.mlflow_sync", bool, False, None, "admin"),
    ("ml.performance.accuracy_threshold", float, 0.85, (0.0, 1.0), "user"),
    ("ml.performance.speed_priority", float, 0.5, (0.0, 1.0), "user"),
    ("ml.performance.memory_limit_mb", int, 2048, (512, 32768), "user"),
    ("ml.performance.cpu_limit_percent", int, 50, (10, 100), "user"),
    ("ml.performance.batch_size", int, 32, (1, 1024), "user"),
    ("ml.performance.parallel_workers", int, 4, (1, 32), "user"),
    ("ml.training.learning_rate", float, 0.001, (1e-6, 1.0), "user"),
    ("ml.training.max_iterations", int, 1000, (10, 100000), "user"),
    ("ml.training.convergence_threshold", float, 0.001, (1e-6, 0.1), "user"),
    ("ml.training.early_stopping_enabled", bool, True, None, "user"),
    ("ml.training.early_stopping_patience", int, 5, (1, 1000), "user"),
    ("ml.training.early_stopping_metric", str, "val_loss", None, "user"),
    ("ml.training.early_stopping_mode", str, "min", ("min", "max"), "user"),
    ("ml.training.early_stopping_warmup", int, 0, (0, 100000), "user"),
    ("ml.training.restore_best_weights", bool, False, None, "user"),
    ("ml.training.regularization_l1", float, 0.01, (0.0, 1.0), "user"),
    ("ml.training.regularization_l2", float, 0.01, (0.0, 1.0), "user"),
    ("ml.training.distributed_sync_steps", int, 10, (1, 10000), "user"),  # issue 7, not in the SPEC table
    ("ml.data.retention_days", int, 365, (30, 2555), "admin"),
    ("ml.data.auto_cleanup_enabled", bool, True, None, "admin"),
    ("ml.data.privacy_mode", str, "strict", ("strict", "moderate", "permissive"), "admin"),
    ("ml.data.anonymization_enabled", bool, True, None, "admin"),
    ("ml.data.user_consent_required", bool, True, None, "admin"),
    ("ml.data.opt_out_enabled", bool, True, None, "admin"),
    ("ml.data.sharing_allowed", bool, False, None, "superadmin"),
    # SPEC section 10: "> 0" is written as the smallest accepted value (bounds are inclusive)
    ("ml.data.dp_enabled", bool, False, None, "admin"),
    ("ml.data.dp_target_epsilon", float, 8.0, (0.01, None), "admin"),
    ("ml.data.dp_delta", float, 1e-5, (1e-12, 0.1), "admin"),
    ("ml.data.dp_max_grad_norm", float, 1.0, (1e-6, None), "admin"),
    ("ml.monitoring.accuracy_tracking", bool, True, None, "user"),
    ("ml.monitoring.latency_tracking", bool, True, None, "user"),
    ("ml.monitoring.latency_budget_ms", int, 100, (1, 60000), "user"),
    ("ml.monitoring.drift_detection", bool, True, None, "user"),
    ("ml.monitoring.drift_method", str, "psi", ("psi", "ks"), "user"),
    ("ml.monitoring.drift_threshold", float, 0.2, (0.01, 1.0), "user"),
    ("ml.monitoring.drift_p_value", float, 0.05, (0.0001, 0.2), "user"),
    ("ml.monitoring.resource_alerts", bool, True, None, "user"),
    ("ml.feedback.user_feedback_enabled", bool, True, None, "user"),
    ("ml.feedback.auto_retrain_threshold", float, 0.1, (0.01, 0.5), "user"),
    ("ml.feedback.min_samples", int, 100, (1, 1000000), "user"),
    ("ml.feedback.learning_curve_enabled", bool, True, None, "user"),
    ("ml.experiments.ab_testing_enabled", bool, False, None, "admin"),
    ("ml.experiments.traffic_split_ratio", float, 0.1, (0.01, 0.5), "admin"),
    ("ml.experiments.experiment_duration_days", int, 7, (1, 90), "admin"),
    ("ml.experiments.statistical_significance", float, 0.05, (0.01, 0.1), "admin"),
    ("ml.experiments.min_sample_size", int, 1000, (100, 100000), "admin"),
    ("ml.tuning.n_trials", int, 20, None, "user"),  # min 1, no max: test_tune.py
    ("ml.tuning.sampler", str, "tpe", ("tpe", "random", "qmc"), "user"),
    ("ml.tuning.pruner", str, "median", ("median", "hyperband", "none"), "user"),
    ("ml.tuning.timeout_minutes", float, 0.0, None, "user"),  # min 0, no max: test_tune.py
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.packaged()


def test_catalog_holds_exactly_the_spec_keys(catalog):
    assert sorted(catalog) == sorted(row[0] for row in SPEC_TABLE)


@pytest.mark.parametrize("key,type_,default,limits,access", SPEC_TABLE, ids=[r[0] for r in SPEC_TABLE])
def test_each_key_matches_the_spec_table(catalog, key, type_, default, limits, access):
    spec = catalog[key]
    assert spec.type is type_
    assert spec.default == default and type(spec.default) is type_
    assert spec.access == access
    assert spec.description
    if isinstance(limits, tuple) and isinstance(limits[0], str):
        assert spec.choices == limits
    elif limits is not None:
        assert (spec.min, spec.max) == limits
        assert all(spec.check(bound) == bound for bound in limits if bound is not None)


def test_only_sharing_allowed_is_sensitive(catalog):
    assert [k for k in catalog if catalog[k].sensitive] == ["ml.data.sharing_allowed"]


def test_early_stopping_metric_must_not_be_empty(catalog):
    spec = catalog["ml.training.early_stopping_metric"]
    with pytest.raises(InvalidValueError, match="must not be empty"):
        spec.check("  ")


def test_every_key_records_its_line_in_defaults_toml(catalog):
    with open(catalog.path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for key in catalog:
        assert lines[catalog[key].line - 1] == f"[{key}]"


def test_an_int_is_accepted_for_a_float_key(catalog):
    value = catalog["ml.training.learning_rate"].check(1)
    assert value == 1.0 and type(value) is float


@pytest.mark.parametrize("key", ["ml.training.learning_rate", "ml.performance.batch_size"])
def test_a_bool_is_never_accepted_as_a_number(catalog, key):
    with pytest.raises(InvalidValueError, match="has type bool"):
        catalog[key].check(True)


def test_a_number_is_not_accepted_for_a_bool_key(catalog):
    with pytest.raises(InvalidValueError, match="expected bool"):
        catalog["ml.global.enabled"].check(1)


def test_a_float_is_not_accepted_for_an_int_key(catalog):
    with pytest.raises(InvalidValueError, match="has type float, expected int"):
        catalog["ml.performance.batch_size"].check(64.0)


def test_out_of_range_names_the_limit(catalog):
    spec = catalog["ml.training.learning_rate"]
    with pytest.raises(InvalidValueError) as e:
        spec.check(5.0)
    assert (e.value.rule, e.value.reason) == ("max", "is above the maximum 1.0")
    assert str(e.value) == "ml.training.learning_rate = 5.0 is above the maximum 1.0"
    with pytest.raises(InvalidValueError, match="below the minimum 1e-06"):
        spec.check(0.0)


def test_choices_are_listed_when_a_value_is_not_one_of_them(catalog):
    with pytest.raises(InvalidValueError) as e:
        catalog["ml.monitoring.drift_method"].check("chi2")
    assert e.value.rule == "choices"
    assert "is not one of the allowed values: psi, ks" in str(e.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(catalog, value):
    with pytest.raises(InvalidValueError, match="not a finite number"):
        catalog["ml.performance.speed_priority"].check(value)


def test_invalid_value_is_a_validation_error(catalog):
    with pytest.raises(ValidationError) as e:
        catalog["ml.performance.batch_size"].check("many")
    assert e.value.problems[0].key == "ml.performance.batch_size"


@pytest.mark.parametrize("text,expected", [("true", True), ("FALSE", False), ("1", True),
                                           ("off", False), (" yes ", True)])
def test_strings_coerce_to_bool(catalog, text, expected):
    assert catalog["ml.global.enabled"].check(text, from_string=True) is expected


def test_strings_coerce_to_numbers(catalog):
    assert catalog["ml.training.learning_rate"].check("1e-3", from_string=True) == 0.001
    assert catalog["ml.performance.batch_size"].check("64", from_string=True) == 64


def test_an_unreadable_string_names_the_type(catalog):
    with pytest.raises(InvalidValueError, match='"sixty-four" cannot be read as int'):
        catalog["ml.performance.batch_size"].check("sixty-four", from_string=True)


def test_a_string_key_keeps_its_text_from_strings(catalog):
    assert catalog["ml.training.early_stopping_metric"].check("1e-3", from_string=True) == "1e-3"


def test_numpy_scalars_are_plain_numbers_after_check(catalog):
    np = pytest.importorskip("numpy")
    lr = catalog["ml.training.learning_rate"].check(np.float32(0.5))
    batch = catalog["ml.performance.batch_size"].check(np.int64(64))
    assert (type(lr), lr, type(batch), batch) == (float, 0.5, int, 64)


@pytest.mark.parametrize("key,suggestion", [
    ("ml.training.batch", "ml.performance.batch_size"),
    ("ml.training.learning_rat", "ml.training.learning_rate"),
    ("ml.perf.batch_size", "ml.performance.batch_size"),
    ("ml.training.patience", "ml.training.early_stopping_patience"),
    ("ml.global.enable", "ml.global.enabled"),
    ("ml.data.retention", "ml.data.retention_days"),
    ("ml.training.lr", "ml.training.learning_rate"),
])
def test_unknown_keys_suggest_the_nearest_known_key(catalog, key, suggestion):
    assert catalog.suggest(key)[0] == suggestion


def test_nothing_is_suggested_for_a_key_unlike_any_other(catalog):
    assert catalog.suggest("zebra.stripes") == []


def test_looking_up_an_unknown_key_raises_with_suggestions(catalog):
    with pytest.raises(UnknownKeyError) as e:
        catalog["ml.training.batch"]
    assert str(e.value) == ("unknown preference key 'ml.training.batch'; "
                            "did you mean ml.performance.batch_size?")
    assert isinstance(e.value, KeyError)


def test_a_key_definition_rejects_a_bad_name():
    with pytest.raises(ValueError, match="invalid key name 'Team.Eval'"):
        KeySpec.build("Team.Eval", int, 1)
    with pytest.raises(ValueError, match="invalid key name 'single'"):
        KeySpec.build("single", int, 1)


def test_a_key_definition_rejects_a_default_outside_its_own_range():
    with pytest.raises(ValueError, match="default 0 is below the minimum 1"):
        KeySpec.build("team.eval.every", int, 0, min=1)


def test_a_key_definition_rejects_an_unknown_type_and_access():
    with pytest.raises(ValueError, match="type must be one of"):
        KeySpec.build("team.eval.every", list, [])
    with pytest.raises(ValueError, match="access must be one of"):
        KeySpec.build("team.eval.every", int, 1, access="root")


def test_the_ml_namespace_is_reserved(catalog):
    with pytest.raises(ValueError, match="reserved for built-in keys"):
        catalog.copy().register(KeySpec.build("ml.training.custom", int, 1))


def test_a_key_cannot_be_registered_twice_with_different_definitions(catalog):
    mine = catalog.copy()
    mine.register(KeySpec.build("team.eval.every", int, 1))
    mine.register(KeySpec.build("team.eval.every", int, 1))
    with pytest.raises(ValueError, match="already defined differently"):
        mine.register(KeySpec.build("team.eval.every", int, 2))


def test_copies_do_not_share_registrations(catalog):
    mine = catalog.copy()
    mine.register(KeySpec.build("team.eval.every", int, 1))
    assert "team.eval.every" in mine and "team.eval.every" not in catalog


# -- the five cross-key rules, checked on the resolved view --------------------------


def _client_with(project_dir, toml: str) -> Client:
    (project_dir / "mlprefs.toml").write_text(toml)
    return Client()


def test_rule_1_advanced_features_require_the_global_switch(project_dir):
    with pytest.raises(ValidationError) as e:
        _client_with(project_dir, "ml.features.advanced_enabled = true\n")
    (p,) = e.value.problems
    assert p.rule == "requires-global"
    assert str(p).startswith("ml.features.advanced_enabled = true in ./mlprefs.toml:1 "
                             "requires ml.global.enabled = true")
    with _client_with(project_dir, "ml.features.advanced_enabled = true\n"
                                   "ml.global.enabled = true\n") as prefs:
        assert prefs.enabled("ml.features.advanced_enabled")


def test_rule_2_ab_testing_requires_experiment_tracking(project_dir):
    with pytest.raises(ValidationError) as e:
        _client_with(project_dir, "ml.experiments.ab_testing_enabled = true\n")
    assert [p.rule for p in e.value.problems] == ["requires-tracking"]
    with _client_with(project_dir, "ml.experiments.ab_testing_enabled = true\n"
                                   "ml.features.experiment_tracking = true\n") as prefs:
        assert prefs.get("ml.experiments.ab_testing_enabled") is True


def test_rule_3_memory_must_cover_256_mb_per_worker(project_dir):
    with pytest.raises(ValidationError) as e:
        _client_with(project_dir, "[ml.performance]\nparallel_workers = 16\n")
    (p,) = e.value.problems
    assert p.rule == "memory-per-worker" and p.key == "ml.performance.memory_limit_mb"
    assert "is below 256 MB x parallel_workers = 4096" in str(p)
    assert "ml.performance.parallel_workers = 16 from ./mlprefs.toml:2" in str(p)
    with _client_with(project_dir, "[ml.performance]\nparallel_workers = 16\n"
                                   "memory_limit_mb = 4096\n") as prefs:
        assert prefs.get("ml.performance.parallel_workers") == 16


def test_rule_4_strict_privacy_forbids_sharing_and_requires_anonymization(project_dir):
    with pytest.raises(ValidationError) as e:
        _client_with(project_dir, "[ml.data]\nsharing_allowed = true\nanonymization_enabled = false\n")
    assert sorted(p.key for p in e.value.problems) == ["ml.data.anonymization_enabled",
                                                       "ml.data.sharing_allowed"]
    assert {p.rule for p in e.value.problems} == {"strict-privacy"}
    with _client_with(project_dir, '[ml.data]\nprivacy_mode = "permissive"\n'
                                   "sharing_allowed = true\nanonymization_enabled = false\n") as prefs:
        assert prefs.get("ml.data.sharing_allowed") is True


def test_rule_5_a_batch_size_that_is_not_a_power_of_two_is_only_a_warning(project_dir, caplog):
    with _client_with(project_dir, "ml.performance.batch_size = 48\n") as prefs:
        assert prefs.get("ml.performance.batch_size") == 48
        (w,) = prefs.warnings
    assert w.rule == "batch-power-of-two" and w.severity == "warning"
    assert "ml.performance.batch_size = 48 in ./mlprefs.toml:1 is not a power of two" in str(w)
    assert "is not a power of two" in caplog.text


def test_a_power_of_two_batch_size_gives_no_warning(project_dir):
    with _client_with(project_dir, "ml.performance.batch_size = 64\n") as prefs:
        assert prefs.warnings == ()


def test_did_you_mean_is_bounded_to_the_first_unknown_keys_of_a_resolve(catalog):
    from mlprefs_sdk.layers import defaults_layer, mapping_layer
    from mlprefs_sdk.resolve import SUGGEST_BUDGET, resolve

    typos = {f"ml.training.learnin_rate{i}": 0.1 for i in range(SUGGEST_BUDGET + 50)}
    _, problems = resolve(catalog, [defaults_layer(catalog), mapping_layer("file", typos)])
    hinted = [p for p in problems if "did you mean ml.training.learning_rate" in p.message]
    assert len(problems) == SUGGEST_BUDGET + 50
    assert hinted == problems[:SUGGEST_BUDGET]


def test_a_validation_error_lists_20_problems_and_counts_the_rest(catalog):
    from mlprefs_sdk.values import Problem

    problems = [Problem(f"k{i}", i, f"k{i} is wrong") for i in range(25)]
    lines = str(ValidationError(problems)).splitlines()
    assert lines[0] == "25 problems found in mlprefs preferences:"
    assert lines[1:21] == [f"  k{i} is wrong" for i in range(20)]
    assert lines[21:] == ["  ... and 5 more problems (every one is in .problems)"]


@pytest.fixture(scope="module")
def large_catalog() -> Catalog:
    """The packaged keys plus 10,000 registered ones: past the size where suggest() scores all."""
    large = Catalog.packaged()
    for i in range(10_000):
        large.register(KeySpec.build(f"team.group{i % 100}.metric_{i}", "int", 1))
    return large


@pytest.mark.parametrize("key,suggestion", [
    ("ml.training.batch", "ml.performance.batch_size"),
    ("ml.training.learning_rat", "ml.training.learning_rate"),
    ("ml.perf.batch_size", "ml.performance.batch_size"),
    ("ml.training.patience", "ml.training.early_stopping_patience"),
    ("ml.global.enable", "ml.global.enabled"),
    ("ml.data.retention", "ml.data.retention_days"),
    ("ml.training.lr", "ml.training.learning_rate"),
    ("team.group7.metric_7x", "team.group7.metric_7"),
])
def test_a_catalog_of_10000_keys_still_suggests_the_nearest_key(large_catalog, key, suggestion):
    assert suggestion in large_catalog.suggest(key)


def test_a_large_catalog_scores_a_bounded_number_of_candidates(large_catalog):
    from mlprefs_sdk.catalog import CANDIDATES, SCAN_ALL

    assert len(large_catalog) > SCAN_ALL
    assert len(large_catalog._candidates("team.group7.metric_7x")) <= 4 * CANDIDATES
