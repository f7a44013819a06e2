"""Optuna behind prefs.tune() and `mlprefs tune`: studies beside the store, trials as runs.

The study lives beside the preferences - `tuning.db` next to `prefs.db` for SQLite, the same
database for PostgreSQL - so processes and machines given one study name share one study
(Optuna's own distributed mode: each process asks the storage for its next trial). Trials
are driven with ask/tell: a trial that raises is told FAIL and the study goes on; Ctrl-C
tells the running trial FAIL and ends the study, keeping every finished trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import sqlite3
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError
from ..plugins.tuning import ENV, TrialPlugin
from ..tuning import Range, TrialResult, TuneResult
from ._require import require

optuna = require("optuna", "tune", "mlprefs_sdk.integrations.optuna")

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["run_in_process", "run_command", "trial_from_env", "storage_url", "open_study",
           "STUDY_FILE", "StudyError"]

log = logging.getLogger(__name__)

STUDY_FILE = "tuning.db"
K = "ml.tuning."
States = optuna.trial.TrialState
_STATE_NAMES = {States.COMPLETE: "complete", States.PRUNED: "pruned", States.FAIL: "failed"}
PRUNED_ATTR = "mlprefs_pruned"


class StudyError(MlprefsError, RuntimeError):
    """The study's storage cannot be opened or created."""


# -- storage and study -------------------------------------------------------------
def storage_url(store: str) -> str | None:
    """Where a store's studies live (None: in memory, for a ":memory:" store)."""
    if store == ":memory:":
        return None
    if "://" in store:
        scheme, rest = store.split("://", 1)
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        if scheme.startswith("postgresql+"):
            return store
        raise StudyError(f"cannot keep a tuning study beside the store {scheme}://...; "
                         f"use a SQLite file or a postgresql:// store")
    return "sqlite:///" + os.path.join(os.path.dirname(store), STUDY_FILE)


def _storage(url: str | None) -> Any:
    if url is None:
        return optuna.storages.InMemoryStorage()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        return optuna.storages.RDBStorage(url, engine_kwargs={"creator": lambda: _connect(path)})
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _connect(path: str) -> sqlite3.Connection:
    """tuning.db as the store keeps prefs.db: WAL (readers never block the one writer) and
    synchronous=NORMAL (a commit is not an fsync), and a wait, not an error, on a busy lock.
    Optuna's own SQLite default fsyncs every report, which dominates a short trial."""
    conn = sqlite3.connect(path, timeout=60, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _retry(fn: Callable[[], Any], what: str) -> Any:
    """Two processes creating one study on a fresh store race on its tables and rows: the
    loser's CREATE TABLE or INSERT fails, and a moment later everything exists. Retry."""
    sqlalchemy_exc = require("sqlalchemy.exc", "tune", "mlprefs_sdk.integrations.optuna")
    delay = 0.02
    for attempt in range(12):
        try:
            return fn()
        except (sqlalchemy_exc.OperationalError, sqlalchemy_exc.IntegrityError,
                sqlalchemy_exc.ProgrammingError, optuna.exceptions.DuplicatedStudyError) as e:
            if attempt == 11:
                raise StudyError(f"cannot {what}: {e}") from e
            log.debug("mlprefs: %s raced with another process (%s); retrying", what, e)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


def make_sampler(name: str, seed: int | None) -> Any:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():  # experimental in Optuna, but documented and stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str) -> Any:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner()


@contextlib.contextmanager
def opened(url: str | None) -> Iterator[Any]:
    """A study storage, and its database connections closed afterwards (SQLAlchemy pools
    them; left to the garbage collector they would stay open until then)."""
    storage = _retry(lambda: _storage(url), "open the tuning storage")
    try:
        yield storage
    finally:
        engine = getattr(storage, "engine", None)  # RDBStorage's; InMemoryStorage has none
        if engine is not None:
            engine.dispose()


@contextlib.contextmanager
def open_study(client: Client, name: str, seed: int | None = None) -> Iterator[Any]:
    """Create the named study beside the store, or join it when another process has."""
    direction = "minimize" if client.get("ml.training.early_stopping_mode") == "min" else "maximize"
    sampler = make_sampler(client.get(K + "sampler"), seed)
    pruner = make_pruner(client.get(K + "pruner"))
    with opened(storage_url(client.locations.store)) as storage:

        def create() -> Any:
            return optuna.create_study(storage=storage, study_name=name, direction=direction,
                                       sampler=sampler, pruner=pruner, load_if_exists=True)

        study = _retry(create, f"open tuning study {name!r}")
        if study.direction.name.lower() != direction:
            raise StudyError(f"study {name!r} exists and {study.direction.name.lower()}s, but "
                             f"ml.training.early_stopping_mode is "
                             f"{client.get('ml.training.early_stopping_mode')!r}; use another "
                             f"study name")
        yield study


def default_study_name() -> str:
    from ..training import new_run_id

    return "tune-" + new_run_id()


def distribution(r: Range) -> Any:
    d = optuna.distributions
    if r.kind == "choice":
        return d.CategoricalDistribution(r.choices)
    if r.kind == "int":
        return d.IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))  # type: ignore[arg-type]
    return d.FloatDistribution(r.low, r.high, log=r.log, step=r.step)


# -- one trial's reports ------------------------------------------------------------
class _Reporter:
    """A trial as the pruning plugin sees it: report each check, remember the best."""

    def __init__(self, trial: Any, pruner: str, minimize: bool, mark: bool = False) -> None:
        self.trial, self.pruner, self.minimize, self.mark = trial, pruner, minimize, mark
        self.best: float | None = None
        self.pruned: str | None = None
        self._step = -1

    def report(self, value: float, epoch: int) -> None:
        step = epoch if epoch > self._step else self._step + 1  # Optuna keeps one value a step
        self._step = step
        if self.best is None or (value < self.best if self.minimize else value > self.best):
            self.best = value
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned = f"pruned by optuna {self.pruner} at epoch {epoch}"
            if self.mark:  # a command's trial: tell the parent process
                self.trial.set_user_attr(PRUNED_ATTR, self.pruned)


def trial_from_env(spec: str) -> _Reporter:
    """The running trial named by MLPREFS_TUNE_TRIAL (in a command that `mlprefs tune` runs)."""
    data = json.loads(spec)
    storage = _retry(lambda: _storage(data["storage"]), "open the tuning storage")
    pruner = make_pruner(data["pruner"])
    study = optuna.load_study(study_name=data["study"], storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())  # samples nothing here
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(data["study"]), data["trial"])
    trial = optuna.trial.Trial(study, trial_id)
    log.info("mlprefs: reporting to optuna trial %d of study %s", data["trial"], data["study"])
    return _Reporter(trial, type(pruner).__name__, data["direction"] == "minimize", mark=True)


# -- the two drivers ------------------------------------------------------------------
def _limits(client: Client, n_trials: int | None, timeout_s: float | None) -> tuple[int, float | None]:
    n = n_trials if n_trials is not None else client.get(K + "n_trials")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_trials must be an int >= 1, not {n!r}")
    timeout = timeout_s if timeout_s is not None else client.get(K + "timeout_minutes") * 60.0
    return n, (timeout or None)


def _loop(client: Client, ranges: Mapping[str, Range], n_trials: int | None,
          timeout_s: float | None, study_name: str | None, seed: int | None,
          run: Callable[[Any, Any, dict[str, Any], str], None]) -> TuneResult:
    n, timeout = _limits(client, n_trials, timeout_s)
    name = study_name or default_study_name()
    with open_study(client, name, seed) as study:
        dists = {key: distribution(r) for key, r in ranges.items()}
        start = time.monotonic()
        interrupted = False
        for _ in range(n):
            if timeout is not None and time.monotonic() - start >= timeout:
                log.info("mlprefs: study %s: timeout of %g s reached", name, timeout)
                break
            trial = _retry(lambda: study.ask(dists), "ask the study for a trial")
            values = {key: trial.params[key] for key in ranges}
            try:
                run(study, trial, values, name)
            except KeyboardInterrupt:
                try:
                    study.tell(trial, state=States.FAIL)
                except (RuntimeError, ValueError) as e:  # Ctrl-C came after the trial was told
                    log.debug("mlprefs: trial %d was already finished: %s", trial.number, e)
                interrupted = True
                log.warning("mlprefs: study %s interrupted during trial %d; the finished trials "
                            "are kept", name, trial.number)
                break
        return result_of(client, study, interrupted)


def _tell(study: Any, trial: Any, objective: float | None, pruned: str | None, what: str) -> None:
    if pruned:
        study.tell(trial, state=States.PRUNED)
    elif objective is None or not math.isfinite(objective):
        log.error("mlprefs: trial %d failed: %s", trial.number,
                  f"its objective is {objective}" if objective is not None else what)
        study.tell(trial, state=States.FAIL)
    else:
        study.tell(trial, objective)


def run_in_process(client: Client, train: Callable[[Client], float | None],
                   ranges: Mapping[str, Range], n_trials: int | None = None,
                   timeout_s: float | None = None, study: str | None = None,
                   seed: int | None = None) -> TuneResult:
    """Each trial calls train(client) with the trial's values in its runtime layer."""
    minimize = client.get("ml.training.early_stopping_mode") == "min"
    pm = client.plugin_manager

    def run(st: Any, trial: Any, values: dict[str, Any], name: str) -> None:
        reporter = _Reporter(trial, type(st.pruner).__name__, minimize)
        plugin = TrialPlugin(reporter)
        pm.register(plugin)
        try:
            with client.override(values, detail=f"optuna trial {trial.number} of study {name}"):
                objective = train(client)
        except Exception:
            log.exception("mlprefs: trial %d of study %s raised; it is recorded as failed and "
                          "the study goes on", trial.number, name)
            st.tell(trial, state=States.FAIL)
            return
        finally:
            pm.unregister(plugin)
        if objective is None:
            objective = reporter.best
        else:
            try:
                objective = float(objective)
            except (TypeError, ValueError):
                log.error("mlprefs: trial %d failed: train returned %r, not a number or None",
                          trial.number, objective)
                st.tell(trial, state=States.FAIL)
                return
        _tell(st, trial, objective, reporter.pruned,
              "train returned None and no check reported ml.training.early_stopping_metric")

    return _loop(client, ranges, n_trials, timeout_s, study, seed, run)


def env_values(values: Mapping[str, Any]) -> dict[str, str]:
    """A trial's values as MLPREFS__ variables (the env layer of the command's Client)."""
    out = {}
    for key, value in values.items():
        text = ("true" if value else "false") if isinstance(value, bool) else (
            repr(value) if isinstance(value, float) else str(value))
        out["MLPREFS__" + key.upper().replace(".", "__")] = text
    return out


def run_command(client: Client, command: Sequence[str], ranges: Mapping[str, Range],
                n_trials: int | None = None, timeout_s: float | None = None,
                study: str | None = None, seed: int | None = None) -> TuneResult:
    """Each trial runs `command` with the trial's values in its environment; the command's
    hooks report to the trial and prune it; its best reported metric is the objective."""
    url = storage_url(client.locations.store)
    if url is None:
        raise StudyError("`mlprefs tune` runs commands in other processes, which cannot share an "
                         "in-memory study: use a store file or a postgresql:// store")
    minimize = client.get("ml.training.early_stopping_mode") == "min"
    pruner = client.get(K + "pruner")
    base = dict(os.environ)
    base.setdefault("MLPREFS_STORE", client.locations.store)  # the command shares the store
    if client.project:
        base.setdefault("MLPREFS_PROJECT", client.project)

    def run(st: Any, trial: Any, values: dict[str, Any], name: str) -> None:
        spec = {"storage": url, "study": name, "trial": trial.number, "pruner": pruner,
                "direction": "minimize" if minimize else "maximize"}
        env = {**base, **env_values(values), ENV: json.dumps(spec)}
        log.info("mlprefs: trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in values.items()))
        proc = subprocess.Popen(list(command), env=env)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            raise
        frozen = _frozen(reader, name, trial.number)
        if code != 0:
            log.error("mlprefs: trial %d failed: %s exited with code %d", trial.number,
                      command[0], code)
            st.tell(trial, state=States.FAIL)
            return
        steps = frozen.intermediate_values
        objective = None
        if steps:
            objective = (min if minimize else max)(steps.values())
        _tell(st, trial, objective, frozen.user_attrs.get(PRUNED_ATTR),
              "the command reported no ml.training.early_stopping_metric (does it build "
              "prefs.training_hooks() and pass metrics to on_epoch_end?)")

    with opened(url) as reader:
        return _loop(client, ranges, n_trials, timeout_s, study, seed, run)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Ctrl-C in a terminal reaches the command too (same process group); a SIGINT sent to
    this process alone is passed on. Give the command a moment to end, then kill it."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("mlprefs: %s did not end within 10 s of Ctrl-C; killing it", proc.args)
            proc.kill()
            proc.wait()


def _frozen(storage: Any, name: str, number: int) -> Any:
    """The trial as the command left it in the shared storage."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(name), number)
    return storage.get_trial(trial_id)


def result_of(client: Client, study: Any, interrupted: bool = False) -> TuneResult:
    """Every finished trial of the study (this process's and others'), and the best."""
    trials = tuple(
        TrialResult(t.number, dict(t.params), t.value, _STATE_NAMES[t.state])
        for t in study.get_trials(deepcopy=False) if t.state in _STATE_NAMES)
    best = [t for t in trials if t.state == "complete"]
    try:
        top = study.best_trial
    except ValueError:  # no completed trial
        top = None
    if top is None or not best:
        return TuneResult(study.study_name, {}, None, trials, interrupted, client)
    return TuneResult(study.study_name, dict(top.params), top.value, trials, interrupted, client)
