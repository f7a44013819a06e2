"""mlprefs-sdk: live, layered ML preferences for training scripts."""

from typing import TYPE_CHECKING

from .catalog import InvalidValueError, KeySpec
from .client import Client
from .errors import (
    ConfigFileError,
    FeatureDisabledError,
    LockedKeyError,
    MetricNotFoundError,
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
    from .integrations.optuna import StudyError
    from .plugins import PluginError
    from .services._assignment import InvalidUnitError
    from .services._experiment_values import (
        ExperimentExistsError,
        ExperimentNotFoundError,
        ExperimentStateError,
        InvalidExperimentError,
        InvalidOutcomeError,
    )
    from .services._model_values import (
        DuplicateVersionError,
        InvalidModelError,
        ModelLoadError,
        ModelNotFoundError,
        ModelStateError,
        NoQualifyingModelError,
    )
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
    "TuneResult",
    "TrialResult",
    # errors: one root, MlprefsError; each also subclasses the builtin a caller would catch
    "MlprefsError",
    "ValidationError",
    "InvalidValueError",
    "ConfigFileError",
    "UnknownKeyError",
    "LockedKeyError",
    "StoreError",
    "FeatureDisabledError",
    "PolicyError",
    "MetricNotFoundError",
    "PluginError",
    "NoCompletedTrialError",
    "StudyError",
    "ModelNotFoundError",
    "DuplicateVersionError",
    "InvalidModelError",
    "ModelStateError",
    "NoQualifyingModelError",
    "ModelLoadError",
    "MlflowSyncError",
    "ExperimentNotFoundError",
    "ExperimentExistsError",
    "InvalidExperimentError",
    "InvalidOutcomeError",
    "ExperimentStateError",
    "InvalidUnitError",
    "DatasetNotIndexableError",
    "SubjectIdError",
    "ViewChangedError",
    "DifferentialPrivacyError",
]

# Errors that live beside the optional part raising them (services, integrations, plugins) are
# imported on first use, so `import mlprefs_sdk` stays light; `from mlprefs_sdk import X` works.
_LAZY = {
    "PluginError": "plugins",
    "StudyError": "integrations.optuna",
    "ModelNotFoundError": "services._model_values",
    "DuplicateVersionError": "services._model_values",
    "InvalidModelError": "services._model_values",
    "ModelStateError": "services._model_values",
    "NoQualifyingModelError": "services._model_values",
    "ModelLoadError": "services._model_values",
    "MlflowSyncError": "integrations.mlflow",
    "ExperimentNotFoundError": "services._experiment_values",
    "ExperimentExistsError": "services._experiment_values",
    "InvalidExperimentError": "services._experiment_values",
    "InvalidOutcomeError": "services._experiment_values",
    "ExperimentStateError": "services._experiment_values",
    "InvalidUnitError": "services._assignment",
    "DatasetNotIndexableError": "services.datafilter",
    "SubjectIdError": "services.datafilter",
    "ViewChangedError": "services.datafilter",
    "DifferentialPrivacyError": "integrations.opacus",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mlprefs_sdk' has no attribute {name!r}")
