"""Weights & Biases bridge: preferences into the run that exists when training starts.

At train start every resolved key goes into the run's config (its value then) and
`config["mlprefs.sources"]` maps each key to where it came from. Each change applied mid-run
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
from typing import Any, Iterable

__all__ = ["WandbSink", "active_sink", "SOURCES"]

log = logging.getLogger(__name__)

SOURCES = "mlprefs.sources"  # config entry: {key: source}
MASK = "********"


class WandbSink:
    """The W&B run found at train start (`wandb.run`); writes go to that run object."""

    name = "wandb"

    def __init__(self, run: Any) -> None:
        self.run = run
        self._sources: dict[str, str] = {}

    def start(self, entries: Iterable[tuple[str, Any, str, bool]]) -> None:
        """entries: (key, value, source, sensitive)."""
        config: dict[str, Any] = {}
        for key, value, source, sensitive in entries:
            config[key] = MASK if sensitive else value
            self._sources[key] = source
        config[SOURCES] = dict(self._sources)
        self.run.config.update(config, allow_val_change=True)

    def changes(self, entries: Iterable[tuple[str, Any, str, bool]], step: int) -> None:
        config: dict[str, Any] = {}
        logged: dict[str, Any] = {}
        for key, value, source, sensitive in entries:
            config[key] = MASK if sensitive else value
            self._sources[key] = source
            if not sensitive and isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                logged[f"mlprefs/{key}"] = value
        config[SOURCES] = dict(self._sources)
        self.run.config.update(config, allow_val_change=True)
        if logged:
            self.run.log(logged, step=step)


def active_sink() -> WandbSink | None:
    """A sink for the current W&B run, or None (also when wandb was never imported)."""
    run = getattr(sys.modules.get("wandb"), "run", None)
    return None if run is None else WandbSink(run)
