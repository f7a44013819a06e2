"""MLflow bridges against a real local MLflow (SQLite tracking and registry store, no server):
preferences and their live edits in the active run, and MLflow's registry in prefs.models."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlprefs_sdk import Client

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient

pytestmark = [
    # MLflow's SQL store runs on SQLAlchemy/alembic versions that warn about their own APIs.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

LR = "ml.training.learning_rate"
TRACKING_ON = "[ml.global]\nenabled = true\n[ml.features]\nexperiment_tracking = true\n"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite database for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracking(mlflow_uri, request, monkeypatch):
    """MLflow pointed at the local database, in an experiment of this test's own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    experiment = mlflow.set_experiment(request.node.name)
    yield MlflowClient(mlflow_uri)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    assert experiment.experiment_id


def train(prefs, steps=6, edit_at=None, edit=None):
    hooks = prefs.training_hooks()
    hooks.on_train_start()
    for step in range(steps):
        if step == edit_at:
            edit()
        hooks.on_step_end(step)
    hooks.on_train_end()
    return hooks


# -- tracking --------------------------------------------------------------------------------
def test_train_start_logs_every_key_as_a_param_with_its_source_as_a_tag(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON + "[ml.training]\nlearning_rate = 0.005\n")
    with Client() as prefs, mlflow.start_run() as run:
        train(prefs, steps=1)
        expected = set(prefs.snapshot())
        default_source = str(prefs.explain("ml.training.max_iterations").source)
    data = tracking.get_run(run.info.run_id).data
    assert set(data.params) == expected
    assert data.params[LR] == "0.005"
    assert data.tags[f"mlprefs.source.{LR}"].endswith("mlprefs.toml:6")
    assert data.tags["mlprefs.source.ml.training.max_iterations"] == default_source
    assert default_source.endswith(f".toml:{prefs.spec('ml.training.max_iterations').line}")
    assert data.params["ml.data.sharing_allowed"] == "********"  # a sensitive key is masked


def test_a_set_mid_run_is_a_metric_at_the_step_it_landed(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    with Client() as prefs, mlflow.start_run() as run:
        hooks = train(prefs, steps=6, edit_at=3, edit=lambda: prefs.set(LR, 0.01))
    history = tracking.get_metric_history(run.info.run_id, f"mlprefs/{LR}")
    assert [(m.step, m.value) for m in history] == [(4, 0.01)]
    assert hooks.steps == 6
    assert tracking.get_run(run.info.run_id).data.tags[f"mlprefs.source.{LR}"].startswith("user")


def test_a_file_edit_mid_run_lands_as_a_metric_and_a_bool_as_0_or_1(tracking, project_dir):
    path = project_dir / "mlprefs.toml"
    path.write_text(TRACKING_ON + "[ml.training]\nregularization_l2 = 0.0\n")

    def edit():
        path.write_text(TRACKING_ON + "[ml.training]\nregularization_l2 = 0.5\n"
                        "early_stopping_enabled = false\n")
        prefs.reload()

    with Client() as prefs, mlflow.start_run() as run:
        train(prefs, steps=5, edit_at=2, edit=edit)
    get = tracking.get_metric_history
    assert [(m.step, m.value) for m in get(run.info.run_id, "mlprefs/ml.training.regularization_l2")] == [(3, 0.5)]
    assert [(m.step, m.value) for m in get(run.info.run_id,
                                           "mlprefs/ml.training.early_stopping_enabled")] == [(3, 0.0)]


def test_a_string_change_goes_to_a_tag_with_its_step(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    with Client() as prefs, mlflow.start_run() as run:
        train(prefs, steps=3, edit_at=1, edit=lambda: prefs.set("ml.training.early_stopping_mode", "max"))
    tags = tracking.get_run(run.info.run_id).data.tags
    assert tags["mlprefs.value.ml.training.early_stopping_mode"] == "max (step 2)"


def test_with_tracking_off_an_active_run_gets_nothing(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.features]\nexperiment_tracking = true\n")
    with Client() as prefs, mlflow.start_run() as run:  # ml.global.enabled is off
        train(prefs, steps=3, edit_at=1, edit=lambda: prefs.set(LR, 0.01))
    data = tracking.get_run(run.info.run_id).data
    assert data.params == {} and data.metrics == {}
    assert not any(t.startswith("mlprefs.") for t in data.tags)


def test_without_an_active_run_nothing_is_logged(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    experiment = mlflow.get_experiment_by_name("test_without_an_active_run_nothing_is_logged")
    with Client() as prefs:
        train(prefs, steps=3, edit_at=1, edit=lambda: prefs.set(LR, 0.01))
    assert tracking.search_runs([experiment.experiment_id]) == []


def test_no_tracker_library_is_imported_when_none_was(project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    script = ("import sys\nfrom mlprefs_sdk import Client\n"
              "with Client() as prefs:\n"
              "    hooks = prefs.training_hooks(); hooks.on_train_start()\n"
              "    prefs.set('ml.training.learning_rate', 0.01); hooks.on_step_end(0)\n"
              "    hooks.on_train_end()\n"
              "print(sorted(m for m in ('mlflow', 'wandb') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


# -- the registry -------------------------------------------------------------------------------
def logged_version(client, name, metrics, tags=None, run_tags=None):
    """A run with metrics and a registered version of it, as a team's pipeline leaves them."""
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        if run_tags:
            mlflow.set_tags(run_tags)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                       run_id=run.info.run_id, tags=tags or {})


@pytest.fixture
def prefs(home):
    with Client(user="ana") as client:
        yield client


def test_import_mlflow_brings_versions_with_run_metrics_and_activates_the_alias(tracking, prefs, mlflow_uri):
    logged_version(tracking, "churn-a", {"accuracy": 0.81, "latency_ms": 12.0})
    logged_version(tracking, "churn-a", {"accuracy": 0.93, "latency_ms": 30.0}, tags={"framework": "xgboost"})
    logged_version(tracking, "churn-a", {"accuracy": 0.90}, run_tags={"framework": "pytorch"})
    tracking.set_registered_model_alias("churn-a", "champion", "2")

    imported = prefs.models.import_mlflow("churn-a", tracking_uri=mlflow_uri)

    assert [mv.version for mv in imported] == ["1", "2", "3"]
    assert prefs.models.get("churn-a").version == "2"
    one, two, three = prefs.models.list("churn-a")
    assert one.metrics == {"accuracy": 0.81, "latency_ms": 12.0}
    assert (one.framework, two.framework, three.framework) == ("sklearn", "xgboost", "pytorch")
    assert one.source_uri.startswith("runs:/") and one.tags["mlflow.registered_model"] == "churn-a"
    assert prefs.models.moves("churn-a")[0].reason == "MLflow alias 'champion'"


def test_the_alias_key_names_which_alias_is_active(tracking, prefs, mlflow_uri):
    logged_version(tracking, "churn-b", {"accuracy": 0.8})
    logged_version(tracking, "churn-b", {"accuracy": 0.9})
    tracking.set_registered_model_alias("churn-b", "champion", "2")
    tracking.set_registered_model_alias("churn-b", "prod", "1")
    prefs.set("ml.models.mlflow_alias", "prod")
    prefs.models.import_mlflow("churn-b", tracking_uri=mlflow_uri)
    assert prefs.models.get("churn-b").version == "1"


def test_importing_again_brings_only_new_versions_and_follows_the_alias(tracking, prefs, mlflow_uri):
    logged_version(tracking, "churn-c", {"accuracy": 0.8})
    tracking.set_registered_model_alias("churn-c", "champion", "1")
    prefs.models.import_mlflow("churn-c", tracking_uri=mlflow_uri)
    logged_version(tracking, "churn-c", {"accuracy": 0.9})
    tracking.set_registered_model_alias("churn-c", "champion", "2")
    again = prefs.models.import_mlflow("churn-c", tracking_uri=mlflow_uri)
    assert [mv.version for mv in again] == ["2"]
    assert prefs.models.get("churn-c").version == "2"


def test_without_the_alias_no_version_becomes_active(tracking, prefs, mlflow_uri):
    logged_version(tracking, "churn-d", {"accuracy": 0.8})
    prefs.models.import_mlflow("churn-d", tracking_uri=mlflow_uri)
    assert [mv.status for mv in prefs.models.list("churn-d")] == ["experimental"]


def test_with_mlflow_sync_promote_and_rollback_move_the_alias_in_mlflow(tracking, prefs, mlflow_uri):
    for accuracy in (0.8, 0.85, 0.9):
        logged_version(tracking, "churn-e", {"accuracy": accuracy})
    tracking.set_registered_model_alias("churn-e", "champion", "1")
    prefs.models.import_mlflow("churn-e", tracking_uri=mlflow_uri)
    prefs.set("ml.models.mlflow_sync", True)

    prefs.models.promote("churn-e", 3)
    assert str(tracking.get_model_version_by_alias("churn-e", "champion").version) == "3"
    prefs.models.rollback("churn-e")
    assert str(tracking.get_model_version_by_alias("churn-e", "champion").version) == "1"


def test_without_mlflow_sync_the_alias_stays(tracking, prefs, mlflow_uri):
    logged_version(tracking, "churn-f", {"accuracy": 0.8})
    logged_version(tracking, "churn-f", {"accuracy": 0.9})
    tracking.set_registered_model_alias("churn-f", "champion", "1")
    prefs.models.import_mlflow("churn-f", tracking_uri=mlflow_uri)
    prefs.models.promote("churn-f", 2)
    assert prefs.models.get("churn-f").version == "2"
    assert str(tracking.get_model_version_by_alias("churn-f", "champion").version) == "1"


def test_a_failed_sync_says_mlprefs_moved_but_the_alias_did_not(tracking, prefs, mlflow_uri):
    from mlprefs_sdk.integrations.mlflow import MlflowSyncError

    logged_version(tracking, "churn-g", {"accuracy": 0.8})
    logged_version(tracking, "churn-g", {"accuracy": 0.9})
    prefs.models.import_mlflow("churn-g", tracking_uri=mlflow_uri)
    tracking.delete_registered_model("churn-g")
    prefs.set("ml.models.mlflow_sync", True)
    with pytest.raises(MlflowSyncError, match="churn-g/2 is active in mlprefs, but moving MLflow "
                                              "alias 'champion'"):
        prefs.models.promote("churn-g", 2)
    assert prefs.models.get("churn-g").version == "2"


def test_an_unknown_mlflow_model_is_model_not_found(tracking, prefs, mlflow_uri):
    from mlprefs_sdk.services.registry import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="nope"):
        prefs.models.import_mlflow("nope", tracking_uri=mlflow_uri)


def test_import_mlflow_without_mlflow_names_the_extra(prefs, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r'pip install "mlprefs-sdk\[mlflow\]"'):
        prefs.models.import_mlflow("churn")


def test_a_tracker_that_fails_mid_run_is_logged_and_training_goes_on(tracking, project_dir, caplog):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)

    def edit():
        tracking.delete_run(run.info.run_id)  # MLflow now refuses writes to this run
        prefs.set(LR, 0.01)

    with Client() as prefs, mlflow.start_run() as run:
        hooks = train(prefs, steps=4, edit_at=1, edit=edit)
        tracking.restore_run(run.info.run_id)  # so that leaving start_run() can end it
    assert hooks.steps == 4 and prefs.get(LR) == 0.01
    assert f"run {hooks.run_id}: logging changes of {LR} at step 2 to mlflow failed" in caplog.text


def test_a_run_resumed_into_the_same_mlflow_run_logs_a_changed_value_as_a_metric(tracking, project_dir):
    (project_dir / "mlprefs.toml").write_text(TRACKING_ON)
    with Client() as prefs, mlflow.start_run() as run:
        first = train(prefs, steps=3)
    with Client() as prefs, mlflow.start_run(run_id=run.info.run_id):
        prefs.set(LR, 0.02)  # between the two sessions: MLflow would refuse a new param value
        hooks = prefs.training_hooks(run_id=first.run_id)
        hooks.on_train_start()
        hooks.on_train_end()
    assert hooks.resumed and hooks.steps == 3
    assert tracking.get_run(run.info.run_id).data.params[LR] == "0.001"
    history = tracking.get_metric_history(run.info.run_id, f"mlprefs/{LR}")
    assert [(m.step, m.value) for m in history] == [(3, 0.02)]
