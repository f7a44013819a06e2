"""Where each key of a TOML document is written: key path -> 1-based line.

It runs only on text tomllib has accepted, so it tracks just enough of TOML's grammar to
know where keys start: strings (which may hold anything), arrays and inline tables (kept on
an explicit stack, never recursion), comments, and table headers. Every pattern is linear.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import Any

__all__ = ["path_lines", "deepest_line"]

_WS = re.compile(r"[ \t]*")
_SKIP = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")  # blank space, newlines and comments
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"([^"\\\n]*(?:\\.[^"\\\n]*)*)"')
_LITERAL = re.compile(r"'([^'\n]*)'")
_ML_BASIC = re.compile(r'"""(?:[^\\"]++|\\.|"(?!""))*+"{3,5}', re.DOTALL)
_ML_LITERAL = re.compile(r"'''(?:[^']++|'(?!''))*+'{3,5}")
# The common line, `a.b = 1` or `a.b = "text"  # note`, in one match (a big file is mostly these).
_FAST = re.compile(r'([A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)*)[ \t]*=[ \t]*'
                   r'(?:"[^"\\\n]*(?:\\.[^"\\\n]*)*"|[^"\'\[{\n#]+)[ \t]*(?:#[^\n]*)?(?=\n|\Z)')
_SCALAR = re.compile(r"[^\s,\]}#\[{\"']+")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2})|(.))")
_SIMPLE = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}
_ARRAY: Any = object()  # stack marker: inside an array (its elements have no key)


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1) or m.group(2) or m.group(3)
    if code is None:
        return _SIMPLE.get(m.group(4), m.group(4))
    try:
        return chr(int(code, 16))
    except ValueError:
        return m.group()


def _skip(pattern: re.Pattern[str], s: str, i: int) -> int:
    """The index after what pattern (which may match nothing) matches at s[i:]."""
    m = pattern.match(s, i)
    return m.end() if m else i


def _key(s: str, i: int) -> tuple[tuple[str, ...], int] | None:
    """A dotted, maybe quoted key at s[i:]: its unescaped parts and the index after it."""
    parts = []
    while True:
        i = _skip(_WS, s, i)
        c = s[i : i + 1]
        m = (_BASIC if c == '"' else _LITERAL if c == "'" else _BARE).match(s, i)
        if m is None:
            return None
        parts.append(_ESCAPE.sub(_unescape, m.group(1)) if c == '"' else
                     m.group(1) if c == "'" else m.group())
        i = _skip(_WS, s, m.end())
        if s.startswith(".", i):
            i += 1
            continue
        return tuple(parts), i


def path_lines(text: str) -> dict[tuple[str, ...], int]:
    """Every key path (tables, keys, keys of inline tables) to the line it first appears on."""
    s, n = text, len(text)
    newlines = [m.start() for m in re.finditer("\n", s)]
    out: dict[tuple[str, ...], int] = {}

    def record(path: tuple[str, ...], at: int) -> None:
        if path not in out:
            out[path] = bisect.bisect_left(newlines, at) + 1

    i = 0
    table: tuple[str, ...] | None = ()
    while True:
        i = _skip(_SKIP, s, i)
        if i >= n:
            return out
        fast = _FAST.match(s, i) if table is not None else None
        if fast and table is not None:
            record(table + tuple(p.strip(" \t") for p in fast.group(1).split(".")), i)
            i = fast.end()
            continue
        header = s[i] == "["
        if header:
            array = s.startswith("[[", i)
            i += 2 if array else 1
        parsed = _key(s, i)
        if parsed is None or header:
            if parsed is not None:
                record(parsed[0], i)
                table = None if array else parsed[0]  # keys under [[x]] live inside a list
            eol = s.find("\n", i)
            i = n if eol < 0 else eol
            continue
        at = i
        parts, i = parsed
        path = None if table is None else table + parts
        if path is not None:
            record(path, at)
        if not s.startswith("=", i):
            continue
        i = _value(s, i + 1, path, record)
        eol = s.find("\n", i)  # what follows a value on its line: a comment, or a time
        i = n if eol < 0 else eol


def _value(s: str, i: int, path: tuple[str, ...] | None,
           record: Callable[[tuple[str, ...], int], None]) -> int:
    """Skip one value starting at s[i:], recording the keys of inline tables inside it."""
    n = len(s)
    stack: list[Any] = []  # _ARRAY, or the key path of an inline table (None inside arrays)
    expect = "value"
    while i < n:
        i = _skip(_SKIP if stack else _WS, s, i)
        if i >= n:
            break
        c = s[i]
        if expect == "sep":
            if not stack:
                break
            if c == ",":
                i += 1
                expect = "value" if stack[-1] is _ARRAY else "key"
            elif c == "]" and stack[-1] is _ARRAY or c == "}" and stack[-1] is not _ARRAY:
                stack.pop()
                i += 1
            else:
                expect = "value"  # the second half of a date-time with a space
        elif expect == "key":
            if c == "}":
                stack.pop()
                i += 1
                expect = "sep"
                continue
            at = i
            parsed = _key(s, i)
            if parsed is None:
                i += 1
                continue
            parts, i = parsed
            path = None if stack[-1] is None else stack[-1] + parts
            if path is not None:
                record(path, at)
            if s.startswith("=", i):
                i += 1
            expect = "value"
        elif c == "[":
            stack.append(_ARRAY)
            i += 1
        elif c == "]" and stack and stack[-1] is _ARRAY:  # an empty array, or a trailing comma
            stack.pop()
            i += 1
            expect = "sep"
        elif c == "{":
            stack.append(None if stack and stack[-1] is _ARRAY else path)
            i += 1
            expect = "key"
        else:
            if c in "\"'":
                m = (_ML_BASIC if s.startswith('"""', i) else _ML_LITERAL if s.startswith("'''", i)
                     else _BASIC if c == '"' else _LITERAL).match(s, i)
            else:
                m = _SCALAR.match(s, i)
            i = m.end() if m else i + 1
            expect = "sep"
    return i


def deepest_line(text: str) -> int | None:
    """The line where brackets and braces nest deepest (for a file too deep to parse)."""
    depth = deepest = 0
    line, where = 1, None
    for m in re.finditer(r"[\[{\]}\n]", text):
        c = m.group()
        if c == "\n":
            line += 1
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, line
        else:
            depth -= 1
    return where
