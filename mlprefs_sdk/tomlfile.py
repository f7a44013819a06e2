"""Reading TOML override files into flat dotted keys, each with the line it was written on.

tomllib gives values but no positions, so a small scanner (_tomllines) maps each key path to
its line.
Reading never blocks and never recurses: a FIFO, a directory or a socket at a followed path
is refused (stat first, open with O_NONBLOCK, fstat the open file), and tables are walked
with an explicit stack, so a key 5,000 segments deep is an ordinary key.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ._tomllines import deepest_line, path_lines
from .errors import ConfigFileError
from .locations import file_kind
from .values import Problem, Source, show_path

__all__ = ["TomlDoc", "read_toml", "read_bytes", "parse_toml", "key_lines", "flatten", "unflatten"]

_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
META_FIELDS = ("name", "template")  # [project] entries that must be strings
MAX_FILE_BYTES = 16 << 20  # a preferences file beyond this is refused, not parsed for seconds
# Tables that configure a feature rather than set keys (`[tune.space]`: the search space).
RESERVED_TABLES = ("tune",)


@attrs.frozen
class TomlDoc:
    """A parsed file: flat keys with their lines, metadata tables kept apart, and the
    problems found in the metadata (a bad [project] entry is left out of `meta`)."""

    path: str
    values: Mapping[str, tuple[Any, int | None]]
    meta: Mapping[str, Any]
    problems: tuple[Problem, ...] = ()
    tables: Mapping[str, Any] = attrs.field(factory=dict)  # RESERVED_TABLES found in the file


def read_toml(path: str, section: str | None = None, meta_table: str = "project") -> TomlDoc | None:
    """None when the file does not exist; ConfigFileError when it cannot be read or parsed."""
    raw = read_bytes(path)
    if raw is None:
        return None
    return parse_toml(decode(raw, path), path, section, meta_table)


def _kind(mode: int) -> str:
    kind = file_kind(mode)
    return f"{kind}, not a TOML file" if stat.S_ISDIR(mode) else f"{kind}, not a regular file"


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "is a symlink loop (too many levels of symbolic links)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "is not readable by this user (permission denied)"
    if e.errno == errno.ENOTDIR:
        return "cannot be reached: a parent of it is not a directory"
    if e.errno == errno.EISDIR:
        return _kind(stat.S_IFDIR)
    return f"cannot read file: {e.strerror or e}"


def read_bytes(path: str) -> bytes | None:
    """The bytes of the regular file at path, or None when nothing is there.

    Never blocks: stat first, open with O_NONBLOCK, and fstat the opened descriptor (the path
    may have been swapped for a FIFO in between). Anything else that sits at the path — a
    directory, FIFO, socket, device, symlink loop, dangling symlink, or a file this user may
    not read — is a ConfigFileError naming the path and what is there.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _file_error(path, None, None, "is a symlink whose target does not exist") from None
        return None
    except OSError as e:
        raise _file_error(path, None, None, _os_reason(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _file_error(path, None, None, _kind(st.st_mode))
    if st.st_size > MAX_FILE_BYTES:
        raise _too_big(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None  # removed between stat and open: as if never there
    except OSError as e:
        raise _file_error(path, None, None, _os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _file_error(path, None, None, _kind(st.st_mode))
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_BYTES:  # it grew after the stat
                raise _too_big(path)
            chunks.append(chunk)
    except OSError as e:
        raise _file_error(path, None, None, _os_reason(e)) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _too_big(path: str) -> ConfigFileError:
    return _file_error(path, None, None, f"is larger than {MAX_FILE_BYTES >> 20} MiB; a preferences "
                                         "file that size is refused")


def decode(raw: bytes, path: str) -> str:
    """UTF-8 text without a leading BOM; a bad byte is a ConfigFileError at its line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        start = raw.rfind(b"\n", 0, e.start) + 1
        column = len(raw[start:e.start].decode("utf-8", "replace")) + 1
        reason = f"not UTF-8 text (byte 0x{raw[e.start]:02x}: {e.reason})"
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            reason = "is UTF-16 text; TOML files are UTF-8: save it as UTF-8"
        raise _file_error(path, line, column, reason) from None
    return text.removeprefix("\ufeff")


def parse_toml(text: str, path: str, section: str | None = None, meta_table: str = "project") -> TomlDoc:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # Python 3.11 puts the position only in the message: "Invalid value (at line 4, column 14)".
        m = _POS.search(str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        if m is None and "end of document" in str(e):
            line = text.count("\n") + 1
        reason = _POS.sub("", str(e)).replace("(at end of document)", "at end of file").strip()
        raise _file_error(path, line, col, reason) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise _file_error(path, deepest_line(text), None,
                          "arrays or inline tables are nested too deeply to read") from None
    lines = path_lines(text)
    prefix: tuple[str, ...] = ()
    problems: list[Problem] = []
    if section is not None:
        for part in section.split("."):
            data = data.get(part, {}) if isinstance(data, dict) else {}
        prefix = tuple(section.split("."))
        if not isinstance(data, dict):
            raise _file_error(path, lines.get(prefix), None, f"{section} must be a table")
    meta: dict[str, Any] = {}
    if meta_table and meta_table in data:
        meta, problems = _meta(data[meta_table], meta_table, path, prefix, lines)
    tables = {name: data[name] for name in RESERVED_TABLES
              if meta_table and isinstance(data.get(name), dict)}
    values: dict[str, tuple[Any, int | None]] = {}
    for keypath, value in _walk(data):
        if meta_table and keypath[0] == meta_table:
            continue
        if keypath[0] in tables:
            continue
        key = ".".join(keypath)
        line = lines.get(prefix + keypath)
        if key in values:  # "ml.training".rate and ml.training.rate name the same key
            first = values[key][1]
            problems.append(Problem.for_value(
                key, value, Source("file", path, line),
                f"is written twice: a quoted key with a dot names the same key as the one "
                f"{f'at line {first}' if first else 'before it'}, which is used", "duplicate-key"))
            continue
        values[key] = (value, line)
    return TomlDoc(path, values, meta, tuple(problems), tables)


def _meta(table: Any, name: str, path: str, prefix: tuple[str, ...],
          lines: Mapping[tuple[str, ...], int]) -> tuple[dict[str, Any], list[Problem]]:
    """The [project] table's entries; name and template must be strings (a list or a table
    would reach the store as a scope id, or the template lookup as a key)."""
    if not isinstance(table, dict):
        source = Source("file", path, lines.get(prefix + (name,)))
        return {}, [Problem.for_value(name, table, source,
                                      f"must be a table ([{name}]), not {_type(table)}", "type")]
    meta, problems = dict(table), []
    for field in META_FIELDS:
        if field in meta and not isinstance(meta[field], str):
            value = meta.pop(field)
            source = Source("file", path, lines.get(prefix + (name, field)))
            problems.append(Problem.for_value(f"{name}.{field}", value, source,
                                              f"has type {_type(value)}, expected str", "type"))
    return meta, problems


def _type(value: Any) -> str:
    return "table" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__


def _file_error(path: str, line: int | None, col: int | None, reason: str) -> ConfigFileError:
    source = Source("file", path, line, f"column {col}" if col else None)
    where = show_path(path) + (f":{line}" if line else "") + (f":{col}" if col else "")
    problem = Problem(key="", value=None, message=f"{where}: cannot parse TOML: {reason}",
                      source=source, rule="toml")
    return ConfigFileError(path, line, col, reason, [problem])


def _walk(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, leaf value) for every leaf, depth first, with an explicit stack."""
    stack = [(prefix, iter(data.items()))]
    while stack:
        path, items = stack[-1]
        for name, value in items:
            if isinstance(value, dict):
                stack.append((path + (name,), iter(value.items())))
                break
            yield path + (name,), value
        else:
            stack.pop()


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested tables as (dotted key, value) pairs; any depth, no recursion."""
    for path, value in _walk(data, tuple(prefix.split(".")) if prefix else ()):
        yield ".".join(path), value


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys back into nested tables (flatten's inverse), as a TOML file writes them."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def key_lines(text: str) -> dict[str, int]:
    """Map every dotted key (tables joined with their keys) to its 1-based line number."""
    return {".".join(path): line for path, line in path_lines(text).items()}
