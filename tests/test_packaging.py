"""A real, non-editable install into a fresh venv finds the packaged catalog and runs the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_pip_install_dot_in_a_fresh_venv_ships_defaults_toml(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(REPO)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    # Run from an empty directory with a private home: nothing may come from the checkout.
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("MLPREFS", "PYTHON"))}
    env.update(MLPREFS_HOME=str(tmp_path / "home"), MLPREFS_POLICY=str(tmp_path / "policy.toml"))

    def mlprefs(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / "mlprefs"), *argv], capture_output=True, text=True,
                              cwd=work, env=env, timeout=120)

    done = mlprefs("get", "ml.training.learning_rate")
    assert (done.returncode, done.stdout, done.stderr) == (0, "0.001\n", "")

    explained = json.loads(mlprefs("--json", "explain", "ml.training.learning_rate").stdout)
    catalog_path = Path(explained["chain"][0]["source"]["path"])
    assert catalog_path.name == "defaults.toml" and catalog_path.parent.name == "mlprefs_sdk"
    assert env_dir in catalog_path.parents and REPO not in catalog_path.parents

    done = mlprefs("set", "ml.performance.batch_size", "64")
    assert done.returncode == 0, done.stderr
    assert mlprefs("get", "ml.performance.batch_size").stdout == "64\n"

    imported = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import sys, mlprefs_sdk; print(mlprefs_sdk.__file__); "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('cattrs', 'watchfiles', 'numpy', 'torch', 'mlflow', 'wandb', 'openfeature', "
         "'jsonschema')))"],
        capture_output=True, text=True, cwd=work, env=env, timeout=120)
    location, heavy = imported.stdout.splitlines()
    assert env_dir in Path(location).parents
    assert (Path(location).parent / "py.typed").is_file(), "the wheel must ship py.typed"
    assert heavy == "[]", "import mlprefs_sdk must not import cattrs, watchfiles or a framework"
