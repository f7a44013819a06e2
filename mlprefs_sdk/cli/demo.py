"""`mlprefs demo`: the example training run with live preferences (SPEC section 6)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Context, SubParsers

__all__ = ["EXAMPLES", "register"]

EXAMPLES = {"demo": "mlprefs demo --epochs 30 --manual"}


def register(sub: SubParsers) -> None:
    p = sub.add_parser("demo", help="train a small model while its preferences change live")
    p.add_argument("--epochs", type=int, default=60, help="at most this many epochs (default 60)")
    p.add_argument("--out", default="mlprefs-demo",
                   help="folder for mlprefs.toml, the run's store and learning_curve.png "
                        "(default ./mlprefs-demo)")
    p.add_argument("--manual", action="store_true",
                   help="make no edits: wait for yours to the printed mlprefs.toml")
    p.add_argument("--pace", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)


def cmd_demo(ctx: Context) -> None:
    import io

    from ..errors import MlprefsError

    try:
        from ..demo import run_demo
    except ImportError as e:  # numpy missing: say which extra installs it
        raise MlprefsError(str(e)) from e

    if ctx.args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, not {ctx.args.epochs}")
    stream = io.StringIO() if ctx.json else ctx.out
    result = run_demo(ctx.args.out, epochs=ctx.args.epochs, manual=ctx.args.manual,
                      stream=stream, pace=ctx.args.pace)
    ctx.emit({"run_id": result.run_id, "epochs": result.epochs, "stop_reason": result.stop_reason,
              "config": result.config, "store": result.store, "plot": result.plot}, "")
