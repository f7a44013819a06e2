"""prefs.feedback: what users said about predictions, only where the data policy allows it.

A record is stored only when ml.feedback.user_feedback_enabled is on, the subject has not
opted out and, when consent is required, has consented. Consent is read inside the insert's
own write transaction, and a record begun before an erasure of its subject is refused
("erased"): an erase, revocation or opt-out committed by another process can never be
followed by a row it should have stopped. A refused record is counted (per model version and
reason, without the subject) so the gap is visible, and never stored.
The subject is stored as the id prefs.data.stored_id gives: its pseudonym while anonymisation
is on.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..handle import ClientHandle

__all__ = ["Feedback", "FeedbackStats", "RetrainSignal", "REFUSALS"]

log = logging.getLogger(__name__)

REFUSALS = ("disabled", "no_consent", "opted_out", "erased")


@attrs.frozen
class FeedbackStats:
    """Stored and refused counts of one model version, and accuracy over its last window."""

    model: str
    version: str
    stored: int
    refused: dict[str, int]
    window: int
    accuracy: float | None


@attrs.frozen
class RetrainSignal:
    """Sent to prefs.on_retrain: accuracy fell from baseline by at least the threshold."""

    model: str
    version: str
    baseline: float
    baseline_source: str  # "registry" or "first window"
    accuracy: float
    samples: int
    threshold: float

    def __str__(self) -> str:
        return (f"{self.model} {self.version}: accuracy {self.accuracy:.3f} over the last "
                f"{self.samples} feedback records is {self.baseline - self.accuracy:.3f} below "
                f"the {self.baseline_source} accuracy {self.baseline:.3f} "
                f"(ml.feedback.auto_retrain_threshold {self.threshold})")


def _version(version: Any) -> str:
    if isinstance(version, str):
        return version
    if isinstance(version, int) and not isinstance(version, bool):
        return str(version)
    raise TypeError(f"feedback: version must be a str, got {version!r}")


class Feedback:
    """prefs.feedback: user feedback on predictions, its accuracy, and when to retrain."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client
        self._store = client.store
        self._data = client.data  # consent and pseudonyms; also starts the retention schedule

    def record(self, subject: str, model: str, version: str, prediction: Any,
               actual: Any) -> bool:
        """Store one feedback record if the policy allows it; returns whether it was stored."""
        if not isinstance(model, str) or not model:
            raise TypeError(f"feedback.record: model must be a non-empty str, got {model!r}")
        version = _version(version)
        try:
            pred_text, actual_text = json.dumps(prediction), json.dumps(actual)
        except (TypeError, ValueError) as e:
            raise TypeError(f"feedback.record: prediction and actual must be JSON values "
                            f"(numbers, strings, lists, ...): {e}") from None
        now = time.time()
        reason = self._disabled(subject)
        stored_id = self._data.stored_id(subject) if reason is None else None
        with self._store.transaction() as db:
            if reason is None:
                reason = self._data.refusal(db, subject, now)
            if reason is not None:
                db.execute("INSERT INTO feedback_refused (model, version, reason, n) "
                           "VALUES (?, ?, ?, 1) ON CONFLICT (model, version, reason) "
                           "DO UPDATE SET n = feedback_refused.n + 1", (model, version, reason))
            else:
                db.execute("INSERT INTO feedback (subject, model, version, prediction, actual, "
                           "correct, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (stored_id, model, version, pred_text,
                            actual_text, int(prediction == actual), now))
        if reason is not None:
            log.debug("mlprefs: feedback for %s %s not stored (%s)", model, version, reason)
        return reason is None

    def _disabled(self, subject: str) -> str | None:
        if not self._client.get("ml.feedback.user_feedback_enabled"):
            if not isinstance(subject, str):
                raise TypeError("feedback.record needs the subject id as a str, got "
                                f"{type(subject).__name__}")
            return "disabled"
        return None

    # -- accuracy -------------------------------------------------------------------
    def accuracy(self, model: str, version: str, window: int | None = None) -> float | None:
        """Share of correct predictions over the last `window` records (default min_samples)."""
        window = window or self._client.get("ml.feedback.min_samples")
        rows = self._store.query("SELECT correct FROM feedback WHERE model = ? AND version = ? "
                                 "ORDER BY id DESC LIMIT ?", (model, _version(version), window))
        return sum(r[0] for r in rows) / len(rows) if rows else None

    def stats(self, model: str, version: str) -> FeedbackStats:
        version = _version(version)
        window = self._client.get("ml.feedback.min_samples")
        stored = self._store.query("SELECT COUNT(*) FROM feedback WHERE model = ? AND "
                                   "version = ?", (model, version))[0][0]
        refused = dict(self._store.query("SELECT reason, n FROM feedback_refused WHERE "
                                         "model = ? AND version = ?", (model, version)))
        return FeedbackStats(model, version, stored, refused, window,
                             self.accuracy(model, version, window))

    def retrain_needed(self, model: str, version: str | None = None) -> bool:
        """True when accuracy over the last min_samples records has dropped by at least
        auto_retrain_threshold from the registry's recorded accuracy (or the first window);
        then also fires prefs.on_retrain callbacks with a RetrainSignal."""
        get = self._client.get
        n, threshold = get("ml.feedback.min_samples"), get("ml.feedback.auto_retrain_threshold")
        recorded = self._registry_accuracy(model, version)
        if version is None:
            version = recorded[0] if recorded else self._latest_version(model)
            if version is None:
                return False
        version = _version(version)
        current = self._store.query("SELECT correct FROM feedback WHERE model = ? AND "
                                    "version = ? ORDER BY id DESC LIMIT ?", (model, version, n))
        if len(current) < n:
            return False
        if recorded is not None and recorded[0] == version and recorded[1] is not None:
            baseline, source = recorded[1], "registry"
        else:
            first = self._store.query("SELECT correct FROM feedback WHERE model = ? AND "
                                      "version = ? ORDER BY id LIMIT ?", (model, version, n))
            baseline, source = sum(r[0] for r in first) / n, "first window"
        accuracy = sum(r[0] for r in current) / n
        if baseline - accuracy < threshold - 1e-12:
            return False
        signal = RetrainSignal(model, version, baseline, source, accuracy, n, threshold)
        log.warning("mlprefs: retrain needed: %s", signal)
        self._client.events.fire("retrain", signal)
        return True

    def _latest_version(self, model: str) -> str | None:
        rows = self._store.query("SELECT version FROM feedback WHERE model = ? "
                                 "ORDER BY id DESC LIMIT 1", (model,))
        return rows[0][0] if rows else None

    def _registry_accuracy(self, model: str,
                           version: str | None) -> tuple[str, float | None] | None:
        """(version, its recorded "accuracy" metric) when the model registry knows the
        model; version None asks for the active version."""
        found = self._client.models.list(name=model, status="active" if version is None else None)
        found = [mv for mv in found if version is None or mv.version == _version(version)]
        if not found:
            return None
        acc = found[-1].metrics.get("accuracy")
        return found[-1].version, (float(acc) if acc is not None else None)
