"""Built-in plugin: every evaluation's numeric metrics go to the run's learning curve.

The curve lives in the store under the run id (`prefs.curves.get(run_id)`); logging honours
ml.feedback.learning_curve_enabled, read at each evaluation.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..services.curves import ENABLED, write_points

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__ = ["numeric_metrics"]

log = logging.getLogger(__name__)


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are numbers (scalar tensors included); labels and flags are left out."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or isinstance(value, (str, bytes)):
            continue
        if isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0:
            out[str(name)] = float(value)
    return out


@hookimpl
def mlprefs_evaluate(hooks: RunContext, metrics: Mapping[str, Any], index: int) -> None:
    values = numeric_metrics(metrics)
    if values and hooks.get(ENABLED):
        run = hooks.run_id
        hooks.stage(lambda db: write_points(db, run, index, values))  # one commit per boundary
