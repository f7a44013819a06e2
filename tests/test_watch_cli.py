"""`mlprefs watch` prints applied changes and rejected edits until interrupted."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _watch_helpers import TIMEOUT_S, lr_toml, save_atomic, toml  # noqa: F401 (fixture)

LR = "ml.training.learning_rate"


class Watching:
    """`mlprefs ... watch` in a subprocess, its stdout read line by line without blocking."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mlprefs_sdk", *args], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, containing: str) -> str:
        """The next line that holds `containing` (skipping others), within the timeout."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line with {containing!r}; stderr: {self.proc.stderr.read()}")
            if containing in line:
                return line

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def watching(home, project_dir):
    started: list[Watching] = []

    def start(*args: str) -> Watching:
        started.append(Watching(list(args), project_dir))
        return started[-1]

    yield start
    for w in started:
        w.close()


@pytest.mark.parametrize("args", [["--json", "watch"], ["watch", "--json"]])
def test_watch_json_prints_one_object_a_line(watching, toml, args):
    w = watching(*args)
    armed = json.loads(w.next_line('"watching"'))
    assert str(toml) in armed["paths"]
    save_atomic(toml, lr_toml(0.02))
    change = json.loads(w.next_line('"change"'))
    assert (change["key"], change["old"], change["new"]) == (LR, 0.01, 0.02)
    assert (change["source"]["path"], change["source"]["line"]) == (str(toml), 2)
    save_atomic(toml, lr_toml(5.0))
    rejected = json.loads(w.next_line('"rejected"'))
    assert (rejected["path"], rejected["line"], rejected["key"], rejected["value"],
            rejected["rule"]) == (str(toml), 2, LR, 5.0, "max")
    assert w.interrupt() == 0


def test_watch_prints_time_key_old_new_and_source(watching, toml):
    w = watching("watch")
    w.next_line("watching")
    save_atomic(toml, lr_toml(0.02))
    line = w.next_line(LR)
    assert "0.01 → 0.02" in line and "./mlprefs.toml:2" in line
    assert line[:12].count(":") == 2  # HH:MM:SS.mmm
    save_atomic(toml, "[ml.training\n")
    line = w.next_line("rejected")
    assert "./mlprefs.toml:1" in line and "cannot parse TOML" in line
    assert w.interrupt() == 0


def test_watch_prints_a_rejected_edit_once(watching, toml):
    w = watching("watch")
    w.next_line("watching")
    save_atomic(toml, lr_toml(5.0))
    assert "rejected" in w.next_line("is above the maximum 1.0")
    save_atomic(toml, lr_toml(0.02))
    w.next_line("0.01 → 0.02")  # a later edit: the rejection had time to be logged as well
    assert w.interrupt() == 0
    err = w.proc.stderr.read()  # printed on stdout; the log must not repeat it on stderr
    assert "is above the maximum" not in err, err
