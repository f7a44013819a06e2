"""mlprefs-sdk: live, layered ML preferences for training scripts."""

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
    "TuneResult",
    "TrialResult",
    "NoCompletedTrialError",
]
