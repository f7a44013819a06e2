"""`mlprefs curves`: a run's learning curve as a table, or as a PNG (prefs.curves)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {
    "curves": "mlprefs curves list",
    "curves list": "mlprefs curves list",
    "curves show": "mlprefs curves show run-2026-12-01-0915",
    "curves plot": "mlprefs curves plot run-2026-12-01-0915 --out curve.png --metric val_loss",
}
RUN = "a run id (see: mlprefs curves list)"


def register(sub: SubParsers) -> None:
    p = sub.add_parser("curves", help="learning curves of training runs")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    csub.add_parser("list", help="runs that have a curve, newest first").set_defaults(
        func=cmd_curves_list)
    s = csub.add_parser("show", help="a run's metrics by epoch, and the changes it applied")
    s.add_argument("run", help=RUN)
    s.set_defaults(func=cmd_curves_show)
    s = csub.add_parser("plot", help="write a run's curve as a PNG (needs matplotlib)")
    s.add_argument("run", help=RUN)
    s.add_argument("--out", required=True, metavar="FILE", help="the PNG to write")
    s.add_argument("--metric", action="append", help="only this metric (repeatable)")
    s.set_defaults(func=cmd_curves_plot)


def cmd_curves_list(ctx: Context) -> None:
    runs = ctx.client().curves.runs()
    ctx.emit(runs, "\n".join(runs) if runs else "no learning curves yet")


def cmd_curves_show(ctx: Context) -> None:
    from ..errors import MlprefsError
    from ..runs import run_changes

    client = ctx.client()
    curves = client.curves.get(ctx.args.run)
    if not curves:
        raise MlprefsError(f"no learning curve for run {ctx.args.run!r}; see: mlprefs curves list")
    changes = run_changes(client.store, ctx.args.run)
    data = {"run": ctx.args.run, "metrics": {m: [[e, _json_number(v)] for e, v in points]
                                             for m, points in curves.items()},
            "changes": [{"step": c.step, "iteration": c.iteration, "key": c.key, "old": c.old,
                         "new": c.new, "source": c.source, "applied": c.applied} for c in changes]}
    ctx.emit(data, lambda: _table(curves, changes))


def cmd_curves_plot(ctx: Context) -> None:
    path = ctx.client().curves.plot(ctx.args.run, ctx.args.out, metrics=ctx.args.metric)
    ctx.emit({"run": ctx.args.run, "path": path}, f"wrote {path}")


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _table(curves: dict[str, list[tuple[int, float]]], changes: list[Any]) -> str:
    metrics = sorted(curves)
    by_epoch: dict[int, dict[str, float]] = {}
    for metric, points in curves.items():
        for epoch, value in points:
            by_epoch.setdefault(epoch, {})[metric] = value
    width = max(12, *(len(m) for m in metrics))
    lines = ["epoch  " + "  ".join(m.rjust(width) for m in metrics)]
    for epoch in sorted(by_epoch):
        row = by_epoch[epoch]
        lines.append(f"{epoch:5d}  " + "  ".join(
            (f"{row[m]:.6g}" if m in row else "").rjust(width) for m in metrics))
    for c in changes:
        note = "" if c.applied else "  (takes effect at the next run)"
        lines.append(f"step {c.step} (epoch {c.iteration}): {c.key} {c.old} -> {c.new}  "
                     f"from {c.source}{note}")
    return "\n".join(lines)
