"""The `mlprefs` command (SPEC section 5): every core verb, --json, exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import main

LR = "ml.training.learning_rate"
BATCH = "ml.performance.batch_size"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, _ = run(capsys, "--json", *argv)
    return code, json.loads(out)


def console_script() -> str:
    """The installed `mlprefs` entry point next to this interpreter."""
    path = Path(sys.executable).with_name("mlprefs")
    if not path.exists():
        pytest.skip("the mlprefs console script is not installed beside this interpreter")
    return str(path)


# -- get / set / unset -----------------------------------------------------------------


def test_get_prints_the_value(home, capsys):
    assert run(capsys, "get", LR) == (0, "0.001\n", "")
    assert run(capsys, "get", "ml.global.enabled")[1] == "false\n"
    assert run_json(capsys, "get", LR) == (0, {"key": LR, "value": 0.001})


def test_get_of_an_unknown_key_exits_1_with_a_suggestion(home, capsys):
    code, out, err = run(capsys, "get", "ml.training.batch")
    assert (code, out) == (1, "")
    assert err == ("mlprefs: unknown preference key 'ml.training.batch'; "
                   "did you mean ml.performance.batch_size?\n")
    code, data = run_json(capsys, "get", "ml.training.batch")
    assert code == 1 and data["error"] == "UnknownKeyError"


def test_set_coerces_the_string_and_stores_it(home, capsys):
    code, out, _ = run(capsys, "set", BATCH, "64", "--reason", "fits GPU")
    assert code == 0
    assert out == f"{BATCH} = 64 stored in user scope (history #1); resolved value now 64\n"
    code, data = run_json(capsys, "set", "ml.global.enabled", "true")
    assert code == 0 and (data["key"], data["new"], data["scope"]) == ("ml.global.enabled", True, "user")
    with Client() as prefs:
        assert prefs.get(BATCH) == 64 and prefs.get("ml.global.enabled") is True
        assert prefs.history(BATCH)[0].reason == "fits GPU"


def test_set_of_an_invalid_value_exits_1_naming_key_value_rule_and_source(home, capsys):
    code, out, err = run(capsys, "set", BATCH, "4096")
    assert (code, out) == (1, "")
    assert err.startswith(f"mlprefs: {BATCH} = 4096 in user (")
    assert err.endswith("is above the maximum 1024\n")
    code, data = run_json(capsys, "set", BATCH, "lots")
    assert code == 1 and data["error"] == "ValidationError"
    (problem,) = data["problems"]
    assert (problem["key"], problem["value"], problem["rule"]) == (BATCH, "lots", "type")


def test_set_of_a_locked_key_exits_1(home, policy_file, capsys):
    policy_file.write_text("[locked]\nml.performance.batch_size = 64\n")
    code, data = run_json(capsys, "set", BATCH, "128")
    assert code == 1 and data["error"] == "LockedKeyError"
    assert data["message"].startswith(f"{BATCH} is locked to 64 by {policy_file}:2")


def test_set_into_the_project_scope_uses_the_project_option(home, capsys):
    assert run(capsys, "--project", "churn", "set", BATCH, "16", "--scope", "project")[0] == 0
    with Client(project="churn") as prefs:
        assert prefs.explain(BATCH).source.layer == "project"
    code, out, err = run(capsys, "set", BATCH, "16", "--scope", "project")
    assert code == 1 and "scope 'project' needs a project" in err


def test_unset_removes_a_stored_value(home, capsys):
    run(capsys, "set", BATCH, "64")
    code, out, _ = run(capsys, "unset", BATCH)
    assert code == 0 and out.endswith("resolved value now 32\n")
    code, out, _ = run(capsys, "unset", BATCH)
    assert (code, out) == (0, f"{BATCH} was not set in user scope\n")
    assert run_json(capsys, "unset", BATCH) == (0, None)


# -- list / explain ----------------------------------------------------------------------


def test_list_prints_every_key_under_a_prefix(home, capsys):
    code, out, _ = run(capsys, "list", "ml.training")
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert code == 0 and len(lines) == 12
    assert lines["ml.training.learning_rate"] == ["=", "0.001", "[user]"]
    code, rows = run_json(capsys, "list")
    assert len(rows) == 62
    assert {r["key"]: r for r in rows}["ml.data.sharing_allowed"]["sensitive"] is True


def test_list_with_sources_says_where_each_value_comes_from(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 64\n")
    code, out, _ = run(capsys, "list", BATCH, "--sources")
    assert code == 0 and out.rstrip().endswith("<- ./mlprefs.toml:1")
    code, rows = run_json(capsys, "list", BATCH, "--sources")
    assert rows[0]["source"] == {"layer": "project-file", "path": str(project_dir / "mlprefs.toml"),
                                 "line": 1, "detail": None}


def test_explain_json_has_the_spec_shape(home, project_dir, policy_file, capsys):
    policy_file.write_text("[locked]\nml.training.learning_rate = 0.01\n")
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 0.1\n")
    code, data = run_json(capsys, "explain", LR)
    assert code == 0
    assert {"key", "value", "locked", "source", "chain"} <= set(data)
    assert (data["key"], data["value"], data["locked"]) == (LR, 0.01, True)
    assert data["source"] == {"layer": "locked", "path": str(policy_file), "line": 2, "detail": None}
    assert [(c["layer"], c["value"]) for c in data["chain"]] == [
        ("defaults", 0.001), ("project-file", 0.1), ("locked", 0.01)]
    assert set(data["chain"][1]["source"]) == {"layer", "path", "line", "detail"}


def test_explain_text_marks_the_winning_layer(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("ml.training.learning_rate = 0.1\n")
    code, out, _ = run(capsys, "explain", LR)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{LR} = 0.1"
    assert lines[1] == "  from    ./mlprefs.toml:1"
    assert lines[2] == "  type    float 1e-06..1.0"
    assert lines[-1].split() == ["*", "project-file", "0.1", "./mlprefs.toml:1"]


# -- validate -----------------------------------------------------------------------------


def test_validate_of_good_sources_exits_0(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 64\n")
    assert run(capsys, "validate") == (0, "ok\n", "")
    code, data = run_json(capsys, "validate")
    assert code == 0 and data == {"ok": True, "problems": [], "warnings": []}


def test_validate_reports_problems_with_file_and_line_and_exits_1(home, project_dir, capsys):
    (project_dir / "bad.toml").write_text("[ml.training]\nlearning_rate = 5.0\nbatch = 3\n")
    code, out, _ = run(capsys, "validate", "bad.toml")
    assert code == 1
    assert out.splitlines() == [
        "error: ml.training.learning_rate = 5.0 in ./bad.toml:2 is above the maximum 1.0",
        "error: ml.training.batch = 3 in ./bad.toml:3 is not a known key; did you mean "
        "ml.performance.batch_size?",
        "2 problem(s)",
    ]
    code, data = run_json(capsys, "validate", "bad.toml")
    assert code == 1 and not data["ok"]
    assert [(p["line"], p["rule"]) for p in data["problems"]] == [(2, "max"), (3, "unknown-key")]


def test_validate_without_files_checks_every_discovered_source(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 0\n")
    (home / "overrides.toml").write_text("ml.performance.batch_size = 48\n")
    code, out, _ = run(capsys, "validate")
    assert code == 1
    assert "./mlprefs.toml:1 is below the minimum 1" in out


def test_validate_lists_warnings_but_exits_0(home, project_dir, capsys):
    (project_dir / "mlprefs.toml").write_text("ml.performance.batch_size = 48\n")
    code, out, _ = run(capsys, "validate")
    assert code == 0
    assert out.splitlines() == ["warning: ml.performance.batch_size = 48 in ./mlprefs.toml:1 "
                                "is not a power of two", "ok"]


def test_validate_of_broken_toml_gives_line_and_column(home, project_dir, capsys):
    (project_dir / "broken.toml").write_text("a = 1\nb = = 2\n")
    code, data = run_json(capsys, "validate", "broken.toml")
    assert code == 1
    (problem,) = data["problems"]
    assert (problem["line"], problem["rule"]) == (2, "toml")
    assert problem["message"] == "./broken.toml:2:5: cannot parse TOML: Invalid value"


def test_validate_of_a_missing_file_is_a_usage_error(home, capsys):
    code, out, err = run(capsys, "validate", "absent.toml")
    assert (code, err) == (1, "mlprefs: absent.toml: no such file\n")


# -- history / rollback ---------------------------------------------------------------------


def test_history_and_rollback(home, capsys):
    run(capsys, "set", BATCH, "64")
    run(capsys, "set", BATCH, "128", "--reason", "bigger GPU")
    code, out, _ = run(capsys, "history", BATCH)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("#2 ") and lines[0].endswith("64 -> 128  by " + _login() + "  # bigger GPU")
    code, entries = run_json(capsys, "history")
    assert [e["id"] for e in entries] == [2, 1]
    code, out, _ = run(capsys, "rollback", BATCH, "--to", "1")
    assert code == 0 and out == f"{BATCH} rolled back to #1; resolved value now 64\n"
    assert run(capsys, "get", BATCH)[1] == "64\n"
    code, entry = run_json(capsys, "rollback", BATCH, "--to", "2")
    assert code == 0 and (entry["id"], entry["old"], entry["new"]) == (4, 64, 128)
    assert entry["reason"] == "rollback to #2"


def test_rollback_to_an_unrelated_entry_exits_1(home, capsys):
    run(capsys, "set", BATCH, "64")
    code, out, err = run(capsys, "rollback", LR, "--to", "1")
    assert code == 1 and "history entry #1 is not a change of ml.training.learning_rate" in err


def test_history_when_empty(home, capsys):
    assert run(capsys, "history") == (0, "(no history)\n", "")


def _login() -> str:
    import getpass

    return getpass.getuser()


# -- export / import -------------------------------------------------------------------------


def test_export_toml_masks_sensitive_values_and_imports_back(home, project_dir, capsys):
    run(capsys, "set", BATCH, "64")
    code, out, _ = run(capsys, "export")
    assert code == 0
    assert 'sharing_allowed = "********"' in out
    (project_dir / "exported.toml").write_text(out)
    with Client() as prefs:
        prefs.unset(BATCH)
    code, out, _ = run(capsys, "--project", "churn", "import", "exported.toml", "--scope", "project")
    assert code == 0 and out == "imported 61 value(s) from exported.toml into project scope\n"
    with Client(project="churn") as prefs:
        assert prefs.get(BATCH) == 64
        assert prefs.explain("ml.data.sharing_allowed").source.layer == "defaults"


def test_export_json(home, capsys):
    code, out, _ = run(capsys, "export", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data[LR] == 0.001 and data["ml.data.sharing_allowed"] == "********"
    assert run_json(capsys, "export") == (0, data)


def test_import_json_lists_the_stored_entries(home, project_dir, capsys):
    (project_dir / "in.toml").write_text("[ml.performance]\nbatch_size = 64\nparallel_workers = 2\n")
    code, entries = run_json(capsys, "import", "in.toml", "--reason", "team defaults")
    assert code == 0
    assert [(e["key"], e["new"], e["reason"]) for e in entries] == [
        (BATCH, 64, "team defaults"), ("ml.performance.parallel_workers", 2, "team defaults")]


def test_import_validates_everything_before_storing_anything(home, project_dir, capsys):
    (project_dir / "in.toml").write_text("ml.performance.batch_size = 64\nml.training.learning_rate = 9.0\n")
    code, data = run_json(capsys, "import", "in.toml")
    assert code == 1 and data["error"] == "ValidationError"
    with Client() as prefs:
        assert prefs.history() == []


def test_import_of_a_missing_or_empty_file_exits_1(home, project_dir, capsys):
    assert run(capsys, "import", "absent.toml")[0] == 1
    (project_dir / "empty.toml").write_text("# nothing\n")
    code, out, err = run(capsys, "import", "empty.toml")
    assert code == 1 and "holds no preference keys" in err


# -- templates / doctor ---------------------------------------------------------------------


def test_templates_list_show_and_apply(home, capsys):
    code, out, _ = run(capsys, "templates", "list")
    assert code == 0 and out.split() == ["privacy-strict", "production", "quick-experiment"]
    code, values = run_json(capsys, "templates", "show", "privacy-strict")
    assert values["ml.data.retention_days"] == 90
    assert run_json(capsys, "templates", "list") == (0, ["privacy-strict", "production",
                                                         "quick-experiment"])
    code, out, _ = run(capsys, "templates", "apply", "privacy-strict")
    assert code == 0 and out == "applied template privacy-strict: 7 value(s) stored\n"
    code, entries = run_json(capsys, "--project", "churn", "templates", "apply", "production",
                             "--scope", "project")
    assert code == 0 and {e["scope"] for e in entries} == {"project"} and len(entries) == 9
    assert run(capsys, "get", "ml.data.retention_days")[1] == "90\n"
    code, out, err = run(capsys, "templates", "show", "nope")
    assert code == 1 and "no template named 'nope'" in err


def test_doctor_reports_paths_versions_and_store_integrity(home, capsys):
    code, data = run_json(capsys, "doctor")
    assert code == 0
    assert data["paths"]["store"] == str(home / "prefs.db")
    assert data["store"]["integrity"] == "ok" and data["store"]["schema_version"] >= 2
    assert data["versions"]["mlprefs-sdk"] and data["versions"]["sqlite"]
    assert "ml.global.enabled" in data["admin_keys_not_locked"]
    code, out, _ = run(capsys, "doctor")
    assert code == 0 and "integrity ok" in out


def test_doctor_leaves_out_admin_keys_that_a_policy_lock_pins(home, policy_file, capsys):
    policy_file.write_text("[locked]\nml.global.enabled = false\n")
    _, data = run_json(capsys, "doctor")
    assert "ml.global.enabled" not in data["admin_keys_not_locked"]


# -- exit codes and usage -----------------------------------------------------------------------


def test_a_store_that_cannot_be_opened_exits_2(home, tmp_path, capsys):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database " * 100)
    code, out, err = run(capsys, "--store", str(bad), "get", LR)
    assert code == 2 and "not an mlprefs store" in err
    code, data = run_json(capsys, "--store", str(bad), "get", LR)
    assert code == 2 and data["error"] == "StoreError"


def test_bad_usage_exits_1_and_help_exits_0(home, capsys):
    assert run(capsys, "set", BATCH)[0] == 1
    assert run(capsys, "frobnicate")[0] == 1
    assert run(capsys, "--help")[0] == 0


def test_the_console_script_runs_in_a_subprocess(home):
    script = console_script()
    done = subprocess.run([script, "--json", "explain", LR], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"]["layer"] == "defaults"
    done = subprocess.run([script, "set", BATCH, "2048"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is above the maximum 1024" in done.stderr
    done = subprocess.run([script, "get", BATCH], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "32\n")


def test_python_dash_m_runs_the_same_cli(home):
    done = subprocess.run([sys.executable, "-m", "mlprefs_sdk", "set", BATCH, "16"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "mlprefs_sdk", "--json", "get", BATCH],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == {"key": BATCH, "value": 16}


def test_an_internal_error_exits_2_in_a_subprocess(home, tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database " * 100)
    done = subprocess.run([console_script(), "--store", str(bad), "list"], capture_output=True,
                          text=True, timeout=60, env={**os.environ})
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_closed_pipe_is_not_an_error(home):
    proc = subprocess.Popen(f"'{console_script()}' list | head -n 1", shell=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert out.startswith("ml.") and "BrokenPipe" not in err


# -- conventions: --version, global options anywhere, help with an example -------------------


def test_version_prints_the_version(capsys):
    from mlprefs_sdk import __version__

    assert run(capsys, "--version") == (0, f"mlprefs {__version__}\n", "")


def test_global_options_are_accepted_after_the_verb(home, tmp_path, capsys):
    store = tmp_path / "other.db"
    argv = ["set", BATCH, "64", "--store", str(store), "--user", "bob", "--json"]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "") and json.loads(out)["actor"] == "bob"
    assert run_json(capsys, "get", BATCH, f"--store={store}", "--user=bob") == \
        (0, {"key": BATCH, "value": 64})
    assert run(capsys, "get", BATCH, "--json", "-v")[1] == json.dumps({"key": BATCH, "value": 32}) + "\n"
    code, out, _ = run(capsys, "set", BATCH, "8", "--scope", "project", "--project", "vision")
    assert code == 0 and run(capsys, "--project", "vision", "get", BATCH)[1] == "8\n"


def test_a_global_option_given_before_the_verb_is_kept(home, capsys):
    assert run(capsys, "--json", "templates", "list")[1].startswith("[")


def _every_verb_help():
    from mlprefs_sdk.cli import build_parser, iter_verbs

    for path, parser in iter_verbs(build_parser()):
        yield " ".join(path), parser


@pytest.mark.parametrize("verb", [name for name, _ in _every_verb_help()])
def test_every_verb_help_describes_each_argument_and_ends_with_an_example(verb, capsys):
    parser = dict(_every_verb_help())[verb]
    undocumented = [a.dest for a in parser.arguments if not a.help]
    assert undocumented == [], f"mlprefs {verb}: arguments without help text"
    code, out, _ = run(capsys, *verb.split(), "--help")
    lines = out.rstrip().splitlines()
    assert code == 0 and lines[-2] == "example:", lines[-3:]
    assert lines[-1].startswith(f"  mlprefs {verb}")


def test_the_examples_in_the_help_parse(home):
    from mlprefs_sdk.cli import build_parser

    parser = build_parser()
    for _verb, p in _every_verb_help():
        example = p.epilog.splitlines()[-1].split(">")[0]  # no shell redirection
        parser.parse_args(shlex.split(example)[1:])  # a usage error raises


def test_doctor_on_a_store_with_damaged_pages_prints_its_integrity_report(home, capsys):
    from test_store import damage_history_pages

    db = home / "prefs.db"
    damage_history_pages(db)
    code, out, err = run(capsys, "doctor")
    assert (code, err) == (2, "")
    assert "integrity FAILED" in out and "malformed" in out
    assert f"what to do: restore {db} from a backup" in out
    code, data = run_json(capsys, "doctor")
    assert code == 2 and data["store"]["integrity"] == "FAILED"
    assert data["store"]["integrity_problems"]


def test_a_directory_given_as_the_store_exits_1_naming_it(home, tmp_path, capsys):
    code, out, err = run(capsys, "--store", str(tmp_path), "get", LR)
    assert code == 1 and err == (f"mlprefs: cannot create the store {tmp_path}: it is a "
                                 "directory, not a store file; set MLPREFS_HOME or MLPREFS_STORE "
                                 "to a writable location\n")


def test_validate_summarises_a_flood_of_warnings_in_text_and_lists_them_all_in_json(home, project_dir, capsys):
    keys = "\n".join(f"k{i} = {i}" for i in range(500))
    (project_dir / "flood.toml").write_text(f"[team.flood]\n{keys}\n")
    code, out, _ = run(capsys, "validate", "flood.toml")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == "ok" and len(lines) == 22
    assert lines[-2] == "... and 480 more warnings (--json lists every one)"
    code, data = run_json(capsys, "validate", "flood.toml")
    assert code == 0 and len(data["warnings"]) == 500
