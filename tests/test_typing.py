"""Types: py.typed ships, and a realistic user script passes `mypy --strict` (and runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "typing" / "user_script.py"


def mypy(tmp_path: Path, script: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict as a user runs it: errors in the script count, the library is read for its
    types (--follow-imports=silent, as for an installed package with py.typed)."""
    pytest.importorskip("mypy")
    env = {**os.environ, "MYPYPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "mypy-cache"), *options, str(script)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_the_package_ships_py_typed():
    assert (REPO / "mlprefs_sdk" / "py.typed").is_file()


def test_the_user_script_passes_mypy_strict(tmp_path):
    done = mypy(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_checking_a_user_script_reads_no_ml_framework(tmp_path):
    """The optional parts import their libraries in ways a type checker does not follow, so
    a user's mypy run costs seconds, not minutes of analysing torch, MLflow and transformers."""
    done = mypy(tmp_path, SCRIPT, "--verbose")
    parsed = [line for line in done.stderr.splitlines() if "Parsing " in line]
    assert any("mlprefs_sdk" in line for line in parsed), done.stderr[-2000:]
    frameworks = ("torch", "lightning", "transformers", "keras", "xgboost", "sklearn", "optuna",
                  "opacus", "mlflow", "wandb", "openfeature", "numpy", "matplotlib", "psycopg")
    read = sorted({f for line in parsed for f in frameworks if f"site-packages/{f}/" in line})
    assert read == []


def test_a_misspelt_service_method_fails_mypy_strict(tmp_path):
    broken = tmp_path / "broken_script.py"
    broken.write_text(SCRIPT.read_text().replace("prefs.models.rollback(", "prefs.models.rolback("))
    done = mypy(tmp_path, broken)
    assert done.returncode == 1 and '"ModelRegistry" has no attribute "rolback"' in done.stdout


def test_the_user_script_runs(home, project_dir):
    shutil.copy(SCRIPT, project_dir / "user_script.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "user_script.py"], capture_output=True, text=True,
                          env=env, cwd=project_dir, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "weight" in done.stdout


def test_load_accepts_a_dataclass_and_names_a_missing_key(home):
    import dataclasses

    from mlprefs_sdk import Client, UnknownKeyError

    @dataclasses.dataclass(frozen=True)
    class Performance:
        batch_size: int
        parallel_workers: int = 1
        missing_with_default: str = "kept"

    @dataclasses.dataclass
    class Broken:
        batch_sise: int

    with Client(overrides={"ml.performance.batch_size": 64}) as prefs:
        assert prefs.load(Performance, "ml.performance") == Performance(64, 4, "kept")
        with pytest.raises(UnknownKeyError, match="ml.performance.batch_sise"):
            prefs.load(Broken, "ml.performance")
