"""`mlprefs experiments ...`: A/B experiments, one verb per prefs.experiments call."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["register"]

DECISIONS = {"treatment_wins": "TREATMENT WINS", "control_wins": "CONTROL WINS",
             "no_difference": "NO DETECTABLE DIFFERENCE", "keep_running": "KEEP RUNNING",
             "stopped_early": "STOPPED EARLY"}


def register(sub: SubParsers) -> None:
    p = sub.add_parser("experiments", help="A/B experiments: create, assign, record, analyze, "
                                           "conclude, list")
    esub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = esub.add_parser("create", help="a new experiment (settings default to ml.experiments.*)")
    a.add_argument("name")
    a.add_argument("--control", required=True, help="a label or models:/<name>/<version>")
    a.add_argument("--treatment", required=True, help="a label or models:/<name>/<version>")
    a.add_argument("--metric", choices=("conversion", "mean"), default="conversion")
    a.add_argument("--ratio", type=float, help="treatment share (fixed; default: follow "
                                               "ml.experiments.traffic_split_ratio)")
    a.add_argument("--significance", type=float)
    a.add_argument("--min-sample-size", type=int)
    a.add_argument("--duration-days", type=int)
    a.add_argument("--salt", help="assignment salt (default: the experiment name)")
    a.add_argument("--lower-is-better", action="store_true",
                   help="for a mean metric such as latency")
    a.add_argument("--started-at", metavar="DATE",
                   help="when the experiment began, if before now (ISO date or time, e.g. "
                        "2026-11-02), for outcomes imported from an earlier run")
    a.set_defaults(func=cmd_create)

    a = esub.add_parser("assign", help="print the unit's arm: control or treatment")
    a.add_argument("name")
    a.add_argument("unit")
    a.set_defaults(func=cmd_assign)

    a = esub.add_parser("record", help="record an outcome, or many from a CSV file")
    a.add_argument("name")
    a.add_argument("unit", nargs="?")
    a.add_argument("value", nargs="?")
    a.add_argument("--csv", metavar="FILE",
                   help="columns unit,value[,at] with a header row; all rows are checked first")
    a.set_defaults(func=cmd_record)

    a = esub.add_parser("analyze", help="per-arm results, effect, p-value, SRM, decision")
    a.add_argument("name")
    a.set_defaults(func=cmd_analyze)

    a = esub.add_parser("conclude", help="record the decision (and promote a winning model)")
    a.add_argument("name")
    a.add_argument("--no-promote", action="store_true")
    a.add_argument("--force", action="store_true", help="stop even if the decision is keep running")
    a.set_defaults(func=cmd_conclude)

    a = esub.add_parser("list", help="every experiment")
    a.set_defaults(func=cmd_list)


def _number(text: str, where: str) -> float:
    from ..services.experiments import InvalidOutcomeError

    try:
        return float(text)
    except ValueError:
        raise InvalidOutcomeError(f"{where}: outcome {text!r} is not a number") from None


def _date(text: str | None) -> float | None:
    import datetime as dt

    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"--started-at {text!r} is not an ISO date or time") from None


def cmd_create(ctx: Context) -> None:
    a = ctx.args
    exp = ctx.client().experiments.create(
        a.name, a.control, a.treatment, metric=a.metric, traffic_split_ratio=a.ratio,
        statistical_significance=a.significance, min_sample_size=a.min_sample_size,
        experiment_duration_days=a.duration_days, salt=a.salt,
        higher_is_better=not a.lower_is_better, started_at=_date(a.started_at))
    ctx.emit(_experiment_json(exp), f"created experiment {exp.name}: {exp.control} (control) vs "
             f"{exp.treatment} (treatment), {exp.metric}")


def cmd_assign(ctx: Context) -> None:
    arm = ctx.client().experiments.assign(ctx.args.name, ctx.args.unit)
    ctx.emit({"experiment": ctx.args.name, "unit": ctx.args.unit, "arm": arm}, arm)


def cmd_record(ctx: Context) -> None:
    a = ctx.args
    experiments = ctx.client().experiments
    if a.csv:
        if a.unit is not None:
            raise ValueError("give either UNIT VALUE or --csv FILE, not both")
        n = experiments.record_many(a.name, _csv_rows(a.csv))
    else:
        if a.unit is None or a.value is None:
            raise ValueError("record needs UNIT VALUE, or --csv FILE")
        experiments.record(a.name, a.unit, _number(a.value, "argument VALUE"))
        n = 1
    experiments.flush()
    ctx.emit({"experiment": a.name, "recorded": n}, f"recorded {n} outcome(s) in {a.name}")


def _csv_rows(path: str) -> list[tuple[str, float, float | None]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        unit_col = next((c for c in ("unit", "unit_id") if c in fields), None)
        if unit_col is None or "value" not in fields:
            raise ValueError(f"{path}: the header must name the columns unit and value "
                             f"(optional: at); found {', '.join(fields) or 'nothing'}")
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            unit = (row.get(unit_col) or "").strip()
            if not unit:
                raise ValueError(f"{where}: empty unit; nothing was recorded")
            at = row.get("at")
            rows.append((unit, _number(row.get("value") or "", where),
                         _number(at, where) if at not in (None, "") else None))
    return rows


def cmd_analyze(ctx: Context) -> None:
    analysis = ctx.client().experiments.analyze(ctx.args.name)
    ctx.emit(analysis.to_dict(), lambda: render(analysis))


def render(r: Any) -> str:
    """The analysis as a table a person reads top to bottom."""
    pct = f"{r.confidence:.0%}"
    lines = [f"experiment {r.name}  ({r.metric}, {r.test} test)", "",
             f"{'arm':<10} {'label':<28} {'units':>9} {'n':>9} {'mean':>12} {'variance':>12}"]
    for arm, s in (("control", r.control), ("treatment", r.treatment)):
        lines.append(f"{arm:<10} {s.label[:28]:<28} {s.units:>9} {s.n:>9} {s.mean:>12.6g} "
                     f"{s.variance:>12.6g}")
    lines.append("")
    if r.effect is not None:
        lines.append(f"{'effect':<12} {r.effect:+.6g}  ({pct} CI {r.ci[0]:+.6g} .. {r.ci[1]:+.6g})")
        if r.relative_effect is not None:
            lines.append(f"{'relative':<12} {r.relative_effect:+.2%}  ({pct} CI "
                         f"{r.relative_ci[0]:+.2%} .. {r.relative_ci[1]:+.2%})")
        stat = "z" if r.df is None else f"t(df={r.df:.1f})"
        lines.append(f"{'p-value':<12} {r.p_value:.4g}  ({stat} = {r.statistic:.4g}; significant "
                     f"at {1 - r.confidence:g}: {'yes' if r.significant else 'no'})")
    lines.append(f"{'SRM p-value':<12} {r.srm_p_value:.4g}  (mismatch flagged below 0.001: "
                 f"{'YES' if r.srm_detected else 'no'}; treatment share {r.traffic_split_ratio:g})")
    lines.append(f"{'sample':<12} {min(r.control.n, r.treatment.n)} of {r.min_sample_size} per "
                 f"arm: {'reached' if r.sample_reached else 'not yet'}")
    lines.append(f"{'duration':<12} {r.days_running:.1f} of {r.duration_days} days: "
                 f"{'reached' if r.duration_reached else 'not yet'}")
    if r.required_per_arm is not None:
        lines.append(f"{'80% power':<12} needs {r.required_per_arm[0]} control and "
                     f"{r.required_per_arm[1]} treatment outcomes ({r.still_needed_per_arm[0]} "
                     f"and {r.still_needed_per_arm[1]} more)")
    lines.append(f"{'decision':<12} {DECISIONS.get(r.decision, r.decision)}: {r.reason}")
    return "\n".join(lines)


def cmd_conclude(ctx: Context) -> None:
    c = ctx.client().experiments.conclude(ctx.args.name, promote=not ctx.args.no_promote,
                                          force=ctx.args.force)
    promoted = f"; promoted {c.promoted.uri}" if c.promoted is not None else ""
    ctx.emit(c.to_dict(), f"{c.name} concluded: {DECISIONS.get(c.decision, c.decision)}{promoted}")


def _experiment_json(e: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(e)


def cmd_list(ctx: Context) -> None:
    exps = ctx.client().experiments.list()

    def text() -> str:
        rows = [f"{e.name:<20} {e.metric:<10} {e.control} vs {e.treatment}  "
                f"[{DECISIONS.get(e.decision, e.decision) if e.decision else 'running'}]"
                for e in exps]
        return "\n".join(rows) or "(no experiments)"

    ctx.emit([_experiment_json(e) for e in exps], text)
