"""`mlprefs monitor ...`: run the alert checks, list stored alerts, show a model's window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    p = sub.add_parser("monitor", help="monitoring alerts (accuracy, latency, drift, resources)")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = msub.add_parser("check", help="check every condition now; print the alerts it raised")
    a.add_argument("--window", type=int, default=100, help="samples per model version")
    a.set_defaults(func=cmd_check)
    a = msub.add_parser("alerts", help="stored alerts, newest first")
    a.add_argument("--active", action="store_true", help="only alerts whose condition persists")
    a.add_argument("--limit", type=int, default=100)
    a.set_defaults(func=cmd_alerts)
    a = msub.add_parser("stats", help="accuracy and p95 latency over a model version's window")
    a.add_argument("model")
    a.add_argument("version")
    a.add_argument("--window", type=int, default=100)
    a.set_defaults(func=cmd_stats)


def _emit_alerts(ctx: Context, alerts: list[Any], empty: str) -> None:
    ctx.emit([attrs.asdict(a) for a in alerts],
             lambda: "\n".join(f"{a.kind:<9} {a}" for a in alerts) or empty)


def cmd_check(ctx: Context) -> None:
    _emit_alerts(ctx, ctx.client().monitor.check(window=ctx.args.window), "no new alerts")


def cmd_alerts(ctx: Context) -> None:
    alerts = ctx.client().monitor.alerts(active=True if ctx.args.active else None,
                                         limit=ctx.args.limit)
    _emit_alerts(ctx, alerts, "(no alerts)")


def cmd_stats(ctx: Context) -> None:
    s = ctx.client().monitor.stats(ctx.args.model, ctx.args.version, window=ctx.args.window)

    def text() -> str:
        acc = "-" if s.accuracy is None else f"{s.accuracy:.4f}"
        p95 = "-" if s.latency_p95 is None else f"{s.latency_p95:.1f} ms"
        return (f"{s.model} {s.version}: accuracy {acc} over {s.accuracy_samples} sample(s); "
                f"p95 latency {p95} over {s.latency_samples} sample(s)")

    ctx.emit(attrs.asdict(s), text)
