"""`mlprefs schema`: the JSON Schema of mlprefs.toml, checked with jsonschema against real
TOML files parsed by tomllib (good ones in every form the Client reads, and bad ones)."""

from __future__ import annotations

import json
import tomllib

import pytest

from mlprefs_sdk import Client, ValidationError
from mlprefs_sdk.cli import main
from mlprefs_sdk.schema import DRAFT, build_schema

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    home = tmp_path_factory.mktemp("schema-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPREFS_HOME", str(home))
        mp.setenv("MLPREFS_POLICY", str(home / "policy.toml"))
        with Client(discover=False, env=False) as prefs:
            prefs.register("team.eval.every_n_steps", int, 500, min=1, description="eval cadence")
            schema = build_schema(prefs.catalog)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator, text: str) -> list[str]:
    return [e.message for e in validator.iter_errors(tomllib.loads(text))]


def client_accepts(project_dir, text: str) -> bool:
    """The same file through the Client, so the schema and mlprefs agree."""
    (project_dir / "mlprefs.toml").write_text(text)
    try:
        with Client():
            return True
    except ValidationError:  # ConfigFileError included
        return False


GOOD = {
    "tables": "[ml.training]\nlearning_rate = 0.01\nearly_stopping_mode = \"max\"\n"
              "[ml.performance]\nbatch_size = 64\n",
    "dotted": "ml.training.learning_rate = 0.01\nml.performance.batch_size = 64\n",
    "quoted": "\"ml.training.learning_rate\" = 0.01\n[ml]\n\"performance.batch_size\" = 64\n",
    "mixed": "[ml]\ntraining.learning_rate = 0.01\n[ml.monitoring]\ndrift_method = \"ks\"\n",
    "int for a float key": "[ml.training]\nlearning_rate = 1\n",
    "project table": "[project]\nname = \"churn\"\ntemplate = \"production\"\n",
    "a plugin namespace": "[acme]\nstop_after = 2\n",
    "tune.space quoted": "[tune.space]\n"
                         "\"ml.training.learning_rate\" = { low = 1e-5, high = 0.1, log = true }\n"
                         "\"ml.performance.batch_size\" = { choices = [32, 64, 128] }\n"
                         "\"ml.training.early_stopping_patience\" = { low = 2, high = 10 }\n",
    "tune.space nested": "[tune.space.ml.training]\nlearning_rate = { low = 1e-5, high = 0.1 }\n",
    "registered key": "[team.eval]\nevery_n_steps = 100\n",
}


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_a_valid_file_in_any_form_validates(validator, text):
    assert errors(validator, text) == []


BAD = {
    "bad type": ("[ml.training]\nlearning_rate = \"fast\"\n", "is not of type 'number'"),
    "bool for an int": ("[ml.performance]\nbatch_size = true\n", "is not of type 'integer'"),
    "above the maximum": ("ml.training.learning_rate = 5.0\n", "greater than the maximum of 1"),
    "below the minimum": ("[ml.performance]\nbatch_size = 0\n", "less than the minimum of 1"),
    "unknown ml key (table)": ("[ml.training]\nlearning_rat = 0.1\n", "'learning_rat' was unexpected"),
    "unknown ml key (quoted)": ("\"ml.training.learning_rat\" = 0.1\n",
                                "'ml.training.learning_rat' is not valid under any"),
    "unknown ml table": ("[ml.trainin]\nlearning_rate = 0.1\n", "'trainin' was unexpected"),
    "bad enum": ("[ml.monitoring]\ndrift_method = \"chi\"\n", "is not one of ['psi', 'ks'"),
    "registered key out of range": ("team.eval.every_n_steps = 0\n", "less than the minimum of 1"),
    "tune.space bound outside the key's range": (
        "[tune.space]\n\"ml.training.learning_rate\" = { low = 0.0, high = 2.0 }\n",
        "is not valid under any of the given schemas"),
    "tune.space unknown key": ("[tune.space]\n\"ml.training.lr\" = { low = 0.1, high = 0.2 }\n",
                               "'ml.training.lr' is not valid under any"),
    "tune.space choice of a wrong type": (
        "[tune.space]\n\"ml.monitoring.drift_method\" = { choices = [\"chi\"] }\n", "is not one of"),
}


@pytest.mark.parametrize("text,message", BAD.values(), ids=BAD.keys())
def test_an_invalid_file_fails_naming_the_problem(validator, text, message):
    found = errors(validator, text)
    assert found and any(message in m for m in found), found


@pytest.mark.parametrize("text", [GOOD["tables"], GOOD["dotted"], GOOD["quoted"], GOOD["mixed"]],
                         ids=["tables", "dotted", "quoted", "mixed"])
def test_what_the_schema_accepts_the_client_reads(home, project_dir, text):
    assert client_accepts(project_dir, text)


@pytest.mark.parametrize("name", ["bad type", "above the maximum", "unknown ml key (table)", "bad enum"])
def test_what_the_schema_rejects_the_client_rejects(home, project_dir, name):
    assert not client_accepts(project_dir, BAD[name][0])


def test_descriptions_defaults_and_draft_are_in_the_schema(validator):
    schema = validator.schema
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    lr = schema["$defs"]["ml.training.learning_rate"]
    assert lr["type"] == "number" and lr["default"] == 0.001
    assert lr["maximum"] == 1.0 and "minimum" in lr
    assert "Default: 0.001." in lr["description"]
    assert schema["$defs"]["ml.global.enabled"]["description"].endswith("Access: admin. Default: false.")


def test_the_cli_writes_the_schema_with_plugin_keys(home, project_dir, capsys):
    code = main(["schema", "--out", "mlprefs.schema.json"])
    out = capsys.readouterr().out
    schema = json.loads((project_dir / "mlprefs.schema.json").read_text())
    with Client() as prefs:
        prefs.plugin_manager
        keys = len(prefs.catalog)
    assert code == 0 and out == f"wrote mlprefs.schema.json: JSON Schema of mlprefs.toml, {keys} keys\n"
    assert "ml.models.mlflow_alias" in schema["$defs"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_cli_prints_the_schema_and_ignores_a_broken_project_file(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\nlearning_rate = 5.0\n")
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    errs = list(jsonschema.Draft202012Validator(schema).iter_errors(
        tomllib.loads((project_dir / "mlprefs.toml").read_text())))
    assert [e.message for e in errs] == ["5.0 is greater than the maximum of 1.0"]


def test_an_installed_plugins_key_is_in_the_cli_schema(home, project_dir, capsys, monkeypatch, tmp_path):
    from test_plugins import ACME, make_dist

    site = make_dist(tmp_path / "site", "acme_schema", ACME, name="acme_schema")
    monkeypatch.syspath_prepend(str(site))
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$defs"]["acme.stop_after"]["minimum"] == 1
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"acme": {"stop_after": 0}}))
