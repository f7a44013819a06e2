"""`mlprefs models ...`: the model registry, one verb per prefs.models call."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {
    "models": "mlprefs models list",
    "models list": "mlprefs models list churn --status active",
    "models show": "mlprefs models show churn 1.2.0",
    "models register": "mlprefs models register churn 1.3.0 --metric accuracy=0.91 "
                       "--tag owner=ml-team",
    "models promote": "mlprefs models promote churn 1.3.0 --reason 'beats 1.2.0'",
    "models deprecate": "mlprefs models deprecate churn 1.1.0 --reason 'superseded'",
    "models rollback": "mlprefs models rollback churn --reason 'latency regression'",
    "models select": "mlprefs models select churn",
    "models update": "mlprefs models update churn",
}
NAME = "the model's name"
VERSION = "a version of the model, e.g. 1.3.0"
STATUSES = ("active", "experimental", "deprecated")


def register(sub: SubParsers) -> None:
    p = sub.add_parser("models", help="model registry: list, show, register, promote, deprecate, "
                                      "rollback, select, update")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = msub.add_parser("list", help="registered versions")
    a.add_argument("name", nargs="?", help="only this model's versions (default: every model)")
    a.add_argument("--framework", help="only versions of this framework (e.g. pytorch)")
    a.add_argument("--status", choices=STATUSES, help="only versions in this status")
    a.set_defaults(func=cmd_list)

    a = msub.add_parser("show", help="one version (default: the active one) and the moves")
    a.add_argument("name", help=NAME)
    a.add_argument("version", nargs="?", help=VERSION + " (default: the active one)")
    a.set_defaults(func=cmd_show)

    a = msub.add_parser("register", help="add an immutable version")
    a.add_argument("name", help=NAME)
    a.add_argument("version", help=VERSION)
    a.add_argument("--framework", help="default: ml.models.default_framework")
    a.add_argument("--status", choices=("experimental", "active", "deprecated"),
                   default="experimental", help="its status (default: experimental)")
    a.add_argument("--metric", action="append", default=[], metavar="NAME=NUMBER",
                   help="e.g. --metric accuracy=0.91 --metric latency_ms=12")
    a.add_argument("--config", default="{}", metavar="JSON", help="a JSON object")
    a.add_argument("--tag", action="append", default=[], metavar="NAME=TEXT",
                   help="a label (repeatable), e.g. --tag owner=ml-team")
    a.add_argument("--source-uri", help="where the artifact lives (e.g. s3://bucket/model.pt)")
    a.add_argument("--description", default="", help="free text shown by models show")
    a.set_defaults(func=cmd_register)

    for verb, text in (("promote", "make a version active"),
                       ("deprecate", "retire a version")):
        a = msub.add_parser(verb, help=text)
        a.add_argument("name", help=NAME)
        a.add_argument("version", help=VERSION)
        a.add_argument("--reason", help="why, recorded with the move")
        a.set_defaults(func=cmd_move, verb=verb)

    a = msub.add_parser("rollback", help="re-activate the previous active version")
    a.add_argument("name", help=NAME)
    a.add_argument("--reason", help="why, recorded with the move")
    a.set_defaults(func=cmd_rollback)

    a = msub.add_parser("select", help="the best qualifying version by the preferences")
    a.add_argument("name", nargs="?", help="only this model (default: every model)")
    a.set_defaults(func=cmd_select)

    a = msub.add_parser("update", help="apply ml.models.auto_update_policy; performs due "
                                       "promotions (automatic or scheduled)")
    a.add_argument("name", nargs="?", help="only this model (default: every model)")
    a.set_defaults(func=cmd_update)


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _metrics_text(mv: Any) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(mv.metrics.items())) or "-"


def _row(mv: Any) -> str:
    return (f"{mv.name:<16} {mv.version:<10} {mv.framework:<10} {mv.status:<12} "
            f"{_metrics_text(mv)}")


def _pairs(items: list[str], what: str, number: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{what} {item!r} must look like NAME=VALUE")
        if number:
            try:
                out[key] = float(text)
            except ValueError:
                raise ValueError(f"--{what} {item!r}: {text!r} is not a number") from None
        else:
            out[key] = text
    return out


def cmd_list(ctx: Context) -> None:
    versions = ctx.client().models.list(ctx.args.name, framework=ctx.args.framework,
                                        status=ctx.args.status)
    ctx.emit([mv.to_dict() for mv in versions],
             lambda: "\n".join(_row(mv) for mv in versions) or "(no model versions)")


def cmd_show(ctx: Context) -> None:
    models = ctx.client().models
    mv = models.get(ctx.args.name, ctx.args.version)
    moves = models.moves(ctx.args.name, limit=20)

    def text() -> str:
        lines = [f"{mv.uri}  ({mv.status})",
                 f"  framework    {mv.framework}",
                 f"  metrics      {_metrics_text(mv)}",
                 f"  config       {json.dumps(dict(mv.config), sort_keys=True)}",
                 f"  tags         {json.dumps(dict(mv.tags), sort_keys=True)}",
                 f"  source       {mv.source_uri or '-'}",
                 f"  description  {mv.description or '-'}",
                 f"  registered   {_when(mv.created_at)} by {mv.created_by}",
                 f"moves of {mv.name} (newest first):"]
        for m in moves:
            why = f"  # {m.reason}" if m.reason else ""
            lines.append(f"  #{m.id:<4} {_when(m.at)}  {m.kind:<9} {m.from_version or '-'} -> "
                         f"{m.to_version or '-'}  by {m.actor}{why}")
        return "\n".join(lines)

    ctx.emit({**mv.to_dict(), "moves": [_move_json(m) for m in moves]}, text)


def _move_json(m: Any) -> dict[str, Any]:
    return {"id": m.id, "kind": m.kind, "from": m.from_version, "to": m.to_version, "at": m.at,
            "actor": m.actor, "reason": m.reason}


def cmd_register(ctx: Context) -> None:
    a = ctx.args
    try:
        config = json.loads(a.config)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config is not valid JSON: {e}") from None
    mv = ctx.client().models.register(
        a.name, a.version, framework=a.framework, status=a.status,
        metrics=_pairs(a.metric, "metric", number=True), config=config,
        tags=_pairs(a.tag, "tag", number=False), source_uri=a.source_uri,
        description=a.description)
    ctx.emit(mv.to_dict(), f"registered {mv.uri} ({mv.framework}, {mv.status})")


def cmd_move(ctx: Context) -> None:
    models = ctx.client().models
    call = models.promote if ctx.args.verb == "promote" else models.deprecate
    mv = call(ctx.args.name, ctx.args.version, reason=ctx.args.reason)
    ctx.emit(mv.to_dict(), f"{mv.uri} is now {mv.status}")


def cmd_rollback(ctx: Context) -> None:
    mv = ctx.client().models.rollback(ctx.args.name, reason=ctx.args.reason)
    ctx.emit(mv.to_dict(), f"{mv.name} rolled back: {mv.uri} is active again")


def cmd_select(ctx: Context) -> None:
    client = ctx.client()
    mv = client.models.select(ctx.args.name)
    criteria = client.get("ml.models.selection_criteria")
    ctx.emit(mv.to_dict(), f"{mv.uri}  (selected by {criteria}: {_metrics_text(mv)})")


def cmd_update(ctx: Context) -> None:
    checks = ctx.client().models.update(ctx.args.name)
    ctx.emit([c.to_dict() for c in checks],
             lambda: "\n".join(c.message for c in checks) or "(no models)")
