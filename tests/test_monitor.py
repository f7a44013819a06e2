"""prefs.monitor: buffered samples, windows, alerts (stored, fired once), drift, resources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mlprefs_sdk import Client
from mlprefs_sdk.cli import main
from mlprefs_sdk.services.monitor import BATCH, Alert, process_rss_mb

QUIET = {"ml.data.auto_cleanup_enabled": False, "ml.monitoring.resource_alerts": False}


def stored_samples(prefs: Client) -> int:
    return prefs.store.query("SELECT COUNT(*) FROM monitor_samples")[0][0]


def kinds(alerts):
    return sorted(a.kind for a in alerts)


# -- recording -------------------------------------------------------------------------
def test_samples_wait_in_a_buffer_until_flushed(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.9, latency_ms=12.0)
        assert stored_samples(prefs) == 0
        assert prefs.monitor.flush() == 1
        assert stored_samples(prefs) == 1


def test_a_full_batch_is_written_without_a_flush(home):
    with Client(overrides=QUIET) as prefs:
        for _ in range(BATCH):
            prefs.monitor.record("churn", "1", latency_ms=5.0)
        assert stored_samples(prefs) == BATCH


def test_close_writes_what_is_buffered(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.9)
    with Client(overrides=QUIET) as prefs:
        assert stored_samples(prefs) == 1


def test_accuracy_tracking_off_drops_accuracy(home):
    with Client(overrides={**QUIET, "ml.monitoring.accuracy_tracking": False}) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.9, latency_ms=20.0)
        stats = prefs.monitor.stats("churn", "1")
    assert stats.accuracy_samples == 0 and stats.latency_samples == 1


def test_latency_tracking_off_drops_latency(home):
    with Client(overrides={**QUIET, "ml.monitoring.latency_tracking": False}) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.9, latency_ms=20.0)
        prefs.monitor.record("churn", "1", latency_ms=20.0)  # nothing left to keep
        stats = prefs.monitor.stats("churn", "1")
    assert stats.accuracy_samples == 1 and stats.latency_samples == 0


def test_bad_samples_are_refused_with_the_reason(home):
    with Client(overrides=QUIET) as prefs:
        with pytest.raises(ValueError, match="accuracy = 1.5 must be between 0.0 and 1.0"):
            prefs.monitor.record("churn", "1", accuracy=1.5)
        with pytest.raises(TypeError, match="latency_ms must be a finite number"):
            prefs.monitor.record("churn", "1", latency_ms="fast")
        with pytest.raises(TypeError, match="model"):
            prefs.monitor.record("", "1", accuracy=0.5)


def test_stats_cover_the_last_window(home):
    with Client(overrides=QUIET) as prefs:
        for i in range(20):
            prefs.monitor.record("churn", "1", accuracy=0.0 if i < 10 else 1.0,
                                 latency_ms=float(i))
        stats = prefs.monitor.stats("churn", "1", window=10)
    assert stats.accuracy == 1.0
    assert stats.latency_p95 == pytest.approx(10 + 0.95 * 9)


# -- alerts ----------------------------------------------------------------------------
def test_accuracy_below_threshold_raises_an_alert(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.5)
        alerts = prefs.monitor.check()
    assert alerts == [Alert("accuracy", "churn", "1", alerts[0].message)]
    assert str(alerts[0]) == alerts[0].message
    assert "accuracy_threshold 0.85" in str(alerts[0])


def test_latency_p95_above_budget_raises_an_alert(home):
    with Client(overrides=QUIET) as prefs:
        for ms in [10.0] * 90 + [500.0] * 10:
            prefs.monitor.record("churn", "1", latency_ms=ms)
        alerts = prefs.monitor.check()
    assert kinds(alerts) == ["latency"]
    assert "latency_budget_ms 100" in str(alerts[0])


def test_healthy_samples_raise_nothing(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.95, latency_ms=10.0)
        assert prefs.monitor.check() == []


def test_an_alert_is_not_repeated_while_its_condition_persists(home):
    received = []
    with Client(overrides=QUIET) as prefs:
        prefs.on_alert(received.append)
        prefs.monitor.record("churn", "1", accuracy=0.5)
        assert kinds(prefs.monitor.check()) == ["accuracy"]
        prefs.monitor.record("churn", "1", accuracy=0.4)
        assert prefs.monitor.check() == []
    assert kinds(received) == ["accuracy"]


def test_an_alert_fires_again_after_its_condition_ended(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.5)
        assert prefs.monitor.check(window=1)
        prefs.monitor.record("churn", "1", accuracy=0.99)
        assert prefs.monitor.check(window=1) == []
        assert prefs.monitor.alerts(active=True) == []
        prefs.monitor.record("churn", "1", accuracy=0.5)
        assert kinds(prefs.monitor.check(window=1)) == ["accuracy"]


def test_alerts_are_stored_for_other_processes(home):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.5)
        prefs.monitor.check()
    with Client(overrides=QUIET) as prefs:
        assert kinds(prefs.monitor.alerts(active=True)) == ["accuracy"]
        assert prefs.monitor.check() == []  # still the same condition


def test_a_stored_drift_result_raises_a_drift_alert_until_it_clears(home):
    with Client(overrides=QUIET) as prefs:
        result = prefs.monitor.drift([0.0, 1.0] * 50, [5.0, 6.0] * 50, model="churn", version="1")
        assert result.drifted
        alerts = prefs.monitor.check()
        assert kinds(alerts) == ["drift"] and alerts[0].model == "churn"
        prefs.monitor.drift([0.0, 1.0] * 50, [0.0, 1.0] * 50, model="churn", version="1")
        prefs.monitor.check()
        assert prefs.monitor.alerts(active=True) == []


def test_drift_detection_off_raises_no_drift_alert(home):
    with Client(overrides={**QUIET, "ml.monitoring.drift_detection": False}) as prefs:
        prefs.monitor.drift([0.0, 1.0] * 50, [5.0, 6.0] * 50, model="churn", version="1")
        assert prefs.monitor.check() == []


def test_drift_uses_the_configured_method_and_thresholds(home):
    with Client(overrides={**QUIET, "ml.monitoring.drift_method": "ks"}) as prefs:
        result = prefs.monitor.drift(list(range(100)), list(range(3, 103)))
    assert result.method == "ks" and result.p_value > 0.05 and not result.drifted


# -- resources -------------------------------------------------------------------------
def test_process_rss_agrees_with_psutil():
    psutil = pytest.importorskip("psutil")
    ours = process_rss_mb()
    theirs = psutil.Process().memory_info().rss / 2**20
    assert ours == pytest.approx(theirs, rel=0.1)


RESOURCE_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from mlprefs_sdk import Client
    overrides = {"ml.data.auto_cleanup_enabled": False, "ml.performance.parallel_workers": 2,
                 "ml.performance.memory_limit_mb": 512, "ml.performance.cpu_limit_percent": 10}
    with Client(overrides=overrides) as prefs:
        if sys.argv[1] == "memory":
            ballast = b"x" * (640 * 2**20)
        raised = []
        if sys.argv[1] == "cpu":
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            # a slow first check (a loaded machine) may already count as busy: keep its alerts
            raised = prefs.monitor.check()
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                pass
        raised += prefs.monitor.check()
        print(json.dumps([str(a) for a in raised if a.kind == "resource"]))
""")


def run_resource_script(which: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", RESOURCE_SCRIPT, which], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


def test_memory_over_the_limit_raises_a_resource_alert(home):
    messages = run_resource_script("memory")
    assert any("memory_limit_mb 512" in m for m in messages), messages


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_cpu_over_the_limit_raises_a_resource_alert(home):
    messages = run_resource_script("cpu")
    assert any("cpu_limit_percent 10" in m for m in messages), messages


# -- CLI -------------------------------------------------------------------------------
def test_cli_monitor_check_and_alerts(home, capsys):
    with Client(overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.5)
    assert main(["--json", "monitor", "check"]) == 0
    raised = json.loads(capsys.readouterr().out)
    assert "accuracy" in [a["kind"] for a in raised]
    assert main(["monitor", "alerts", "--active"]) == 0
    assert "accuracy_threshold" in capsys.readouterr().out


# -- both backends ---------------------------------------------------------------------
def test_alerts_raise_once_and_resolve_on_each_backend(store_url):
    with Client(store=store_url, overrides=QUIET) as prefs:
        prefs.monitor.record("churn", "1", accuracy=0.5, latency_ms=500.0)
        prefs.monitor.drift([0.0, 1.0] * 50, [5.0, 6.0] * 50, model="churn", version="1")
        assert kinds(prefs.monitor.check(window=1)) == ["accuracy", "drift", "latency"]
        assert prefs.monitor.check(window=1) == []
        prefs.monitor.record("churn", "1", accuracy=0.99, latency_ms=5.0)
        prefs.monitor.check(window=1)
        assert kinds(prefs.monitor.alerts(active=True)) == ["drift"]
