"""Every CLI verb is documented in README.md or docs/*.md (a verb without documentation fails)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mlprefs_sdk.cli import build_parser

REPO = Path(__file__).resolve().parent.parent


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """'get', 'set', ..., 'templates list', ...: every verb, with the actions of nested ones."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + name)
                found.extend(_subcommands(sub, prefix + name + " "))
    return found


def _documentation() -> str:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages if p.exists())


VERBS = _subcommands(build_parser())


def test_the_core_verbs_are_all_there():
    assert {"get", "set", "unset", "list", "explain", "validate", "history", "rollback",
            "export", "import", "templates", "doctor"} <= set(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_is_documented(verb):
    docs = _documentation()
    pattern = r"mlprefs(?: --?[\w-]+(?: [\w./:-]+)?)* " + re.escape(verb) + r"\b"
    assert re.search(pattern, docs), (
        f"`mlprefs {verb}` is not documented: add it to docs/cli.md")


def test_the_documented_number_of_built_in_keys_is_the_catalog_s():
    import tomllib

    with open(REPO / "defaults.toml", "rb") as f:
        catalog = tomllib.load(f)
    count = sum(1 for _ in _keys(catalog))
    stated = re.findall(r"defines the (\d+) built-in keys", _documentation())
    assert stated and all(int(n) == count for n in stated), (stated, count)


def _keys(table: dict, prefix: str = ""):
    """Catalog entries are the tables that hold a `type`."""
    for name, value in table.items():
        if isinstance(value, dict):
            if "type" in value and not isinstance(value["type"], dict):
                yield prefix + name
            else:
                yield from _keys(value, prefix + name + ".")
