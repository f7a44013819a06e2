"""Training runs in the store: the state a resumed run continues from, and the changes it applied."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["RunRecord", "RunChange", "load_run", "save_run", "write_changes", "run_changes"]


@attrs.frozen
class RunRecord:
    """A run's stored progress: counters plus each plugin's JSON state (e.g. early stopping)."""

    run_id: str
    status: str
    stop_reason: str | None
    iteration: int
    steps: int
    state: Mapping[str, Any]
    started_at: float
    updated_at: float


@attrs.frozen
class RunChange:
    """One preference change delivered to a run at a step boundary.

    applied is False for keys that only take effect at the next run (batch size, workers...).
    """

    run_id: str
    step: int
    iteration: int
    key: str
    old: Any
    new: Any
    source: str
    applied: bool
    at: float


def load_run(store: Any, run_id: str) -> RunRecord | None:
    rows = store.query("SELECT run_id, status, stop_reason, iteration, steps, state, started_at, "
                       "updated_at FROM runs WHERE run_id = ?", (run_id,))
    if not rows:
        return None
    rid, status, reason, iteration, steps, state, started, updated = rows[0]
    return RunRecord(rid, status, reason, iteration, steps, json.loads(state), started, updated)


def save_run(store: Any, run_id: str, actor: str, project: str | None, status: str,
             stop_reason: str | None, iteration: int, steps: int, state: Mapping[str, Any],
             also: Sequence[Callable[[Any], None]] = ()) -> None:
    """Upsert the run's row; `also` are more writes for the same transaction (one commit)."""
    now = time.time()
    with store.transaction() as db:
        for write in also:
            write(db)
        db.execute(
            "INSERT INTO runs (run_id, actor, project, status, stop_reason, iteration, steps, state, "
            "started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) "
            "DO UPDATE SET status = excluded.status, stop_reason = excluded.stop_reason, "
            "iteration = excluded.iteration, steps = excluded.steps, state = excluded.state, "
            "updated_at = excluded.updated_at",
            (run_id, actor, project, status, stop_reason, iteration, steps, json.dumps(state),
             now, now))


def write_changes(db: Any, changes: Iterable[RunChange]) -> None:
    """Insert delivered changes inside the caller's transaction."""
    for c in changes:  # a handful per step boundary; plain execute runs on every backend
        db.execute("INSERT INTO run_changes (run_id, step, iteration, key, old, new, source, "
                   "applied, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (c.run_id, c.step, c.iteration, c.key, json.dumps(c.old), json.dumps(c.new),
                    c.source, int(c.applied), c.at))


def run_changes(store: Any, run_id: str) -> list[RunChange]:
    """Every change delivered to the run, oldest first."""
    rows = store.query("SELECT run_id, step, iteration, key, old, new, source, applied, at "
                       "FROM run_changes WHERE run_id = ? ORDER BY id", (run_id,))
    return [RunChange(r, s, i, k, json.loads(o), json.loads(n), src, bool(a), at)
            for r, s, i, k, o, n, src, a, at in rows]
