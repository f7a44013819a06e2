"""`mlprefs demo`: a small real training run that shows live preferences at work.

A two-layer numpy network learns a synthetic two-class problem through the training hooks,
with hot reload on. Partway through, the demo edits its own mlprefs.toml (a lower learning
rate, then a shorter patience) the way a person would in an editor; each change arrives at
the next step boundary and is printed with its source; early stopping ends the run and says
why; learning_curve.png shows the curves with the change points marked. `manual=True` makes
no edits: it prints the file's path and waits for the user's own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs

from .client import Client
from .integrations._require import require
from .runs import run_changes

np = require("numpy", "demo", "mlprefs demo")

__all__ = ["run_demo", "DemoResult", "draw_curve"]

log = logging.getLogger(__name__)

LR = "ml.training.learning_rate"
PATIENCE = "ml.training.early_stopping_patience"
START = {LR: 0.5, PATIENCE: 20}
EDITS = ((0.15, LR, 0.05, "a lower learning rate"), (0.3, PATIENCE, 3, "a shorter patience"))
TEMPLATE = """\
# mlprefs demo: edit me while the demo runs; a change lands at the next training step.
[ml.training]
learning_rate = {lr}
early_stopping_patience = {patience}
convergence_threshold = 0.01
restore_best_weights = true
regularization_l2 = 0.0001
"""


@attrs.frozen
class DemoResult:
    run_id: str
    epochs: int
    stop_reason: str | None
    config: str
    store: str
    plot: str | None


class MomentumSGD:
    """A torch-style optimizer (param_groups of dicts) over numpy arrays, updated in place."""

    def __init__(self, groups: list[dict[str, Any]], momentum: float = 0.9) -> None:
        self.param_groups = groups
        self.momentum = momentum
        self._velocity = {id(p): np.zeros_like(p) for g in groups for p in g["params"]}

    def step(self, grads: dict[int, Any]) -> None:
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                v = self._velocity[id(p)]
                v *= self.momentum
                v -= lr * (grads[id(p)] + decay * p)
                p += v


class TinyNet:
    """2 -> 16 (tanh) -> 1 (sigmoid), with state_dict() so the best weights can be restored."""

    def __init__(self, rng: Any, hidden: int = 16) -> None:
        self.params = {"w1": rng.normal(0, 1.0, (2, hidden)), "b1": np.zeros(hidden),
                       "w2": rng.normal(0, 1.0 / np.sqrt(hidden), (hidden, 1)), "b2": np.zeros(1)}

    def state_dict(self) -> dict[str, Any]:
        return self.params

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            self.params[name][...] = value

    def forward(self, X: Any) -> tuple[Any, Any]:
        h = np.tanh(X @ self.params["w1"] + self.params["b1"])
        return h, 1 / (1 + np.exp(-(h @ self.params["w2"] + self.params["b2"])))

    def loss(self, X: Any, y: Any) -> tuple[float, float]:
        p = self.forward(X)[1][:, 0].clip(1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), float(np.mean((p > 0.5) == y))

    def grads(self, X: Any, y: Any) -> dict[int, Any]:
        h, p = self.forward(X)
        d_out = (p[:, 0] - y)[:, None] / len(X)
        d_h = (d_out @ self.params["w2"].T) * (1 - h ** 2)
        g = {"w2": h.T @ d_out, "b2": d_out.sum(0), "w1": X.T @ d_h, "b1": d_h.sum(0)}
        return {id(self.params[k]): v for k, v in g.items()}


def make_data(rng: Any, n: int = 1200) -> tuple[Any, Any]:
    """Two interleaved noisy spirals: learnable, but not in a few steps."""
    t = rng.uniform(0.5, 3.0, n) * np.pi
    label = rng.integers(0, 2, n)
    r = t / (3 * np.pi)
    angle = t + label * np.pi
    X = np.stack([r * np.cos(angle), r * np.sin(angle)], 1) * 3 + rng.normal(0, 0.12, (n, 2))
    return X, label.astype(float)


def _write(path: Path, text: str) -> None:
    """Save like an editor does: write a temporary file, then rename it over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Progress:
    """One live line on a terminal; one line per epoch otherwise."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out, self.total = out, total
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._open = False

    def update(self, epoch: int, text: str) -> None:
        done = int(20 * (epoch + 1) / self.total)
        line = f"epoch {epoch + 1:3d}/{self.total} [{'#' * done}{'.' * (20 - done)}] {text}"
        if self.tty:
            self.out.write("\r" + line.ljust(100))
            self._open = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        if self._open:
            self.out.write("\n")
            self._open = False
        self.out.write(text + "\n")
        self.out.flush()


def run_demo(out: str | os.PathLike[str] = "mlprefs-demo", epochs: int = 60, manual: bool = False,
             stream: TextIO | None = None, pace: float | None = None, seed: int = 0,
             stop: threading.Event | None = None) -> DemoResult:
    """Train, edit the preferences mid-run (unless manual), stop early, plot the curve."""
    stream = stream or sys.stdout
    pace = (1.0 if manual else 0.03) if pace is None else pace
    stop = stop or threading.Event()
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mlprefs.toml"
    _write(config, TEMPLATE.format(lr=START[LR], patience=START[PATIENCE]))
    store = folder / "prefs.db"
    progress = _Progress(stream, epochs)
    progress.say(f"mlprefs demo: preferences in {config}")
    if manual:
        progress.say("Edit that file while this runs (try learning_rate = 0.05, then "
                     "early_stopping_patience = 3); each change lands at the next step. "
                     "Ctrl-C ends the run.")

    rng = np.random.default_rng(seed)
    X, y = make_data(rng)
    split = int(len(X) * 0.8)
    (X_train, y_train), (X_val, y_val) = (X[:split], y[:split]), (X[split:], y[split:])
    net = TinyNet(rng)
    p = net.params
    opt = MomentumSGD([{"params": [p["w1"], p["w2"]], "lr": 0.1, "weight_decay": 1e-3},
                       {"params": [p["b1"], p["b2"]], "lr": 0.1, "weight_decay": 0.0}])

    with Client(store=str(store), files=[config], discover=False, env=False, watch=True) as prefs:
        hooks = prefs.training_hooks(optimizer=opt, model=net)

        def announce(changes: Any) -> None:  # deferred: runs at the step boundary that applies it
            for c in changes:
                progress.say(f"  applied at step {hooks.steps}: {c.key} {c.old} -> {c.new}  "
                             f"(from {c.source})")

        prefs.on_change("ml.*", announce, deliver="deferred")
        edits = [] if manual else [(max(1, round(f * epochs)), k, v, why) for f, k, v, why in EDITS]
        hooks.on_train_start()
        progress.say(f"run {hooks.run_id}: learning_rate {opt.param_groups[0]['lr']:g} and "
                     f"weight decay {opt.param_groups[0]['weight_decay']:g} come from the "
                     f"preferences, not the optimizer's constructor")
        batch = hooks.get("ml.performance.batch_size")
        epoch = -1
        try:
            for epoch in range(epochs):
                for _at, key, value, why in [e for e in edits if e[0] == epoch]:
                    _edit(config, key, value, why, prefs, progress)
                order = rng.permutation(split)
                for step, start in enumerate(range(0, split, batch)):
                    idx = order[start:start + batch]
                    opt.step(net.grads(X_train[idx], y_train[idx]))
                    hooks.on_step_end(step)
                train_loss, _ = net.loss(X_train, y_train)
                val_loss, val_acc = net.loss(X_val, y_val)
                hooks.on_epoch_end(epoch, {"val_loss": val_loss, "train_loss": train_loss,
                                           "val_acc": val_acc})
                es = hooks.state.get("early_stopping", {})
                progress.update(epoch, f"lr {opt.param_groups[0]['lr']:<7g} val_loss {val_loss:.4f}"
                                f" acc {val_acc:.2f} wait {es.get('wait', 0)}/{hooks.get(PATIENCE)}")
                if stop.wait(pace):
                    hooks.request_stop("interrupted")
                if hooks.should_stop:
                    break
        except KeyboardInterrupt:
            hooks.request_stop("interrupted")
        hooks.on_train_end()
        return _finish(prefs, hooks, net, X_val, y_val, epoch + 1, config, store, progress)


def _edit(config: Path, key: str, value: Any, why: str, prefs: Client,
          progress: _Progress) -> None:
    """Rewrite one line of the file, then wait (briefly) for the watcher to pick it up."""
    name = key.rsplit(".", 1)[1]
    lines = config.read_text().splitlines()
    text = "\n".join(f"{name} = {value}" if line.startswith(name + " ") else line
                     for line in lines) + "\n"
    progress.say(f"demo edits {config.name}: {name} = {value}  ({why})")
    _write(config, text)
    if not _wait_for(lambda: prefs.get(key) == value, timeout=10.0):
        progress.say("  (the watcher has not seen the edit yet; it will land when it does)")


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def draw_curve(curves: dict[str, list[tuple[int, float]]], changes: list[Any],
               best_epoch: int | None, stopped_at: int, reason: str) -> Any:
    """The demo's figure: epochs numbered as the console numbers them (1, 2, ...), losses on
    the left axis and accuracy on the right, each applied change a dashed line labelled above
    the plot, the best epoch and the stop marked, the legend below the axes: nothing is
    written over a curve."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "mlprefs-sdk[plot]"') from None
    fig = Figure(figsize=(9, 5.4), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display needed
    fig.subplots_adjust(top=0.82, bottom=0.25, left=0.08, right=0.9)
    loss_ax = fig.add_subplot()
    acc_ax = loss_ax.twinx()
    colors = {"train_loss": "tab:blue", "val_loss": "tab:green", "val_acc": "tab:orange"}
    for metric, points in sorted(curves.items()):
        ax = acc_ax if "acc" in metric else loss_ax
        ax.plot([e + 1 for e, _ in points], [v for _, v in points], marker=".",  # console: 1-based
                color=colors.get(metric), label=metric.replace("_", " "))
    val = dict(curves.get("val_loss", []))
    if best_epoch is not None and best_epoch - 1 in val:
        loss_ax.plot([best_epoch], [val[best_epoch - 1]], marker="*", markersize=16,
                     color="gold", markeredgecolor="black", linestyle="none",
                     label=f"best: epoch {best_epoch}, val loss {val[best_epoch - 1]:.4f}")
    loss_ax.axvline(stopped_at, color="tab:red", linestyle=":", linewidth=2,
                    label=f"stopped after epoch {stopped_at}: {_short(reason)}")
    # A change applied during epoch i (1-based) lands between epochs i-1 and i.
    last_x = None
    for i, change in enumerate(changes):
        x = change.iteration + 0.5
        loss_ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        lift = 0.11 if last_x is not None and x - last_x < stopped_at / 4 and i % 2 else 0.02
        last_x = x
        loss_ax.annotate(f"{change.key.rsplit('.', 1)[-1]} {change.old} → {change.new}",
                         xy=(x, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(x, 1.0 + lift), textcoords=("data", "axes fraction"),
                         fontsize=8, ha="center", va="bottom", color="dimgrey",
                         arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.8})
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss (binary cross-entropy)")
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.set_ylim(0, 1.05)
    loss_ax.set_xlim(0.5, stopped_at + 1)
    loss_ax.grid(True, alpha=0.3)
    fig.suptitle("mlprefs demo: live edits of mlprefs.toml, then early stopping")
    handles = [h for ax in (loss_ax, acc_ax) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def _short(reason: str) -> str:
    return reason if len(reason) <= 90 else reason[:87] + "..."


def _finish(prefs: Client, hooks: Any, net: TinyNet, X_val: Any, y_val: Any, epochs: int,
            config: Path, store: Path, progress: _Progress) -> DemoResult:
    from .plugins.early_stopping import best

    reason = hooks.stop_reason or f"the --epochs limit ({epochs}) was reached"
    progress.say(f"stopped after epoch {epochs}: {reason}")
    best_iteration, best_value = best(hooks)
    if best_iteration is not None and hooks.get("ml.training.restore_best_weights"):
        val_loss, val_acc = net.loss(X_val, y_val)
        progress.say(f"restored the best weights, from epoch {best_iteration} (val_loss "
                     f"{best_value:.4f}, accuracy {val_acc:.2f})")
    plot: str | None = str(config.parent / "learning_curve.png")
    try:
        figure = draw_curve(prefs.curves.get(hooks.run_id),
                            [c for c in run_changes(prefs.store, hooks.run_id) if c.applied],
                            best_iteration, epochs, reason)
        figure.savefig(plot, format="png")
        progress.say(f"learning curve with the change points marked: {plot}")
    except ImportError:
        plot = None
        progress.say('no plot: plotting needs matplotlib: pip install "mlprefs-sdk[plot]"')
    progress.say(f"explore it: mlprefs --store {store} curves show {hooks.run_id}")
    return DemoResult(hooks.run_id, epochs, hooks.stop_reason, str(config), str(store), plot)
