"""Plugin discovery: a real distribution (a dist-info with entry_points.txt) on sys.path."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.plugins import BUILTINS, PluginError

ACME = '''
from mlprefs_sdk.hookspecs import hookimpl


@hookimpl
def mlprefs_register_keys(register):
    register("acme.stop_after", int, 3, min=1, description="epochs before acme stops training")


@hookimpl
def mlprefs_should_stop(hooks):
    limit = hooks.get("acme.stop_after")
    if hooks.iteration >= limit:
        return f"acme: {limit} epochs are enough"
'''


def make_dist(site: Path, module: str, source: str, name: str = "acme") -> Path:
    """What `pip install` leaves behind: the module plus a dist-info naming its entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mlprefs_sdk]\n{name} = {module}\n")
    return site


@pytest.fixture
def acme(tmp_path, monkeypatch):
    site = make_dist(tmp_path / "site", "acme_mlprefs", ACME)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "acme_mlprefs", raising=False)
    return site


def test_an_installed_plugin_is_discovered_adds_its_key_and_stops_training(home, acme):
    Path("mlprefs.toml").write_text("[acme]\nstop_after = 2\n")
    with Client() as prefs:
        assert prefs.get("acme.stop_after") == 2
        assert prefs.plugin_manager.get_plugin("acme") is sys.modules["acme_mlprefs"]
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        for epoch in range(10):
            hooks.on_epoch_end(epoch)
            if hooks.should_stop:
                break
    assert hooks.iteration == 2
    assert hooks.stop_reason == "acme: 2 epochs are enough"


def test_a_fresh_interpreter_discovers_the_plugin(home, acme):
    env = {**os.environ, "PYTHONPATH": str(acme)}
    code = ("from mlprefs_sdk import Client\n"
            "with Client() as prefs:\n"
            "    print(sorted(prefs.plugin_manager.list_name_plugin())[0][0],"
            " prefs.explain('acme.stop_after').value)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["acme", "3"]


def test_built_ins_come_from_the_same_entry_point_group(home):
    declared = {ep.name: (ep.dist.name, ep.value)
                for ep in importlib.metadata.entry_points(group="mlprefs_sdk")}
    with Client() as prefs:
        for name in BUILTINS:
            assert declared[name][0] == "mlprefs-sdk"
            assert prefs.plugin_manager.get_plugin(name) is sys.modules[declared[name][1]]


def test_each_client_has_its_own_plugin_manager(home):
    class Extra:
        pass

    with Client() as a, Client() as b:
        a.plugin_manager.register(Extra(), name="extra")
        assert a.plugin_manager is not b.plugin_manager
        assert b.plugin_manager.get_plugin("extra") is None


def test_a_plugin_implementing_an_unknown_hook_is_refused_by_name(home, tmp_path, monkeypatch):
    site = make_dist(tmp_path / "bad", "typo_mlprefs", """
        from mlprefs_sdk.hookspecs import hookimpl

        @hookimpl
        def mlprefs_train_begins(hooks):
            pass
    """, name="typo")
    monkeypatch.syspath_prepend(str(site))
    with Client() as prefs:
        with pytest.raises(PluginError, match="'typo'.*mlprefs_train_begins"):
            prefs.plugin_manager


def test_a_plugin_registering_a_bad_key_names_the_plugin(home, tmp_path, monkeypatch):
    site = make_dist(tmp_path / "badkey", "badkey_mlprefs", """
        from mlprefs_sdk.hookspecs import hookimpl

        @hookimpl
        def mlprefs_register_keys(register):
            register("ml.training.mine", int, 1)
    """, name="badkey")
    monkeypatch.syspath_prepend(str(site))
    with Client() as prefs:
        with pytest.raises(PluginError, match="'badkey' could not register its keys"):
            prefs.plugin_manager


def test_the_disable_variable_keeps_a_plugin_out(home, acme, monkeypatch):
    monkeypatch.setenv("MLPREFS_DISABLE_PLUGINS", "acme, early_stopping")
    with Client() as prefs:
        names = {name for name, _ in prefs.plugin_manager.list_name_plugin()}
        hooks = prefs.training_hooks()
        hooks.on_train_start()
        for epoch in range(8):
            hooks.on_epoch_end(epoch, {"val_loss": 1.0})
    assert "acme" not in names and "early_stopping" not in names
    assert not hooks.should_stop  # patience 5 would have stopped it


def test_client_construction_does_not_import_pluggy(home):
    code = ("import sys\nfrom mlprefs_sdk import Client\nClient().close()\n"
            "print('pluggy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
