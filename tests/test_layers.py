"""The eleven layers (SPEC section 3): where each comes from, precedence, locks, provenance."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mlprefs_sdk import Client, ConfigFileError, LockedKeyError, ValidationError
from mlprefs_sdk.values import LAYERS

LR = "ml.training.learning_rate"

# One distinct learning rate per layer, so a chain shows which layer said what.
LAYER_LR = {
    "defaults": 0.001,
    "org": 0.002,
    "template": 0.01,  # the built-in quick-experiment template's value
    "user": 0.004,
    "project": 0.005,
    "user-file": 0.006,
    "project-file": 0.007,
    "file": 0.008,
    "env": 0.009,
    "runtime": 0.0095,
    "locked": 0.0099,
}


def configure(upto: str, home: Path, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make every layer up to `upto` set the learning rate; return Client kwargs for the rest."""
    active = LAYERS[: LAYERS.index(upto) + 1]
    for scope in ("user", "project"):  # before the policy file locks the key
        if scope in active:
            with Client(user="alice", project="churn", discover=False, env=False) as writer:
                writer.set(LR, LAYER_LR[scope], scope=scope)
    tables = []
    if "org" in active:
        tables.append(f"[defaults]\n\"{LR}\" = {LAYER_LR['org']}\n")
    if "locked" in active:
        tables.append(f"[locked]\n\"{LR}\" = {LAYER_LR['locked']}\n")
    if tables:
        Path(os.environ["MLPREFS_POLICY"]).write_text("".join(tables))
    if "user-file" in active:
        (home / "overrides.toml").write_text(f"[ml.training]\nlearning_rate = {LAYER_LR['user-file']}\n")
    if "project-file" in active:
        (project_dir / "mlprefs.toml").write_text(
            f"[project]\nname = \"churn\"\n\n[ml.training]\nlearning_rate = {LAYER_LR['project-file']}\n")
    kwargs: dict = {"user": "alice", "project": "churn"}
    if "template" in active:
        kwargs["template"] = "quick-experiment"
    if "file" in active:
        (project_dir / "extra.toml").write_text(f"ml.training.learning_rate = {LAYER_LR['file']}\n")
        kwargs["files"] = ["extra.toml"]
    if "env" in active:
        monkeypatch.setenv("MLPREFS__ML__TRAINING__LEARNING_RATE", str(LAYER_LR["env"]))
    if "runtime" in active:
        kwargs["overrides"] = {LR: LAYER_LR["runtime"]}
    return kwargs


@pytest.mark.parametrize("top", LAYERS)
def test_the_highest_layer_that_sets_a_key_wins(top, home, project_dir, monkeypatch):
    with Client(**configure(top, home, project_dir, monkeypatch)) as prefs:
        assert prefs.get(LR) == LAYER_LR[top]
        assert prefs.explain(LR).source.layer == top


def test_explain_lists_every_layer_lowest_first(home, project_dir, monkeypatch):
    with Client(**configure("locked", home, project_dir, monkeypatch)) as prefs:
        ex = prefs.explain(LR)
    assert [lv.layer for lv in ex.chain] == list(LAYERS)
    assert [lv.value for lv in ex.chain] == [LAYER_LR[layer] for layer in LAYERS]
    assert ex.value == LAYER_LR["locked"] and ex.locked
    assert ex.source == ex.chain[-1].source


def test_provenance_names_file_and_line_store_scope_and_time_and_env_variable(
        home, project_dir, monkeypatch):
    with Client(**configure("runtime", home, project_dir, monkeypatch)) as prefs:
        sources = {lv.layer: lv.source for lv in prefs.explain(LR).chain}
    assert (sources["defaults"].path, sources["defaults"].line) == (prefs.catalog.path,
                                                                  prefs.spec(LR).line)
    assert (sources["org"].path, sources["org"].line) == (os.environ["MLPREFS_POLICY"], 2)
    assert sources["template"].detail == "quick-experiment"
    assert re.fullmatch(r"user 'alice', set \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ by alice",
                        sources["user"].detail)
    assert sources["project"].detail.startswith("project 'churn', set ")
    assert (sources["user-file"].path, sources["user-file"].line) == (str(home / "overrides.toml"), 2)
    assert (sources["project-file"].path, sources["project-file"].line) == (
        str(project_dir / "mlprefs.toml"), 5)
    assert (sources["file"].path, sources["file"].line) == (str(project_dir / "extra.toml"), 1)
    assert sources["env"].detail == "MLPREFS__ML__TRAINING__LEARNING_RATE"
    assert sources["runtime"].layer == "runtime"
    assert str(sources["project-file"]) == "./mlprefs.toml:5"


# -- env ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MLPREFS__ML__TRAINING__LEARNING_RATE",
                                  "mlprefs__ml__training__learning_rate",
                                  "MlPrefs__Ml__Training__Learning_Rate"])
def test_env_names_are_case_insensitive(home, monkeypatch, name):
    monkeypatch.setenv(name, "1e-3")
    with Client() as prefs:
        assert prefs.get(LR) == 0.001
        assert prefs.explain(LR).source.detail == name
        assert prefs.explain(LR).source.layer == "env"


@pytest.mark.parametrize("key,text,expected", [
    ("ml.global.enabled", "true", True),
    ("ml.global.enabled", "FALSE", False),
    ("ml.performance.batch_size", "64", 64),
    ("ml.training.learning_rate", "1e-2", 0.01),
    ("ml.training.learning_rate", "1", 1.0),  # an int is accepted for a float key
    ("ml.monitoring.drift_method", "ks", "ks"),
])
def test_env_values_are_coerced_to_the_key_type(home, monkeypatch, key, text, expected):
    monkeypatch.setenv("MLPREFS__" + key.upper().replace(".", "__"), text)
    with Client() as prefs:
        value = prefs.get(key)
    assert value == expected and type(value) is type(expected)


def test_a_bad_env_value_names_the_variable(home, monkeypatch):
    monkeypatch.setenv("MLPREFS__ML__PERFORMANCE__BATCH_SIZE", "lots")
    with pytest.raises(ValidationError) as e:
        Client()
    assert str(e.value) == ('ml.performance.batch_size = "lots" in env '
                            "(MLPREFS__ML__PERFORMANCE__BATCH_SIZE) cannot be read as int")


def test_env_false_ignores_the_environment(home, monkeypatch):
    monkeypatch.setenv("MLPREFS__ML__TRAINING__LEARNING_RATE", "0.5")
    with Client(env=False) as prefs:
        assert prefs.get(LR) == 0.001


def test_other_mlprefs_variables_are_not_keys(home, monkeypatch):
    monkeypatch.setenv("MLPREFS_PROJECT", "churn")
    with Client() as prefs:
        assert prefs.explain(LR).source.layer == "defaults"
        assert prefs.project == "churn"


# -- policy: org defaults and locks ------------------------------------------------


def test_org_defaults_sit_below_everything_a_user_sets(home, policy_file, project_dir):
    policy_file.write_text("[defaults]\nml.training.max_iterations = 500\n")
    with Client() as prefs:
        assert prefs.get("ml.training.max_iterations") == 500
    (project_dir / "mlprefs.toml").write_text("ml.training.max_iterations = 50\n")
    with Client() as prefs:
        assert prefs.get("ml.training.max_iterations") == 50


def test_a_locked_key_shadows_lower_layers_and_explain_shows_them(home, policy_file, project_dir):
    policy_file.write_text('[locked]\nml.data.privacy_mode = "strict"\n')
    (project_dir / "mlprefs.toml").write_text('ml.data.privacy_mode = "moderate"\n')
    with Client() as prefs:
        ex = prefs.explain("ml.data.privacy_mode")
    assert ex.value == "strict" and ex.locked
    assert [(lv.layer, lv.value) for lv in ex.chain] == [
        ("defaults", "strict"), ("project-file", "moderate"), ("locked", "strict")]
    assert str(ex.source) == f"{policy_file}:2 (locked)"


def test_set_of_a_locked_key_raises_before_any_other_rule(home, policy_file):
    policy_file.write_text("[locked]\nml.performance.batch_size = 64\n")
    with Client() as prefs:
        for bad in (128, "not even an int", True):
            with pytest.raises(LockedKeyError) as e:
                prefs.set("ml.performance.batch_size", bad)
        assert e.value.locked_value == 64 and e.value.source.layer == "locked"
        assert str(e.value).startswith("ml.performance.batch_size is locked to 64 by ")
        assert isinstance(e.value, PermissionError)
        assert prefs.history() == []


def test_set_of_a_locked_key_in_a_batch_writes_nothing(home, policy_file):
    policy_file.write_text("[locked]\nml.performance.batch_size = 64\n")
    with Client() as prefs:
        with pytest.raises(LockedKeyError):
            prefs._set_many({"ml.training.learning_rate": 0.1,
                             "ml.performance.batch_size": 128}, "user")
        assert prefs.history() == [] and prefs.get(LR) == 0.001


def test_a_runtime_override_of_a_locked_key_is_shadowed(home, policy_file):
    policy_file.write_text("[locked]\nml.performance.batch_size = 64\n")
    with Client(overrides={"ml.performance.batch_size": 8}) as prefs:
        assert prefs.get("ml.performance.batch_size") == 64


def test_a_policy_table_other_than_defaults_and_locked_is_an_error(home, policy_file):
    policy_file.write_text("[ml.training]\nlearning_rate = 0.1\n")
    with pytest.raises(ValidationError, match="outside the policy file's \\[defaults\\] and "
                                              "\\[locked\\] tables"):
        Client()


def test_a_policy_that_contradicts_a_rule_names_the_policy_file(home, policy_file):
    policy_file.write_text("[locked]\nml.data.sharing_allowed = true\n")
    with pytest.raises(ValidationError) as e:
        Client()
    (p,) = e.value.problems
    assert p.rule == "strict-privacy"
    assert p.source.path == str(policy_file) and p.source.line == 2
    assert p.source.layer == "locked"


def test_a_policy_file_that_does_not_parse_names_itself(home, policy_file, project_dir):
    policy_file.write_text("[locked\n")
    (project_dir / "mlprefs.toml").write_text("x = = 1\n")
    with pytest.raises(ConfigFileError) as e:
        Client()
    assert (e.value.path, e.value.line, e.value.column) == (str(policy_file), 1, 8)
    assert [(p.source.layer, p.source.line) for p in e.value.problems] == [("org", 1), ("project-file", 1)]


def test_a_locked_value_of_the_wrong_type_is_reported(home, policy_file):
    policy_file.write_text('[locked]\nml.performance.batch_size = "64"\n')
    with pytest.raises(ValidationError, match="has type str, expected int"):
        Client()


# -- templates ---------------------------------------------------------------------


def test_the_three_built_in_templates_exist(home):
    with Client() as prefs:
        assert {"quick-experiment", "production", "privacy-strict"} <= set(prefs.templates.list())
        assert prefs.templates.show("privacy-strict")["ml.data.retention_days"] == 90


@pytest.mark.parametrize("name", ["quick-experiment", "production", "privacy-strict"])
def test_each_built_in_template_is_valid_and_applies(home, name):
    with Client(template=name) as prefs:
        for key, value in prefs.templates.show(name).items():
            assert prefs.get(key) == value
            assert prefs.explain(key).source.layer == "template"


def test_the_project_file_chooses_the_template(home, project_dir):
    (project_dir / "mlprefs.toml").write_text('[project]\ntemplate = "privacy-strict"\n')
    with Client() as prefs:
        assert prefs.template == "privacy-strict"
        assert prefs.get("ml.data.retention_days") == 90


def test_the_constructor_template_wins_over_the_project_file(home, project_dir):
    (project_dir / "mlprefs.toml").write_text('[project]\ntemplate = "privacy-strict"\n')
    with Client(template="quick-experiment") as prefs:
        assert prefs.get("ml.data.retention_days") == 365
        assert prefs.get("ml.training.max_iterations") == 100


def test_a_saved_template_is_chosen_like_a_built_in_one(home):
    with Client() as prefs:
        prefs.templates.save("team-gpu", {"ml.performance.batch_size": 256})
        assert "team-gpu" in prefs.templates.list()
    with Client(template="team-gpu") as prefs:
        assert prefs.get("ml.performance.batch_size") == 256
        assert prefs.explain("ml.performance.batch_size").source.detail == "team-gpu"


def test_saving_a_template_validates_every_value(home):
    with Client() as prefs:
        with pytest.raises(ValidationError) as e:
            prefs.templates.save("bad", {"ml.performance.batch_size": 0, LR: 9.0})
        assert len(e.value.problems) == 2
        assert "bad" not in prefs.templates.list()


def test_an_unknown_template_is_a_validation_error_listing_the_known_ones(home):
    with pytest.raises(ValidationError, match="template 'nope' does not exist; known: "
                                              "privacy-strict, production, quick-experiment"):
        Client(template="nope")


def test_applying_a_template_writes_its_values_into_a_scope(home):
    with Client(project="churn") as prefs:
        entries = prefs.templates.apply("quick-experiment")
        assert {e.scope for e in entries} == {"project"}
        assert prefs.explain("ml.training.max_iterations").source.layer == "project"


# -- the project file --------------------------------------------------------------


def test_mlprefs_toml_is_found_in_a_parent_directory(home, project_dir, monkeypatch):
    (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 16\n")
    deep = project_dir / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with Client() as prefs:
        assert prefs.get("ml.performance.batch_size") == 16
        assert prefs.explain("ml.performance.batch_size").source.path == str(project_dir / "mlprefs.toml")


def test_pyproject_tool_mlprefs_is_used_without_mlprefs_toml(home, project_dir):
    (project_dir / "pyproject.toml").write_text(
        '[project]\nname = "not-the-id"\n\n[tool.mlprefs.project]\nname = "churn"\n\n'
        "[tool.mlprefs.ml.training]\nlearning_rate = 0.05\n")
    with Client() as prefs:
        assert prefs.get(LR) == 0.05
        assert prefs.project == "churn"
        source = prefs.explain(LR).source
        assert (source.path, source.line) == (str(project_dir / "pyproject.toml"), 8)


def test_mlprefs_toml_wins_over_pyproject(home, project_dir):
    (project_dir / "pyproject.toml").write_text("[tool.mlprefs]\nml.training.learning_rate = 0.05\n")
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 0.02\n")
    with Client() as prefs:
        assert prefs.get(LR) == 0.02


def test_a_pyproject_without_tool_mlprefs_stops_the_search(home, project_dir, monkeypatch):
    (project_dir / "pyproject.toml").write_text("[tool.mlprefs]\nml.training.learning_rate = 0.05\n")
    inner = project_dir / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\n')
    monkeypatch.chdir(inner)
    with Client() as prefs:
        assert prefs.project_file is None
        assert prefs.get(LR) == 0.001


def test_discover_false_ignores_the_project_file(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 0.02\n")
    with Client(discover=False) as prefs:
        assert prefs.get(LR) == 0.001


def test_the_project_id_comes_from_argument_then_env_then_project_file(home, project_dir, monkeypatch):
    (project_dir / "mlprefs.toml").write_text('[project]\nname = "from-file"\n')
    with Client() as prefs:
        assert prefs.project == "from-file"
    monkeypatch.setenv("MLPREFS_PROJECT", "from-env")
    with Client() as prefs:
        assert prefs.project == "from-env"
    with Client(project="from-arg") as prefs:
        assert prefs.project == "from-arg"


# -- files and locations ----------------------------------------------------------


def test_extra_files_apply_in_order(home, project_dir):
    (project_dir / "a.toml").write_text("ml.performance.batch_size = 16\nml.training.max_iterations = 20\n")
    (project_dir / "b.toml").write_text("ml.performance.batch_size = 64\n")
    with Client(files=["a.toml", "b.toml"]) as prefs:
        assert prefs.get("ml.performance.batch_size") == 64
        assert prefs.get("ml.training.max_iterations") == 20


def test_the_user_overrides_file_lives_in_mlprefs_home(home):
    (home / "overrides.toml").write_text("ml.performance.batch_size = 8\n")
    with Client() as prefs:
        assert prefs.get("ml.performance.batch_size") == 8
        assert prefs.locations.user_file == str(home / "overrides.toml")
        assert prefs.locations.store == str(home / "prefs.db")


def test_mlprefs_store_names_the_store_file(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLPREFS_STORE", str(tmp_path / "elsewhere" / "team.db"))
    with Client() as prefs:
        prefs.set("ml.performance.batch_size", 16)
    assert (tmp_path / "elsewhere" / "team.db").exists()
    assert not (home / "prefs.db").exists()


def test_construction_reports_every_problem_in_every_source_at_once(home, project_dir, policy_file,
                                                                     monkeypatch):
    policy_file.write_text("[locked]\nml.training.max_iterations = 5\n")
    (home / "overrides.toml").write_text("ml.performance.batch_size = 0\n")
    (project_dir / "mlprefs.toml").write_text("[ml.training]\n\nlearning_rate = 5.0\nbatch = 3\n")
    (project_dir / "extra.toml").write_text('ml.monitoring.drift_method = "chi2"\n')
    monkeypatch.setenv("MLPREFS__ML__GLOBAL__ENABLED", "maybe")
    with pytest.raises(ValidationError) as e:
        Client(files=["extra.toml"], overrides={"ml.performance.speed_priority": 2})
    messages = str(e.value).splitlines()
    assert messages[0] == "7 problems found in mlprefs preferences:"
    assert sorted(m.strip() for m in messages[1:]) == sorted([
        f"ml.training.max_iterations = 5 in {policy_file}:2 (locked) is below the minimum 10",
        f"ml.performance.batch_size = 0 in {home / 'overrides.toml'}:1 is below the minimum 1",
        "ml.training.learning_rate = 5.0 in ./mlprefs.toml:3 is above the maximum 1.0",
        "ml.training.batch = 3 in ./mlprefs.toml:4 is not a known key; did you mean "
        "ml.performance.batch_size?",
        'ml.monitoring.drift_method = "chi2" in ./extra.toml:1 is not one of the allowed values: psi, ks',
        'ml.global.enabled = "maybe" in env (MLPREFS__ML__GLOBAL__ENABLED) cannot be read as bool',
        "ml.performance.speed_priority = 2 in runtime (override) is above the maximum 1.0",
    ])


# -- discovery never skips what sits at a project file's name -----------------------------


def test_a_directory_named_mlprefs_toml_is_an_error_not_a_fall_back_to_pyproject(home, project_dir):
    (project_dir / "pyproject.toml").write_text("[tool.mlprefs]\nml.training.learning_rate = 0.05\n")
    (project_dir / "mlprefs.toml").mkdir()
    with pytest.raises(ConfigFileError) as e:
        Client()
    assert e.value.path == str(project_dir / "mlprefs.toml")
    assert "is a directory" in e.value.reason


def test_a_symlink_loop_named_mlprefs_toml_in_a_parent_is_an_error(home, project_dir, monkeypatch):
    (project_dir / "mlprefs.toml").symlink_to(project_dir / "mlprefs.toml")
    deep = project_dir / "src"
    deep.mkdir()
    monkeypatch.chdir(deep)
    with pytest.raises(ConfigFileError, match=r"mlprefs.toml: cannot parse TOML: is a symlink loop"):
        Client()


def test_a_pyproject_with_tool_mlprefs_that_is_not_utf8_is_an_error_with_its_line(home, project_dir):
    (project_dir / "pyproject.toml").write_bytes(b"[tool.mlprefs]\n# caf\xe9\n")
    with pytest.raises(ConfigFileError) as e:
        Client()
    assert (e.value.path, e.value.line) == (str(project_dir / "pyproject.toml"), 2)


# -- unregistered keys --------------------------------------------------------------------


def test_the_unregistered_warning_says_the_value_is_held_and_applies_once_registered(home, project_dir):
    (project_dir / "mlprefs.toml").write_text("[team.eval]\nevery_n_steps = 250\n")
    with Client() as prefs:
        (warning,) = prefs.warnings
        assert str(warning) == ("team.eval.every_n_steps = 250 in ./mlprefs.toml:2 is not a registered "
                                "key yet: the value is held, and applies from the moment register() "
                                "defines the key")
        assert "ignored" not in str(warning)


@pytest.mark.parametrize("policy,key", [
    ('[defaults]\n"ml.training.learnin_rate" = 0.1\n', "ml.training.learnin_rate"),
    ("[locked]\nml.nope.x = 1\n", "ml.nope.x"),
])
def test_unknown_key_messages_spell_the_source_as_problem_for_value_does(home, policy_file,
                                                                          policy, key):
    from mlprefs_sdk.values import Problem

    policy_file.write_text(policy)
    with pytest.raises(ValidationError) as e:
        Client()
    (problem,) = e.value.problems
    reason = problem.message.split(f" in {problem.source} ", 1)[1]
    assert problem.key == key and problem.source.line == 2
    assert problem.message == Problem.for_value(key, problem.value, problem.source, reason,
                                                problem.rule).message


# -- file modes ---------------------------------------------------------------------------


@pytest.fixture
def umask_zero():
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_new_home_is_created_0700_and_its_secrets_0600_whatever_the_umask(tmp_path, home,
                                                                           monkeypatch, umask_zero):
    from mlprefs_sdk.pseudonym import load_secret

    new_home = tmp_path / "fresh" / "nested" / "home"
    monkeypatch.setenv("MLPREFS_HOME", str(new_home))
    with Client() as prefs:
        prefs.set(LR, 0.01)
        load_secret(prefs.locations.secret)
    for d in (tmp_path / "fresh", tmp_path / "fresh" / "nested", new_home):
        assert oct(d.stat().st_mode & 0o777) == "0o700", d
    files = sorted(p.name for p in new_home.iterdir())
    assert "secret.key" in files and "prefs.db" in files
    for name in files:
        assert oct((new_home / name).stat().st_mode & 0o777) == "0o600", name


def test_an_existing_home_keeps_its_mode(home, umask_zero):
    home.chmod(0o750)
    with Client() as prefs:
        prefs.set(LR, 0.01)
    assert oct(home.stat().st_mode & 0o777) == "0o750"


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_a_secret_key_that_is_not_a_regular_file_is_an_error_not_a_hang(tmp_path, kind):
    import signal

    from mlprefs_sdk.pseudonym import load_secret

    path = tmp_path / "secret.key"
    os.mkfifo(path) if kind == "FIFO" else path.mkdir()
    signal.alarm(20)  # a hang fails the test instead of stalling the suite
    try:
        with pytest.raises(ValueError, match=f"secret.key: the pseudonymisation secret is a {kind}"):
            load_secret(str(path))
    finally:
        signal.alarm(0)
