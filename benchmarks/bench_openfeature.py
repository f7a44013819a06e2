"""OpenFeature evaluation cost: MlprefsProvider against the SDK's own InMemoryProvider.

    python benchmarks/bench_openfeature.py [--n 20000]

Both providers sit behind the same `openfeature.api` client in the same run, so the SDK's own
overhead (hooks, context merging, type checks) is in both; the ratio says whether the
provider is the slow part. Also: the provider's resolve call alone against prefs.get(), the
raw read it wraps. Best of 5 rounds each, per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import best_of, fresh_client, isolate, print_table

KEY = "ml.training.learning_rate"


def per_call(fn, n: int) -> float:
    def loop() -> None:
        for _ in range(n):
            fn()

    return best_of(loop) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="calls per round")
    n = parser.parse_args().n
    isolate()
    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from mlprefs_sdk.integrations.openfeature import MlprefsProvider

    with tempfile.TemporaryDirectory() as root:
        prefs = fresh_client(root, "of", {KEY: 0.01})
        provider = MlprefsProvider(prefs)
        api.set_provider_and_wait(provider, domain="mlprefs")
        api.set_provider_and_wait(InMemoryProvider(
            {KEY: InMemoryFlag("on", {"on": 0.01})}), domain="memory")
        ours, theirs = api.get_client(domain="mlprefs"), api.get_client(domain="memory")
        assert ours.get_float_value(KEY, 0.5) == theirs.get_float_value(KEY, 0.5) == 0.01

        t0 = time.perf_counter()
        api_ours = per_call(lambda: ours.get_float_value(KEY, 0.5), n)
        api_theirs = per_call(lambda: theirs.get_float_value(KEY, 0.5), n)
        details_ours = per_call(lambda: ours.get_float_details(KEY, 0.5), n)
        details_theirs = per_call(lambda: theirs.get_float_details(KEY, 0.5), n)
        resolve = per_call(lambda: provider.resolve_float_details(KEY, 0.5), n)
        get = per_call(lambda: prefs.get(KEY), n)
        api.clear_providers()
        prefs.close()
        took = time.perf_counter() - t0

    def us(s: float) -> str:
        return f"{s * 1e6:.2f} µs"

    rows = [
        ("get_float_value via the API", us(api_ours), "≤ 1.5x", f"InMemoryProvider {us(api_theirs)}",
         f"{api_ours / api_theirs:.2f}x", api_ours / api_theirs <= 1.5),
        ("get_float_details via the API", us(details_ours), "≤ 1.5x",
         f"InMemoryProvider {us(details_theirs)}", f"{details_ours / details_theirs:.2f}x",
         details_ours / details_theirs <= 1.5),
        ("provider.resolve_float_details alone", us(resolve), "",
         f"prefs.get {us(get)}", f"{resolve / get:.1f}x", "n/a"),
    ]
    print(f"{n} calls per round, best of 5 rounds; {took:.1f} s in all")
    return print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
