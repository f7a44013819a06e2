"""The `mlprefs` command: each verb is a thin wrapper over one Client call.

Verbs live in the modules of this package; every module with a `register(subparsers)`
function is picked up. This module alone turns errors into exit codes:
0 ok, 1 validation or usage problem, 2 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import sys
from typing import Any, Callable, Sequence

from ..errors import MlprefsError, StoreError

__all__ = ["main", "Context"]

log = logging.getLogger("mlprefs_sdk.cli")


class Context:
    """What a verb gets: parsed args, a lazily built Client, and one way to print."""

    def __init__(self, args: argparse.Namespace, out: Any = None) -> None:
        self.args = args
        self.json = args.json
        self.out = out or sys.stdout
        self._client: Any = None

    def client(self, **kwargs: Any) -> Any:
        if self._client is None:
            from ..client import Client

            self._client = Client(project=self.args.project, store=self.args.store,
                                  user=self.args.user, **kwargs)
        return self._client

    def emit(self, data: Any, text: str | Callable[[], str] | None = None) -> None:
        """Print JSON (--json) or the text form; `text` may be a callable to defer work."""
        if self.json:
            print(json.dumps(data, indent=None, default=_json_default), file=self.out)
        else:
            if callable(text):
                text = text()
            if text is None:
                text = data if isinstance(data, str) else json.dumps(data, default=_json_default)
            if text:
                print(text, file=self.out)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _json_default(obj: Any) -> Any:
    import attrs

    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=True)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlprefs", description="Live, layered ML preferences: read, explain, change, watch.")
    parser.add_argument("--store", help="store file (or postgresql:// URL); default "
                        "$MLPREFS_STORE, else prefs.db under $MLPREFS_HOME / the user data dir")
    parser.add_argument("--project", help="project id (default $MLPREFS_PROJECT or mlprefs.toml)")
    parser.add_argument("--user", help="user id recorded in history (default: OS login)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in _verb_modules():
        module.register(sub)
    return parser


def _verb_modules() -> list[Any]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: (i.name != "core", i.name)):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help, 2 for bad usage; ours is 1
        return 0 if e.code in (0, None) else 1
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    # Rule warnings (batch size not a power of two, ...) are what `validate` and `doctor`
    # report; every other verb would repeat them on each run. Restored on the way out, since
    # main() may run inside a longer-lived process.
    client_log = logging.getLogger("mlprefs_sdk.client")
    quiet = not args.verbose and client_log.level == logging.NOTSET
    if quiet:
        client_log.setLevel(logging.ERROR)
    ctx = Context(args)
    try:
        code = args.func(ctx)
        return int(code or 0)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `mlprefs list | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except StoreError as e:
        return _fail(ctx, e, 2)
    except (MlprefsError, ValueError, KeyError, TypeError, FileNotFoundError) as e:
        return _fail(ctx, e, 1)
    except Exception as e:  # the CLI boundary: report, don't dump a traceback on users
        log.debug("internal error", exc_info=True)
        return _fail(ctx, e, 2, internal=True)
    finally:
        ctx.close()
        if quiet:
            client_log.setLevel(logging.NOTSET)


def _fail(ctx: Context, err: BaseException, code: int, internal: bool = False) -> int:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if internal:
        message = f"internal error ({type(err).__name__}): {message}"
    if ctx.json:
        problems = [
            {"key": p.key, "value": p.value, "message": p.message, "rule": p.rule,
             "source": str(p.source) if p.source else None}
            for p in getattr(err, "problems", [])
        ]
        print(json.dumps({"error": type(err).__name__, "message": message, "problems": problems},
                         default=str), file=sys.stdout)
    else:
        print(f"mlprefs: {message}", file=sys.stderr)
    return code
