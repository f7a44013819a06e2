"""A fork taken at any moment while the service threads (experiment flusher, monitor timer,
auto-cleanup) are busy never leaves the child deadlocked: real os.fork(), real threads."""

from __future__ import annotations

import random
import time

import pytest
from _fork_helpers import in_child as run_in_child

from mlprefs_sdk import Client
from mlprefs_sdk.store import SQLiteStore

pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")

FORKS = 25
CHILD_TIMEOUT_S = 20.0
SETTINGS = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True,
            "ml.data.retention_days": 30}


def in_child(body) -> str:
    return run_in_child(body, CHILD_TIMEOUT_S)


def old_rows(home, n: int) -> None:
    """n monitoring samples 40 days old: work for the auto-cleanup thread."""
    store = SQLiteStore(str(home / "prefs.db"))
    try:
        at = time.time() - 40 * 86400
        with store.transaction() as db:
            db.executemany("INSERT INTO monitor_samples (model, version, accuracy, latency_ms, "
                           "at) VALUES ('old', '1', NULL, 1.0, ?)", [(at,)] * n)
    finally:
        store.close()


def test_forks_while_service_threads_write_never_deadlock_the_child(home):
    old_rows(home, 150_000)  # the cleanup thread deletes these in batches while we fork
    rng = random.Random(12)
    results = []
    with Client(overrides=SETTINGS) as prefs:
        prefs.experiments.create("checkout", "a", "b", metric="mean")

        def child() -> None:
            prefs.experiments.record("checkout", "child-unit", 1.0)
            assert prefs.experiments.flush() >= 1
            prefs.monitor.record("churn", "child", latency_ms=1.0, durable=True)
            prefs.data.status("someone")
            prefs.data.cleanup()

        for i in range(FORKS):
            for j in range(rng.randrange(1, 3000)):  # keep the flusher and the timer busy
                prefs.experiments.record("checkout", f"u{i}-{j}", float(j))
                prefs.monitor.record("churn", "1", latency_ms=float(j))
            time.sleep(rng.uniform(0, 0.7))  # fork at a random phase of their write cycles
            results.append(in_child(child))
    assert results == ["ok"] * FORKS


def test_dataloader_fork_workers_record_while_the_parent_flushes(home):
    torch_data = pytest.importorskip("torch.utils.data")
    with Client(overrides=SETTINGS) as prefs:
        prefs.experiments.create("checkout", "a", "b", metric="mean")

        class Samples(torch_data.Dataset):
            def __len__(self) -> int:
                return 64

            def __getitem__(self, i: int) -> int:
                prefs.experiments.record("checkout", f"worker-{i}", float(i), durable=True)
                prefs.monitor.record("churn", "worker", latency_ms=float(i), durable=True)
                return i

        rng = random.Random(5)
        for epoch in range(4):
            for j in range(rng.randrange(500, 3000)):  # the parent's flusher and timer are busy
                prefs.experiments.record("checkout", f"p{epoch}-{j}", float(j))
                prefs.monitor.record("churn", "1", latency_ms=float(j))
            time.sleep(rng.uniform(0, 0.6))
            loader = torch_data.DataLoader(Samples(), batch_size=8, num_workers=2,
                                           multiprocessing_context="fork", timeout=60)
            assert sum(len(batch) for batch in loader) == 64  # a hung worker times out
        prefs.experiments.flush()
        units = {u for (u,) in prefs.store.query("SELECT unit FROM experiment_outcomes")}
        workers = {prefs.data.pseudonym(f"worker-{i}") for i in range(64)}  # stored pseudonymised
    assert workers <= units
