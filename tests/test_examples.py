"""Each example runs in its fast mode (what CI runs), prints one line per epoch, and stops once.

Real subprocesses in an empty project directory, the frameworks on the CPU; an example whose
framework is not installed is skipped. The torch example also runs in --manual mode while the
test edits its mlprefs.toml, then Ctrl-C (SIGINT) ends it cleanly.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NEEDS = {
    "torch_example.py": ["torch"],
    "lightning_example.py": ["torch", "lightning"],
    "transformers_example.py": ["torch", "transformers", "accelerate"],
    "keras_example.py": ["torch", "keras"],
    "xgboost_example.py": ["xgboost", "numpy"],
    "sklearn_example.py": ["sklearn", "numpy"],
}
EPOCH = re.compile(r"^epoch +(\d+)  \S+ [\d.]+  lr [\d.e-]+  patience \d+$", re.M)


def environ(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPREFS")}
    env.update(MLPREFS_HOME=str(tmp_path / "home"), MLPREFS_POLICY=str(tmp_path / "policy.toml"),
               PYTHONWARNINGS="ignore")
    return env


def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def test_every_example_is_covered():
    found = [p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")]
    assert sorted(NEEDS) == sorted(found)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_the_example_runs_fast_prints_each_epoch_and_says_why_it_stopped(name, tmp_path):
    missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    run = subprocess.run([sys.executable, str(EXAMPLES / name), "--fast"], cwd=project(tmp_path),
                         env=environ(tmp_path), capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    epochs = [int(n) for n in EPOCH.findall(run.stdout)]
    assert epochs == list(range(1, len(epochs) + 1)) and 2 <= len(epochs) <= 10, run.stdout
    stops = re.findall(r"^mlprefs: run \S+ stops after iteration \d+: (.*)$", run.stderr, re.M)
    assert len(stops) == 1, run.stderr[-3000:]
    assert not re.search(r"mlprefs: stopping \w+ training", run.stderr)  # the adapters' echo
    assert re.search(rf"^run \S+ stopped after {len(epochs)} epochs: {re.escape(stops[0])}$",
                     run.stdout, re.M), run.stdout


def test_the_torch_example_in_manual_mode_takes_an_edit_and_stops_on_ctrl_c(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    cwd = project(tmp_path)
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "torch_example.py"), "--manual"],
                            cwd=cwd, env=environ(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any(ln.startswith("epoch") for ln in lines):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline())
        assert lines[0].startswith(f"edit {cwd / 'mlprefs.toml'} while this runs")
        (cwd / "mlprefs.toml").write_text(
            "[ml.training]\nlearning_rate = 0.005\nearly_stopping_patience = 50\n")
        while "lr 0.005" not in lines[-1]:  # a second an epoch: the edit lands within a few
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("epochs: interrupted"), out
    assert "ml.training.learning_rate 0.05 -> 0.005 (./mlprefs.toml:2)" in err
