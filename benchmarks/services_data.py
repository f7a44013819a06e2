"""Privacy and monitoring figures, each beside a baseline measured in the same run.

    python benchmarks/services_data.py [--rows 1000000] [--quick]

- monitor.record: samples/s through the SDK (validation, tracking flags, buffer, batched
  writes), against appending the same tuple to a list (the floor of any buffered recorder).
- drift on 100,000 vs 100,000 values, PSI and KS, against scipy.stats.ks_2samp when scipy is
  installed (else against sorting both samples, which both methods must do).
- cleanup of N expired rows while a reader thread on the same client keeps reading: the
  batched cleanup against one unbatched DELETE of the same rows (which holds the store lock,
  and so the reader, for its whole length).
- pseudonym: prefs.data.pseudonym() against hmac.new() and an unkeyed SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import _bench
from _bench import best_of

DAY = 86400.0
QUIET = {"ml.data.auto_cleanup_enabled": False, "ml.monitoring.resource_alerts": False}



def fresh_client(root: str, name: str) -> Any:
    return _bench.fresh_client(root, name, QUIET)


# -- monitor.record ----------------------------------------------------------------------
def bench_record(root: str, n: int) -> list[tuple]:
    prefs = fresh_client(root, "record")
    record = prefs.monitor.record

    def sdk() -> None:
        for _i in range(n):
            record("churn", "3", accuracy=0.9, latency_ms=12.5)
        prefs.monitor.flush()

    buf: list = []

    def floor() -> None:
        buf.clear()
        for _i in range(n):
            buf.append(("churn", "3", 0.9, 12.5, time.time()))

    t_sdk, t_floor = best_of(sdk, 3), best_of(floor, 3)
    prefs.close()
    rate = n / t_sdk
    return [("monitor.record", f"{rate:,.0f} samples/s", ">= 100,000/s",
             f"list.append {n / t_floor:,.0f}/s", f"{t_sdk / t_floor:.1f}x slower",
             rate >= 100_000)]


# -- drift -------------------------------------------------------------------------------
def bench_drift(n: int) -> list[tuple]:
    import numpy as np

    from mlprefs_sdk.services.drift import ks_2samp, psi

    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=n), rng.normal(0.05, 1.1, size=n)
    try:
        from scipy import stats

        t_base = best_of(lambda: stats.ks_2samp(ref, cur, method="asymp"))
        base_name = "scipy ks_2samp"
    except ImportError:
        t_base = best_of(lambda: (np.sort(ref), np.sort(cur)))
        base_name = "np.sort x2"
    rows = []
    for name, fn in (("psi", lambda: psi(ref, cur)), ("ks", lambda: ks_2samp(ref, cur))):
        t = best_of(fn)
        rows.append((f"drift {name} {n:,} vs {n:,}", f"{t * 1000:.1f} ms", "<= 200 ms",
                     f"{base_name} {t_base * 1000:.1f} ms", f"{t / t_base:.2f}x", t <= 0.2))
    ref_l, cur_l = ref.tolist(), cur.tolist()
    for name, fn in (("psi", lambda: psi(ref_l, cur_l, use_numpy=False)),
                     ("ks", lambda: ks_2samp(ref_l, cur_l, use_numpy=False))):
        t = best_of(fn, 3)
        rows.append((f"drift {name}, pure Python (no numpy)", f"{t * 1000:.1f} ms", "(info)",
                     f"{base_name} {t_base * 1000:.1f} ms", f"{t / t_base:.2f}x", True))
    return rows


# -- cleanup -----------------------------------------------------------------------------
def fill_expired(prefs: Any, rows: int) -> None:
    old = time.time() - 400 * DAY
    chunk = 100_000
    for start in range(0, rows, chunk):
        batch = [("churn", "3", 0.9, 12.5, old + (start + i) * 1e-3)
                 for i in range(min(chunk, rows - start))]
        with prefs.store.transaction() as db:
            db.executemany("INSERT INTO monitor_samples (model, version, accuracy, latency_ms, "
                           "at) VALUES (?, ?, ?, ?, ?)", batch)
    prefs.data.grant_consent("reader")


class Reader(threading.Thread):
    """Reads on the cleaning client's own connection (the worst case: it shares the lock)."""

    def __init__(self, prefs: Any) -> None:
        super().__init__(daemon=True)
        self.prefs, self.stop, self.latencies = prefs, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            assert self.prefs.data.may_train_on("reader")
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.001)


def timed_with_reader(prefs: Any, fn: Callable[[], Any]) -> tuple[float, list[float]]:
    reader = Reader(prefs)
    reader.start()
    time.sleep(0.05)
    t = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t
    reader.stop.set()
    reader.join()
    return elapsed, reader.latencies


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    s = sorted(values)
    return f"{s[min(len(s) - 1, int(q * len(s)))] * 1000:.1f}"


def bench_cleanup(root: str, rows: int) -> list[tuple]:
    batched = fresh_client(root, "cleanup-batched")
    single = fresh_client(root, "cleanup-single")
    print(f"  filling two stores with {rows:,} expired rows each ...", flush=True)
    fill_expired(batched, rows)
    fill_expired(single, rows)
    idle_lat = timed_with_reader(batched, lambda: time.sleep(0.3))[1]
    t_b, lat_b = timed_with_reader(batched, batched.data.cleanup)
    deleted = batched.store.query("SELECT COUNT(*) FROM monitor_samples")[0][0]
    assert deleted == 0, deleted
    before = time.time() - 365 * DAY

    def one_delete() -> None:
        with single.store.transaction() as db:
            db.execute("DELETE FROM monitor_samples WHERE at < ?", (before,))

    t_s, lat_s = timed_with_reader(single, one_delete)
    batched.close()
    single.close()
    return [(f"cleanup {rows:,} expired rows", f"{t_b:.2f} s", "<= 5 s",
             f"one DELETE {t_s:.2f} s", f"{t_b / t_s:.2f}x", t_b <= 5.0),
            ("  reader during cleanup (max wait)", f"{ms(lat_b, 1)} ms", "<= 100 ms",
             f"one DELETE {ms(lat_s, 1)} ms", f"{max(lat_b) / max(lat_s):.3f}x",
             max(lat_b) <= 0.1),
            ("  reader p50 / p99", f"{ms(lat_b, .5)} / {ms(lat_b, .99)} ms", "(info)",
             f"idle {ms(idle_lat, .5)} / {ms(idle_lat, .99)} ms", "", True)]


# -- pseudonym ---------------------------------------------------------------------------
def bench_pseudonym(root: str, n: int) -> list[tuple]:
    prefs = fresh_client(root, "pseudonym")
    pseudonym = prefs.data.pseudonym
    key = os.urandom(32)
    subjects = [f"user-{i:08d}@example.org" for i in range(1000)]
    reps = max(1, n // len(subjects))

    def loop(fn: Callable[[str], str]) -> float:
        def run() -> None:
            for _ in range(reps):
                for s in subjects:
                    fn(s)
        return best_of(run) / (reps * len(subjects))

    t_sdk = loop(pseudonym)
    t_hmac = loop(lambda s: hmac.new(key, s.encode(), hashlib.sha256).hexdigest())
    t_sha = loop(lambda s: hashlib.sha256(s.encode()).hexdigest())
    prefs.close()
    return [("pseudonym", f"{t_sdk * 1e6:.2f} us", "<= 5 us", f"hmac.new {t_hmac * 1e6:.2f} us",
             f"{t_sdk / t_hmac:.2f}x", t_sdk <= 5e-6),
            ("  (unkeyed sha256, not acceptable)", "", "", f"sha256 {t_sha * 1e6:.2f} us",
             f"{t_sdk / t_sha:.2f}x", True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired rows to clean up")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows
    samples = 20_000 if args.quick else 200_000
    values = 100_000
    _bench.isolate()
    results: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="mlprefs-bench-") as root:
        os.chdir(root)
        results += bench_record(root, samples)
        results += bench_drift(values)
        results += bench_cleanup(root, rows)
        results += bench_pseudonym(root, 200_000 if not args.quick else 20_000)
    return _bench.print_table(results)


if __name__ == "__main__":
    sys.exit(main())
