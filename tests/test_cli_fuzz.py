"""Every verb and sub-verb of `mlprefs`, each argument fed garbage: exit 0 or 1, one line, no
traceback. The verbs are found by walking the parser, so a new verb module is fuzzed too."""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import GLOBAL_OPTIONS, build_parser, iter_verbs, main

LR = "ml.training.learning_rate"
# Verbs that run until stopped or train a model: fuzzed only with garbage that must stop
# them before they start (a few cases below), and `watch` again in test_watch_cli.py.
LONG_RUNNING = {("watch",), ("demo",)}
GLOBAL_FLAGS = {flag for flags, _ in GLOBAL_OPTIONS for flag in flags}
# Verbs whose exit 1 is a report on stdout (the problems found), not an error message.
REPORTS = {("validate",), ("doctor",)}


def garbage(tmp: Path) -> list[str]:
    """Values no argument should choke on: huge and negative numbers, empty text, a
    directory, a missing file (relative: each call runs in a fresh empty directory), unicode,
    control text, a key that does not exist, a long name."""
    return ["99999999999999999999999999", "-1", "-99999999999999999999", "0", "", "nan", "inf",
            str(tmp), "missing/file.toml", "ünïcødé-名前-🙂", "a\tb",
            "ml.no.such.key", "x" * 300]


def plausible(action: argparse.Action) -> str:
    """A value that passes the parser for this argument, so the fuzzed one is the culprit."""
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type is int:
        return "1"
    if action.type is float:
        return "0.5"
    if action.dest in ("key", "prefix"):
        return LR
    if action.dest == "value":
        return "0.01"
    if action.dest == "metric":
        return "accuracy=0.9"
    if action.dest == "config":
        return "{}"
    return "sample"


def _arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The verb's own arguments (the global options are fuzzed once, separately)."""
    return [a for a in p.arguments
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
            and not set(a.option_strings) & GLOBAL_FLAGS]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _argv(path: tuple[str, ...], actions: list[argparse.Action],
          fuzzed: argparse.Action | None, value: str | None) -> list[str]:
    argv = list(path)
    for a in actions:
        if not _takes_value(a):
            if a is fuzzed:
                argv.append(a.option_strings[-1])
            continue
        given = value if a is fuzzed else plausible(a)
        if a.option_strings:
            if a is fuzzed or a.required:
                argv.append(f"{a.option_strings[-1]}={given}")  # "=": values may start with "-"
        elif a is fuzzed or a.nargs not in ("?", "*"):
            argv += ["--", given] if given.startswith("-") else [given]
    return argv


def fuzz_calls(tmp: Path) -> Iterator[list[str]]:
    """Every verb: once plausible, then each of its arguments (and --json) with each garbage
    value; the global options with each garbage value once, after a cheap verb."""
    parser = build_parser()
    values = garbage(tmp)
    for path, p in iter_verbs(parser):
        actions = _arguments(p)
        if p.verbs and not actions:  # an intermediate verb: no action given
            yield list(path)
            continue
        if path in LONG_RUNNING:
            continue
        yield _argv(path, actions, None, None)
        yield [*_argv(path, actions, None, None), "--json"]
        for a in actions:
            for v in values if _takes_value(a) else [""]:
                yield _argv(path, actions, a, v)
    for flags, kwargs in GLOBAL_OPTIONS:
        if kwargs.get("action") == "store_true":
            continue
        for v in values:  # relative paths land in the working directory: a fresh one per call
            yield ["list", "ml.training", f"{flags[-1]}={v}"]
            yield [f"{flags[-1]}={v}", "history", "--limit=1"]
    yield from (["demo", "--epochs=0"], ["demo", "--epochs=-5"],
                ["demo", "--epochs=99999999999999999999999"], ["demo", "--pace=x"],
                ["watch", f"--store={tmp}"], ["watch", "--limit=1"])


@pytest.fixture
def seeded(home: Path) -> Path:
    """A store with a value, a history entry, a model, a learning curve and an experiment
    named "sample" (the plausible value), so the fuzzed calls reach past the lookups."""
    with Client() as prefs:
        prefs.set(LR, 0.01)
        prefs.models.register("sample", "1.0.0", framework="sklearn",
                              metrics={"accuracy": 0.9})
        prefs.curves.log("sample", 1, loss=0.5)
    (home / "overrides.toml").write_text(  # A/B testing on, so `experiments` verbs run
        "[ml.global]\nenabled = true\n[ml.features]\nexperiment_tracking = true\n"
        "[ml.experiments]\nab_testing_enabled = true\n")
    with Client() as prefs:
        prefs.experiments.create("sample", control="a", treatment="b")
    (home.parent / "fuzz").mkdir()
    return home.parent / "fuzz"


def _problem(argv: list[str], code: int, out: str, err: str) -> str | None:
    """What is wrong with one call's outcome, or None. Exit 1 is one error line on stderr
    (warnings before it are fine), or one JSON object on stdout under --json, or a verb's
    report on stdout."""
    if code not in (0, 1):
        return f"exit {code}: {argv}: {err.strip()[:300]}"
    if "Traceback" in out + err:
        return f"traceback: {argv}"
    if code == 0:
        return None
    errors = [line for line in err.splitlines() if not line.startswith("mlprefs: warning: ")]
    if len(errors) == 1 and errors[0].startswith("mlprefs"):
        return None
    if not errors and "--json" in argv and out.count("\n") == 1 and '"error"' in out:
        return None
    if not errors and tuple(argv[:1]) in REPORTS and out.strip():
        return None
    return f"not one line: {argv}: {err!r} {out[:200]!r}"


def test_every_verb_fed_garbage_exits_0_or_1_with_one_line_and_no_traceback(seeded, capsys,
                                                                            monkeypatch):
    problems, codes = [], collections.Counter()
    for n, argv in enumerate(fuzz_calls(seeded)):
        cwd = seeded / "cwd" / str(n)  # files one call writes are not the next one's input
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        code = main(argv)
        out, err = capsys.readouterr()
        codes[code] += 1
        problem = _problem(argv, code, out, err)
        if problem:
            problems.append(problem)
    with capsys.disabled():
        print(f"\nfuzzed {sum(codes.values())} calls: " +
              ", ".join(f"exit {c}: {n}" for c, n in sorted(codes.items())))
    assert sum(codes.values()) > 1000 and codes[1] > 0
    assert problems == [], "\n".join(problems[:30])


SAMPLE = [["history", "--limit=99999999999999999999999"], ["rollback", LR, "--to=-1"],
          ["get", "ml.no.such.key"], ["models", "show", "ünïcødé-🙂"],
          ["set", LR, ""], ["--store=/", "list"], ["list", "--json", "--store=/"],
          ["validate", "/nonexistent/dir/x.toml"], ["data", "audit", "--limit=-1"]]


@pytest.mark.parametrize("argv", SAMPLE, ids=lambda a: " ".join(a)[:40])
def test_garbage_in_a_real_subprocess_is_one_line_and_exit_1_or_0(home, argv):
    done = subprocess.run([sys.executable, "-m", "mlprefs_sdk", *argv], capture_output=True,
                          text=True, timeout=120, check=False)
    assert _problem(argv, done.returncode, done.stdout, done.stderr) is None, done.stderr


def test_out_naming_a_directory_exits_1_naming_the_path(seeded, capsys):
    code = main(["data", "export", "sample", f"--out={seeded}"])
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"mlprefs: --out {seeded}:") and "Is a directory" in err


def test_an_unknown_subject_warns_in_one_line_without_a_source_path(seeded, capsys):
    code = main(["data", "erase", "nobody"])
    _, err = capsys.readouterr()
    assert code == 0 and err.startswith("mlprefs: erase: no data was held")
    assert ".py" not in err and err.count("\n") == 1
