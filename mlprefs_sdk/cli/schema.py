"""`mlprefs schema [--out FILE]`: the JSON Schema of mlprefs.toml, for editors and CI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Context

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {"schema": "mlprefs schema --out mlprefs.schema.json"}


def register(sub: Any) -> None:  # argparse subparsers
    p = sub.add_parser("schema", help="write the JSON Schema (draft 2020-12) of mlprefs.toml")
    p.add_argument("--out", metavar="FILE", help="write it to FILE (default: print it)")
    p.set_defaults(func=cmd_schema)


def cmd_schema(ctx: Context) -> None:
    from ..schema import schema_text

    # No discovery, no env: a broken mlprefs.toml is what the schema helps to fix.
    client = ctx.client(discover=False, env=False)
    client.plugin_manager  # plugins register their keys when they load
    text = schema_text(client.catalog)
    if ctx.args.out is None:
        ctx.out.write(text)
        return
    with open(ctx.args.out, "w", encoding="utf-8") as f:
        f.write(text)
    ctx.emit({"out": ctx.args.out, "keys": len(client.catalog)},
             f"wrote {ctx.args.out}: JSON Schema of mlprefs.toml, {len(client.catalog)} keys")
