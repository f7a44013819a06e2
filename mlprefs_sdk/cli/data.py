"""`mlprefs data ...`: consent, a subject's status, erasure, export, retention, policy, audit.

Each verb is one prefs.data call. Subject ids given here are pseudonymised before they reach
the store; note that a shell may keep them in its history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    p = sub.add_parser("data", help="consent, erasure, export, retention and the privacy audit log")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, text in (
        ("consent", cmd_consent, "record that a subject consents"),
        ("revoke", cmd_revoke, "withdraw a subject's consent"),
        ("opt-out", cmd_opt_out, "record that a subject objects to any use of their data"),
        ("status", cmd_status, "a subject's recorded consent and whether training may use it"),
        ("erase", cmd_erase, "delete every row of a subject in every table"),
    ):
        a = dsub.add_parser(name, help=text)
        a.add_argument("subject")
        a.set_defaults(func=func)
    a = dsub.add_parser("export", help="every row held for a subject, as JSON")
    a.add_argument("subject")
    a.add_argument("--out", help="write to this file (default: standard output)")
    a.set_defaults(func=cmd_export)
    a = dsub.add_parser("cleanup", help="delete records older than ml.data.retention_days")
    a.set_defaults(func=cmd_cleanup)
    dsub.add_parser("policy", help="the effective data policy").set_defaults(func=cmd_policy)
    a = dsub.add_parser("audit", help="the privacy audit log, newest first")
    a.add_argument("--subject", help="only entries about this subject")
    a.add_argument("--action", help="only this action (consent, erase, export, cleanup, sharing)")
    a.add_argument("--limit", type=int, default=100)
    a.set_defaults(func=cmd_audit)


def _when(at: float | None) -> str:
    return "-" if at is None else dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _emit_status(ctx: Context, status: Any, verb: str) -> None:
    data = attrs.asdict(status)

    def text() -> str:
        if not status.known:
            state = "no consent recorded"
        elif status.opted_out:
            state = "opted out"
        else:
            state = "consented" if status.consented else "consent withdrawn"
        return (f"{verb}subject {status.pseudonym[:16]}... (pseudonym): {state}, since "
                f"{_when(status.updated_at)}; may train on: {'yes' if status.may_train else 'no'}")

    ctx.emit(data, text)


def cmd_consent(ctx: Context) -> None:
    _emit_status(ctx, ctx.client().data.grant_consent(ctx.args.subject), "recorded: ")


def cmd_revoke(ctx: Context) -> None:
    _emit_status(ctx, ctx.client().data.revoke_consent(ctx.args.subject), "recorded: ")


def cmd_opt_out(ctx: Context) -> None:
    _emit_status(ctx, ctx.client().data.opt_out(ctx.args.subject), "recorded: ")


def cmd_status(ctx: Context) -> None:
    _emit_status(ctx, ctx.client().data.status(ctx.args.subject), "")


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in counts.items()) or "nothing"


@contextlib.contextmanager
def _unknown_subject_as_note() -> Iterator[None]:
    """An UnknownSubjectWarning becomes one line on stderr (not a Python warning with a
    source path): finding nothing to erase or export is an answer, not an error."""
    from ..services.privacy import UnknownSubjectWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownSubjectWarning)
        yield
    for w in caught:
        if issubclass(w.category, UnknownSubjectWarning):
            print(f"mlprefs: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def cmd_erase(ctx: Context) -> None:
    with _unknown_subject_as_note():
        counts = ctx.client().data.erase(ctx.args.subject)
    ctx.emit(counts, f"erased {sum(counts.values())} row(s): {_counts_text(counts)}")


def open_private(path: str) -> Any:
    """A text file at `path` for subject data, readable by its owner only (0600 whatever the
    umask, also when it existed with a looser mode); opened before the export runs, so a bad
    --out fails before anything is read or audited."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise ValueError(f"--out {path}: cannot write it ({e.strerror or e})") from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def cmd_export(ctx: Context) -> None:
    if not ctx.args.out:
        with _unknown_subject_as_note():
            rows = ctx.client().data.export(ctx.args.subject)
        ctx.emit(rows, lambda: json.dumps(rows, indent=2))
        return
    with open_private(ctx.args.out) as f:
        with _unknown_subject_as_note():
            rows = ctx.client().data.export(ctx.args.subject)
        json.dump(rows, f, indent=2)
    ctx.emit({"path": ctx.args.out, "rows": {t: len(r) for t, r in rows.items()}},
             f"wrote {sum(len(r) for r in rows.values())} row(s) to {ctx.args.out}")


def cmd_cleanup(ctx: Context) -> None:
    data = ctx.client().data
    counts = data.cleanup()
    ctx.emit(counts, f"deleted {sum(counts.values())} row(s) older than "
                     f"{data.policy.retention_days} days: {_counts_text(counts)}")


def cmd_policy(ctx: Context) -> None:
    policy = ctx.client().data.policy
    data = {**attrs.asdict(policy), "implied": list(policy.implied)}

    def text() -> str:
        lines = [f"{f.name:<22} {getattr(policy, f.name)}" for f in attrs.fields(type(policy))
                 if f.name != "implied"]
        if policy.implied:
            lines.append(f"forced by privacy_mode {policy.privacy_mode!r}: "
                         + ", ".join(policy.implied))
        return "\n".join(lines)

    ctx.emit(data, text)


def cmd_audit(ctx: Context) -> None:
    entries = ctx.client().data.audit(limit=ctx.args.limit, subject=ctx.args.subject,
                                      action=ctx.args.action)

    def text() -> str:
        lines = []
        for e in entries:
            who = f"{e.pseudonym[:16]}..." if e.pseudonym else "-"
            detail = json.dumps(dict(e.detail), sort_keys=True) if e.detail else ""
            lines.append(f"#{e.id:<5} {_when(e.at)}  {e.action:<16} by {e.actor:<12} "
                         f"subject {who}  {detail}")
        return "\n".join(lines) or "(no audit entries)"

    ctx.emit([attrs.asdict(e) for e in entries], text)
