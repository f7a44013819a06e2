"""The seams between the Client and everything else: public, named, and few private reaches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.errors import MlprefsError
from mlprefs_sdk.layers import Entry, Layer
from mlprefs_sdk.values import Source

PACKAGE = Path(__file__).resolve().parent.parent / "mlprefs_sdk"
LR = "ml.training.learning_rate"
MAX_PRIVATE_REACHES = 15  # issue 12; each one left is named in the report that closed it


def private_reaches() -> list[str]:
    """x._name where x is not self/cls (nor a class in its own family), across the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            v = node.value
            if isinstance(v, ast.Name) and (v.id in ("self", "cls") or v.id[:1].isupper()
                                            or (v.id, node.attr) == ("os", "_exit")):
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_package_reaches_into_other_objects_privates_at_most_15_times():
    found = private_reaches()
    assert len(found) <= MAX_PRIVATE_REACHES, "\n".join(found)


def test_sources_name_the_files_behind_each_slot_once(home, project_dir, tmp_path):
    extra = tmp_path / "extra.toml"
    with Client(files=[extra]) as prefs:
        groups = dict((slots, paths) for slots, paths in prefs.sources.groups())
    assert groups[("org", "locked")] == [prefs.locations.policy]
    assert groups[("user-file",)] == [prefs.locations.user_file]
    assert groups[("file",)] == [str(extra)]
    assert str(project_dir / "mlprefs.toml") in groups[("project-file",)]


def test_sources_read_only_the_slots_asked_for(home):
    with Client() as prefs:
        layers = prefs.sources.read(["user", "env"], prefs.catalog)
    assert sorted(layers) == ["env", "user"]


def test_set_many_parses_strings_as_the_command_line_gives_them(home):
    with Client() as prefs:
        prefs.set_many({LR: "0.02", "ml.training.max_iterations": "50"}, "user", from_string=True)
        assert (prefs.get(LR), prefs.get("ml.training.max_iterations")) == (0.02, 50)


def test_the_dispatchers_pending_queue_is_truthy_while_a_deferred_change_waits(home):
    with Client() as prefs:
        prefs.on_change(LR, lambda cs: None, deliver="deferred")
        prefs.set(LR, 0.02)
        assert prefs.events.pending
        prefs.apply_pending()
        assert not prefs.events.pending


def rank_layer(value: float) -> Layer:
    return Layer("runtime", {LR: Entry(value, Source("runtime", detail="rank 0: test"))})


def test_a_rank_layer_holds_its_values_until_it_is_dropped(home):
    with Client() as prefs:
        assert prefs.set_rank_layer(rank_layer(0.03), origin="rank 0's preferences")
        assert prefs.get(LR) == 0.03
        assert prefs.set_rank_layer(None, origin="the end of the run")
        assert prefs.get(LR) == prefs.spec(LR).default


def test_a_rejected_rank_layer_leaves_the_previous_one_in_place(home):
    with Client() as prefs:
        prefs.set_rank_layer(rank_layer(0.03), origin="rank 0's preferences")
        errors: list[MlprefsError] = []
        prefs.on_error(errors.append)
        assert not prefs.set_rank_layer(rank_layer(-1.0), origin="rank 0's preferences")
        assert prefs.get(LR) == 0.03 and errors


def test_the_watcher_is_reachable_by_its_public_name(home):
    with Client(watch=True) as prefs:
        assert prefs.watcher is not None and prefs.watcher.alive
        assert prefs.locations.user_file in prefs.watcher.paths


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_the_client_names_the_locks_its_watcher_holds_across_fork(home):
    with Client() as prefs:
        locks = prefs.fork_locks()
        assert prefs.events.lock in locks and len(locks) == len(set(map(id, locks)))
