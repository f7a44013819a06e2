"""str() of the public values reads as the CLI prints them; load() takes dataclasses too."""

from __future__ import annotations

import dataclasses
import io
from contextlib import redirect_stdout

import pytest

from mlprefs_sdk import Change, ChangeSet, Client, Source, UnknownKeyError, ValidationError
from mlprefs_sdk.cli import main

LR = "ml.training.learning_rate"


def write_project(project_dir, text="[ml.training]\nlearning_rate = 0.01\n"):
    (project_dir / "mlprefs.toml").write_text(text)


def test_str_of_an_explanation_is_the_chain_with_file_and_line(project_dir, monkeypatch):
    write_project(project_dir)
    monkeypatch.setenv("MLPREFS__ML__TRAINING__LEARNING_RATE", "0.02")
    with Client() as prefs:
        text = str(prefs.explain(LR))
    lines = text.splitlines()
    assert lines[0] == f"{LR} = 0.02"
    assert lines[1] == "  from    env (MLPREFS__ML__TRAINING__LEARNING_RATE)"
    assert "layers (lowest first):" in lines[2]
    assert lines[3].split()[:2] == ["defaults", "0.001"] and "defaults.toml:" in lines[3]
    assert lines[4].split() == ["project-file", "0.01", "./mlprefs.toml:2"]
    assert lines[5].split()[:3] == ["*", "env", "0.02"]


def test_the_cli_explain_prints_str_of_the_explanation_plus_the_rule(project_dir):
    write_project(project_dir)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["explain", LR]) == 0
    with Client() as prefs:
        chain = str(prefs.explain(LR)).splitlines()
    printed = out.getvalue().splitlines()
    assert printed[:2] == chain[:2]
    assert printed[-len(chain) + 2:] == chain[2:]
    assert [ln.split()[0] for ln in printed[2:5]] == ["type", "access", "about"]


def test_a_locked_explanation_says_so(project_dir, policy_file):
    policy_file.write_text('[locked]\nml.data.privacy_mode = "strict"\n')
    with Client() as prefs:
        first = str(prefs.explain("ml.data.privacy_mode")).splitlines()[0]
    assert first == 'ml.data.privacy_mode = "strict"  (locked)'


def test_str_of_a_change_and_a_changeset_reads_key_old_new_source():
    src = Source("project-file", "/nowhere/mlprefs.toml", 3)
    a = Change(LR, 0.001, 0.01, src)
    b = Change("ml.performance.batch_size", None, 64, Source("env", detail="X"))
    assert str(a) == f"{LR} 0.001 -> 0.01 (/nowhere/mlprefs.toml:3)"
    assert str(b) == "ml.performance.batch_size (unset) -> 64 (env (X))"
    assert str(ChangeSet((a, b))) == f"{a}; {b}"
    assert str(ChangeSet(())) == "no changes"


def test_str_of_a_layer_value_and_a_history_entry(home):
    with Client(project="churn", user="alice") as prefs:
        entry = prefs.set("ml.performance.batch_size", 64, scope="project", reason="fits GPU")
        layer = prefs.explain("ml.performance.batch_size").chain[-1]
    assert str(entry).startswith(f"#{entry.id:<5} ")
    assert str(entry).endswith(
        "  project:churn  ml.performance.batch_size  (unset) -> 64  by alice  # fits GPU")
    assert str(layer).startswith("project 64 (project (project 'churn', set ")


def test_str_of_a_problem_is_its_message(project_dir):
    write_project(project_dir, "[ml.training]\nlearning_rate = 5.0\n")
    with pytest.raises(ValidationError) as err:
        Client()
    assert str(err.value.problems[0]) == (
        f"{LR} = 5.0 in ./mlprefs.toml:2 is above the maximum 1.0")


@dataclasses.dataclass(frozen=True)
class Training:
    learning_rate: float
    max_iterations: int
    early_stopping_patience: int = 5
    note: str = "kept"


def test_load_fills_a_dataclass(project_dir):
    write_project(project_dir)
    with Client() as prefs:
        loaded = prefs.load(Training, prefix="ml.training")
    assert loaded.learning_rate == 0.01
    assert loaded.max_iterations == prefs.get("ml.training.max_iterations")
    assert loaded.note == "kept"


def test_load_of_a_dataclass_with_a_field_of_the_wrong_type_is_a_validation_error(home):
    @dataclasses.dataclass
    class Wrong:
        early_stopping_metric: int

    with Client() as prefs, pytest.raises(ValidationError) as err:
        prefs.load(Wrong, prefix="ml.training")
    assert str(err.value) == ('ml.training.early_stopping_metric = "val_loss" does not fit '
                              "Wrong.early_stopping_metric: invalid value for type, expected int")


def test_load_of_a_dataclass_field_with_no_key_and_no_default_is_unknown(home):
    @dataclasses.dataclass
    class Missing:
        learning_rat: float
        extra: list = dataclasses.field(default_factory=list)

    with Client() as prefs, pytest.raises(UnknownKeyError):
        prefs.load(Missing, prefix="ml.training")


def test_load_refuses_a_class_that_is_neither_attrs_nor_dataclass(home):
    class Plain:
        learning_rate: float

    with Client() as prefs, pytest.raises(TypeError, match="attrs class or a dataclass"):
        prefs.load(Plain, prefix="ml.training")
