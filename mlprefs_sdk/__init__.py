"""mlprefs-sdk: live, layered ML preferences for training scripts."""

from typing import TYPE_CHECKING

from .catalog import KeySpec
from .client import Client
from .errors import (
    ConfigFileError,
    FeatureDisabledError,
    LockedKeyError,
    MlprefsError,
    PolicyError,
    StoreError,
    UnknownKeyError,
    ValidationError,
)
from .events import Subscription
from .tuning import NoCompletedTrialError, TrialResult, TuneResult
from .values import Change, ChangeSet, Explanation, HistoryEntry, LayerValue, Problem, Source

if TYPE_CHECKING:  # type checkers see the classes; at run time __getattr__ imports them
    from .integrations.mlflow import MlflowSyncError
    from .integrations.opacus import DifferentialPrivacyError
    from .services.datafilter import DatasetNotIndexableError, SubjectIdError, ViewChangedError

__version__ = "0.1.0"

__all__ = [
    "Client",
    "KeySpec",
    "Source",
    "LayerValue",
    "Explanation",
    "Change",
    "ChangeSet",
    "HistoryEntry",
    "Problem",
    "Subscription",
    "MlprefsError",
    "ValidationError",
    "ConfigFileError",
    "UnknownKeyError",
    "LockedKeyError",
    "StoreError",
    "FeatureDisabledError",
    "PolicyError",
    "DatasetNotIndexableError",
    "SubjectIdError",
    "ViewChangedError",
    "DifferentialPrivacyError",
    "MlflowSyncError",
    "TuneResult",
    "TrialResult",
    "NoCompletedTrialError",
]

# Errors of optional parts (prefs.data.filter, integrations.opacus / mlflow), imported on first use so
# that `import mlprefs_sdk` stays as light as before; `from mlprefs_sdk import ...` works.
_LAZY = {
    "DatasetNotIndexableError": "services.datafilter",
    "SubjectIdError": "services.datafilter",
    "ViewChangedError": "services.datafilter",
    "DifferentialPrivacyError": "integrations.opacus",
    "MlflowSyncError": "integrations.mlflow",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mlprefs_sdk' has no attribute {name!r}")
