"""`mlprefs tune [--trials N] [--space FILE] [--study NAME] [--apply] -- COMMAND [ARGS...]`.

Runs COMMAND once per trial with the trial's values in its environment (MLPREFS__...); the
command's own hooks report to the trial and are pruned by it (SPEC section 9).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..values import format_value

if TYPE_CHECKING:
    from . import Context

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {"tune": "mlprefs tune --trials 20 --apply -- python train.py"}


def register(sub: Any) -> None:  # argparse sub-parsers
    p = sub.add_parser("tune", help="tune [tune.space] keys with Optuna, running COMMAND per trial",
                       description="Run COMMAND once per trial with the trial's values in its "
                       "environment; print the trials and the best values.")
    p.add_argument("--trials", type=int, metavar="N", help="trials to run (default ml.tuning.n_trials)")
    p.add_argument("--space", metavar="FILE", help="a TOML file with a [tune.space] table "
                   "(default: [tune.space] of the discovered TOML files)")
    p.add_argument("--study", metavar="NAME", help="study name; the same name joins one study")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop starting trials after this long (default ml.tuning.timeout_minutes)")
    p.add_argument("--seed", type=int, help="sampler seed, for reproducible studies")
    p.add_argument("--apply", action="store_true", help="store the best values in project scope")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                   help="the training command to run per trial, after --")
    p.set_defaults(func=cmd_tune)


def _space_file(path: str) -> tuple[Any, dict[str, Any]]:
    from ..tomlfile import read_toml
    from ..values import Source

    doc = read_toml(path)
    if doc is None:
        raise FileNotFoundError(f"--space {path}: no such file")
    space = doc.tables.get("tune", {}).get("space")
    if not isinstance(space, dict):
        raise ValueError(f"--space {path}: the file has no [tune.space] table")
    return Source("file", path, detail="--space"), space


def cmd_tune(ctx: Context) -> int:
    args = ctx.args
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ValueError("mlprefs tune needs a command to run per trial: mlprefs tune -- python train.py")
    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials must be at least 1, not {args.trials}")
    from ..tuning import require_enabled, space_of

    prefs = ctx.client()
    require_enabled(prefs)
    if args.apply and not prefs.project:  # say so before the trials, not after them
        raise ValueError("--apply stores the best values in project scope, which needs a project: "
                         "pass --project, set MLPREFS_PROJECT, or name it in mlprefs.toml [project]")
    if args.space:
        source, table = _space_file(args.space)
        ranges = space_of(prefs, table, source)
    else:
        ranges = space_of(prefs)
    from ..integrations.optuna import run_command

    result = run_command(prefs, command, ranges, n_trials=args.trials, timeout_s=args.timeout,
                         study=args.study, seed=args.seed)
    applied = []
    if args.apply and result.best_values:
        applied = result.apply(scope="project")
    ctx.emit({"study": result.study, "best_value": result.best_value,
              "best_values": dict(result.best_values),
              "trials": [{"number": t.number, "state": t.state, "value": t.value,
                          "values": dict(t.values)} for t in result.trials],
              "interrupted": result.interrupted, "applied": [e.id for e in applied]},
             lambda: _table(result, applied))
    return 0


def _table(result: Any, applied: list[Any]) -> str:
    keys = sorted({k for t in result.trials for k in t.values})
    rows = [["trial", "state", "value", *keys]]
    for t in result.trials:
        rows.append([str(t.number), t.state, "-" if t.value is None else f"{t.value:.6g}",
                     *(format_value(t.values[k]) if k in t.values else "-" for k in keys)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"study {result.study}: {len(result.trials)} trial(s)"
                 + (" (interrupted)" if result.interrupted else ""))
    if result.best_value is None:
        lines.append("no completed trial")
    else:
        lines.append(f"best value {result.best_value:.6g}:")
        lines += [f"  {k} = {format_value(v)}" for k, v in result.best_values.items()]
        if applied:
            lines.append(f"applied to project scope (history #{applied[0].id}"
                         f"{'..#' + str(applied[-1].id) if len(applied) > 1 else ''})")
    return "\n".join(lines)
