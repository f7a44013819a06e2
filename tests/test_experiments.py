"""A/B experiments: gating, deterministic sticky assignment, batched outcomes, analysis."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlprefs_sdk import Client, FeatureDisabledError
from mlprefs_sdk.cli import main
from mlprefs_sdk.services.experiments import (
    CONTROL_WINS,
    KEEP_RUNNING,
    NO_DIFFERENCE,
    STOPPED_EARLY,
    TREATMENT_WINS,
    ExperimentExistsError,
    ExperimentNotFoundError,
    ExperimentStateError,
    InvalidExperimentError,
    InvalidOutcomeError,
    InvalidUnitError,
)
from mlprefs_sdk.services.registry import ModelNotFoundError
from mlprefs_sdk.services.stats import Moments, compare

scipy_stats = pytest.importorskip("scipy.stats")

ENABLE = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True}
DAYS_AGO = time.time() - 10 * 86400


@pytest.fixture
def lab(home):
    with Client(user="ana", overrides=ENABLE) as client:
        yield client


def documented_arm(salt: str, unit: str, ratio: float) -> str:
    digest = hashlib.sha256(salt.encode() + b"\x00" + unit.encode()).digest()
    return "treatment" if int.from_bytes(digest[:8], "big") / 2 ** 64 < ratio else "control"


def rows(client, table: str) -> int:
    client.experiments.flush()
    return client.store.query(f"SELECT COUNT(*) FROM {table}")[0][0]


def run_conversion(client, name, n_units, p_control, p_treatment, seed=1):
    rng = random.Random(seed)
    for i in range(n_units):
        unit = f"user-{i}"
        p = p_treatment if client.experiments.assign(name, unit) == "treatment" else p_control
        client.experiments.record(name, unit, int(rng.random() < p))


# -- gating -------------------------------------------------------------------------------
def test_experiments_are_refused_unless_ab_testing_is_enabled(home):
    with Client() as prefs:
        with pytest.raises(FeatureDisabledError, match="ml.experiments.ab_testing_enabled"):
            prefs.experiments.create("checkout", "old", "new")
        for call in (lambda: prefs.experiments.assign("checkout", "u1"),
                     lambda: prefs.experiments.record("checkout", "u1", 1),
                     lambda: prefs.experiments.analyze("checkout"),
                     prefs.experiments.list):
            with pytest.raises(FeatureDisabledError):
                call()


# -- definition ---------------------------------------------------------------------------
def test_create_takes_its_defaults_from_the_live_preferences(lab):
    exp = lab.experiments.create("checkout", "old", "new")
    assert (exp.metric, exp.salt, exp.traffic_split_ratio, exp.created_by) == (
        "conversion", "checkout", None, "ana")
    analysis = lab.experiments.analyze("checkout")
    assert (analysis.traffic_split_ratio, analysis.min_sample_size, analysis.duration_days,
            analysis.confidence) == (0.1, 1000, 7, 0.95)


def test_an_existing_experiment_name_is_refused(lab):
    lab.experiments.create("checkout", "old", "new")
    with pytest.raises(ExperimentExistsError, match="'checkout' exists already"):
        lab.experiments.create("checkout", "a", "b", metric="mean")
    assert lab.experiments.get("checkout").metric == "conversion"


@pytest.mark.parametrize("kwargs,match", [
    ({"metric": "median"}, "metric"),
    ({"traffic_split_ratio": 0.9}, "above the maximum 0.5"),
    ({"min_sample_size": 5}, "below the minimum 100"),
    ({"control": "same", "treatment": "same"}, "both 'same'"),
    ({"treatment": "models:/churn"}, "models:/<name>/<version>"),
])
def test_malformed_definitions_are_refused_and_nothing_is_written(lab, kwargs, match):
    args = {"control": "old", "treatment": "new", **kwargs}
    with pytest.raises(InvalidExperimentError, match=match):
        lab.experiments.create("checkout", **args)
    assert lab.experiments.list() == []


def test_an_unknown_model_version_as_an_arm_is_refused(lab):
    lab.models.register("churn", 1)
    with pytest.raises(ModelNotFoundError):
        lab.experiments.create("checkout", "models:/churn/1", "models:/churn/2")
    assert lab.experiments.list() == []


def test_an_unknown_experiment_is_named_in_the_error(lab):
    with pytest.raises(ExperimentNotFoundError, match="no experiment named 'nope'"):
        lab.experiments.assign("nope", "u1")


# -- assignment -----------------------------------------------------------------------------
def test_assignment_follows_the_documented_hash(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.3)
    for i in range(500):
        assert lab.experiments.assign("checkout", f"u{i}") == documented_arm("checkout", f"u{i}", 0.3)


def test_an_int_unit_id_is_its_decimal_text(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5)
    assert [lab.experiments.assign("checkout", i) for i in range(50)] == [
        documented_arm("checkout", str(i), 0.5) for i in range(50)]


@pytest.mark.parametrize("unit", [1.5, None, True, b"u1", ("u",), ""])
def test_a_unit_id_of_the_wrong_type_is_refused_and_nothing_is_written(lab, unit):
    lab.experiments.create("checkout", "old", "new")
    with pytest.raises(InvalidUnitError):
        lab.experiments.assign("checkout", unit)
    with pytest.raises(InvalidUnitError):
        lab.experiments.record("checkout", unit, 1)
    assert rows(lab, "experiment_units") == 0 and rows(lab, "experiment_outcomes") == 0


def test_the_treatment_share_is_the_traffic_split_ratio(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.2)
    n = 20_000
    treated = sum(lab.experiments.assign("checkout", f"u{i}") == "treatment" for i in range(n))
    assert abs(treated - 0.2 * n) < 4 * (n * 0.2 * 0.8) ** 0.5


SCRIPT = """
import json
from mlprefs_sdk import Client
from mlprefs_sdk.services.experiments import ExperimentExistsError
with Client(overrides={"ml.features.experiment_tracking": True,
                       "ml.experiments.ab_testing_enabled": True}) as prefs:
    try:
        prefs.experiments.create("checkout", "old", "new", traffic_split_ratio=0.4)
    except ExperimentExistsError:
        pass
    print(json.dumps([prefs.experiments.assign("checkout", f"user-{i}") for i in range(300)]))
"""


def test_every_process_and_every_store_assigns_alike(lab, tmp_path):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.4)
    here = [lab.experiments.assign("checkout", f"user-{i}") for i in range(300)]
    lab.experiments.flush()
    homes = [os.environ["MLPREFS_HOME"], str(tmp_path / "other-machine")]
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "MLPREFS_HOME": h}) for h in homes]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [json.loads(out) for out in outputs] == [here, here]
    assert "treatment" in here and "control" in here


def test_assignments_stick_when_the_ratio_changes(home):
    units = [f"u{i}" for i in range(3000)]
    with Client(overrides=ENABLE) as first:
        first.experiments.create("checkout", "old", "new")
        before = [first.experiments.assign("checkout", u) for u in units]
    with Client(overrides=ENABLE) as second:
        second.set("ml.experiments.traffic_split_ratio", 0.5)
        after = [second.experiments.assign("checkout", u) for u in units]
        fresh = [second.experiments.assign("checkout", f"new-{i}") for i in range(3000)]
    assert after == before
    assert before.count("treatment") < 450 and 1300 < fresh.count("treatment") < 1700


def test_units_assigned_by_two_clients_are_counted_once(home):
    with Client(overrides=ENABLE) as first:
        first.experiments.create("checkout", "old", "new")
        for i in range(1000):
            first.experiments.assign("checkout", f"u{i}")
    with Client(overrides=ENABLE) as second:
        for i in range(500, 1500):
            second.experiments.assign("checkout", f"u{i}")
        analysis = second.experiments.analyze("checkout")
        assert analysis.control.units + analysis.treatment.units == 1500
        assert rows(second, "experiment_units") == 1500


def test_a_full_unit_cache_restarts_without_losing_an_assignment(lab, monkeypatch):
    import mlprefs_sdk.services.experiments as experiments

    monkeypatch.setattr(experiments, "KNOWN_UNITS_MAX", 10)
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5)
    first = [lab.experiments.assign("checkout", f"u{i}") for i in range(100)]
    assert [lab.experiments.assign("checkout", f"u{i}") for i in range(100)] == first
    assert rows(lab, "experiment_units") == 100
    assert lab.experiments.analyze("checkout").control.units + first.count("treatment") == 100


def test_a_ratio_change_is_not_a_sample_ratio_mismatch(lab):
    lab.experiments.create("checkout", "old", "new")
    for i in range(3000):
        lab.experiments.assign("checkout", f"early-{i}")
    lab.set("ml.experiments.traffic_split_ratio", 0.5)
    for i in range(3000):
        lab.experiments.assign("checkout", f"late-{i}")
    analysis = lab.experiments.analyze("checkout")
    assert analysis.treatment.units > 1500
    assert analysis.srm_p_value > 0.001 and not analysis.srm_detected


# -- storage and privacy --------------------------------------------------------------------
def store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("prefs.db"))


def test_unit_ids_are_stored_only_as_pseudonyms_under_anonymisation(home):
    with Client(overrides=ENABLE) as prefs:
        prefs.experiments.create("checkout", "old", "new")
        prefs.experiments.record("checkout", "alice@example.com", 1)
        prefs.experiments.flush()
        stored = prefs.store.query("SELECT unit FROM experiment_units")
        assert stored == [(prefs._pseudonym("alice@example.com"),)]
        assert prefs.store.query("SELECT unit FROM experiment_outcomes") == stored
    assert b"alice@example.com" not in store_bytes(home)


def test_unit_ids_are_stored_raw_when_anonymisation_is_off(home):
    overrides = {**ENABLE, "ml.data.privacy_mode": "permissive",
                 "ml.data.anonymization_enabled": False}
    with Client(overrides=overrides) as prefs:
        prefs.experiments.create("checkout", "old", "new")
        prefs.experiments.record("checkout", "alice", 0)
        prefs.experiments.flush()
        assert prefs.store.query("SELECT unit, arm FROM experiment_units") == [
            ("alice", prefs.experiments.assign("checkout", "alice"))]


def test_turning_anonymisation_on_mid_experiment_stops_raw_ids_at_once(home):
    with Client(overrides=ENABLE) as prefs:
        prefs.set("ml.data.privacy_mode", "permissive")
        prefs.set("ml.data.anonymization_enabled", False)
        prefs.experiments.create("checkout", "old", "new")
        prefs.experiments.record("checkout", "early-unit", 1)
        prefs.experiments.flush()
        prefs.experiments.record("checkout", "late-unit", 0)  # buffered while still off
        prefs.set("ml.data.anonymization_enabled", True)
        prefs.experiments.flush()
        stored = {u for (u,) in prefs.store.query("SELECT unit FROM experiment_outcomes")}
        assert stored == {"early-unit", prefs._pseudonym("late-unit")}


AT_EXIT = """
from mlprefs_sdk import Client
prefs = Client(overrides={"ml.features.experiment_tracking": True,
                          "ml.experiments.ab_testing_enabled": True})
prefs.experiments.create("checkout", "old", "new")
for i in range(50):
    prefs.experiments.record("checkout", f"u{i}", i % 2)
"""  # exits without close() or flush()


def test_buffered_outcomes_are_written_when_the_process_exits_without_close(home):
    subprocess.run([sys.executable, "-c", AT_EXIT], check=True, timeout=120)
    with Client(overrides=ENABLE) as prefs:
        assert rows(prefs, "experiment_outcomes") == 50


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_write_its_parents_buffer_again(lab):
    lab.experiments.create("checkout", "old", "new")
    for i in range(10):
        lab.experiments.record("checkout", f"parent-{i}", 1)
    pid = os.fork()
    if pid == 0:  # the child: record its own rows, write them, leave without cleanup
        code = 1
        try:
            for i in range(5):
                lab.experiments.record("checkout", f"child-{i}", 0)
            code = 0 if lab.experiments.flush() == 10 else 3  # 5 units + 5 outcomes
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rows(lab, "experiment_outcomes") == 15


def test_buffered_outcomes_survive_client_close(home):
    with Client(overrides=ENABLE) as prefs:
        prefs.experiments.create("checkout", "old", "new", metric="mean")
        for i in range(100):
            prefs.experiments.record("checkout", f"u{i}", float(i))
    with Client(overrides=ENABLE) as again:
        analysis = again.experiments.analyze("checkout")
    assert analysis.control.n + analysis.treatment.n == 100


def test_buffered_outcomes_reach_the_store_without_a_flush_call(home):
    with Client(overrides=ENABLE) as prefs, Client(overrides=ENABLE) as reader:
        prefs.experiments.create("checkout", "old", "new")
        for i in range(10):
            prefs.experiments.record("checkout", f"u{i}", 1)
        deadline = time.monotonic() + 10
        count = 0
        while count < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
            count = reader.store.query("SELECT COUNT(*) FROM experiment_outcomes")[0][0]
        assert count == 10


def test_a_conversion_outcome_outside_0_and_1_is_refused_and_nothing_is_written(lab):
    lab.experiments.create("checkout", "old", "new")
    for bad in (2, -1, 0.5, "1", None):
        with pytest.raises(InvalidOutcomeError, match="must be 0 or 1"):
            lab.experiments.record("checkout", "u1", bad)
    assert rows(lab, "experiment_outcomes") == 0 and rows(lab, "experiment_units") == 0


def test_a_non_numeric_outcome_for_a_mean_metric_is_refused(lab):
    lab.experiments.create("latency", "old", "new", metric="mean")
    for bad in ("fast", None, float("nan"), True):
        with pytest.raises(InvalidOutcomeError, match="finite number"):
            lab.experiments.record("latency", "u1", bad)
    assert rows(lab, "experiment_outcomes") == 0


def test_record_many_checks_every_row_before_keeping_any(lab):
    lab.experiments.create("checkout", "old", "new")
    with pytest.raises(InvalidOutcomeError, match="row 3"):
        lab.experiments.record_many("checkout", [("a", 1), ("b", 0), ("c", 7)])
    assert rows(lab, "experiment_outcomes") == 0
    assert lab.experiments.record_many("checkout", [("a", 1), ("b", 0, 1_700_000_000)]) == 2
    assert rows(lab, "experiment_outcomes") == 2


# -- analysis ---------------------------------------------------------------------------------
def test_analysis_matches_a_direct_computation(lab):
    lab.experiments.create("latency", "old", "new", metric="mean", traffic_split_ratio=0.5)
    rng = random.Random(4)
    values = {"control": [], "treatment": []}
    for i in range(400):
        arm = lab.experiments.assign("latency", f"u{i}")
        v = rng.gauss(100 if arm == "control" else 97, 15)
        values[arm].append(v)
        lab.experiments.record("latency", f"u{i}", v)
    a = lab.experiments.analyze("latency")
    ref = scipy_stats.ttest_ind(values["treatment"], values["control"], equal_var=False)
    expected = compare("mean", Moments.of(values["control"]), Moments.of(values["treatment"]), 0.05)
    assert (a.control.n, a.treatment.n) == (len(values["control"]), len(values["treatment"]))
    assert a.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert a.ci == pytest.approx(expected.ci, rel=1e-9)
    assert a.treatment.variance == pytest.approx(Moments.of(values["treatment"]).variance, rel=1e-9)


def test_no_winner_before_the_minimum_sample_even_when_significant(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5,
                           started_at=DAYS_AGO)
    run_conversion(lab, "checkout", 400, 0.1, 0.6)
    a = lab.experiments.analyze("checkout")
    assert a.significant and not a.sample_reached and a.duration_reached
    assert a.decision == KEEP_RUNNING and "of 1000 outcomes" in a.reason


def test_no_winner_before_the_experiment_duration_even_when_significant(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5,
                           min_sample_size=100)
    run_conversion(lab, "checkout", 400, 0.1, 0.6)
    a = lab.experiments.analyze("checkout")
    assert a.significant and a.sample_reached and not a.duration_reached
    assert a.decision == KEEP_RUNNING and "of 7 days" in a.reason


def test_treatment_wins_once_sample_and_duration_are_reached(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5,
                           min_sample_size=100, started_at=DAYS_AGO)
    run_conversion(lab, "checkout", 2000, 0.10, 0.16)
    a = lab.experiments.analyze("checkout")
    assert a.decision == TREATMENT_WINS and a.effect > 0 and a.ci[0] > 0


def test_control_wins_when_lower_is_better_and_the_treatment_is_slower(lab):
    lab.experiments.create("latency", "old", "new", metric="mean", traffic_split_ratio=0.5,
                           min_sample_size=100, started_at=DAYS_AGO, higher_is_better=False)
    rng = random.Random(9)
    for i in range(600):
        arm = lab.experiments.assign("latency", f"u{i}")
        lab.experiments.record("latency", f"u{i}", rng.gauss(120 if arm == "treatment" else 100, 10))
    assert lab.experiments.analyze("latency").decision == CONTROL_WINS


def test_no_detectable_difference_between_identical_arms(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5,
                           min_sample_size=100, started_at=DAYS_AGO)
    run_conversion(lab, "checkout", 2000, 0.2, 0.2, seed=2)
    a = lab.experiments.analyze("checkout")
    assert a.decision == NO_DIFFERENCE and a.ci[0] < 0 < a.ci[1]
    assert a.required_per_arm is None or a.required_per_arm[0] > 1000


def test_a_sample_ratio_mismatch_is_flagged_and_blocks_a_decision(lab):
    lab.experiments.create("checkout", "old", "new", traffic_split_ratio=0.5,
                           min_sample_size=100, started_at=DAYS_AGO)
    run_conversion(lab, "checkout", 2000, 0.10, 0.16)
    lab.experiments.flush()
    with lab.store.transaction() as db:  # a third of the treatment exposures never arrived
        db.execute("UPDATE experiment_assignments SET n = n * 2 / 3 WHERE arm = 'treatment'")
    a = lab.experiments.analyze("checkout")
    assert a.srm_detected and a.srm_p_value < 0.001
    assert a.decision == KEEP_RUNNING and "sample ratio mismatch" in a.reason


def test_too_few_outcomes_give_no_test_and_keep_running(lab):
    lab.experiments.create("checkout", "old", "new")
    lab.experiments.record("checkout", "u1", 1)
    a = lab.experiments.analyze("checkout")
    assert a.p_value is None and a.decision == KEEP_RUNNING


# -- conclusion -------------------------------------------------------------------------------
def model_experiment(lab, **kwargs):
    lab.models.register("churn", 1, status="active", metrics={"accuracy": 0.9})
    lab.models.register("churn", 2, metrics={"accuracy": 0.91})
    lab.experiments.create("churn-v2", "models:/churn/1", lab.models.get("churn", 2),
                           traffic_split_ratio=0.5, min_sample_size=100, **kwargs)


def test_conclude_promotes_the_winning_model_version_and_records_the_decision(lab):
    model_experiment(lab, started_at=DAYS_AGO)
    run_conversion(lab, "churn-v2", 2000, 0.10, 0.16)
    conclusion = lab.experiments.conclude("churn-v2")
    assert conclusion.decision == TREATMENT_WINS and conclusion.promoted.version == "2"
    assert lab.models.get("churn").version == "2"
    assert "experiment churn-v2" in lab.models.moves("churn")[0].reason
    exp = lab.experiments.get("churn-v2")
    assert (exp.decision, exp.concluded_by) == (TREATMENT_WINS, "ana")
    with pytest.raises(ExperimentStateError, match="concluded already"):
        lab.experiments.conclude("churn-v2")


def test_conclude_without_promote_leaves_the_registry_alone(lab):
    model_experiment(lab, started_at=DAYS_AGO)
    run_conversion(lab, "churn-v2", 2000, 0.10, 0.16)
    assert lab.experiments.conclude("churn-v2", promote=False).promoted is None
    assert lab.models.get("churn").version == "1"


def test_conclude_refuses_an_experiment_that_must_keep_running_unless_forced(lab):
    model_experiment(lab)
    run_conversion(lab, "churn-v2", 2000, 0.10, 0.16)
    with pytest.raises(ExperimentStateError, match="not ready to conclude"):
        lab.experiments.conclude("churn-v2")
    conclusion = lab.experiments.conclude("churn-v2", force=True)
    assert conclusion.decision == STOPPED_EARLY and conclusion.promoted is None
    assert lab.models.get("churn").version == "1"


# -- CLI ----------------------------------------------------------------------------------
def enable_by_cli() -> None:
    assert main(["set", "ml.features.experiment_tracking", "true"]) == 0
    assert main(["set", "ml.experiments.ab_testing_enabled", "true"]) == 0


def test_cli_runs_an_experiment_from_create_to_conclude(home, tmp_path, capsys):
    enable_by_cli()
    assert main(["experiments", "create", "latency", "--control", "old", "--treatment", "new",
                 "--metric", "mean", "--ratio", "0.5", "--min-sample-size", "100",
                 "--duration-days", "1"]) == 0
    assert main(["experiments", "assign", "latency", "alice"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] in ("control", "treatment")
    rng = random.Random(1)
    lines = ["unit,value"] + [f"u{i},{rng.gauss(10, 2)}" for i in range(400)]
    (tmp_path / "outcomes.csv").write_text("\n".join(lines) + "\n")
    assert main(["experiments", "record", "latency", "--csv", str(tmp_path / "outcomes.csv")]) == 0
    assert main(["experiments", "record", "latency", "alice", "9.5"]) == 0
    capsys.readouterr()
    assert main(["experiments", "analyze", "latency"]) == 0
    table = capsys.readouterr().out
    assert "Welch t" in table and "SRM p-value" in table and "KEEP RUNNING" in table
    assert main(["--json", "experiments", "analyze", "latency"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["control"]["n"] + data["treatment"]["n"] == 401
    assert data["decision"] == "keep_running"
    assert main(["experiments", "conclude", "latency"]) == 1
    assert main(["experiments", "conclude", "latency", "--force"]) == 0
    assert main(["experiments", "list"]) == 0
    assert "STOPPED EARLY" in capsys.readouterr().out


def test_cli_records_nothing_from_a_csv_with_a_bad_row(home, tmp_path, capsys):
    enable_by_cli()
    assert main(["experiments", "create", "checkout", "--control", "a", "--treatment", "b"]) == 0
    (tmp_path / "bad.csv").write_text("unit,value\nu1,1\nu2,3\n")
    assert main(["experiments", "record", "checkout", "--csv", str(tmp_path / "bad.csv")]) == 1
    assert "must be 0 or 1" in capsys.readouterr().err
    with Client() as prefs:
        assert prefs.store.query("SELECT COUNT(*) FROM experiment_outcomes")[0][0] == 0


def test_cli_refuses_experiments_while_they_are_disabled(home, capsys):
    assert main(["experiments", "list"]) == 1
    assert "ab_testing_enabled" in capsys.readouterr().err


def test_experiments_work_the_same_on_every_store_backend(store_url):
    with Client(store=store_url, user="ana", overrides=ENABLE) as prefs:
        prefs.models.register("churn", 1, status="active")
        prefs.models.register("churn", 2)
        prefs.experiments.create("churn-v2", "models:/churn/1", "models:/churn/2",
                                 traffic_split_ratio=0.5, min_sample_size=100,
                                 started_at=DAYS_AGO)
        run_conversion(prefs, "churn-v2", 2000, 0.10, 0.16)
        analysis = prefs.experiments.analyze("churn-v2")
        assert analysis.control.units + analysis.treatment.units == 2000
        assert analysis.control.n + analysis.treatment.n == 2000
        assert analysis.decision == TREATMENT_WINS
        assert prefs.experiments.conclude("churn-v2").promoted.version == "2"
