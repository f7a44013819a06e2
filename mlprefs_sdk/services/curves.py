"""Learning curves: per-run metrics by epoch in the store, and a PNG of them.

The training driver's learning-curve plugin writes here at every evaluation; the plot marks
the points where a preference change reached the run (from the run's recorded changes), so
the effect of a mid-run edit can be seen. Logging honours ml.feedback.learning_curve_enabled.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError
from ..runs import run_changes

if TYPE_CHECKING:
    from ..handle import ClientHandle

__all__ = ["Curves", "write_points", "ENABLED"]

log = logging.getLogger(__name__)

ENABLED = "ml.feedback.learning_curve_enabled"


def write_points(db: Any, run: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """Upsert one epoch's metrics inside the caller's transaction (NaN is stored as NULL)."""
    now = time.time()
    for name, value in metrics.items():
        number = float(value)
        db.execute("INSERT INTO curves (run_id, epoch, metric, value, at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (run_id, epoch, metric) DO UPDATE SET value = excluded.value, "
                   "at = excluded.at",
                   (str(run), int(epoch), str(name), None if math.isnan(number) else number, now))


class Curves:
    """prefs.curves: log(run, epoch, **metrics), get(run), plot(run, path)."""

    def __init__(self, client: ClientHandle) -> None:
        self._client = client

    def log(self, run: str, epoch: int, **metrics: float) -> bool:
        """Store one epoch's metrics (a re-logged epoch replaces its values); False when disabled."""
        if not self._client.get(ENABLED):
            return False
        if metrics:
            with self._client.store.transaction() as db:
                write_points(db, run, epoch, metrics)
        return True

    def get(self, run: str) -> dict[str, list[tuple[int, float]]]:
        """metric -> [(epoch, value), ...] in epoch order; {} for a run with no curve."""
        out: dict[str, list[tuple[int, float]]] = {}
        for epoch, metric, value in self._client.store.query(
                "SELECT epoch, metric, value FROM curves WHERE run_id = ? ORDER BY metric, epoch",
                (run,)):
            out.setdefault(metric, []).append((epoch, math.nan if value is None else value))
        return out

    def runs(self) -> list[str]:
        """Run ids that have a curve, newest first."""
        rows = self._client.store.query(
            "SELECT run_id, MAX(at) AS latest FROM curves GROUP BY run_id ORDER BY latest DESC")
        return [r[0] for r in rows]

    def plot(self, run: str, path: str | os.PathLike[str], metrics: list[str] | None = None) -> str:
        """Write a PNG of the run's curves, with each applied preference change marked."""
        curves = self.get(run)
        if not curves:
            raise MlprefsError(f"no learning curve for run {run!r}; known runs: "
                               f"{', '.join(self.runs()[:10]) or 'none'}")
        if metrics:
            missing = [m for m in metrics if m not in curves]
            if missing:
                raise MlprefsError(f"run {run!r} has no metric {', '.join(missing)}; it has "
                                   f"{', '.join(sorted(curves))}")
            curves = {m: curves[m] for m in metrics}
        changes = [c for c in run_changes(self._client.store, run) if c.applied]
        _draw(run, curves, changes, os.fspath(path))
        return os.fspath(path)


def _draw(run: str, curves: dict[str, list[tuple[int, float]]], changes: list[Any],
          path: str) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plotting learning curves needs matplotlib: '
                          'pip install "mlprefs-sdk[plot]"') from None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display needed
    ax = fig.add_subplot()
    for metric, points in sorted(curves.items()):
        ax.plot([e for e, _ in points], [v for _, v in points], marker=".", label=metric)
    # A change applied during iteration i lands between epochs i-1 and i.
    for i, change in enumerate(changes):
        x = change.iteration - 0.5
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        label = f"{change.key.rsplit('.', 1)[-1]} {change.old:g}→{change.new:g}" \
            if _is_number(change.old) and _is_number(change.new) \
            else f"{change.key.rsplit('.', 1)[-1]} → {change.new}"
        ax.annotate(label, xy=(x, 0.98 - 0.07 * (i % 6)), xycoords=("data", "axes fraction"),
                    xytext=(3, 0), textcoords="offset points", fontsize=8, ha="left", va="top",
                    color="dimgrey")
    ax.set_xlabel("epoch")
    ax.set_title(f"learning curve: run {run}")
    ax.legend(loc="upper right" if not changes else "center right")
    ax.grid(True, alpha=0.3)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
