"""Weights & Biases bridge: preferences into the run that exists when training starts.

At train start every resolved key goes into the run's config (its value then) and
`config["mlprefs.source.<key>"]` says where each came from. Each change applied mid-run
updates the config with `allow_val_change=True` (W&B refuses a changed config value without
it) and is logged as `mlprefs/<key>` at the step it landed (numbers and bools; strings are in
the config only), so the learning curve and the edits share one step axis.

wandb is never imported here: the `trackers` plugin asks for a sink only when `wandb` is
already in sys.modules, and the sink holds the run object it found there.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["SOURCE", "WandbSink", "active_sink"]

log = logging.getLogger(__name__)

SOURCE = "mlprefs.source."  # config entries: SOURCE + key -> where the value came from
MASK = "********"


class WandbSink:
    """The W&B run found at train start (`wandb.run`); writes go to that run object."""

    name = "wandb"

    def __init__(self, run: Any) -> None:
        self.run = run

    def start(self, entries: Iterable[tuple[str, Any, str, bool]], step: int = 0) -> None:
        """entries: (key, value, source, sensitive); a resumed run's config is updated too."""
        config: dict[str, Any] = {}
        for key, value, source, sensitive in entries:
            config[key] = MASK if sensitive else value
            config[SOURCE + key] = source
        self.run.config.update(config, allow_val_change=True)

    def changes(self, entries: Iterable[tuple[str, Any, str, bool]], step: int) -> None:
        config: dict[str, Any] = {}
        logged: dict[str, Any] = {}
        for key, value, source, sensitive in entries:
            config[key] = MASK if sensitive else value
            config[SOURCE + key] = source
            if not sensitive and isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                logged[f"mlprefs/{key}"] = value
        self.run.config.update(config, allow_val_change=True)
        if logged:
            self.run.log(logged, step=step)


def active_sink() -> WandbSink | None:
    """A sink for the current W&B run, or None (also when wandb was never imported)."""
    run = getattr(sys.modules.get("wandb"), "run", None)
    return None if run is None else WandbSink(run)
