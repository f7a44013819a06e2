"""MlprefsProvider through the real OpenFeature SDK: values, reasons, error codes, metadata,
experiment arms, and PROVIDER_CONFIGURATION_CHANGED on a hot reload."""

from __future__ import annotations

import threading

import pytest
from _watch_helpers import wait_for

from mlprefs_sdk import Client

pytest.importorskip("openfeature")
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from mlprefs_sdk.integrations.openfeature import MlprefsProvider

LR = "ml.training.learning_rate"


@pytest.fixture
def flags(request):
    """An OpenFeature client of a domain of this test's own; the API's providers are cleared
    afterwards (the API is process-global)."""
    made = []

    def connect(prefs):
        domain = request.node.name
        api.set_provider_and_wait(MlprefsProvider(prefs), domain=domain)
        client = api.get_client(domain=domain)
        made.append(client)
        return client

    yield connect
    api.clear_providers()


@pytest.fixture
def prefs(home):
    with Client(user="ana") as client:
        yield client


def test_a_key_from_a_file_resolves_static_with_its_source_in_the_metadata(home, project_dir, flags):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\n\nlearning_rate = 0.02\n")
    with Client() as prefs:
        details = flags(prefs).get_float_details(LR, 0.5)
    assert details.value == 0.02 and details.reason == Reason.STATIC and details.error_code is None
    assert details.flag_metadata["layer"] == "project-file"
    assert details.flag_metadata["path"] == str(project_dir / "mlprefs.toml")
    assert details.flag_metadata["line"] == 3


def test_a_catalog_default_resolves_with_reason_default(prefs, flags):
    details = flags(prefs).get_integer_details("ml.performance.batch_size", 1)
    assert (details.value, details.reason) == (32, Reason.DEFAULT)
    assert details.flag_metadata["layer"] == "defaults"


def test_every_type_of_key_is_served_by_its_getter(prefs, flags):
    client = flags(prefs)
    assert client.get_boolean_value("ml.models.fallback_enabled", False) is True
    assert client.get_string_value("ml.monitoring.drift_method", "x") == "psi"
    assert client.get_integer_value("ml.training.max_iterations", 0) == 1000
    assert client.get_float_value(LR, 0.5) == 0.001


def test_an_unknown_key_gives_the_default_with_flag_not_found(prefs, flags):
    details = flags(prefs).get_float_details("ml.training.learning_rat", 0.5)
    assert details.value == 0.5 and details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert "ml.training.learning_rate" in details.error_message  # the suggestion


def test_a_getter_of_the_wrong_type_gives_the_default_with_type_mismatch(prefs, flags):
    client = flags(prefs)
    details = client.get_string_details(LR, "none")
    assert details.value == "none" and details.error_code == ErrorCode.TYPE_MISMATCH
    details = client.get_float_details("ml.performance.batch_size", 1.5)  # an int key
    assert details.value == 1.5 and details.error_code == ErrorCode.TYPE_MISMATCH


def test_a_feature_gated_off_by_the_master_switch_is_disabled(prefs, flags):
    client = flags(prefs)
    details = client.get_boolean_details("ml.features.naive_enabled", True)  # on by default
    assert (details.value, details.reason) == (False, Reason.DISABLED)
    assert details.flag_metadata["gated_by"] == "ml.global.enabled"
    with prefs.override({"ml.global.enabled": True}):
        details = client.get_boolean_details("ml.features.naive_enabled", False)
        assert (details.value, details.reason) == (True, Reason.DEFAULT)


def test_a_feature_off_by_its_own_value_is_not_disabled(prefs, flags):
    details = flags(prefs).get_boolean_details("ml.features.auto_optimization", True)
    assert (details.value, details.reason) == (False, Reason.DEFAULT)


def test_an_experiment_flag_returns_the_units_arm_with_reason_split(home, flags):
    enable = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True}
    with Client(user="ana", overrides=enable) as prefs:
        prefs.experiments.create("ranker", "v1", "v2", traffic_split_ratio=0.5)
        client = flags(prefs)
        for unit in ("u1", "u2", "u3", "u4"):
            details = client.get_string_details("experiment:ranker", "control",
                                                EvaluationContext(targeting_key=unit))
            assert details.value == prefs.experiments.assign("ranker", unit)
            assert details.reason == Reason.SPLIT and details.variant == details.value
        missing = client.get_string_details("experiment:ranker", "control")
        assert missing.error_code == ErrorCode.TARGETING_KEY_MISSING
        unknown = client.get_string_details("experiment:nope", "control",
                                            EvaluationContext(targeting_key="u1"))
        assert unknown.error_code == ErrorCode.FLAG_NOT_FOUND and unknown.value == "control"


def test_a_set_is_served_at_once(prefs, flags):
    client = flags(prefs)
    assert client.get_float_value(LR, 0.5) == 0.001
    prefs.set(LR, 0.03)
    details = client.get_float_details(LR, 0.5)
    assert details.value == 0.03 and details.flag_metadata["layer"] == "user"


def test_a_hot_reload_emits_configuration_changed_naming_the_changed_keys(home, project_dir, flags):
    path = project_dir / "mlprefs.toml"
    path.write_text("[ml.training]\nlearning_rate = 0.02\n")
    events, arrived = [], threading.Event()

    def handler(details):
        events.append(details)
        arrived.set()

    with Client(watch=True) as prefs:
        client = flags(prefs)
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
        path.write_text("[ml.training]\nlearning_rate = 0.05\nmax_iterations = 70\n")
        assert wait_for(arrived.is_set)
        assert sorted(events[0].flags_changed) == [LR, "ml.training.max_iterations"]
        assert client.get_float_value(LR, 0.5) == 0.05


def test_the_master_switch_names_the_feature_flags_it_flips(home, project_dir, flags):
    (project_dir / "mlprefs.toml").write_text("[ml.features]\nexperiment_tracking = true\n")
    events = []
    with Client() as prefs:
        client = flags(prefs)
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, events.append)
        prefs.set("ml.global.enabled", True)
        assert wait_for(lambda: events)  # the SDK runs handlers on a thread pool of its own
    # naive_enabled (on by default) and experiment_tracking flip; advanced_enabled stays off
    assert sorted(events[0].flags_changed) == [
        "ml.features.experiment_tracking", "ml.features.naive_enabled", "ml.global.enabled"]


def test_a_replaced_provider_stops_listening(prefs, flags):
    provider = MlprefsProvider(prefs)
    emitted = []  # what the SDK would run its handlers for (later, on a thread pool)
    provider.emit_provider_configuration_changed = emitted.append
    api.set_provider_and_wait(provider, domain="replaced")
    prefs.set(LR, 0.02)
    assert len(emitted) == 1
    api.clear_providers()
    prefs.set(LR, 0.03)
    assert len(emitted) == 1


def test_importing_the_provider_without_openfeature_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "openfeature", None)
    monkeypatch.delitem(sys.modules, "mlprefs_sdk.integrations.openfeature")
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[openfeature\]"'):
        importlib.import_module("mlprefs_sdk.integrations.openfeature")
