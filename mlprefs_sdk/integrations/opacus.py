"""Differential privacy through Opacus (extra `dp`), sized by the ml.data.dp_* preferences.

`make_private(prefs, model, optimizer, loader, epochs)` runs Opacus's
`PrivacyEngine.make_private_with_epsilon` with `ml.data.dp_target_epsilon`, `ml.data.dp_delta`
and `ml.data.dp_max_grad_norm`, so that `epochs` epochs spend the target, and returns Opacus's
(model, optimizer, loader). The returned optimizer is remembered here (weakly) with its
engine, so training hooks built on it can report the epsilon spent and stop the run before an
epoch would exceed the budget (plugin `privacy_budget`).

With `ml.data.dp_enabled` off: under privacy mode "strict" make_private refuses (PolicyError)
rather than train without the privacy the script asked for; under "moderate" or "permissive"
it logs a warning and returns the objects unchanged, and the run reports no privacy budget
(`hooks.privacy_spent` is None). This module imports Opacus and torch only inside
make_private.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import attrs

from ..errors import MlprefsError, PolicyError
from ._require import require

__all__ = ["DifferentialPrivacyError", "PrivacyAccounting", "accounting_for", "make_private"]

log = logging.getLogger(__name__)

K = "ml.data."
_ACCOUNTING: weakref.WeakKeyDictionary[Any, PrivacyAccounting] = weakref.WeakKeyDictionary()


class DifferentialPrivacyError(MlprefsError, ValueError):
    """make_private was called with arguments DP-SGD cannot be sized for."""


@attrs.frozen(eq=False)
class PrivacyAccounting:
    """One DP optimizer's privacy plan and Opacus's own accountant for it."""

    engine: Any
    target_epsilon: float  # ml.data.dp_target_epsilon when make_private ran
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps_per_epoch: int
    epochs: int

    @property
    def accountant(self) -> Any:
        return self.engine.accountant

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far, from Opacus's accountant."""
        with _opacus_warnings_logged(logging.DEBUG):
            return float(self.accountant.get_epsilon(self.delta)), self.delta

    def epsilon_after(self, steps: int) -> float:
        """The epsilon the accountant would report after `steps` more steps at this noise and
        sampling rate (a copy of its history; the real accountant is not touched)."""
        copy = type(self.accountant)()
        copy.history = [*map(tuple, self.accountant.history),
                        (self.noise_multiplier, self.sample_rate, steps)]
        with _opacus_warnings_logged(logging.DEBUG):
            return float(copy.get_epsilon(self.delta))

    def history(self) -> list[list[float]]:
        """The accountant's history as JSON: [noise_multiplier, sample_rate, steps] entries."""
        return [[float(n), float(q), int(s)] for n, q, s in self.accountant.history]

    def resume(self, history: list[list[float]]) -> None:
        """Put a resumed run's earlier steps in front of this process's accountant history."""
        earlier = [(float(n), float(q), int(s)) for n, q, s in history]
        self.accountant.history[:0] = earlier


def accounting_for(optimizer: Any) -> PrivacyAccounting | None:
    """The accounting make_private attached to this optimizer, or None."""
    try:
        return _ACCOUNTING.get(optimizer)
    except TypeError:  # not weak-referenceable: make_private never returned it
        return None


def make_private(prefs: Any, model: Any, optimizer: Any, loader: Any, epochs: int,
                 *, accountant: str = "rdp", **opacus_options: Any) -> tuple[Any, Any, Any]:
    """DP-SGD sized so that `epochs` epochs spend ml.data.dp_target_epsilon at ml.data.dp_delta.

    Returns Opacus's (model, optimizer, loader); `opacus_options` go to
    make_private_with_epsilon (e.g. poisson_sampling, grad_sample_mode).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise DifferentialPrivacyError(
            f"make_private: epochs = {epochs!r}; pass the number of epochs the run is meant to "
            "train (an int >= 1): the noise is sized so that they spend the privacy budget")
    if not prefs.get(K + "dp_enabled"):
        return _without_dp(prefs, model, optimizer, loader)
    opacus = require("opacus", "dp", "mlprefs_sdk.integrations.opacus.make_private")
    try:
        batches = len(loader)
    except TypeError:
        raise DifferentialPrivacyError("make_private needs a torch DataLoader with a length "
                                       f"(batches per epoch); got {type(loader).__name__}") from None
    if batches < 1:
        raise DifferentialPrivacyError("make_private: the data loader is empty (0 batches); "
                                       "check the dataset (and prefs.data.filter's .excluded)")
    epsilon, delta = prefs.get(K + "dp_target_epsilon"), prefs.get(K + "dp_delta")
    max_grad_norm = prefs.get(K + "dp_max_grad_norm")
    _warn_if_delta_too_large(loader, delta)
    with _opacus_warnings_logged():
        engine = opacus.PrivacyEngine(accountant=accountant)
        model, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=epsilon,
            target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm, **opacus_options)
    _resize_per_pass(dp_loader)
    accounting = PrivacyAccounting(engine, epsilon, delta, float(dp_optimizer.noise_multiplier),
                                   1.0 / batches, len(dp_loader), epochs)
    _ACCOUNTING[dp_optimizer] = accounting
    log.info("mlprefs: DP-SGD on (Opacus, %s accountant): noise multiplier %.4g, max grad norm "
             "%g, %d steps per epoch; %d epoch(s) spend epsilon %g at delta %g", accountant,
             accounting.noise_multiplier, max_grad_norm, accounting.steps_per_epoch, epochs,
             epsilon, delta)
    return model, dp_optimizer, dp_loader


def _resize_per_pass(dp_loader: Any) -> None:
    """Opacus's Poisson sampler draws from a population sized once and never calls len() on
    the dataset again. Over a prefs.data.filter view it would keep serving the samples of the
    first pass; instead, each epoch starts a new pass of the view (its len()) and draws from
    the samples that may be trained on now. The sampling rate, and so the accounting, stay."""
    from ..services.datafilter import TrainableView

    sampler = getattr(dp_loader, "batch_sampler", None)
    if not isinstance(dp_loader.dataset, TrainableView) or not hasattr(sampler, "num_samples"):
        return
    base = type(sampler)

    class PerPass(base):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Iterator[list[int]]:
            self.num_samples = len(dp_loader.dataset)
            return super().__iter__()

    PerPass.__name__ = PerPass.__qualname__ = f"PerPass{base.__name__}"
    sampler.__class__ = PerPass


def _without_dp(prefs: Any, model: Any, optimizer: Any, loader: Any) -> tuple[Any, Any, Any]:
    mode = prefs.data.policy.privacy_mode
    source = prefs.explain(K + "dp_enabled").source
    if mode == "strict":
        raise PolicyError(
            f"make_private was called but ml.data.dp_enabled is false ({source}); under "
            "ml.data.privacy_mode = 'strict' training does not silently go ahead without the "
            "differential privacy the script asks for. Set ml.data.dp_enabled = true, or use "
            "privacy mode 'moderate' to train without DP")
    log.warning("mlprefs: make_private: ml.data.dp_enabled is false (%s); training WITHOUT "
                "differential privacy (privacy mode %r); the run reports no privacy budget",
                source, mode)
    return model, optimizer, loader


def _warn_if_delta_too_large(loader: Any, delta: float) -> None:
    try:
        n = len(loader.dataset)
    except (AttributeError, TypeError):
        return
    if n and delta >= 1.0 / n:
        log.warning("mlprefs: ml.data.dp_delta = %g is not below 1 / %d training samples; a "
                    "delta that large allows leaking whole records - lower it", delta, n)


@contextlib.contextmanager
def _opacus_warnings_logged(level: int = logging.WARNING) -> Iterator[None]:
    """Opacus's advisory warnings (secure RNG off, alpha range) go to the log, with context:
    at `level` (per-epoch accounting repeats them, so it logs them at DEBUG)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(str(w.message) for w in caught):  # each once, in order
        log.log(level, "mlprefs: Opacus: %s", message)
