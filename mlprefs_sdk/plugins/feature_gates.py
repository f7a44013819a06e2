"""Built-in plugin: feature gates that hold still for a whole step.

`hooks.enabled("ml.features.advanced_enabled")` answers from the view as it stood at the last
step boundary, so code inside a step never sees a flag flip halfway through. This plugin
reports each effective flip when it lands - including the ones caused by ml.global.enabled,
which gates every ml.features.* flag - with the step and the source of the edit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..hookspecs import RunContext

__all__: list[str] = []

log = logging.getLogger(__name__)

NAME = "feature_gates"
MASTER = "ml.global.enabled"


@hookimpl
def mlprefs_train_start(hooks: RunContext) -> None:
    flags = dict(hooks.flags)
    hooks.scratch[NAME] = flags
    on = sorted(k for k, v in flags.items() if v and k.startswith("ml.features."))
    log.debug("mlprefs: run %s starts with features on: %s", hooks.run_id, ", ".join(on) or "none")


@hookimpl
def mlprefs_apply_changes(hooks: RunContext, changes: Any, step: int) -> None:
    before = hooks.scratch.get(NAME, {})
    after = dict(hooks.flags)
    for key, now in after.items():
        if before.get(key, now) != now:
            cause = changes.get(key) or changes.get(MASTER)
            log.info("mlprefs: run %s step %d: feature %s is now %s (%s)", hooks.run_id, step, key,
                     "on" if now else "off", cause.source if cause else "unknown source")
    hooks.scratch[NAME] = after
