"""The `mlprefs` command: each verb is a thin wrapper over one Client call.

Verbs live in the modules of this package; every module with a `register(subparsers)`
function is picked up, and its `EXAMPLES` ({"verb sub-verb": "mlprefs ..."}) end each verb's
help. The global options are accepted before the verb and after it.

This module alone turns errors into exit codes, by class, never one message each:
0 ok; 1 the input is wrong (usage, a value that fails validation, an unknown key or id, a
number out of range, a path that cannot be used: a directory, a missing or unwritable one);
2 the store or the program failed (a damaged store, an internal error). Every error is one
line on stderr (or one JSON object with --json) and never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MlprefsError, StoreError

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["Context", "build_parser", "iter_verbs", "main"]

log = logging.getLogger("mlprefs_sdk.cli")

# A store path that cannot be used (a directory, a missing or read-only parent) is the
# user's input to fix: exit 1. A store that is there but damaged or failing: exit 2.
PATH_ERRNOS = {errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EPERM,
               errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST}
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               FileExistsError)
INT64 = 2**63 - 1  # SQLite and PostgreSQL integers: a larger number is a usage error


class _UsageError(Exception):
    """argparse's complaint, raised instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, handled by main() (exit 1), and which
    keeps a public record of what it holds: `arguments` (every action added to it, help
    included) and `verbs` (its sub-verbs' parsers by name). Sub-verb parsers are _Parsers too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: list[argparse.Action] = []  # before super(): it adds --help
        self.verbs: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.verbs = action.choices  # filled in as the verb modules add their parsers
        return action

    def option(self, flag: str) -> argparse.Action | None:
        """The argument that takes this option string, if any."""
        return next((a for a in self.arguments if flag in a.option_strings), None)

    def error(self, message: str) -> Any:  # argparse calls this for every usage problem
        raise _UsageError(f"{self.prog}: {message} (see: {self.prog} --help)")


# What a verb module's register() gets: argparse names no public type for add_subparsers()'s result.
SubParsers = argparse._SubParsersAction


class Context:
    """What a verb gets: parsed args, a lazily built Client, and one way to print."""

    def __init__(self, args: argparse.Namespace, out: Any = None) -> None:
        self.args = args
        self.json = args.json
        self.out = out or sys.stdout
        self._client: Client | None = None

    def client(self, **kwargs: Any) -> Client:
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


GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--store",), {"metavar": "PATH_OR_URL",
                    "help": "store file (or postgresql:// URL); default $MLPREFS_STORE, else "
                            "prefs.db under $MLPREFS_HOME / the user data dir"}),
    (("--project",), {"help": "project id (default $MLPREFS_PROJECT or mlprefs.toml)"}),
    (("--user",), {"help": "user id recorded in history (default: OS login)"}),
    (("--json",), {"action": "store_true", "help": "print JSON"}),
    (("-v", "--verbose"), {"action": "store_true", "help": "log more"}),
)


def build_parser() -> _Parser:
    """The whole command line: global options (before or after the verb), then every verb."""
    from .. import __version__

    parser = _Parser(
        prog="mlprefs", description="Live, layered ML preferences: read, explain, change, watch.",
        epilog="example:\n  mlprefs get ml.training.learning_rate --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mlprefs {__version__}",
                        help="print the version and exit")
    for flags, kwargs in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **kwargs)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    examples: dict[str, str] = {}
    for module in _verb_modules():
        module.register(sub)
        examples.update(getattr(module, "EXAMPLES", {}))
    from ._conventions import ARGUMENT_HELP, EXAMPLES

    for path, p in iter_verbs(parser):
        name = " ".join(path)
        _accept_global_options(p)
        for action in p.arguments:
            if action.help is None:
                action.help = ARGUMENT_HELP.get(f"{name} {action.dest}")
        example = examples.get(name) or EXAMPLES.get(name)
        if example:
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.epilog = (p.epilog + "\n\n" if p.epilog else "") + "example:\n  " + example
    return parser


def iter_verbs(parser: _Parser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], _Parser]]:
    """Every verb and sub-verb parser below `parser`, with its path ("templates", "show")."""
    for name, p in parser.verbs.items():
        yield (*path, name), p
        yield from iter_verbs(p, (*path, name))


def _accept_global_options(p: _Parser) -> None:
    """The global options after the verb too; SUPPRESS keeps a value given before it."""
    group = None
    for flags, kwargs in GLOBAL_OPTIONS:
        if any(p.option(flag) for flag in flags):
            continue  # the verb has its own (e.g. watch --json)
        if group is None:
            group = p.add_argument_group("global options (also accepted before the verb)")
        p.arguments.append(group.add_argument(*flags, **{**kwargs, "default": argparse.SUPPRESS}))


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
        _check_numbers(parser, args)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 1
    except SystemExit as e:  # argparse: 0 for --help and --version
        return 0 if e.code in (0, None) else 1
    with warnings.catch_warnings():  # the CLI decides how a warning reaches the user
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        return _run(args)


def _check_numbers(parser: _Parser, args: argparse.Namespace) -> None:
    """An integer no store column can hold is a usage error, for every verb's every option."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and not -INT64 - 1 <= v <= INT64:
                raise _UsageError(f"mlprefs: {_option_name(parser, dest)} {v} is out of range "
                                  f"(at most {INT64:,} in size)")


def _option_name(parser: _Parser, dest: str) -> str:
    for p in (parser, *(p for _, p in iter_verbs(parser))):
        for action in p.arguments:
            if action.dest == dest:
                return action.option_strings[-1] if action.option_strings else dest.upper()
    return dest


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning during a verb: one line, no source path (that is for developers)."""
    print(f"mlprefs: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
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
        cause = e.__cause__  # the store module chains the OSError of an unusable path
        return _fail(ctx, e, 1 if isinstance(cause, OSError) and cause.errno in PATH_ERRNOS else 2)
    except (MlprefsError, ValueError, LookupError, TypeError, OverflowError) as e:
        return _fail(ctx, e, 1)
    except OSError as e:
        if not isinstance(e, PATH_ERRORS) and e.filename is None and e.errno not in PATH_ERRNOS:
            log.debug("system error", exc_info=True)
            return _fail(ctx, e, 2)
        return _fail(ctx, e, 1)  # a path the user named cannot be used
    except Exception as e:  # the CLI boundary: report, don't dump a traceback on users
        log.debug("internal error", exc_info=True)
        return _fail(ctx, e, 2, internal=True)
    finally:
        ctx.close()
        if quiet:
            client_log.setLevel(logging.NOTSET)


def _fail(ctx: Context, err: BaseException, code: int, internal: bool = False) -> int:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and not isinstance(err, MlprefsError) and err.strerror:
        where = f"{err.filename}: " if err.filename is not None else ""
        message = f"{where}{err.strerror}"
    lines = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    message = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")  # one line
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
