"""What the examples share: --fast / --manual, the mlprefs.toml to edit, one line per epoch.

Not part of mlprefs-sdk: each example imports it from its own directory. The mlprefs calls an
example makes are in the example itself.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mlprefs_sdk import Client
from mlprefs_sdk.hookspecs import hookimpl

# --fast (what CI runs): a few epochs. A runtime override wins over the file, so fast mode
# ends quickly whatever ./mlprefs.toml says.
FAST = {"ml.training.max_iterations": 10, "ml.training.early_stopping_patience": 2}
PAUSE_S = 1.0  # --manual: one epoch a second, time enough to edit the file


def options(doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true",
                      help="a few epochs on little data (what CI runs)")
    mode.add_argument("--manual", action="store_true",
                      help="one epoch a second and a long patience: edit ./mlprefs.toml by hand "
                           "while it runs (Ctrl-C ends it)")
    return parser.parse_args()


def prefs_file(args: argparse.Namespace, learning_rate: float, patience: int = 5) -> Path:
    """./mlprefs.toml, written if absent (the Client reads the file it finds at start)."""
    path = Path("mlprefs.toml")
    if not path.exists():
        patience = 50 if args.manual else patience
        path.write_text(f"[ml.training]\nlearning_rate = {learning_rate}\n"
                        f"early_stopping_patience = {patience}\n")
    if args.manual:
        print(f"edit {path.resolve()} while this runs, e.g. learning_rate = "
              f"{learning_rate / 10:g}, or early_stopping_patience = 3 to stop it; Ctrl-C ends it")
    return path


class EpochLine:
    """A tiny plugin: one console line per early-stopping check (an epoch, a round, a pass),
    and one when the run ends."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.checks = 0  # every adapter here checks once per epoch; some before counting it

    @hookimpl
    def mlprefs_evaluate(self, hooks: Any, metrics: Any, fallback_metric: str | None) -> None:
        self.checks += 1
        name = hooks.get("ml.training.early_stopping_metric")
        if name not in metrics and fallback_metric in metrics:
            name = fallback_metric
        value = metrics.get(name)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        print(f"epoch {self.checks:>3}  {name} {shown}  "
              f"lr {hooks.get('ml.training.learning_rate'):g}  "
              f"patience {hooks.get('ml.training.early_stopping_patience')}", flush=True)
        if self.pause:
            time.sleep(self.pause)

    @hookimpl
    def mlprefs_train_end(self, hooks: Any) -> None:
        print(f"run {hooks.run_id} stopped after {self.checks} epochs: {hooks.stop_reason}")


def client(args: argparse.Namespace) -> Client:
    """A watching Client that prints one line per epoch (and paces them with --manual)."""
    prefs = Client(watch=True, overrides=FAST if args.fast else None)
    prefs.plugin_manager.register(EpochLine(PAUSE_S if args.manual else 0.0), name="epoch-line")
    return prefs
