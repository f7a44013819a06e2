"""What a Client attaches on first use: services, plugins, tuning, the training driver.

Each is built lazily (importing its module then), so `import mlprefs_sdk` and `Client()` stay
light; services hold the Client through its narrow handle (handle.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from .client import Client
    from .events import Dispatcher
    from .locations import Locations
    from .services.curves import Curves
    from .services.experiments import Experiments
    from .services.feedback import Feedback
    from .services.monitor import Monitor
    from .services.privacy import DataPrivacy
    from .services.registry import ModelRegistry
    from .templates import Templates
    from .training import TrainingHooks

__all__ = ["Attachments"]

T = TypeVar("T")


class Attachments:
    """The Client's lazily attached features (mixed into Client; its state, not another's)."""

    locations: Locations
    _events: Dispatcher
    _lock: threading.RLock
    _services: dict[type, Any]
    _pm: Any
    register: Callable[..., Any]

    @property
    def _client(self) -> Client:
        """This object, as the Client it always is (the mixin's only subclass)."""
        return cast("Client", self)

    @property
    def templates(self) -> Templates:
        from .templates import Templates

        return Templates(self._client)

    @property
    def services(self) -> tuple[Any, ...]:
        """The services attached so far (prefs.data, prefs.monitor, ...), in attachment order."""
        return tuple(self._services.values())

    def _service(self, cls: type[T]) -> T:
        svc = self._services.get(cls)
        if svc is None:
            svc = self._services[cls] = cls(self)  # type: ignore[call-arg]
        return svc

    @property
    def plugin_manager(self) -> Any:
        """This client's pluggy PluginManager (built-in and installed plugins), built on first use."""
        if self._pm is None:
            from .plugins import make_plugin_manager

            with self._lock:
                if self._pm is None:
                    self._pm = make_plugin_manager(self.register)
        return self._pm

    def tune(self, train: Callable[[Client], float | None], space: Mapping[str, Any] | None = None,
             n_trials: int | None = None, timeout_s: float | None = None, study: str | None = None,
             *, seed: int | None = None) -> Any:
        """Optuna over the [tune.space] keys; each trial calls train(self) with the trial's
        values in the runtime layer (SPEC section 9). Needs ml.features.auto_optimization."""
        from .tuning import tune

        return tune(self._client, train, space=space, n_trials=n_trials, timeout_s=timeout_s,
                    study=study, seed=seed)

    def training_hooks(self, optimizer: Any = None, scheduler: Any = None, model: Any = None,
                       run_id: str | None = None, distributed: Any = False) -> TrainingHooks:
        """The framework-agnostic training driver every adapter is built on (docs/training.md)."""
        from .training import TrainingHooks

        return TrainingHooks(self._client, optimizer=optimizer, scheduler=scheduler, model=model,
                             run_id=run_id, distributed=distributed)

    @property
    def curves(self) -> Curves:
        from .services.curves import Curves

        return self._service(Curves)

    @property
    def data(self) -> DataPrivacy:
        from .services.privacy import DataPrivacy

        return self._service(DataPrivacy)

    @property
    def monitor(self) -> Monitor:
        from .services.monitor import Monitor

        return self._service(Monitor)

    @property
    def feedback(self) -> Feedback:
        from .services.feedback import Feedback

        return self._service(Feedback)

    @property
    def models(self) -> ModelRegistry:
        from .services.registry import ModelRegistry

        return self._service(ModelRegistry)

    @property
    def experiments(self) -> Experiments:
        from .services.experiments import Experiments

        return self._service(Experiments)

    @functools.cached_property
    def pseudonym(self) -> Callable[[str], str]:
        """subject -> keyed pseudonym; shared by every service that stores subject ids."""
        from .pseudonym import Pseudonymizer

        return Pseudonymizer(self.locations.secret)

    @property
    def _pseudonym(self) -> Callable[[str], str]:  # the name it had before it was public
        return self.pseudonym

    def on_alert(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Monitoring alerts (prefs.monitor.check())."""
        return self._events.listen("alert", callback)

    def on_retrain(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Retraining triggers (prefs.feedback.retrain_needed())."""
        return self._events.listen("retrain", callback)
