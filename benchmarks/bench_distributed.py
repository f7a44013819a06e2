"""Step overhead of rank-consistent preferences: python benchmarks/bench_distributed.py

2 and 4 gloo ranks on the CPU each train a small MLP under DistributedDataParallel (the
baseline: the same loop without prefs), then the same loop with the training hooks, and with
`distributed="auto"` checking every 1, 10 (the default) and 100 steps with nothing pending.
The configurations are interleaved round by round and the median round is reported, as a
time per step and a ratio to the baseline measured in the same run (the machine is shared).
The last rows time the check alone: a loop that does nothing but call on_step_end.

Runs benchmarks/bench_pg.py afterwards when it exists (the PostgreSQL figures).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYNC_STEPS = "ml.training.distributed_sync_steps"
CONFIGS = [  # (label, hooks distributed mode or None for no prefs, steps between checks)
    ("no prefs (DDP step only)", None, None),
    ("hooks, distributed=False", False, None),
    ("hooks, distributed, check every 100", "auto", 100),
    ("hooks, distributed, check every 10 (default)", "auto", 10),
    ("hooks, distributed, check every 1", "auto", 1),
]


def _loop(prefs, mode, every, steps: int, train_step) -> float:
    """Seconds per step of `steps` steps (hooks built and started outside the timing)."""
    if mode is None:
        return _timed(None, steps, train_step)
    with prefs.override({SYNC_STEPS: every or 10}):  # for the whole run: nothing is pending
        hooks = prefs.training_hooks(distributed=mode)
        hooks.on_train_start()
        return _timed(hooks, steps, train_step)


def _timed(hooks, steps: int, train_step) -> float:
    start = time.perf_counter()
    for step in range(steps):
        train_step()
        if hooks is not None:
            hooks.on_step_end(step)
    elapsed = time.perf_counter() - start
    if hooks is not None:
        hooks.on_train_end()
    return elapsed / steps


def _rank(rank: int, world: int, rendezvous: str, steps: int, rounds: int, out: str) -> None:
    import json

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    logging.getLogger("mlprefs_sdk.distributed").setLevel(logging.ERROR)  # distributed=False warns
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        times = _measure(steps, rounds)
        gc.collect()  # the DDP model's reducer must go before its process group
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps({k: statistics.median(v) for k, v in times.items()}))


def _measure(steps: int, rounds: int) -> dict[str, list[float]]:
    import torch

    from mlprefs_sdk import Client

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randn(32, 1)

    def train_step() -> None:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    def nothing() -> None:
        pass

    times: dict[str, list[float]] = {}
    with Client(store=":memory:", discover=False, env=False) as prefs:
        _loop(prefs, None, None, steps // 5, train_step)  # warm-up
        for _ in range(rounds):
            for label, mode, every in CONFIGS:
                times.setdefault(label, []).append(_loop(prefs, mode, every, steps, train_step))
            for every in (1, 10):
                label = f"on_step_end alone, distributed, check every {every}"
                times.setdefault(label, []).append(_loop(prefs, "auto", every, steps, nothing))
            times.setdefault("on_step_end alone, distributed=False", []).append(
                _loop(prefs, False, None, steps, nothing))
    return times


def run(world: int, steps: int, rounds: int) -> dict[str, float]:
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.start_processes(_rank, args=(world, os.path.join(tmp, "rendezvous"), steps, rounds, out),
                           nprocs=world, start_method="spawn")
        return json.loads(Path(out).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed loop")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median kept)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    print(f"{'ranks':>5}  {'loop':<50} {'us/step':>10} {'ratio':>7}", flush=True)
    for world in args.worlds:
        medians = run(world, args.steps, args.rounds)
        base = medians[CONFIGS[0][0]]
        for label, value in medians.items():
            ratio = f"{value / base:7.3f}" if not label.startswith("on_step_end") else "      -"
            print(f"{world:>5}  {label:<50} {value * 1e6:10.1f} {ratio}", flush=True)
        # The timed loops differ by less than this machine's noise; the check alone is steadier.
        check = medians["on_step_end alone, distributed, check every 10"]
        print(f"{'':>5}  {'default check alone as a share of a DDP step':<50} {check * 1e6:10.1f} "
              f"{(base + check) / base:7.3f}", flush=True)
    pg = HERE / "bench_pg.py"
    if pg.exists():
        print("\n== bench_pg.py ==", flush=True)
        return subprocess.call([sys.executable, str(pg)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
