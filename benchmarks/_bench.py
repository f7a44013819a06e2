"""Helpers shared by the service benchmarks: timing, a private client, the results table."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["best_of", "fresh_client", "isolate", "print_table"]


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Fastest of `repeat` runs, in seconds: the least disturbed by the shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def isolate() -> None:
    """No user store or site policy leaks into a benchmark."""
    os.environ.pop("MLPREFS_STORE", None)
    os.environ["MLPREFS_POLICY"] = os.path.join(tempfile.gettempdir(), "mlprefs-bench-no-policy")


def fresh_client(root: str, name: str, overrides: Mapping[str, Any]) -> Any:
    """A Client with its own home under root, no discovered files, no env layer."""
    from mlprefs_sdk import Client

    home = os.path.join(root, name)
    os.makedirs(home, exist_ok=True)
    os.environ["MLPREFS_HOME"] = home
    return Client(overrides=dict(overrides), discover=False, env=False)


def print_table(results: Sequence[tuple]) -> int:
    """Rows are (measure, result, floor, baseline, ratio, ok); returns the exit code."""
    header = ("measure", "result", "floor", "baseline (same run)", "ratio", "ok")
    widths = [max(len(str(r[i])) for r in [header, *results]) for i in range(5)]
    print()
    for r in [header, *results]:
        ok = r[5] if isinstance(r[5], str) else ("yes" if r[5] else "NO")
        print("  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths)) + "  " + ok)
    return 0 if all(r[5] for r in results) else 1
