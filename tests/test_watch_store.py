"""Other processes' store writes reach this client's get() and callbacks while it watches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _watch_helpers import Recorder, backend, wait_for  # noqa: F401 (fixture)

from mlprefs_sdk import Client

BATCH = "ml.performance.batch_size"


def in_another_process(code: str, cwd: Path) -> None:
    """Run `code` with a fresh Client class in a new interpreter, same MLPREFS_HOME."""
    subprocess.run([sys.executable, "-c", "from mlprefs_sdk import Client\n" + code],
                   cwd=cwd, check=True, timeout=60)


def test_another_process_set_reaches_get_and_callbacks(home, tmp_path, backend):
    with Client(watch=True) as prefs:
        changes = Recorder()
        prefs.on_change("ml.performance.*", changes)
        in_another_process(f"Client().set({BATCH!r}, 64, reason='fits GPU')", tmp_path)
        assert wait_for(lambda: prefs.get(BATCH) == 64)
        assert wait_for(lambda: len(changes) == 1)
        change = changes.items[0].get(BATCH)
        assert (change.old, change.new, change.source.layer) == (32, 64, "user")


def test_another_process_unset_falls_back(home, tmp_path):
    with Client() as writer:
        writer.set(BATCH, 64)
    with Client(watch=True) as prefs:
        assert prefs.get(BATCH) == 64
        in_another_process(f"Client().unset({BATCH!r})", tmp_path)
        assert wait_for(lambda: prefs.get(BATCH) == 32)


def test_another_process_project_scope_write_is_seen(home, tmp_path):
    with Client(project="churn", watch=True) as prefs:
        in_another_process(f"Client(project='churn').set({BATCH!r}, 128, scope='project')",
                           tmp_path)
        assert wait_for(lambda: prefs.get(BATCH) == 128)
        assert prefs.explain(BATCH).source.layer == "project"


def test_another_client_in_this_process_is_seen(home):
    with Client(watch=True) as prefs, Client() as other:
        other.set(BATCH, 16)
        assert wait_for(lambda: prefs.get(BATCH) == 16)


def test_another_process_write_that_breaks_a_rule_here_is_reported_and_not_applied(
        home, project_dir, tmp_path):
    # Here 8 workers need 8 x 256 MB; the other process (no such file) sees only 4 workers.
    (project_dir / "mlprefs.toml").write_text("[ml.performance]\nparallel_workers = 8\n")
    with Client(watch=True) as prefs:
        errors = Recorder()
        prefs.on_error(errors)
        in_another_process("Client().set('ml.performance.memory_limit_mb', 1024)", tmp_path)
        assert wait_for(lambda: len(errors) == 1)
        (problem,) = errors.items[0].problems
        assert problem.rule == "memory-per-worker"
        assert prefs.get("ml.performance.memory_limit_mb") == 2048
