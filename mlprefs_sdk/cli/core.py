"""Core verbs: get, set, unset, list, explain, validate, history, rollback, export, import,
templates, doctor."""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING, Any

from ..values import explain_text, format_value

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["EXAMPLES", "register"]

MASK = "********"
LR = "ml.training.learning_rate"
EXAMPLES = {
    "get": f"mlprefs get {LR}",
    "set": f"mlprefs set {LR} 0.01 --reason 'loss plateaued'",
    "unset": f"mlprefs unset {LR}",
    "list": "mlprefs list ml.training --sources",
    "explain": f"mlprefs explain {LR}",
    "validate": "mlprefs validate mlprefs.toml",
    "history": f"mlprefs history {LR} --limit 5",
    "rollback": f"mlprefs rollback {LR} --to 12",
    "export": "mlprefs export --format toml > prefs.toml",
    "import": "mlprefs import prefs.toml --scope project --project vision",
    "templates": "mlprefs templates list",
    "templates list": "mlprefs templates list",
    "templates show": "mlprefs templates show quick-experiment",
    "templates apply": "mlprefs templates apply quick-experiment --scope user",
    "doctor": "mlprefs doctor --json",
}
SCOPE = {"choices": ("user", "project"), "default": "user",
         "help": "where to store it: your user scope, or the project's (default: user)"}
REASON = "why, recorded in the history"


def register(sub: SubParsers) -> None:
    p = sub.add_parser("get", help="print the resolved value")
    p.add_argument("key", help="a preference key, e.g. ml.training.learning_rate")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("set", help="validate and store a value")
    p.add_argument("key", help="a preference key, e.g. ml.training.learning_rate")
    p.add_argument("value", help="the new value, as you would write it in TOML (0.01, true, adam)")
    p.add_argument("--scope", **SCOPE)
    p.add_argument("--reason", help=REASON)
    p.set_defaults(func=cmd_set)

    p = sub.add_parser("unset", help="remove a stored value")
    p.add_argument("key", help="a preference key, e.g. ml.training.learning_rate")
    p.add_argument("--scope", **SCOPE)
    p.add_argument("--reason", help=REASON)
    p.set_defaults(func=cmd_unset)

    p = sub.add_parser("list", help="every resolved key")
    p.add_argument("prefix", nargs="?", default="",
                   help="only keys starting with this (e.g. ml.training); default: every key")
    p.add_argument("--sources", action="store_true", help="show where each value comes from")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("explain", help="the winning value and every layer's value")
    p.add_argument("key", help="a preference key, e.g. ml.training.learning_rate")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("validate", help="check files, or every discovered source")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="TOML files to check alone; none: every source this client reads")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("history", help="audit trail, newest first")
    p.add_argument("key", nargs="?", help="only this key's entries (default: every key)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("rollback", help="restore the value a history entry set")
    p.add_argument("key", help="a preference key, e.g. ml.training.learning_rate")
    p.add_argument("--to", type=int, required=True, metavar="ID",
                   help="the history entry whose value to restore (see: mlprefs history KEY)")
    p.add_argument("--scope", **SCOPE)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("export", help="the whole resolved view (sensitive values masked)")
    p.add_argument("--format", choices=("toml", "json"), default="toml",
                   help="toml (default; importable with mlprefs import) or json")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="store a TOML file's values into a scope")
    p.add_argument("file", help="a TOML file, e.g. one written by mlprefs export")
    p.add_argument("--scope", **SCOPE)
    p.add_argument("--reason", help=REASON + " (default: import FILE)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("templates", help="list, show or apply templates")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("list", help="template names").set_defaults(func=cmd_templates_list)
    t = tsub.add_parser("show", help="a template's values")
    t.add_argument("name", help="a template name (see: mlprefs templates list)")
    t.set_defaults(func=cmd_templates_show)
    t = tsub.add_parser("apply", help="write a template's values into a scope")
    t.add_argument("name", help="a template name (see: mlprefs templates list)")
    t.add_argument("--scope", choices=("user", "project"),
                   help="where to store the values (default: the template's own choice)")
    t.set_defaults(func=cmd_templates_apply)

    p = sub.add_parser("doctor", help="paths, versions, store integrity, watcher backend")
    p.set_defaults(func=cmd_doctor)


def _source_json(source: Any) -> dict[str, Any]:
    return {"layer": source.layer, "path": source.path, "line": source.line, "detail": source.detail}


def _entry_json(e: Any) -> dict[str, Any]:
    return {"id": e.id, "scope": e.scope, "scope_id": e.scope_id, "key": e.key, "old": e.old,
            "new": e.new, "at": e.at, "actor": e.actor, "reason": e.reason}


def _entry_text(e: Any) -> str:
    return str(e)  # HistoryEntry.__str__ (values.py)


def cmd_get(ctx: Context) -> None:
    value = ctx.client().get(ctx.args.key)
    ctx.emit({"key": ctx.args.key, "value": value},
             str(value).lower() if isinstance(value, bool) else str(value))


def cmd_set(ctx: Context) -> None:
    client = ctx.client()
    entries = client.set_many({ctx.args.key: ctx.args.value}, ctx.args.scope, ctx.args.reason,
                              from_string=True)
    value = client.get(ctx.args.key)
    if entries:
        ctx.emit(_entry_json(entries[0]), f"{ctx.args.key} = {format_value(entries[0].new)} "
                 f"stored in {ctx.args.scope} scope (history #{entries[0].id}); "
                 f"resolved value now {format_value(value)}")
    else:
        ctx.emit(None, "")


def cmd_unset(ctx: Context) -> None:
    client = ctx.client()
    entry = client.unset(ctx.args.key, scope=ctx.args.scope, reason=ctx.args.reason)
    value = client.get(ctx.args.key)
    if entry is None:
        ctx.emit(None, f"{ctx.args.key} was not set in {ctx.args.scope} scope")
    else:
        ctx.emit(_entry_json(entry), f"{ctx.args.key} removed from {ctx.args.scope} scope "
                 f"(history #{entry.id}); resolved value now {format_value(value)}")


def cmd_list(ctx: Context) -> None:
    client = ctx.client()
    view = client.snapshot()
    rows = []
    for key in sorted(view):
        if not key.startswith(ctx.args.prefix):
            continue
        spec = client.spec(key)
        row = {"key": key, "value": view[key], "type": spec.type_name, "access": spec.access,
               "sensitive": spec.sensitive}
        if ctx.args.sources:
            source = client.explain(key).source
            row["source"], row["source_text"] = _source_json(source), str(source)
        rows.append(row)

    def text() -> str:
        width = max((len(r["key"]) for r in rows), default=0)
        lines = []
        for r in rows:
            flags = r["access"] + (", sensitive" if r["sensitive"] else "")
            line = f"{r['key']:<{width}} = {format_value(r['value']):<12} [{flags}]"
            if ctx.args.sources:
                line += f"  <- {r['source_text']}"
            lines.append(line)
        return "\n".join(lines)

    for r in rows:
        r.pop("source_text", None) if ctx.json else None
    ctx.emit(rows, text)


def cmd_explain(ctx: Context) -> None:
    client = ctx.client()
    ex = client.explain(ctx.args.key)
    spec = client.spec(ctx.args.key)
    data: dict[str, Any] = {
        "key": ex.key, "value": ex.value, "locked": ex.locked, "source": _source_json(ex.source),
        "chain": [{"layer": lv.layer, "value": lv.value, "source": _source_json(lv.source)}
                  for lv in ex.chain],
        "type": spec.type_name, "access": spec.access, "sensitive": spec.sensitive,
        "description": spec.description,
    }

    def text() -> str:
        rule = []
        if spec.min is not None or spec.max is not None:
            rule.append(f"{spec.min if spec.min is not None else ''}..{spec.max if spec.max is not None else ''}")
        if spec.choices:
            rule.append("one of " + ", ".join(map(str, spec.choices)))
        return explain_text(ex, [("type", f"{spec.type_name}{' ' + '; '.join(rule) if rule else ''}"),
                                 ("access", f"{spec.access}{', sensitive' if spec.sensitive else ''}"),
                                 ("about", spec.description)])

    ctx.emit(data, text)


def cmd_validate(ctx: Context) -> int:
    from ..catalog import Catalog
    from ..client import _packaged_catalog
    from ..errors import ValidationError, cap_lines
    from ..layers import defaults_layer, file_layer
    from ..resolve import resolve

    if ctx.args.files:
        catalog: Catalog = _packaged_catalog()
        layers = [defaults_layer(catalog)]
        for f in ctx.args.files:
            if not os.path.exists(f):
                raise FileNotFoundError(f"{f}: no such file")
            layers.append(file_layer("file", os.path.abspath(f)))
        view, problems = resolve(catalog, layers)
        warnings = list(view.warnings)
    else:
        try:
            warnings = list(ctx.client().warnings)
            problems = []
        except ValidationError as e:
            problems, warnings = e.problems, []
    ctx.emit({"ok": not problems,
              "problems": [{"key": p.key, "value": p.value, "rule": p.rule, "message": p.message,
                            "path": p.source.path if p.source else None,
                            "line": p.source.line if p.source else None} for p in problems],
              "warnings": [w.message for w in warnings]},
             "\n".join([*cap_lines([f"error: {p}" for p in problems],
                                  more="problems (--json lists every one)"),
                        *cap_lines([f"warning: {w}" for w in warnings],
                                   more="warnings (--json lists every one)"),
                        "ok" if not problems else f"{len(problems)} problem(s)"]))
    return 1 if problems else 0


def cmd_history(ctx: Context) -> None:
    entries = ctx.client().history(ctx.args.key, limit=ctx.args.limit)
    ctx.emit([_entry_json(e) for e in entries],
             lambda: "\n".join(_entry_text(e) for e in entries) or "(no history)")


def cmd_rollback(ctx: Context) -> None:
    client = ctx.client()
    entry = client.rollback(ctx.args.key, scope=ctx.args.scope, to=ctx.args.to)
    value = client.get(ctx.args.key)
    ctx.emit(_entry_json(entry) if entry else None,
             f"{ctx.args.key} rolled back to #{ctx.args.to}; resolved value now {format_value(value)}")


def exported(client: Any) -> dict[str, Any]:
    """The resolved view with sensitive values masked."""
    return {k: (MASK if client.spec(k).sensitive else v) for k, v in sorted(client.snapshot().items())}


def cmd_export(ctx: Context) -> None:
    flat = exported(ctx.client())
    if ctx.args.format == "json" or ctx.json:
        ctx.emit(flat, lambda: __import__("json").dumps(flat, indent=2))
        return
    import tomli_w

    from ..tomlfile import unflatten

    sys.stdout.write(tomli_w.dumps(unflatten(flat)))


def cmd_import(ctx: Context) -> None:
    from ..errors import ConfigFileError
    from ..tomlfile import read_toml

    doc = read_toml(ctx.args.file)
    if doc is None:
        raise FileNotFoundError(f"{ctx.args.file}: no such file")
    values = {k: v for k, (v, _line) in doc.values.items() if v != MASK}
    if not values:
        raise ConfigFileError(ctx.args.file, None, None, "holds no preference keys")
    entries = ctx.client().set_many(values, ctx.args.scope,
                                    ctx.args.reason or f"import {ctx.args.file}")
    ctx.emit([_entry_json(e) for e in entries],
             f"imported {len(entries)} value(s) from {ctx.args.file} into {ctx.args.scope} scope")


def cmd_templates_list(ctx: Context) -> None:
    names = ctx.client().templates.list()
    ctx.emit(names, "\n".join(names))


def cmd_templates_show(ctx: Context) -> None:
    values = ctx.client().templates.show(ctx.args.name)
    ctx.emit(values, lambda: "\n".join(f"{k} = {format_value(v)}" for k, v in sorted(values.items())))


def cmd_templates_apply(ctx: Context) -> None:
    entries = ctx.client().templates.apply(ctx.args.name, scope=ctx.args.scope)
    ctx.emit([_entry_json(e) for e in entries],
             f"applied template {ctx.args.name}: {len(entries)} value(s) stored")


def cmd_doctor(ctx: Context) -> int:
    import sqlite3
    from importlib import metadata

    from .. import __version__
    from ..errors import StoreError
    from ..locations import locate

    try:
        client = ctx.client()
    except StoreError as e:  # a store too damaged to open still gets its integrity report
        return _doctor_unopenable(ctx, locate(ctx.args.store).store, e)
    loc = client.locations
    store = client.store
    integrity, problems = "n/a", list[str]()
    report = store.integrity()  # [] where the backend has nothing to check
    if report:
        integrity = "ok" if report == ["ok"] else "FAILED"
        problems = [] if report == ["ok"] else report
    health = store.health()  # backend, latency, notifications
    versions = {"mlprefs-sdk": __version__, "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version}
    for dist in ("attrs", "cattrs", "watchfiles", "platformdirs", "tomli-w", "pluggy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    locked = client.view.locked
    unpinned = sorted(k for k in client.snapshot()
                      if client.spec(k).access != "user" and k not in locked)
    from .._statpoll import remote_filesystem
    from ..watch import choose_backend

    backend = choose_backend()
    dirs = sorted({os.path.dirname(p) for p in client.watched_paths()})
    remote = remote_filesystem([d for d in dirs if os.path.isdir(d)])
    if backend == "native" and remote is not None:
        backend = f"poll (stat loop: {remote[0]} is on {remote[1]})"
    data: dict[str, Any] = {
        "paths": {"store": health.get("location", loc.store), "user_file": loc.user_file,
                  "policy": loc.policy,
                  "project_file": client.project_file[0] if client.project_file else None,
                  "files": list(client.sources.files)},
        "exists": {"policy": os.path.exists(loc.policy), "user_file": os.path.exists(loc.user_file)},
        "project": client.project, "user": client.user, "template": client.template,
        "versions": versions,
        "store": {"backend": type(store).__name__, "integrity": integrity,
                  "integrity_problems": problems,
                  "schema_version": store.schema_version, **health},
        "watcher_backend": backend,
        "admin_keys_not_locked": unpinned,
        "warnings": [w.message for w in client.warnings],
    }

    def text() -> str:
        lines = ["paths:"]
        for name, path in data["paths"].items():
            lines.append(f"  {name:<13} {path}")
        lines.append(f"project: {client.project}   user: {client.user}   template: {client.template}")
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        lines.append(f"store: {data['store']['backend']}, schema {data['store']['schema_version']}, "
                     f"integrity {integrity}")
        lines += _damage_report(loc.store, problems) if problems else []
        if health:
            note = health["notifications"]
            lines.append(f"store latency {health['latency_ms']} ms; changes from other clients: "
                         f"{note['mechanism']}, {note['state']}")
        lines.append(f"watcher backend: {backend}")
        lines.append(f"admin keys no policy lock pins ({len(unpinned)}): " + ", ".join(unpinned))
        lines += [f"warning: {w}" for w in data["warnings"]]
        return "\n".join(lines)

    ctx.emit(data, text)
    return 0 if integrity in ("ok", "n/a") and health.get("healthy", True) else 2


def _damage_report(path: str, problems: list[str]) -> list[str]:
    """The integrity problems SQLite found, and what to do about them."""
    advice = (f"what to do: restore {path} from a backup, or save what can still be read "
              f"(sqlite3 {path} .recover > prefs.sql) and move the file aside; mlprefs then "
              f"starts a new, empty store there")
    return [*(f"  {p}" for p in problems), advice]


def _doctor_unopenable(ctx: Context, path: str, err: Exception) -> int:
    """doctor when the store cannot be opened: why, its integrity report if it is a file."""
    from ..store import integrity_check

    local = path != ":memory:" and "://" not in path and os.path.isfile(path)
    report = integrity_check(path) if local else []
    damaged = bool(report) and report != ["ok"]
    data = {"paths": {"store": path}, "store": {"opened": False, "error": str(err),
                                                "integrity": "FAILED" if damaged else "n/a",
                                                "integrity_problems": report if damaged else []}}
    lines = [f"store: {path} cannot be opened: {err}"]
    if damaged:
        lines += [f"store integrity FAILED ({len(report)} problem(s) shown):",
                  *_damage_report(path, report)]
    ctx.emit(data, "\n".join(lines))
    return 2
