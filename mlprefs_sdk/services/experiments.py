"""A/B experiments: sticky deterministic assignment, batched outcomes, and an
analysis whose decision never names a winner before the minimum sample and duration.

Refused with FeatureDisabledError unless ml.experiments.ab_testing_enabled (which itself
requires ml.features.experiment_tracking). The assignment algorithm and the write buffer are
described in _assignment.py; the statistics in stats.py.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..catalog import InvalidValueError
from ..errors import FeatureDisabledError
from . import _lifecycle
from ._assignment import HASH_SCALE, KNOWN_UNITS_MAX, InvalidUnitError, Live, WriteBuffer, unit_text
from ._experiment_values import (
    CONTROL_WINS,
    KEEP_RUNNING,
    NO_DIFFERENCE,
    PUBLIC,
    STOPPED_EARLY,
    TREATMENT_WINS,
    Analysis,
    ArmSummary,
    Conclusion,
    Experiment,
    ExperimentExistsError,
    ExperimentNotFoundError,
    ExperimentStateError,
    InvalidExperimentError,
    InvalidOutcomeError,
)
from .stats import Moments, compare, srm_test

if TYPE_CHECKING:
    from ..handle import ClientHandle

__all__ = ["Experiments", *PUBLIC]

log = logging.getLogger(__name__)

_sha256, _from_bytes = hashlib.sha256, int.from_bytes  # bound once: assignment is a hot path

AB_KEY = "ml.experiments.ab_testing_enabled"
RATIO_KEY = "ml.experiments.traffic_split_ratio"
SETTINGS = ("traffic_split_ratio", "statistical_significance", "min_sample_size",
            "experiment_duration_days")
METRICS = ("conversion", "mean")
MODEL_PREFIX = "models:/"
SRM_ALPHA = 0.001
POWER = 0.8
DAY_S = 86400.0
_COLUMNS = ("name, control, treatment, metric, higher_is_better, salt, traffic_split_ratio, "
            "statistical_significance, min_sample_size, experiment_duration_days, anonymized, "
            "started_at, created_at, created_by, decision, concluded_at, concluded_by")


class Experiments:
    """prefs.experiments: create, assign, record, analyze, conclude, list."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client
        self._store = client.store
        self._live: dict[str, Live] = {}
        self._data = client.data  # the effective privacy policy; starts the retention schedule
        self._buffer = WriteBuffer(client.store, client.pseudonym, self._anonymizing,
                                   self._data.erasures_since)

    # -- definition ----------------------------------------------------------------
    def create(self, name: str, control: Any, treatment: Any, metric: str = "conversion", *,
               traffic_split_ratio: float | None = None,
               statistical_significance: float | None = None,
               min_sample_size: int | None = None, experiment_duration_days: int | None = None,
               salt: str | None = None, higher_is_better: bool = True,
               started_at: float | None = None) -> Experiment:
        """A new experiment. Arms are labels or registry versions (a ModelVersion, or
        "models:/<name>/<version>"). Settings left None follow ml.experiments.* live."""
        self._require_enabled()
        if not isinstance(name, str) or not name.strip():
            raise InvalidExperimentError(f"experiment name must be a non-empty str, got {name!r}")
        control, treatment = self._arm_ref("control", control), self._arm_ref("treatment", treatment)
        if control == treatment:
            raise InvalidExperimentError(f"control and treatment of {name!r} are both {control!r}")
        if metric not in METRICS:
            raise InvalidExperimentError(f"metric of {name!r} must be one of {', '.join(METRICS)}, "
                                         f"not {metric!r}")
        given = dict(zip(SETTINGS, (traffic_split_ratio, statistical_significance,
                                    min_sample_size, experiment_duration_days)))
        settings = {k: self._checked_setting(name, k, v) for k, v in given.items()}
        salt = name if salt is None else salt
        if not isinstance(salt, str) or not salt:
            raise InvalidExperimentError(f"salt of {name!r} must be a non-empty str")
        now = time.time()
        ratio = settings["traffic_split_ratio"] or self._client.get(RATIO_KEY)
        with self._store.transaction() as db:
            if db.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchall():
                raise ExperimentExistsError(f"an experiment named {name!r} exists already; "
                                            "pick another name")
            db.execute(f"INSERT INTO experiments ({_COLUMNS}) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                       (name, control, treatment, metric, int(bool(higher_is_better)), salt,
                        *settings.values(), int(self._anonymizing()),
                        now if started_at is None else float(started_at), now, self._client.user))
            db.execute("INSERT INTO experiment_splits (experiment, since, ratio) VALUES (?, ?, ?)",
                       (name, now, ratio))
        log.info("mlprefs: experiment %s created by %s: %s vs %s (%s)", name, self._client.user,
                 control, treatment, metric)
        return self.get(name)

    def get(self, name: str) -> Experiment:
        self._require_enabled()
        rows = self._store.query(f"SELECT {_COLUMNS} FROM experiments WHERE name = ?", (name,))
        if not rows:
            raise ExperimentNotFoundError(name)
        return Experiment.from_row(rows[0])

    def list(self) -> list[Experiment]:
        self._require_enabled()
        rows = self._store.query(f"SELECT {_COLUMNS} FROM experiments ORDER BY created_at, name")
        return [Experiment.from_row(r) for r in rows]

    # -- the hot path -------------------------------------------------------------
    def assign(self, name: str, unit_id: str | int) -> str:
        """"control" or "treatment": the same in every process, and sticky once given."""
        if not self._client.get(AB_KEY):
            self._require_enabled()
        live = self._live.get(name) or self._load(name)
        unit = unit_id if type(unit_id) is str else unit_text(unit_id)
        arm = live.known.get(unit)
        if arm is None:
            arm = self._assign_new(live, unit, time.time())
            self._buffer.added()
        return arm

    def record(self, name: str, unit_id: str | int, value: Any, at: float | None = None, *,
               durable: bool = False) -> None:
        """Buffer one outcome (assigning the unit first if needed); see flush(). Buffered rows
        survive SIGTERM, SIGINT and exit; durable=True writes them before returning, so not
        even a SIGKILL right after can lose this one."""
        if not self._client.get(AB_KEY):
            self._require_enabled()
        live = self._live.get(name) or self._load(name)
        unit = unit_id if type(unit_id) is str else unit_text(unit_id)
        value = _outcome(live, value)
        now = time.time()
        when = now if at is None else _time(at)
        arm = live.known.get(unit) or self._assign_new(live, unit, now)
        buffer = self._buffer
        buffer.outcomes.append((live, unit, arm, value, when, now))
        if durable:
            buffer.flush()
        else:
            buffer.added()
        if _lifecycle.pending:  # a signal came while this thread was writing: handle it now
            _lifecycle.write_ended()

    def record_many(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        """Outcomes as (unit_id, value) or (unit_id, value, at); all checked before any is kept."""
        self._require_enabled()
        live = self._live.get(name) or self._load(name)
        now, checked = time.time(), []
        for i, row in enumerate(rows, 1):
            if len(row) not in (2, 3):
                raise InvalidOutcomeError(f"row {i}: expected (unit, value[, at]), got {row!r}")
            try:
                unit = unit_text(row[0])
                at = now if len(row) == 2 or row[2] is None else _time(row[2])
                checked.append((unit, _outcome(live, row[1]), at))
            except (InvalidUnitError, InvalidOutcomeError) as e:
                raise type(e)(f"row {i}: {e}; nothing was recorded") from None
        for unit, value, at in checked:
            arm = live.known.get(unit) or self._assign_new(live, unit, now)
            self._buffer.outcomes.append((live, unit, arm, value, at, now))
            self._buffer.added()
        return len(checked)

    def flush(self) -> int:
        """Write buffered assignments and outcomes now; returns the rows written."""
        return self._buffer.flush()

    def close(self) -> None:
        self._buffer.close()

    # -- analysis -------------------------------------------------------------------
    def analyze(self, name: str) -> Analysis:
        """Per-arm summary, effect with interval, test, SRM check, power and a decision."""
        exp = self.get(name)
        self._buffer.flush()
        get = self._client.get
        alpha = exp.statistical_significance or get("ml.experiments.statistical_significance")
        min_n = exp.min_sample_size or get("ml.experiments.min_sample_size")
        duration = exp.experiment_duration_days or get("ml.experiments.experiment_duration_days")
        ratio = exp.traffic_split_ratio or get(RATIO_KEY)
        first = self._store.query("SELECT value FROM experiment_outcomes WHERE experiment = ? "
                                  "LIMIT 1", (name,))
        shift = first[0][0] if first else 0.0
        sums = {arm: (n, s, ss) for arm, n, s, ss in self._store.query(
            "SELECT arm, COUNT(*), SUM(value - ?), SUM((value - ?) * (value - ?)) "
            "FROM experiment_outcomes WHERE experiment = ? GROUP BY arm",
            (shift, shift, shift, name))}
        c = Moments.from_sums(*sums.get("control", (0, 0.0, 0.0)), shift=shift)
        t = Moments.from_sums(*sums.get("treatment", (0, 0.0, 0.0)), shift=shift)
        units, srm = self._srm(name)
        now = time.time()
        days = max(0.0, (now - exp.started_at) / DAY_S)
        sample_reached = c.n >= min_n and t.n >= min_n
        duration_reached = days >= duration
        summary = (ArmSummary(exp.control, units["control"], c.n, c.mean, c.variance),
                   ArmSummary(exp.treatment, units["treatment"], t.n, t.mean, t.variance))
        base = dict(name=name, metric=exp.metric, control=summary[0], treatment=summary[1],
                    confidence=1 - alpha, srm_p_value=srm.p_value,
                    srm_detected=srm.p_value < SRM_ALPHA, traffic_split_ratio=ratio,
                    min_sample_size=min_n, sample_reached=sample_reached, days_running=days,
                    duration_days=duration, duration_reached=duration_reached, at=now,
                    test="two-proportion z" if exp.metric == "conversion" else "Welch t")
        if c.n < 2 or t.n < 2:
            return Analysis(**base, effect=None, relative_effect=None, ci=None, relative_ci=None,
                            statistic=None, df=None, p_value=None, significant=False,
                            required_per_arm=None, still_needed_per_arm=None,
                            decision=KEEP_RUNNING,
                            reason=f"each arm needs at least 2 outcomes (control {c.n}, "
                                   f"treatment {t.n})")
        cmp = compare(exp.metric, c, t, alpha, POWER)
        significant = cmp.test.p_value < alpha
        needed = None
        if cmp.required_per_arm is not None:
            needed = (max(0, cmp.required_per_arm[0] - c.n), max(0, cmp.required_per_arm[1] - t.n))
        decision, reason = _decide(exp, base, cmp.effect, cmp.test.p_value, significant, alpha,
                                   c.n, t.n)
        return Analysis(**base, effect=cmp.effect, relative_effect=cmp.relative_effect,
                        ci=cmp.ci, relative_ci=cmp.relative_ci, statistic=cmp.test.statistic,
                        df=cmp.test.df, p_value=cmp.test.p_value, significant=significant,
                        required_per_arm=cmp.required_per_arm, still_needed_per_arm=needed,
                        decision=decision, reason=reason)

    def conclude(self, name: str, promote: bool = True, force: bool = False) -> Conclusion:
        """Record the decision; when the treatment is a registry version and wins (and promote),
        promote it. A decision of keep-running is refused unless force (stopped early)."""
        exp = self.get(name)
        if exp.decision is not None:
            raise ExperimentStateError(f"experiment {name!r} was concluded already "
                                       f"({exp.decision}, by {exp.concluded_by})")
        analysis = self.analyze(name)
        decision = analysis.decision
        if decision == KEEP_RUNNING:
            if not force:
                raise ExperimentStateError(f"experiment {name!r} is not ready to conclude: "
                                           f"{analysis.reason}; pass force=True to stop it anyway")
            decision = STOPPED_EARLY
        promoted = None
        if promote and decision == TREATMENT_WINS and exp.treatment.startswith(MODEL_PREFIX):
            model, version = exp.treatment[len(MODEL_PREFIX):].split("/", 1)
            promoted = self._client.models.promote(
                model, version, reason=f"experiment {name}: treatment wins "
                                       f"(p = {analysis.p_value:.3g}, effect {analysis.effect:+.4g})")
        now, actor = time.time(), self._client.user
        record = Conclusion(name, decision, analysis, promoted, now, actor)
        with self._store.transaction() as db:
            claimed = db.execute(
                "UPDATE experiments SET decision = ?, concluded_at = ?, concluded_by = ?, "
                "conclusion = ? WHERE name = ? AND decision IS NULL",
                (decision, now, actor, json.dumps(record.to_dict()), name)).rowcount
        if not claimed:  # another process concluded it meanwhile (promoting is idempotent)
            raise ExperimentStateError(f"experiment {name!r} was concluded by another client "
                                       "meanwhile; see prefs.experiments.get()")
        log.info("mlprefs: experiment %s concluded by %s: %s%s", name, actor, decision,
                 f", promoted {promoted.uri}" if promoted is not None else "")
        return record

    # -- internals -------------------------------------------------------------------
    def _require_enabled(self) -> None:
        if not self._client.get(AB_KEY):
            raise FeatureDisabledError(AB_KEY, "A/B experiments are off: set "
                                       "ml.experiments.ab_testing_enabled = true (it requires "
                                       "ml.features.experiment_tracking = true)")

    def _anonymizing(self) -> bool:
        """The effective policy's: on under strict and moderate whatever the key says."""
        return self._data.policy.anonymization_enabled

    def _arm_ref(self, which: str, ref: Any) -> str:
        uri = getattr(ref, "uri", ref)
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidExperimentError(f"{which} must be a label or a model version, got {ref!r}")
        if uri.startswith(MODEL_PREFIX):
            parts = uri[len(MODEL_PREFIX):].split("/")
            if len(parts) != 2 or not all(parts):
                raise InvalidExperimentError(f"{which} {uri!r} is not models:/<name>/<version>")
            self._client.models.get(*parts)  # ModelNotFoundError when it is not registered
        return uri

    def _checked_setting(self, name: str, setting: str, value: Any) -> Any:
        if value is None:
            return None
        key = f"ml.experiments.{setting}"
        try:
            return self._client.spec(key).check(value)
        except InvalidValueError as e:
            raise InvalidExperimentError(f"{setting} = {value!r} for experiment {name!r} "
                                         f"{e.reason} (the rule of {key})") from None

    def _load(self, name: str) -> Live:
        self._require_enabled()
        rows = self._store.query("SELECT salt, traffic_split_ratio, anonymized, metric "
                                 "FROM experiments WHERE name = ?", (name,))
        if not rows:
            raise ExperimentNotFoundError(name)
        salt, ratio, anonymized, metric = rows[0]
        live = Live(name, salt, ratio, self._splits(name), bool(anonymized), metric)
        self._live[name] = live
        return live

    def _splits(self, name: str) -> builtins.list[tuple[float, float]]:
        return [(s, r) for s, r in self._store.query(
            "SELECT since, ratio FROM experiment_splits WHERE experiment = ? ORDER BY since",
            (name,))]

    def _ratio(self, live: Live) -> float:
        """The live preference's ratio; a change starts a new split period (recorded)."""
        ratio = self._client.get(RATIO_KEY)
        if ratio != live.ratios[-1][1]:
            with self._store.transaction() as db:
                db.execute("INSERT INTO experiment_splits (experiment, since, ratio) "
                           "VALUES (?, ?, ?) ON CONFLICT (experiment, since) DO NOTHING",
                           (live.name, time.time(), ratio))
            live.set_ratios(self._splits(live.name))
            log.info("mlprefs: experiment %s traffic split now %s (assigned units keep their arm)",
                     live.name, ratio)
        return ratio

    def _assign_new(self, live: Live, unit: str, now: float) -> str:
        """Assign a unit this process has not seen; the caller then calls buffer.added()."""
        if not unit:
            raise InvalidUnitError("a unit id must not be empty")
        ratio = live.fixed_ratio
        if ratio is None:
            ratio = self._ratio(live)
        u = _from_bytes(_sha256(live.prefix + unit.encode()).digest()[:8], "big") / HASH_SCALE
        arm = None
        if live.lo <= u < live.hi:  # its arm depends on when it was first assigned: ask the store
            # (this process's unflushed assignments are all in live.known, so no flush is needed)
            rows = self._store.query("SELECT arm FROM experiment_units WHERE experiment = ? "
                                     "AND unit = ?", (live.name, self._buffer.stored_unit(live, unit)))
            arm = rows[0][0] if rows else None
        if arm is None:
            arm = "treatment" if u < ratio else "control"
            self._buffer.units.append((live, unit, arm, now, live.since))
        if len(live.known) >= KNOWN_UNITS_MAX:
            self._buffer.flush()
            live.known.clear()
        live.known[unit] = arm
        return arm

    def _srm(self, name: str) -> tuple[dict[str, int], Any]:
        """Units per arm, and the SRM test with one group per traffic-split period.

        The counts are of assignments made, so units erased or expired later still count.
        """
        ratios: dict[float, Any] = dict(self._splits(name))
        counts: dict[float, dict[str, int]] = {}
        for since, arm, n in self._store.query("SELECT since, arm, n FROM experiment_assignments "
                                               "WHERE experiment = ?", (name,)):
            counts.setdefault(since, {})[arm] = n
        units = {arm: sum(c.get(arm, 0) for c in counts.values()) for arm in ("control", "treatment")}
        groups = [(c.get("control", 0), c.get("treatment", 0), ratios[since])
                  for since, c in sorted(counts.items())]
        return units, srm_test(groups)


def _decide(exp: Experiment, base: dict[str, Any], effect: float, p: float, significant: bool,
            alpha: float, n_c: int, n_t: int) -> tuple[str, str]:
    if base["srm_detected"]:
        return KEEP_RUNNING, (f"sample ratio mismatch (p = {base['srm_p_value']:.2g} < "
                              f"{SRM_ALPHA}): assignment is broken; investigate before trusting "
                              "any result")
    missing = []
    if not base["sample_reached"]:
        missing.append(f"{min(n_c, n_t)} of {base['min_sample_size']} outcomes in the smaller arm")
    if not base["duration_reached"]:
        missing.append(f"{base['days_running']:.1f} of {base['duration_days']} days")
    if missing:
        verdict = "significant so far" if significant else "not significant so far"
        return KEEP_RUNNING, f"{' and '.join(missing)} ({verdict}, p = {p:.3g})"
    if not significant:
        return NO_DIFFERENCE, f"p = {p:.3g} is not below {alpha:g}"
    better = (effect > 0) == exp.higher_is_better
    return (TREATMENT_WINS if better else CONTROL_WINS,
            f"p = {p:.3g} < {alpha:g}, effect {effect:+.4g} "
            f"({'higher' if exp.higher_is_better else 'lower'} is better)")


def _outcome(live: Live, value: Any) -> float:
    """The outcome as a float; the message names no unit (ids stay out of logs and output)."""
    if live.metric == "conversion":
        if value in (0, 1) and (isinstance(value, (bool, int, float))):
            return float(value)
        raise InvalidOutcomeError(f"outcome {value!r} in experiment {live.name!r}: a "
                                  "conversion outcome must be 0 or 1")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidOutcomeError(f"outcome {value!r} in experiment {live.name!r}: a mean "
                                  "metric needs a finite number")
    return float(value)


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidOutcomeError(f"time {value!r} must be seconds since the epoch")
    return float(value)
