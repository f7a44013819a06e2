"""Registry and experiment figures, each beside a baseline measured in the same run.

    python benchmarks/services_models.py [--outcomes 1000000] [--quick]

- experiments.assign for an experiment this process knows, median over batches of 1,000
  calls: a unit seen before (cache hit) and a unit seen for the first time (hash, buffer),
  against GrowthBook's local evaluation of a 2-arm experiment for the same ids (its hash and
  bucket choice, the ~1.7 us anchor; its full GrowthBook.run() is shown for information).
- experiments.record, outcomes/s sustained (first assignment, pseudonym, batched insert
  included), against executemany() of the same rows into the same tables of the same store.
- experiments.analyze over N outcomes (aggregated in SQL), against fetching the values and
  computing the same means and variances in Python.
- models.select among 10,000 versions of one model, each criterion, against loading every
  version with models.list() and ranking them in Python.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _bench
from _bench import best_of

ENABLE = {"ml.features.experiment_tracking": True, "ml.experiments.ab_testing_enabled": True,
          "ml.data.auto_cleanup_enabled": False}



def median_per_call(fn: Callable[[list[str]], Any], batches: list[list[str]]) -> float:
    """Median over batches of the mean time per call within a batch, in seconds."""
    per_call = []
    for batch in batches:
        t = time.perf_counter()
        fn(batch)
        per_call.append((time.perf_counter() - t) / len(batch))
    return statistics.median(per_call)


def fresh_client(root: str, name: str, **overrides: Any) -> Any:
    return _bench.fresh_client(root, name, {**ENABLE, **overrides})


# -- assign --------------------------------------------------------------------------------
def bench_assign(root: str, batches: int) -> list[tuple]:
    prefs = fresh_client(root, "assign")
    prefs.experiments.create("checkout", "old", "new", traffic_split_ratio=0.1)
    assign = prefs.experiments.assign
    ids = [[f"user-{b}-{i}" for i in range(1000)] for b in range(batches)]

    def run(batch: list[str]) -> None:
        for u in batch:
            assign("checkout", u)

    t_new = median_per_call(run, ids)  # first time each unit is seen
    t_known = median_per_call(run, ids)  # the same units again
    prefs.close()
    rows = []
    try:
        from growthbook import Experiment, GrowthBook
        from growthbook.core import chooseVariation, gbhash, getBucketRanges
    except ImportError:
        gb_core = gb_run = None
    else:
        ranges = getBucketRanges(2, 1.0, [0.9, 0.1])

        def core(batch: list[str]) -> None:
            for u in batch:
                chooseVariation(gbhash("checkout", u, 1), ranges)

        exp = Experiment(key="checkout", variations=["old", "new"], weights=[0.9, 0.1])
        gb = GrowthBook(attributes={"id": ""})

        def full(batch: list[str]) -> None:
            for u in batch[:200]:
                gb.set_attributes({"id": u})
                gb.run(exp)

        gb_core = median_per_call(core, ids)
        gb_run = median_per_call(full, ids[: max(5, batches // 5)]) * 1000 / 200
    base = f"GrowthBook hash+bucket {gb_core * 1e6:.2f} us" if gb_core else "GrowthBook not installed"
    for label, t in (("known unit", t_known), ("first sight", t_new)):
        ratio = f"{gb_core / t:.1f}x faster" if gb_core and t < gb_core else (
            f"{t / gb_core:.1f}x slower" if gb_core else "-")
        rows.append((f"experiments.assign, {label} (median)", f"{t * 1e6:.2f} us",
                     "<= 2 us", base, ratio, t <= 2e-6))
    if gb_run:
        rows.append(("GrowthBook.run() per unit (info)", f"{gb_run * 1e6:.2f} us", "(info)",
                     f"ours, first sight {t_new * 1e6:.2f} us",
                     f"{gb_run / t_new:.1f}x slower than ours", "info"))
    return rows


# -- record and analyze -------------------------------------------------------------------
def bench_record(root: str, n: int) -> tuple[list[tuple], Any]:
    prefs = fresh_client(root, "record")
    prefs.experiments.create("checkout", "old", "new", metric="mean", traffic_split_ratio=0.5)
    record = prefs.experiments.record
    rng = random.Random(1)
    values = [rng.gauss(100.0, 15.0) for _ in range(n)]
    units = [f"user-{i}" for i in range(n)]
    t = time.perf_counter()
    for u, v in zip(units, values):
        record("checkout", u, v)
    prefs.experiments.flush()
    t_sdk = time.perf_counter() - t
    store, at = prefs.store, time.time()
    rows = [("baseline", f"{i:064x}", "control", v, at) for i, v in enumerate(values)]
    unit_rows = [(name, u, arm, at) for name, u, arm, _v, at in rows]

    def floor() -> None:
        with store.transaction() as db:
            db.executemany("INSERT INTO experiment_units (experiment, unit, arm, assigned_at) "
                           "VALUES (?, ?, ?, ?)", unit_rows)
            db.executemany("INSERT INTO experiment_outcomes (experiment, unit, arm, value, at) "
                           "VALUES (?, ?, ?, ?, ?)", rows)

    t_floor = best_of(floor, 1)
    with store.transaction() as db:
        db.execute("DELETE FROM experiment_units WHERE experiment = 'baseline'")
        db.execute("DELETE FROM experiment_outcomes WHERE experiment = 'baseline'")
    rate = n / t_sdk
    return [(f"experiments.record, {n:,} new units", f"{rate:,.0f} outcomes/s", ">= 50,000/s",
             f"executemany {n / t_floor:,.0f} rows/s", f"{t_sdk / t_floor:.1f}x slower",
             rate >= 50_000)], prefs


def bench_analyze(prefs: Any, n: int) -> list[tuple]:
    analyze = prefs.experiments.analyze
    t_sdk = best_of(lambda: analyze("checkout"), 3)
    store = prefs.store

    def python() -> None:
        by_arm: dict[str, list[float]] = {"control": [], "treatment": []}
        for arm, value in store.query("SELECT arm, value FROM experiment_outcomes "
                                      "WHERE experiment = 'checkout'"):
            by_arm[arm].append(value)
        for values in by_arm.values():
            statistics.fmean(values), statistics.variance(values)

    t_py = best_of(python, 1)
    return [(f"experiments.analyze, {n:,} outcomes", f"{t_sdk * 1000:.0f} ms", "<= 1 s",
             f"fetch + Python stats {t_py * 1000:.0f} ms", f"{t_py / t_sdk:.1f}x faster",
             t_sdk <= 1.0)]


# -- select ----------------------------------------------------------------------------------
def bench_select(root: str, n: int) -> list[tuple]:
    prefs = fresh_client(root, "select")
    rng = random.Random(2)
    t = time.perf_counter()
    for i in range(n):
        prefs.models.register("churn", i, metrics={"accuracy": rng.uniform(0.7, 0.99),
                                                   "latency_ms": rng.uniform(1, 200),
                                                   "memory_mb": rng.uniform(50, 4000)})
    t_fill = time.perf_counter() - t
    rows = []
    for criteria in ("accuracy", "speed", "memory", "balanced"):
        with prefs.override({"ml.models.selection_criteria": criteria}):
            t_sdk = best_of(lambda: prefs.models.select("churn"), 20)
            key = {"accuracy": lambda m: -m.metrics["accuracy"],
                   "speed": lambda m: m.metrics["latency_ms"],
                   "memory": lambda m: m.metrics["memory_mb"],
                   "balanced": lambda m: -m.metrics["accuracy"] + m.metrics["latency_ms"] / 200}

            def naive() -> None:
                candidates = [m for m in prefs.models.list("churn")
                              if m.metrics["accuracy"] >= 0.85]
                min(candidates, key=key[criteria])

            t_naive = best_of(naive, 3)
        rows.append((f"models.select {criteria}, {n:,} versions", f"{t_sdk * 1000:.2f} ms",
                     "<= 5 ms", f"list() + rank in Python {t_naive * 1000:.1f} ms",
                     f"{t_naive / t_sdk:.0f}x faster", t_sdk <= 0.005))
    rows.append((f"models.register, {n:,} versions (info)", f"{n / t_fill:,.0f} versions/s",
                 "(info)", "-", "-", "info"))
    prefs.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=1_000_000,
                        help="outcomes recorded, then analyzed")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args, _others = parser.parse_known_args()  # bench_services.py passes one set of options
    outcomes = 100_000 if args.quick else args.outcomes
    versions = 2_000 if args.quick else 10_000
    _bench.isolate()
    results: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="mlprefs-bench-") as root:
        os.chdir(root)
        results += bench_assign(root, 50 if args.quick else 200)
        print(f"  recording {outcomes:,} outcomes ...", flush=True)
        record_rows, prefs = bench_record(root, outcomes)
        results += record_rows
        results += bench_analyze(prefs, outcomes)
        prefs.close()
        print(f"  registering {versions:,} versions ...", flush=True)
        results += bench_select(root, versions)
    return _bench.print_table(results)


if __name__ == "__main__":
    sys.exit(main())
