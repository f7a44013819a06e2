"""One error family: every public error is importable from the package and named ...Error."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import mlprefs_sdk
from mlprefs_sdk import MlprefsError


def _package_errors() -> dict[str, type]:
    """Every MlprefsError subclass defined in a module of the package that imports here."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(mlprefs_sdk.__path__, "mlprefs_sdk."):
        if info.name == "mlprefs_sdk.__main__":  # runs the CLI
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an integration whose framework is not installed
            continue
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, MlprefsError) and not name.startswith("_")
                    and obj.__module__ == module.__name__):
                found[name] = obj
    return found


ERRORS = _package_errors()


def test_the_walk_finds_the_service_errors_too():
    assert {"MlprefsError", "ModelNotFoundError", "ExperimentNotFoundError", "PluginError"} <= set(ERRORS)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_public_error_is_exported_from_the_package(name):
    assert name in mlprefs_sdk.__all__
    assert getattr(mlprefs_sdk, name) is ERRORS[name]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_is_named_error_and_also_a_builtin(name):
    cls = ERRORS[name]
    assert name.endswith("Error")
    assert cls.__doc__, f"{name} has no docstring"
    if cls is not MlprefsError:
        builtins = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (object, Exception,
                                                                                      BaseException)]
        assert builtins, f"{name} subclasses no builtin a caller would catch (KeyError, ValueError, ...)"


def test_every_name_in_all_resolves():
    for name in mlprefs_sdk.__all__:
        assert getattr(mlprefs_sdk, name) is not None
