"""Every ```python block of README.md and docs/**/*.md runs, page by page, as a reader would.

The conventions (each an HTML comment on the line right before a fence):

- ``<!-- requires: torch, optuna -->``: run the block only when these modules import;
- ``<!-- no-run: reason -->``: never run the block (kept few: a GPU, a server...);
- ``<!-- file: mlprefs.toml -->``: write the block's content to that file, relative to the
  page's working directory, before the blocks after it run (whatever its language).

A page's blocks run in order in one namespace, with a fresh MLPREFS_HOME and MLPREFS_POLICY,
and an empty project directory as the working directory. A failure's traceback names the page
and the line of the page (the code is compiled under the page's path, at its own lines).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)")
DIRECTIVE = re.compile(r"^\s*<!--\s*(requires|no-run|file)\s*:\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    requires: tuple[str, ...] = ()
    no_run: str | None = None
    file: str | None = None


def pages() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [p for p in found if p.exists()]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a page with the directive (if any) on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(REPO).as_posix()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = "\n".join(ln[indent:] for ln in lines[i + 1 : end]) + "\n"
        kind = DIRECTIVE.match(lines[i - 1]) if i > 0 else None
        extra: dict = {}
        if kind:
            name, value = kind.groups()
            if name == "requires":
                extra["requires"] = tuple(v.strip() for v in value.split(",") if v.strip())
            elif name == "no-run":
                extra["no_run"] = value or "no reason given"
            else:
                extra["file"] = value
        found.append(Block(page, i + 2, lang.lower(), code, **extra))
        i = end + 1
    return found


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _close_clients(namespace: dict) -> None:
    """Close what the page left open (its watchers, its stores): pages may end mid-story."""
    from mlprefs_sdk import Client

    for value in list(namespace.values()):
        if isinstance(value, Client):
            value.close()


def _logging_state() -> list[tuple[logging.Logger, int, list[logging.Handler], bool]]:
    loggers = [logging.getLogger(), logging.getLogger("mlprefs_sdk")]
    return [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]


def _restore_logging(state: list[tuple[logging.Logger, int, list[logging.Handler], bool]]) -> None:
    for logger, level, handlers, propagate in state:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


PAGES = pages()


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_every_python_block_of_the_page_runs(page: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MLPREFS"):
            monkeypatch.delenv(name)
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("MLPREFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLPREFS_POLICY", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))  # as for a script run there: its modules import
    saved_env = dict(os.environ)  # a block may set variables (as the docs show): undone after
    saved_logging = _logging_state()  # ... or configure logging: undone after, too
    monkeypatch.setattr(sys, "argv", [page.name])

    module = types.ModuleType("doc_page")  # a real module: dataclasses and pickling look it up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    ran, skipped = 0, []
    try:
        for block in blocks(page):
            if block.no_run is not None:
                continue
            if block.file is not None:
                target = project / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code, encoding="utf-8")
                continue
            if block.lang not in ("python", "py"):
                continue
            missing = [m for m in block.requires if not importable(m)]
            if missing:
                skipped.append(f"{block.page}:{block.line} needs {', '.join(missing)}")
                continue
            code = "\n" * (block.line - 1) + block.code  # tracebacks show the page's own lines
            try:
                with warnings.catch_warnings():
                    # A reader's script sees the frameworks' own deprecation chatter as
                    # warnings, not errors; mlprefs' own warnings stay errors here.
                    warnings.simplefilter("default")
                    warnings.filterwarnings("error", module=r"mlprefs_sdk(\.|$)")
                    exec(compile(code, block.page, "exec"), namespace)
            except Exception as e:
                e.add_note(f"in the ```python block at {block.page}:{block.line}")
                raise
            ran += 1
    finally:
        _close_clients(namespace)
        os.environ.clear()
        os.environ.update(saved_env)
        _restore_logging(saved_logging)
    if skipped and not ran:
        pytest.skip("; ".join(skipped))


def test_the_block_parser_reads_directives_files_and_line_numbers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n<!-- file: mlprefs.toml -->\n```toml\n[ml]\n```\n\n"
        "<!-- requires: torch, numpy -->\n```python\nimport torch\n```\n"
        "<!-- no-run: needs a GPU -->\n```python\ncuda()\n```\n```console\n$ x\n```\n")
    global REPO
    old, REPO = REPO, tmp_path
    try:
        found = blocks(page)
    finally:
        REPO = old
    assert [(b.lang, b.line, b.file, b.requires, b.no_run) for b in found] == [
        ("toml", 5, "mlprefs.toml", (), None),
        ("python", 10, None, ("torch", "numpy"), None),
        ("python", 14, None, (), "needs a GPU"),
        ("console", 17, None, (), None),
    ]
    assert found[0].code == "[ml]\n"
