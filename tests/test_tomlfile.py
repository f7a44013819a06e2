"""TOML override files: flat dotted keys, the line each was written on, parse errors with position."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

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


# -- strange files at followed paths: an error naming the path, never a hang -------------

def _make(kind: str, path: Path) -> None:
    """Put something other than a regular file at path."""
    if kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink loop":
        path.symlink_to(path)
    elif kind == "dangling symlink":
        path.symlink_to(path.with_name("nowhere.toml"))
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the socket file stays


_SAYS = {"directory": "is a directory", "FIFO": "is a FIFO", "symlink loop": "is a symlink loop",
         "dangling symlink": "is a symlink whose target does not exist", "socket": "is a socket"}
KINDS = list(_SAYS)


def _followed(where: str, home: Path) -> tuple[Path, dict]:
    """The path of one followed file and the Client arguments that follow it."""
    if where == "project":
        return Path.cwd() / "mlprefs.toml", {}
    if where == "user":
        return home / "overrides.toml", {}
    if where == "policy":
        return Path(os.environ["MLPREFS_POLICY"]), {}
    return Path.cwd() / "extra.toml", {"files": ["extra.toml"]}


def _alarm(seconds: int = 20):
    """A hang fails the test instead of stalling the suite."""
    def fail(*_):
        raise TimeoutError("reading a followed file blocked")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    return old


@pytest.fixture
def no_hang():
    old = _alarm()
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("where", ["project", "user", "policy", "explicit"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_non_regular_file_at_a_followed_path_is_an_error_naming_it(home, project_dir, no_hang,
                                                                      kind, where):
    path, kwargs = _followed(where, home)
    _make(kind, path)
    with pytest.raises(ConfigFileError) as e:
        Client(**kwargs)
    assert e.value.path == str(path)
    assert _SAYS[kind] in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_reload_reports_a_followed_file_that_became_non_regular_and_keeps_the_values(
        project_dir, no_hang, kind):
    path = project_dir / "mlprefs.toml"
    path.write_text("[ml.training]\nlearning_rate = 0.05\n")
    errors = []
    with Client() as prefs:
        prefs.on_error(errors.append)
        path.unlink()
        _make(kind, path)
        with pytest.raises(ConfigFileError, match=_SAYS[kind]):
            prefs.reload()
        assert prefs.get("ml.training.learning_rate") == 0.05
        assert [e.path for e in errors] == [str(path)]


def test_a_fifo_named_pyproject_toml_is_reported_not_skipped(project_dir, no_hang):
    os.mkfifo(project_dir / "pyproject.toml")
    with pytest.raises(ConfigFileError, match="pyproject.toml: cannot parse TOML: is a FIFO"):
        Client()


def test_read_toml_refuses_a_fifo_even_with_a_writer_attached(tmp_path, no_hang):
    fifo = tmp_path / "live.toml"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # an open writer that never writes
    try:
        with pytest.raises(ConfigFileError, match="is a FIFO"):
            read_toml(str(fifo))
    finally:
        os.close(writer)


def _read_unprivileged(path: str) -> str:
    """read_toml's outcome as a user who may not read path (a forked child drops to nobody
    when we are root, since root reads any file)."""
    if os.geteuid() != 0:
        try:
            read_toml(path)
            return "read"
        except ConfigFileError as e:
            return str(e)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_toml(path)
                msg = "read"
            except ConfigFileError as e:
                msg = str(e)
            except Exception as e:  # noqa: BLE001 - the child reports any other failure
                msg = f"{type(e).__name__}: {e}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_a_file_without_read_permission_is_an_error_naming_it():
    directory = tempfile.mkdtemp()  # under /tmp, so an unprivileged child can reach it
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "secret.toml")
        with open(path, "w") as f:
            f.write("ml.training.learning_rate = 0.1\n")
        os.chmod(path, 0o000)
        assert _read_unprivileged(path) == (f"{path}: cannot parse TOML: is not readable by this "
                                            f"user (permission denied)")
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_mlprefs_validate_reports_a_non_regular_file(project_dir, capsys, no_hang, kind):
    from mlprefs_sdk.cli import main

    _make(kind, project_dir / "odd.toml")
    assert main(["validate", "odd.toml"]) == 1
    assert f"odd.toml: cannot parse TOML: {_SAYS[kind]}" in capsys.readouterr().out


# -- encodings ----------------------------------------------------------------------------

def test_a_utf8_file_with_a_bom_loads_with_its_lines(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[ml.training]\nlearning_rate = 0.02\n")
    assert dict(read_toml(str(path)).values) == {"ml.training.learning_rate": (0.02, 2)}


def test_a_file_that_is_not_utf8_names_the_line_and_column_of_the_first_bad_byte(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('a = 1\n\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigFileError) as e:
        read_toml(str(path))
    assert (e.value.line, e.value.column) == (3, 12)
    assert "byte 0xe9" in e.value.reason


# -- the [project] table ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["name", "template"])
@pytest.mark.parametrize("value,shown", [('["a", "b"]', "array"), ("{ x = 1 }", "table"),
                                         ("3", "int"), ("true", "bool")])
def test_a_project_entry_of_the_wrong_type_is_a_validation_error_with_file_and_line(
        project_dir, field, value, shown):
    (project_dir / "mlprefs.toml").write_text(f"[project]\n{field} = {value}\n")
    with pytest.raises(ValidationError) as e:
        Client()
    assert not isinstance(e.value, ConfigFileError)
    assert f"project.{field} = " in str(e.value)
    assert f"in ./mlprefs.toml:2 has type {shown}, expected str" in str(e.value)


def test_a_project_entry_that_is_not_a_table_is_a_validation_error(project_dir):
    (project_dir / "mlprefs.toml").write_text('project = "churn"\n')
    with pytest.raises(ValidationError, match=r'project = "churn" in ./mlprefs.toml:1 must be a table'):
        Client()


def test_a_pyproject_project_entry_of_the_wrong_type_names_the_pyproject_line(project_dir):
    (project_dir / "pyproject.toml").write_text('[project]\nname = "pkg"\n\n'
                                                "[tool.mlprefs.project]\nname = 5\n")
    with pytest.raises(ValidationError, match=r"project.name = 5 in ./pyproject.toml:5 has type int"):
        Client()


# -- line numbers of every spelling of a key ----------------------------------------------

def test_keys_after_an_array_of_tables_keep_their_own_lines():
    text = ("[[runs]]\n"                          # 1
            "learning_rate = 9.0\n"               # 2  (inside the array: not ml.*)
            "[[runs]]\n"                          # 3
            "name = 'b'\n"                        # 4
            "[ml.training]\n"                     # 5
            "learning_rate = 0.1\n")              # 6
    doc = parse_toml(text, "a.toml")
    assert doc.values["ml.training.learning_rate"] == (0.1, 6)
    assert doc.values["runs"][1] == 1


@pytest.mark.parametrize("spelling", [
    '"ml.training".learning_rate',
    'ml."training".learning_rate',
    "ml.'training'.\"learning_rate\"",
    '"ml".training."learning\\u005frate"',
    'ml . training . learning_rate',
])
def test_quoted_and_escaped_keys_get_their_line(spelling):
    doc = parse_toml(f"# x\n\n{spelling} = 0.3\n", "a.toml")
    assert dict(doc.values) == {"ml.training.learning_rate": (0.3, 3)}


def test_keys_of_inline_tables_inside_arrays_and_multiline_strings_do_not_shift_lines():
    text = ('a = """\n'                          # 1
            "[ml.fake]\n"                        # 2
            'x = 1 """""\n'                      # 3  (the string ends here)
            "b = [ { c = 1 }, '[', \"]\",\n"     # 4
            "  [ 2, 3 ], # ] comment\n"          # 5
            "]\n"                                # 6
            "when = 1979-05-27 07:32:00Z\n"      # 7
            "c = [ '[[', \n"                      # 8
            "]\n"                                # 9
            "[ml.performance]\n"                 # 10
            "batch_size = 64\n")                 # 11
    doc = parse_toml(text, "a.toml")
    assert {k: line for k, (_, line) in doc.values.items()} == {
        "a": 1, "b": 4, "when": 7, "c": 8, "ml.performance.batch_size": 11}


def test_two_spellings_of_one_key_are_a_duplicate_key_problem(tmp_path, project_dir):
    (project_dir / "mlprefs.toml").write_text('[ml.training]\nlearning_rate = 0.1\n\n'
                                              '[ml."training.learning_rate"]\n')
    (project_dir / "mlprefs.toml").write_text('"ml.training".learning_rate = 0.1\n'
                                              "ml.training.learning_rate = 0.2\n")
    with pytest.raises(ValidationError) as e:
        Client()
    assert [p.rule for p in e.value.problems] == ["duplicate-key"]
    assert "./mlprefs.toml:2" in str(e.value) and "line 1, which is used" in str(e.value)


# -- pathological input: a clear error in bounded time -------------------------------------

DEEP = 5000


def test_a_key_5000_segments_deep_is_an_ordinary_key(project_dir, caplog):
    key = ".".join(f"s{i}" for i in range(DEEP))
    (project_dir / "mlprefs.toml").write_text(f"team.{key} = 1\n")
    with Client() as prefs:
        assert [w.key for w in prefs.warnings] == [f"team.{key}"]
    assert max(len(r.getMessage()) for r in caplog.records) < 2_000


def test_a_table_header_5000_segments_deep_under_ml_is_a_validation_error(project_dir):
    key = ".".join(f"s{i}" for i in range(DEEP))
    (project_dir / "mlprefs.toml").write_text(f"[ml.{key}]\nx = 1\n")
    with pytest.raises(ValidationError) as e:
        Client()
    assert e.value.problems[0].source.line == 2
    assert len(str(e.value)) < 2_000


@pytest.mark.parametrize("opened,closed", [("{a = ", "}"), ("[", "]")])
def test_values_nested_5000_deep_are_a_config_file_error_with_a_line(project_dir, opened, closed):
    (project_dir / "mlprefs.toml").write_text(
        "ml.training.learning_rate = 0.1\n" f"x = {opened * DEEP}1{closed * DEEP}\n")
    with pytest.raises(ConfigFileError, match="nested too deeply") as e:
        Client()
    assert e.value.line == 2


def test_deep_nesting_during_reload_reaches_on_error(project_dir):
    path = project_dir / "mlprefs.toml"
    path.write_text("ml.training.learning_rate = 0.1\n")
    errors = []
    with Client() as prefs:
        prefs.on_error(errors.append)
        path.write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")
        with pytest.raises(ConfigFileError):
            prefs.reload()
        assert prefs.get("ml.training.learning_rate") == 0.1
    assert len(errors) == 1 and errors[0].line == 1


def test_100k_unregistered_keys_log_a_summary_not_100k_lines(project_dir, caplog):
    n = 100_000
    (project_dir / "mlprefs.toml").write_text("".join(f"team.k{i} = {i}\n" for i in range(n)))
    with Client() as prefs:
        assert len(prefs.warnings) == n
    lines = [r.getMessage() for r in caplog.records if r.name == "mlprefs_sdk.client"]
    assert len(lines) == 21
    assert lines[-1] == "mlprefs: ... and 99,980 more warnings (every one is in Client.warnings)"


def test_20k_unknown_ml_keys_give_a_short_message_and_every_problem(project_dir):
    n = 20_000
    (project_dir / "mlprefs.toml").write_text(
        "".join(f"ml.training.lr{i} = {i}\n" for i in range(n)))
    with pytest.raises(ValidationError) as e:
        Client()
    assert len(e.value.problems) == n
    assert e.value.problems[-1].source.line == n
    message = str(e.value)
    assert len(message) < 5_000
    assert message.splitlines()[0] == f"{n} problems found in mlprefs preferences:"
    assert message.splitlines()[-1] == "  ... and 19,980 more problems (every one is in .problems)"


def test_a_huge_value_is_cut_in_the_message_and_kept_whole_in_the_problem(project_dir):
    big = "x" * 100_000
    (project_dir / "mlprefs.toml").write_text(f'ml.training.learning_rate = "{big}"\n')
    with pytest.raises(ValidationError) as e:
        Client()
    assert e.value.problems[0].value == big
    assert len(str(e.value)) < 1_200
    assert str(e.value).endswith("more characters)")


# -- cases from the toml-test corpus (github.com/toml-lang/toml-test, TOML 1.0.0) ----------

@pytest.mark.parametrize("name,text,lines", [
    ("valid/key/quoted-dots", ('plain = 1\n"with.dot" = 2\n\n[plain_table]\nplain = 3\n'
                              '"with.dot" = 4\n'),
     {"plain": 1, "with.dot": 2, "plain_table.plain": 5, "plain_table.with.dot": 6}),
    ("valid/string/multiline-quotes", ("lit_one = ''''one quote''''\n"
                                      'one = """"one quote""""\ntwo = """""two quotes"""""\n'),
     {"lit_one": 1, "one": 2, "two": 3}),
    ("valid/comment/everywhere", ("# Top comment.\n[group] # Comment\nanswer = 42 # Comment\n"
                                 "more = [ # Comment\n  # What about multiple # comments?\n"
                                 "  42, 42, # Comments\n] # Hopefully not.\nlast = 1\n"),
     {"group.answer": 3, "group.more": 4, "group.last": 8}),
    ("valid/newline-crlf", 'os = "DOS"\r\nnewline = "crlf"\r\n', {"os": 1, "newline": 2}),
    ("valid/key/escapes", '"\\n" = "newline"\n"\\u00c0" = "latin capital letter A with grave"\n',
     {"\n": 1, "\u00c0": 2}),
])
def test_toml_test_valid_cases_load_with_the_right_line_for_every_key(name, text, lines):
    doc = parse_toml(text, "case.toml")
    assert {key: line for key, (_, line) in doc.values.items()} == lines, name


@pytest.mark.parametrize("name,data,line", [
    ("invalid/encoding/bad-utf8-in-comment", b"# \xc3\n", 1),
    ("invalid/encoding/bad-utf8-in-string", (b'# The following line contains an invalid UTF-8 sequence.\n'
                                            b'bad = "\xc3"\n'), 2),
    ("invalid/control/bare-null", b'bare-null = "some value" \x00\n', 1),
    ("invalid/table/duplicate-key-dotted-table", (b"[fruit]\napple.color = \"red\"\n\n"
                                                 b"[fruit.apple] # INVALID\n"), 4),
    ("invalid/inline-table/overwrite-01", (b'a.b=0\n# Since table "a" is already defined, it '
                                          b'can\'t be replaced by an inline table.\na={}\n'), 3),
    ("invalid/string/multiline-quotes-1", b'a = """6 quotes: """"""\n', 1),
])
def test_toml_test_invalid_cases_are_config_file_errors_with_a_line(tmp_path, name, data, line):
    path = tmp_path / "case.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigFileError) as e:
        read_toml(str(path))
    assert e.value.line == line, name


def test_a_utf16_file_is_an_error_that_says_so(tmp_path):
    path = tmp_path / "utf16.toml"
    path.write_bytes("ml.training.learning_rate = 0.1\n".encode("utf-16"))
    with pytest.raises(ConfigFileError, match="is UTF-16 text; TOML files are UTF-8") as e:
        read_toml(str(path))
    assert e.value.line == 1


def test_a_file_beyond_the_size_limit_is_refused_before_it_is_read(tmp_path):
    from mlprefs_sdk.tomlfile import MAX_FILE_BYTES

    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ConfigFileError, match="is larger than 16 MiB"):
        read_toml(str(path))


def test_mlprefs_validate_without_files_reports_a_fifo_project_file(project_dir, capsys, no_hang):
    from mlprefs_sdk.cli import main

    os.mkfifo(project_dir / "mlprefs.toml")
    assert main(["validate"]) == 1
    assert "./mlprefs.toml: cannot parse TOML: is a FIFO" in capsys.readouterr().out


def test_an_array_of_tables_at_a_key_is_a_type_error_at_its_header_line(project_dir):
    (project_dir / "mlprefs.toml").write_text("# runs\n[[ml.training.learning_rate]]\nx = 1\n")
    with pytest.raises(ValidationError, match=r"in ./mlprefs.toml:2 has type list, expected float"):
        Client()
