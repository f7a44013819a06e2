"""Reading TOML override files into flat dotted keys, each with the line it was written on.

tomllib gives values but no positions, so a small scanner maps each dotted key to its line.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from typing import Any, Iterator, Mapping

import attrs

from .errors import ConfigFileError
from .values import Problem, Source, show_path

__all__ = ["TomlDoc", "read_toml", "parse_toml", "key_lines", "flatten", "unflatten"]

_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


@attrs.frozen
class TomlDoc:
    """A parsed file: flat keys with their lines, plus metadata tables kept apart."""

    path: str
    values: Mapping[str, tuple[Any, int | None]]
    meta: Mapping[str, Any]


def read_toml(path: str, section: str | None = None, meta_table: str = "project") -> TomlDoc | None:
    """None when the file does not exist; ConfigFileError when it cannot be read or parsed."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _file_error(path, None, None, f"cannot read file: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _file_error(path, None, None, f"not a regular file but a {_kind(mode)}; "
                                            "replace it with a TOML file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read()
        except OSError as e:
            raise _file_error(path, None, None, f"cannot read file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _file_error(path, None, None, f"not UTF-8 text ({e.reason})") from None
    return parse_toml(text, path, section, meta_table)


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
    lines = key_lines(text)
    prefix = ""
    if section is not None:
        for part in section.split("."):
            data = data.get(part, {}) if isinstance(data, dict) else {}
        prefix = section + "."
    meta = data.get(meta_table, {}) if meta_table and isinstance(data.get(meta_table), dict) else {}
    values = {}
    for key, value in flatten(data):
        if meta_table and key.startswith(meta_table + "."):
            continue
        values[key] = (value, lines.get(prefix + key))
    return TomlDoc(path, values, meta)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _file_error(path: str, line: int | None, col: int | None, reason: str) -> ConfigFileError:
    source = Source("file", path, line, f"column {col}" if col else None)
    where = show_path(path) + (f":{line}" if line else "") + (f":{col}" if col else "")
    problem = Problem(key="", value=None, message=f"{where}: cannot parse TOML: {reason}",
                      source=source, rule="toml")
    return ConfigFileError(path, line, col, reason, [problem])


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            yield from flatten(value, key)
        else:
            yield key, value


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


def _split_key(s: str) -> tuple[list[str], str] | None:
    """Parse a (dotted, maybe quoted) TOML key at the start of s; return parts and the rest."""
    parts, i, n = [], 0, len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] in "\"'":
            q = s[i]
            j = s.find(q, i + 1)
            if j < 0:
                return None
            parts.append(s[i + 1 : j])
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, s[i:]


def key_lines(text: str) -> dict[str, int]:
    """Map every dotted key (tables joined with their keys) to its 1-based line number."""
    out: dict[str, int] = {}
    table: list[str] = []
    depth = 0  # open brackets of a multi-line array
    in_string: str | None = None
    for no, line in enumerate(text.splitlines(), 1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        stripped = line.strip()
        if depth:
            depth += stripped.count("[") - stripped.count("]")
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            table = []  # arrays of tables hold no preference keys
            continue
        if stripped.startswith("["):
            parsed = _split_key(stripped[1:])
            if parsed:
                table = parsed[0]
                out.setdefault(".".join(table), no)
            continue
        parsed = _split_key(stripped)
        if not parsed or not parsed[1].lstrip().startswith("="):
            continue
        full = ".".join(table + parsed[0])
        out[full] = no
        value = parsed[1].lstrip()[1:].strip()
        for q in ('"""', "'''"):
            if value.startswith(q) and value.count(q) == 1:
                in_string = q
        if value.startswith("["):
            depth = value.count("[") - value.count("]")
        elif value.startswith("{"):
            inner = _inline_keys(value)
            for k in inner:
                out.setdefault(full + "." + k, no)
    return out


def _inline_keys(value: str) -> list[str]:
    """Dotted keys inside a one-line inline table, best effort (for line numbers only)."""
    try:
        data = tomllib.loads("x = " + value)["x"]
    except tomllib.TOMLDecodeError:
        return []
    return [k for k, _ in flatten(data)] if isinstance(data, dict) else []
