"""Every service benchmark in one command: python benchmarks/bench_services.py

Runs the registry/experiments and the privacy/monitoring benchmarks one after the other,
each in its own process so one's memory and caches do not colour the other's figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ["services_models.py", "services_data.py"]


def main() -> int:
    code = 0
    for part in PARTS:
        print(f"\n== {part} ==", flush=True)
        code |= subprocess.call([sys.executable, str(HERE / part), *sys.argv[1:]])
    return code


if __name__ == "__main__":
    raise SystemExit(main())
