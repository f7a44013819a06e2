"""Plugin managers: one per Client, filled from the `mlprefs_sdk` entry-point group.

The built-in plugins (early stopping, live hyperparameters, feature gates, learning curves,
the DP privacy budget, experiment trackers, tuning trials) are declared in pyproject.toml
under that group, exactly like a third-party plugin. Loading entry points scans every
installed distribution (tens of ms), so the loaded plugin objects -
code, not state - are cached per process and per sys.path; each Client still gets a fresh
PluginManager of its own.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import pluggy

from .. import hookspecs
from ..errors import MlprefsError
from ..hookspecs import PROJECT, hookimpl

__all__ = ["PluginError", "make_plugin_manager", "hookimpl", "BUILTINS", "DISABLE_ENV"]

log = logging.getLogger(__name__)

BUILTINS = ("early_stopping", "hyperparameters", "feature_gates", "learning_curves",
            "privacy_budget", "trackers", "tuning")
DISABLE_ENV = "MLPREFS_DISABLE_PLUGINS"  # comma-separated plugin names not to load


class PluginError(MlprefsError, RuntimeError):
    """A plugin could not be loaded, does not match the hook specs, or failed to register keys."""


def _blocked() -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())


def _builtin_modules() -> dict[str, Any]:
    from . import (
        early_stopping,
        feature_gates,
        hyperparameters,
        learning_curves,
        privacy_budget,
        trackers,
        tuning,
    )

    return {"early_stopping": early_stopping, "hyperparameters": hyperparameters,
            "feature_gates": feature_gates, "learning_curves": learning_curves,
            "privacy_budget": privacy_budget, "trackers": trackers,
            "tuning": tuning}


@functools.lru_cache(maxsize=8)
def _installed(path: tuple[str, ...], blocked: frozenset[str]) -> tuple[tuple[str, Any], ...]:
    """(name, plugin) for every entry point of the group visible on this sys.path."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(PROJECT)
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {pm.get_name(e.plugin)!r} does not match the mlprefs hook specs: {e}; "
                          f"fix or uninstall it, or name it in {DISABLE_ENV}") from e
    except Exception as e:  # a third-party plugin's import failed: say which group to look at
        raise PluginError(f"loading the {PROJECT!r} entry-point plugins failed: "
                          f"{type(e).__name__}: {e}; fix or uninstall that plugin, or name it in "
                          f"{DISABLE_ENV}") from e
    missing = [n for n in BUILTINS if pm.get_plugin(n) is None and n not in blocked]
    if missing:  # running from a source tree whose metadata predates the entry points
        log.warning("mlprefs: built-in plugins %s are not declared by the installed mlprefs-sdk "
                    "metadata (reinstall it: pip install -e .); registering them directly",
                    ", ".join(missing))
        modules = _builtin_modules()
        for name in missing:
            pm.register(modules[name], name=name)
    return tuple((name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None)


def make_plugin_manager(register: Callable[..., Any]) -> pluggy.PluginManager:
    """A fresh PluginManager with every installed plugin; plugins add their keys via register."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in _installed(tuple(sys.path), _blocked()):
        pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {pm.get_name(e.plugin)!r} implements a hook mlprefs does not "
                          f"define: {e}") from e
    for impl in pm.hook.mlprefs_register_keys.get_hookimpls():
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except (MlprefsError, ValueError, TypeError) as e:
            raise PluginError(f"plugin {impl.plugin_name!r} could not register its keys: {e}") from e
    return pm
