"""Buffered records through signals, exit and SIGKILL; feedback racing an erasure.

    python benchmarks/services_reliability.py [RUNS]

Runs the same children the tests run (tests/test_signals.py, tests/test_erase_race.py), RUNS
times each (default 10), and prints: calls that returned, rows stored, rows lost. SIGKILL is
the baseline: it cannot be caught, so what it loses is the buffer's window, measured here in
rows and in seconds of recording (rows lost / calls per second).
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_erase_race as race  # noqa: E402
import test_signals as sig  # noqa: E402
from _bench import isolate  # noqa: E402


def fresh_home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir()
    os.environ["MLPREFS_HOME"] = str(home)
    return home


def signals(root: Path, runs: int) -> None:
    cases = [("SIGTERM", dict(signum=signal.SIGTERM)), ("SIGINT", dict(signum=signal.SIGINT)),
             ("exit", dict(limit=3000)), ("SIGTERM, user's handler", dict(
                 signum=signal.SIGTERM, handler="before"))]
    print(f"{'service':<12} {'how it ended':<30} {'runs':>4} {'returned':>9} {'stored':>9} "
          f"{'lost':>6}")
    for service in sig.SERVICES:
        for label, kwargs in cases:
            returned = stored = 0
            for i in range(runs):
                home = fresh_home(root, f"{service}-{len(label)}-{label[:5]}-{i}")
                _, n, _ = sig.run_child(home, service, **kwargs)
                returned, stored = returned + n, stored + min(n, sig.stored_rows(home, service))
            print(f"{service:<12} {label:<30} {runs:>4} {returned:>9} {stored:>9} "
                  f"{returned - stored:>6}")
        worst_rows, worst_s, total, lost = 0, 0.0, 0, 0
        for i in range(runs):  # the baseline: SIGKILL after 1 to 6 s of recording
            home = fresh_home(root, f"{service}-kill-{i}")
            n, rows, seconds = sigkill(home, service, 1.0 + 5.0 * i / max(runs - 1, 1))
            total, lost = total + n, lost + max(0, n - rows)
            if n - rows > worst_rows:
                worst_rows, worst_s = n - rows, (n - rows) * seconds / max(n, 1)
        print(f"{service:<12} {'SIGKILL after 1-6 s (baseline)':<30} {runs:>4} {total:>9} "
              f"{total - lost:>9} {lost:>6}   worst run lost {worst_rows} rows = the last "
              f"{worst_s:.2f} s of recording")


def sigkill(home: Path, service: str, after_s: float) -> tuple[int, int, float]:
    """(calls returned, rows stored, seconds recorded) for a child killed -9 after after_s."""
    counter = home / "returned.bin"
    counter.write_bytes(b"\0" * 8)
    proc = subprocess.Popen([sys.executable, "-c", sig.CHILD, service, "none", str(counter),
                             str(home / "marker"), "0", "0"])
    with open(counter, "rb") as f:
        shared = mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ)
        while struct.unpack("q", shared[:8])[0] == 0:
            time.sleep(0.001)
        start = time.monotonic()
        time.sleep(after_s)
        proc.kill()
        proc.wait()
        seconds = time.monotonic() - start
        n = struct.unpack("q", shared[:8])[0]
    return n, sig.stored_rows(home, service), seconds


def erase_race(root: Path, runs: int) -> None:
    for action in ("erase", "revoke_consent", "opt_out"):
        late = 0
        for i in range(runs):
            home = fresh_home(root, f"race-{action}-{i}")
            tmp = home / "tmp"
            tmp.mkdir()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                after, at_end = race.race(str(home / "prefs.db"), tmp, action)
            late += at_end != after
        print(f"feedback racing {action:<15}: runs with a row stored after it: {late} of {runs} "
              f"({race.RECORDERS} recording processes each)")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    isolate()
    with tempfile.TemporaryDirectory() as root:
        signals(Path(root), runs)
        erase_race(Path(root), runs)


if __name__ == "__main__":
    main()
