"""Importing an adapter without its framework: an ImportError that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, adapter: str) -> ModuleType:
    """Import a framework module, or fail naming the mlprefs-sdk extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{adapter} needs {module.split('.')[0]}; install it with: "
                          f'pip install "mlprefs-sdk[{extra}]"') from e
