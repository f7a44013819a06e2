"""OpenFeature provider: every mlprefs key through the vendor-neutral flag API.

    from openfeature import api
    api.set_provider(MlprefsProvider(prefs))
    api.get_client().get_float_value("ml.training.learning_rate", 0.001)

Reasons: a value from the catalog's default is DEFAULT; from any other layer (files, store,
env, overrides) STATIC - mlprefs resolves without the evaluation context, so no value is a
TARGETING_MATCH; an ml.features.* flag that is on but gated off by ml.global.enabled resolves
to False with reason DISABLED; `experiment:NAME` with a targeting_key is the unit's arm
(prefs.experiments.assign) with reason SPLIT. Errors: an unknown key gives the caller's
default with FLAG_NOT_FOUND, a getter of the wrong type TYPE_MISMATCH (no conversion: an int
key is not served as a float). The flag metadata carries the source: layer, path, line,
detail. Every applied change (hot reload, set, override) emits PROVIDER_CONFIGURATION_CHANGED
with the keys whose served value changed in flags_changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import FeatureDisabledError, UnknownKeyError
from ._require import require

require("openfeature", "openfeature", "mlprefs_sdk.integrations.openfeature")

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

__all__ = ["EXPERIMENT_PREFIX", "MlprefsProvider"]

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "experiment:"
MASTER = "ml.global.enabled"
FEATURES = "ml.features."


class MlprefsProvider(AbstractProvider):
    """Serves a Client's resolved keys; the view it reads is the one prefs.get() reads."""

    def __init__(self, prefs: Any) -> None:
        super().__init__()
        self.prefs = prefs
        self._sub: Any = None
        self._view: Any = None  # the snapshot the cache below belongs to
        self._cache: dict[str, FlagResolutionDetails[Any]] = {}
        self._gated: dict[str, bool] = {}

    # -- lifecycle: the API calls these when the provider is set and replaced -------------
    def get_metadata(self) -> Metadata:
        return Metadata(name="mlprefs")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        self._gated = self._feature_flags()
        if self._sub is None:
            self._sub = self.prefs.on_change("*", self._changed)

    def shutdown(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None

    def _feature_flags(self) -> dict[str, bool]:
        return {k: self.prefs.enabled(k) for k in self.prefs.snapshot() if k.startswith(FEATURES)}

    def _changed(self, changes: Any) -> None:
        keys = list(changes.keys)
        if MASTER in keys:  # the master switch changes what every feature flag serves
            flags = self._feature_flags()
            keys += sorted(k for k, on in flags.items() if self._gated.get(k) != on and k not in keys)
            self._gated = flags
        self.emit_provider_configuration_changed(ProviderEventDetails(
            flags_changed=keys, message=f"mlprefs: {len(keys)} key(s) changed"))

    # -- resolving ------------------------------------------------------------------------
    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None
                                ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, bool, evaluation_context)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None
                               ) -> FlagResolutionDetails[str]:
        if flag_key.startswith(EXPERIMENT_PREFIX):
            return self._arm(flag_key, default_value, evaluation_context)
        return self._resolve(flag_key, default_value, str, evaluation_context)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None
                                ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, int, evaluation_context)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None
                              ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, float, evaluation_context)

    def resolve_object_details(self, flag_key: str,
                               default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
                               evaluation_context: EvaluationContext | None = None
                               ) -> FlagResolutionDetails[Any]:
        return self._resolve(flag_key, default_value, dict, evaluation_context)

    def _resolve(self, key: str, default: Any, kind: type,
                 context: EvaluationContext | None) -> FlagResolutionDetails[Any]:
        view = self.prefs.snapshot()  # a new mapping per applied change: the cache's key
        if view is not self._view:
            self._view, self._cache = view, {}
        details = self._cache.get(key)
        if details is None:
            details = self._cache[key] = self._details(key)
        if details.error_code is None and type(details.value) is not kind:
            return _error(default, ErrorCode.TYPE_MISMATCH,
                          f"{key} is a {type(details.value).__name__} key, not a {kind.__name__}")
        if details.error_code is not None:
            return _error(default, details.error_code, details.error_message)
        return details

    def _details(self, key: str) -> FlagResolutionDetails[Any]:
        """The answer for a key in the current view (cached until the view changes)."""
        prefs = self.prefs
        try:
            source = prefs.explain(key).source
        except UnknownKeyError as e:
            return _error(None, ErrorCode.FLAG_NOT_FOUND, str(e))
        value = prefs.get(key)
        meta = {"layer": source.layer}
        meta.update({k: v for k, v in (("path", source.path), ("line", source.line),
                                       ("detail", source.detail)) if v is not None})
        if key.startswith(FEATURES) and value is True and not prefs.enabled(key):
            meta["gated_by"] = MASTER
            return FlagResolutionDetails(value=False, reason=Reason.DISABLED, flag_metadata=meta)
        reason = Reason.DEFAULT if source.layer == "defaults" else Reason.STATIC
        return FlagResolutionDetails(value=value, reason=reason, flag_metadata=meta)

    def _arm(self, flag_key: str, default: str,
             context: EvaluationContext | None) -> FlagResolutionDetails[str]:
        """experiment:NAME - the arm prefs.experiments.assign gives the targeting key."""
        name = flag_key[len(EXPERIMENT_PREFIX):]
        unit = context.targeting_key if context is not None else None
        if not unit:
            return _error(default, ErrorCode.TARGETING_KEY_MISSING,
                          f"{flag_key} needs a targeting_key (the unit id) in the evaluation context")
        from ..services._experiment_values import ExperimentNotFoundError

        try:
            arm = self.prefs.experiments.assign(name, unit)
        except ExperimentNotFoundError as e:
            return _error(default, ErrorCode.FLAG_NOT_FOUND, str(e))
        except FeatureDisabledError as e:
            return FlagResolutionDetails(value=default, reason=Reason.DISABLED, error_message=str(e),
                                         flag_metadata={"experiment": name, "gated_by": e.key})
        return FlagResolutionDetails(value=arm, reason=Reason.SPLIT, variant=arm,
                                     flag_metadata={"experiment": name})


def _error(default: Any, code: ErrorCode, message: str | None) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(value=default, reason=Reason.ERROR, error_code=code,
                                 error_message=message)
