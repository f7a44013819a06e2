"""The data policy made real: consent, pseudonyms, retention, erasure, export, sharing, audit.

`prefs.data` reads the `ml.data.*` keys live. While anonymisation is on (always under strict
and moderate privacy: only permissive mode may turn it off) a subject id is turned into its
keyed pseudonym before anything touches the store, so consent rows, feedback, experiment
units and the audit log never hold the raw id.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import PolicyError
from ._anonymize import anonymize_record
from ._retention import DATED_COLUMNS, DAY, SUBJECT_COLUMNS, AutoCleanup, delete_expired, subject_rows

if TYPE_CHECKING:
    from ..handle import ClientHandle

__all__ = ["DataPrivacy", "DataPolicy", "ConsentStatus", "AuditEntry", "UnknownSubjectWarning",
           "MODE_MINIMUMS"]

log = logging.getLogger(__name__)

# What each privacy mode forces, whatever the individual keys say.
MODE_MINIMUMS: dict[str, dict[str, bool]] = {
    "strict": {"user_consent_required": True, "anonymization_enabled": True,
               "sharing_allowed": False, "opt_out_enabled": True},
    "moderate": {"anonymization_enabled": True, "opt_out_enabled": True},
    "permissive": {},
}


class UnknownSubjectWarning(UserWarning):
    """An erase or export found no data held for the subject (beyond audit entries)."""


@attrs.frozen
class DataPolicy:
    """The effective ml.data.* policy; `implied` names the keys the privacy mode overrode."""

    privacy_mode: str
    retention_days: int
    auto_cleanup_enabled: bool
    anonymization_enabled: bool
    user_consent_required: bool
    opt_out_enabled: bool
    sharing_allowed: bool
    implied: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> DataPolicy:
        fields = {f.name: values[f"ml.data.{f.name}"] for f in attrs.fields(cls)
                  if f.name != "implied"}
        implied = []
        for name, forced in MODE_MINIMUMS[fields["privacy_mode"]].items():
            if fields[name] != forced:
                fields[name] = forced
                implied.append(f"ml.data.{name}")
        return cls(**fields, implied=tuple(implied))

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * DAY


@attrs.frozen
class ConsentStatus:
    """What the store records for one subject (by pseudonym) and what the policy makes of it."""

    pseudonym: str
    known: bool
    consented: bool
    opted_out: bool
    updated_at: float | None
    may_train: bool


@attrs.frozen
class AuditEntry:
    """One privacy decision: when, who, what, about which pseudonym (never a raw id)."""

    id: int
    at: float
    actor: str
    action: str
    pseudonym: str | None
    detail: Mapping[str, Any]


def _check_subject(subject: Any, what: str) -> str:
    if not isinstance(subject, str):
        raise TypeError(f"{what} needs the subject id as a str, got {type(subject).__name__}; "
                        "convert it with str() so one subject always maps to one pseudonym")
    if not subject.strip():
        raise ValueError(f"{what} needs a non-empty subject id")
    return subject


class DataPrivacy:
    """prefs.data: consent, pseudonymisation, retention, erasure, export, sharing, audit."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client
        self._store = client.store
        self._policy: tuple[Any, DataPolicy] | None = None
        self._auto = AutoCleanup(self._store, lambda: self.policy.auto_cleanup_enabled,
                                 lambda stop: self._cleanup(None, "auto-cleanup", stop))
        # Plugins load here, on the caller's thread: a fork() while the cleanup thread was
        # importing them would leave the child waiting on an import lock nobody releases.
        client.plugin_manager
        self._auto.start()

    # -- policy ---------------------------------------------------------------------
    @property
    def policy(self) -> DataPolicy:
        """Read live: a hot-reloaded ml.data.* edit applies to the next call."""
        values = self._client.snapshot()
        cached = self._policy
        if cached is None or cached[0] is not values:
            cached = self._policy = (values, DataPolicy.from_values(values))
        return cached[1]

    # -- identifiers ------------------------------------------------------------------
    def pseudonym(self, subject: str) -> str:
        """HMAC-SHA256 of the subject id under this installation's secret (hex)."""
        return self._client.pseudonym(subject)

    def stored_id(self, subject: str) -> str:
        """The id the SDK stores for this subject: its pseudonym while anonymisation is on."""
        _check_subject(subject, "stored_id")
        return self.pseudonym(subject) if self.policy.anonymization_enabled else subject

    def _ids(self, subject: str) -> tuple[str, str]:
        """(pseudonym, raw): rows written under either form (anonymisation toggled) are found."""
        return self.pseudonym(subject), subject

    def anonymize(self, record: Mapping[str, Any], id_fields: Iterable[str] = (),
                  pii_fields: Iterable[str] = ()) -> dict[str, Any]:
        """A copy of record: ids pseudonymised, PII fields dropped, free text scrubbed."""
        return anonymize_record(record, id_fields, pii_fields, self.pseudonym)

    # -- consent ------------------------------------------------------------------------
    def grant_consent(self, subject: str) -> ConsentStatus:
        """Record consent (lifting an earlier opt-out); effective for the next record."""
        return self._set_consent(_check_subject(subject, "grant_consent"), True, False,
                                 "consent.grant")

    def revoke_consent(self, subject: str) -> ConsentStatus:
        """Withdraw consent; as easy as granting it, and effective for the next record."""
        return self._set_consent(_check_subject(subject, "revoke_consent"), False, False,
                                 "consent.revoke")

    def opt_out(self, subject: str) -> ConsentStatus:
        """The subject objects to any use of their data, whatever consent says."""
        _check_subject(subject, "opt_out")
        if not self.policy.opt_out_enabled:
            raise PolicyError("opt-out is disabled by ml.data.opt_out_enabled = false (privacy "
                              f"mode {self.policy.privacy_mode!r}); an admin must enable it")
        return self._set_consent(subject, False, True, "consent.opt_out")

    def _set_consent(self, subject: str, consented: bool, opted_out: bool,
                     action: str) -> ConsentStatus:
        pseudonym, raw = self._ids(subject)
        key = pseudonym if self.policy.anonymization_enabled else raw
        other = raw if key == pseudonym else pseudonym
        now = time.time()
        with self._store.transaction() as db:
            db.execute("DELETE FROM consent WHERE subject = ?", (other,))
            db.execute("INSERT INTO consent (subject, consented, opted_out, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET "
                       "consented = excluded.consented, opted_out = excluded.opted_out, "
                       "updated_at = excluded.updated_at",
                       (key, int(consented), int(opted_out), now))
            self._audit(db, action, pseudonym, {}, now)
        return self._status(pseudonym, (1, consented, opted_out, now))

    def status(self, subject: str) -> ConsentStatus:
        """The recorded consent of a subject; `known` is False when nothing is recorded."""
        pseudonym, raw = self._ids(_check_subject(subject, "status"))
        rows = self._store.query("SELECT 1, consented, opted_out, updated_at FROM consent "
                                 "WHERE subject IN (?, ?) ORDER BY updated_at DESC",
                                 (pseudonym, raw))
        return self._status(pseudonym, rows[0] if rows else None)

    def _status(self, pseudonym: str, row: tuple | None) -> ConsentStatus:
        policy = self.policy
        if row is None:
            return ConsentStatus(pseudonym, False, False, False, None,
                                 not policy.user_consent_required)
        _, consented, opted_out, at = row
        may = not opted_out and (bool(consented) or not policy.user_consent_required)
        return ConsentStatus(pseudonym, True, bool(consented), bool(opted_out), at, may)

    def may_train_on(self, subject: str) -> bool:
        """True unless the subject opted out, or consent is required and not given."""
        return self.status(subject).may_train

    def filter(self, dataset: Any, subject_of: Callable[[Any], str]) -> Any:
        """The samples that may be trained on, re-checked at every pass (services/datafilter)."""
        from .datafilter import TrainableView

        return TrainableView(self, self._client.store, dataset, subject_of)

    # -- checks inside another service's write transaction -----------------------------
    def refusal(self, db: Any, subject: str, since: float) -> str | None:
        """Why a record of `subject` begun at `since` must not be stored: "erased", "opted_out"
        or "no_consent" (None: store it). Read through `db`, the caller's open write
        transaction, so an erasure, revocation or opt-out committed by any process before
        that transaction is seen, and none can commit between this check and the insert."""
        pseudonym, raw = self._ids(_check_subject(subject, "refusal"))
        if db.execute("SELECT 1 FROM data_audit WHERE subject = ? AND action = 'erase' "
                      "AND at >= ? LIMIT 1", (pseudonym, since)).fetchone():
            return "erased"
        row = db.execute("SELECT 1, consented, opted_out, updated_at FROM consent WHERE subject "
                         "IN (?, ?) ORDER BY updated_at DESC LIMIT 1", (pseudonym, raw)).fetchone()
        status = self._status(pseudonym, tuple(row) if row is not None else None)
        if status.opted_out:
            return "opted_out"
        return None if status.may_train else "no_consent"

    def erasures_since(self, db: Any, since: float) -> dict[str, float]:
        """Pseudonym -> time of its latest erasure at or after `since`, read through the
        caller's write transaction: buffered rows recorded before such a time are dropped."""
        return {subject: at for subject, at in db.execute(
            "SELECT subject, MAX(at) FROM data_audit WHERE action = 'erase' AND at >= ? "
            "AND subject IS NOT NULL GROUP BY subject", (since,)).fetchall()}

    # -- retention ------------------------------------------------------------------------
    def cleanup(self, now: float | None = None) -> dict[str, int]:
        """Delete every SDK-held record older than ml.data.retention_days; counts per table.

        `now` moves the clock (e.g. to see what a cleanup a year from now would remove).
        Consent records are kept: they are needed to honour a refusal however old it is.
        """
        return self._cleanup(now, None, lambda: False, record_run=True)

    def _cleanup(self, now: float | None, actor: str | None, stop: Callable[[], bool],
                 record_run: bool = False) -> dict[str, int]:
        """The cleanup; record_run notes its time for the daily schedule (an automatic run
        claimed its slot before starting)."""
        now = time.time() if now is None else now
        before = now - self.policy.retention_seconds
        gate = self._auto.gate  # held around each write, so no fork lands inside one
        counts = {table: delete_expired(self._store, table, column, before, stop, gate=gate)
                  for table, column in DATED_COLUMNS.items()}
        with gate:
            hook = self._client.plugin_manager.hook
            _add_plugin_counts(counts, "mlprefs_cleanup",
                               hook.mlprefs_cleanup(client=self._client, before=before))
        with gate, self._store.transaction() as db:
            if record_run:
                AutoCleanup.record_run(db, time.time())
            self._audit(db, "cleanup", None, {"before": before, "deleted": counts}, actor=actor)
        log.info("mlprefs: retention cleanup removed %d row(s) older than %s days: %s",
                 sum(counts.values()), self.policy.retention_days, counts)
        return counts

    @property
    def last_cleanup(self) -> float | None:
        """When a cleanup last ran against this store (any process), or None."""
        return self._auto.last_run()

    # -- the subject's rights -------------------------------------------------------------
    def erase(self, subject: str) -> dict[str, int]:
        """Delete every row of the subject in every table (and plugins' stores); counts."""
        pseudonym, raw = self._ids(_check_subject(subject, "erase"))
        self._flush_services()
        # One transaction deletes the rows and writes the erasure's audit entry, which is the
        # marker other writers check (refusal, erasures_since): a record begun before it is
        # never stored after it, in any process.
        with self._store.transaction() as db:
            counts = {table: db.execute(f"DELETE FROM {table} WHERE {column} IN (?, ?)",
                                        (pseudonym, raw)).rowcount
                      for table, column in SUBJECT_COLUMNS.items()}
            at = time.time()
            self._audit(db, "erase", pseudonym, {"deleted": counts}, at)
        hook = self._client.plugin_manager.hook
        plugin_counts: dict[str, int] = {}
        _add_plugin_counts(plugin_counts, "mlprefs_erase",
                           hook.mlprefs_erase(client=self._client, pseudonym=pseudonym))
        if plugin_counts:
            counts.update(plugin_counts)
            with self._store.transaction() as db:
                db.execute("UPDATE data_audit SET detail = ? WHERE action = 'erase' AND "
                           "subject = ? AND at = ?",
                           (json.dumps({"deleted": counts}, sort_keys=True), pseudonym, at))
        self._purge_wal()
        if not any(n for t, n in counts.items() if t != "data_audit"):
            warnings.warn(f"erase: no data was held for subject {pseudonym[:12]}... "
                          "(pseudonym); nothing removed", UnknownSubjectWarning, stacklevel=2)
        return counts

    def _flush_services(self) -> None:
        """Buffered writes of this client's services (experiment outcomes, ...) land first,
        so none of the subject's rows arrives after the erasure or misses the export."""
        for service in self._client.services:
            flush = getattr(service, "flush", None)
            if flush is not None and service is not self:
                flush()

    def export(self, subject: str) -> dict[str, list[dict[str, Any]]]:
        """Every row the store holds for the subject, by table (consent, feedback, ...)."""
        pseudonym, raw = self._ids(_check_subject(subject, "export"))
        self._flush_services()
        with self._store.transaction() as db:
            rows = subject_rows(db, SUBJECT_COLUMNS, (pseudonym, raw))
            self._audit(db, "export", pseudonym,
                        {"rows": {t: len(r) for t, r in rows.items()}})
        if not any(r for t, r in rows.items() if t != "data_audit"):
            warnings.warn(f"export: no data is held for subject {pseudonym[:12]}... "
                          "(pseudonym)", UnknownSubjectWarning, stacklevel=2)
        return rows

    def _purge_wal(self) -> None:
        """Checkpoint and truncate the WAL so erased rows' old page images leave the disk too."""
        self._store.purge_erased()

    # -- sharing ------------------------------------------------------------------------
    def check_sharing(self, destination: str) -> None:
        """Raise PolicyError unless the policy allows sharing data; logged either way."""
        if not isinstance(destination, str) or not destination.strip():
            raise TypeError("check_sharing needs the destination as a non-empty str")
        policy = self.policy
        allowed = policy.sharing_allowed
        with self._store.transaction() as db:
            self._audit(db, "sharing.allowed" if allowed else "sharing.refused", None,
                        {"destination": destination})
        if not allowed:
            why = ("privacy mode 'strict' forbids it" if "ml.data.sharing_allowed" in policy.implied
                   else "ml.data.sharing_allowed is false")
            raise PolicyError(f"sharing data with {destination!r} is not allowed: {why}")

    # -- audit log ----------------------------------------------------------------------
    def _audit(self, db: Any, action: str, pseudonym: str | None, detail: Mapping[str, Any],
               at: float | None = None, actor: str | None = None) -> None:
        db.execute("INSERT INTO data_audit (at, actor, action, subject, detail) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (time.time() if at is None else at, actor or self._client.user, action,
                    pseudonym, json.dumps(detail, sort_keys=True)))

    def audit(self, limit: int = 100, subject: str | None = None,
              action: str | None = None) -> list[AuditEntry]:
        """Privacy decisions, newest first; filter by subject (raw id, looked up by
        pseudonym) or by action prefix ("consent", "erase", "sharing", ...)."""
        where, params = [], []
        if subject is not None:
            where.append("subject = ?")
            params.append(self.pseudonym(_check_subject(subject, "audit")))
        if action is not None:
            where.append("(action = ? OR action LIKE ?)")
            params += [action, f"{action}.%"]
        sql = ("SELECT id, at, actor, action, subject, detail FROM data_audit"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
        return [AuditEntry(i, at, actor, act, subj, json.loads(detail) if detail else {})
                for i, at, actor, act, subj, detail in self._store.query(sql, [*params, limit])]

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        self._auto.stop()


def _add_plugin_counts(counts: dict[str, int], hook: str, results: Iterable[Any]) -> None:
    for result in results:
        for name, n in _plugin_counts(hook, result).items():
            counts[name] = counts.get(name, 0) + n


def _plugin_counts(hook: str, result: Any) -> dict[str, int]:
    """A plugin reports what it removed: a row count, or a mapping of its stores to counts."""
    if isinstance(result, int) and not isinstance(result, bool):
        return {"plugins": result}
    if isinstance(result, Mapping) and all(isinstance(v, int) for v in result.values()):
        return {f"plugin:{k}": int(v) for k, v in result.items()}
    log.warning("mlprefs: a %s hook returned %r; expected a row count or a mapping of "
                "name -> row count", hook, result)
    return {}
