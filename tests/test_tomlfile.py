"""TOML override files: flat dotted keys, the line each was written on, parse errors with position."""

from __future__ import annotations

import pytest

from mlprefs_sdk import Client, ConfigFileError, ValidationError
from mlprefs_sdk.tomlfile import flatten, key_lines, parse_toml, read_toml, unflatten


def test_tables_and_dotted_keys_name_the_same_key(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("[ml.training]\nlearning_rate = 0.01\n\n[ml]\nperformance.batch_size = 64\n")
    doc = read_toml(str(path))
    assert dict(doc.values) == {"ml.training.learning_rate": (0.01, 2),
                                "ml.performance.batch_size": (64, 5)}


def test_line_numbers_survive_comments_strings_and_arrays():
    text = (
        "# a comment = 1\n"                      # 1
        '"ml"."training".learning_rate = 0.1\n'  # 2
        "notes = '''\n"                          # 3
        "x = 1\n"                                # 4  (inside a string: not a key)
        "'''\n"                                  # 5
        "tags = [\n"                             # 6
        "  1,\n"                                 # 7
        "]\n"                                    # 8
        "[ml.performance]  # trailing\n"         # 9
        "batch_size = 64\n"                      # 10
        "limits = { cpu = 50, mem = 4096 }\n"    # 11
    )
    lines = key_lines(text)
    assert lines["ml.training.learning_rate"] == 2
    assert "x" not in lines
    assert lines["ml.performance.batch_size"] == 10
    assert lines["ml.performance.limits.cpu"] == 11
    assert lines["ml.performance.limits.mem"] == 11


def test_the_project_table_is_metadata_not_keys():
    doc = parse_toml('[project]\nname = "churn"\ntemplate = "production"\n'
                     "[ml.training]\nlearning_rate = 0.1\n", "mlprefs.toml")
    assert doc.meta == {"name": "churn", "template": "production"}
    assert list(doc.values) == ["ml.training.learning_rate"]


def test_a_section_selects_a_subtable_and_keeps_file_lines():
    doc = parse_toml('[project]\nname = "x"\n\n[tool.mlprefs.ml.training]\nlearning_rate = 0.2\n',
                     "pyproject.toml", section="tool.mlprefs")
    assert dict(doc.values) == {"ml.training.learning_rate": (0.2, 5)}


def test_a_missing_file_reads_as_none(tmp_path):
    assert read_toml(str(tmp_path / "absent.toml")) is None


@pytest.mark.parametrize("text,line,column", [
    ("[ml.training]\nlearning_rate = 0.1\n[ml.performance]\nbatch_size = \n", 4, 14),
    ("ml.training.learning_rate = 0.1\nml.training.learning_rate = 0.2\n", 2, 32),
    ("[ml.training\n", 1, 13),
])
def test_broken_toml_reports_line_and_column(tmp_path, text, line, column):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as e:
        read_toml(str(path))
    assert (e.value.line, e.value.column) == (line, column)
    assert e.value.path == str(path)
    assert "(at line" not in e.value.reason


def test_a_file_ending_mid_value_points_past_its_last_line(tmp_path):
    path = tmp_path / "cut.toml"
    path.write_text('a = "unterminated')
    with pytest.raises(ConfigFileError) as e:
        read_toml(str(path))
    assert e.value.line == 1


def test_a_file_that_is_not_utf8_is_a_config_file_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        read_toml(str(path))


def test_a_config_file_error_is_a_validation_error_and_a_value_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("= 1\n")
    with pytest.raises(ValidationError) as e:
        read_toml(str(path))
    assert isinstance(e.value, ValueError)
    assert e.value.problems[0].rule == "toml"


def test_client_surfaces_the_position_of_a_broken_project_file(project_dir):
    (project_dir / "mlprefs.toml").write_text("[ml.training]\nlearning_rate = 0.1\n"
                                               "[ml.performance]\nbatch_size = \n")
    with pytest.raises(ConfigFileError) as e:
        Client()
    assert (e.value.line, e.value.column) == (4, 14)
    assert str(e.value) == "./mlprefs.toml:4:14: cannot parse TOML: Invalid value"


def test_a_broken_file_does_not_hide_problems_elsewhere(project_dir):
    (project_dir / "mlprefs.toml").write_text("batch_size = = 3\n")
    (project_dir / "extra.toml").write_text("ml.training.learning_rate = 7.0\n")
    with pytest.raises(ConfigFileError) as e:
        Client(files=["extra.toml"])
    assert len(e.value.problems) == 2
    assert str(e.value).splitlines() == [
        "./mlprefs.toml:1:14: cannot parse TOML: Invalid value; 1 more problem(s):",
        "  ml.training.learning_rate = 7.0 in ./extra.toml:1 is above the maximum 1.0",
    ]


def test_unflatten_is_the_inverse_of_flatten():
    flat = {"ml.training.learning_rate": 0.1, "ml.training.max_iterations": 5, "team.x": "y"}
    nested = unflatten(flat)
    assert nested == {"ml": {"training": {"learning_rate": 0.1, "max_iterations": 5}}, "team": {"x": "y"}}
    assert dict(flatten(nested)) == flat
