"""Rank-consistent preferences under torch.distributed: rank 0 decides, every rank follows.

Each rank that watches its own files applies an edit on its own clock (step 1041 on one,
1043 on another) and the replicas diverge. With `training_hooks(distributed="auto")` and a
process group of more than one rank, the driver hands its boundaries to a RankSync instead:

- Every `ml.training.distributed_sync_steps` steps all ranks join one broadcast from rank 0
  of a one-element int64 tensor: the length of what rank 0 has to send, 0 when nothing is
  pending. Only a non-zero length is followed by the payload itself, JSON bytes in a uint8
  tensor (never pickle). Rank 0's own edits wait for that step too, so every rank applies the
  same ChangeSets at the same global step.
- Epoch ends and evaluations are sync points as well. There rank 0 also sends its metrics,
  so every rank's plugins (early stopping's best value, the learning curve) work from the
  same numbers; the stop decision is taken on rank 0 alone and shared, and a stop asked for
  with `request_stop` on any rank stops them all: every rank stops at the same epoch.
- The other ranks hold rank 0's values in two places: the driver's view, which `hooks.get`
  and `hooks.enabled` read, is rank 0's values, sources and flags exactly; and their client
  gets an extra runtime layer of rank 0's values whose sources read "rank 0: <source>", so
  `prefs.get` and `prefs.explain` on that rank agree with rank 0 while the run lasts. Their
  own file edits stay shadowed until the run ends.

torch is imported here only once a process group is known to be initialised, so importing
mlprefs_sdk or the driver never imports it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from .errors import MlprefsError
from .layers import Entry, Layer
from .values import Change, ChangeSet, Source

if TYPE_CHECKING:
    from .handle import ClientHandle
    from .resolve import View
    from .training import TrainingHooks

__all__ = ["RankSync", "join_ranks", "SYNC_STEPS", "encode_changes", "decode_changes"]

log = logging.getLogger(__name__)

SYNC_STEPS = "ml.training.distributed_sync_steps"
OTHER_RANK = "a stop was requested on another rank"


def join_ranks(hooks: TrainingHooks, distributed: Any) -> RankSync | None:
    """The run's synchroniser, or None when this process applies its own changes.

    distributed: "auto" (the default process group, when one with more than one rank is
    initialised), True (the same, but a missing process group is an error), a
    torch.distributed ProcessGroup, or False/None (off).
    """
    if distributed is None or distributed is False:
        _warn_if_ranks(hooks)
        return None
    if isinstance(distributed, str) and distributed != "auto":
        raise ValueError(f"training_hooks(distributed={distributed!r}): use 'auto', True, False "
                         f"or a torch.distributed process group")
    group = None if distributed is True or isinstance(distributed, str) else distributed
    dist = _initialised()
    if dist is None:
        if distributed == "auto":
            return None
        raise MlprefsError(
            f"training_hooks(distributed={distributed!r}) needs an initialised torch.distributed "
            f"process group (torch.distributed.init_process_group, torchrun, a DDP strategy); "
            f"use distributed='auto' to run alone when there is none")
    if dist.get_world_size(group) < 2:
        return None
    return RankSync(hooks, dist, group)


def _initialised() -> Any:
    """torch.distributed if some process group is up; never imports torch itself."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def _warn_if_ranks(hooks: TrainingHooks) -> None:
    dist = _initialised()
    if dist is not None and dist.get_world_size() > 1:
        log.warning("mlprefs: run %s on rank %d of %d has distributed=False: each rank applies "
                    "preference edits on its own clock, so the replicas may train with different "
                    "values; pass training_hooks(..., distributed='auto')", hooks.run_id,
                    dist.get_rank(), dist.get_world_size())


# -- the wire format: plain JSON -----------------------------------------------------
def _source(source: Source) -> list[Any]:
    return [source.layer, source.path, source.line, source.detail]


def encode_changes(batches: Iterable[ChangeSet]) -> list[list[list[Any]]]:
    """ChangeSets as JSON-ready lists: [[key, old, new, [layer, path, line, detail]], ...]."""
    return [[[c.key, c.old, c.new, _source(c.source)] for c in cs] for cs in batches]


def decode_changes(data: Iterable[Iterable[list[Any]]]) -> list[ChangeSet]:
    return [ChangeSet(tuple(Change(key, old, new, Source(*src)) for key, old, new, src in cs))
            for cs in data]


def _snapshot(view: View) -> dict[str, Any]:
    """Every value of a view with its source and the effective flags (ml.features.* gated)."""
    return {"values": dict(view.values),
            "sources": {key: _source(src) for key, src in view.sources.items()},
            "enabled": dict(view.enabled)}


def _plain(value: Any) -> Any:
    """JSON's fallback: a 0-d tensor or numpy scalar becomes its number, anything else its repr."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return repr(value)


def _encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=_plain).encode()


class RankSync:
    """One run's collectives: rank 0 sends, every rank applies, at the same global step."""

    def __init__(self, hooks: TrainingHooks, dist: Any, group: Any = None) -> None:
        torch = sys.modules["torch"]  # a process group is up, so torch is loaded already
        self.hooks, self.group = hooks, group
        self._dist, self._torch = dist, torch
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        if self.rank < 0:
            raise MlprefsError(f"training_hooks(distributed={group!r}): this process (global rank "
                               f"{dist.get_rank()}) is not a member of that process group")
        self.leader = self.rank == 0
        self._src = 0 if group is None else dist.get_global_rank(group, 0)
        on_gpu = dist.get_backend(group) == "nccl"  # NCCL moves CUDA tensors only
        self._device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        self._header = torch.zeros(1, dtype=torch.int64, device=self._device)
        self.every = 0  # steps between checks: rank 0's value, known from train start
        self._sent: View | None = None  # rank 0: the view whose values the other ranks hold
        self._warned: set[str] = set()
        # One run id: rank 0's. The other ranks keep their own rows under "<id>.rank<k>".
        base = self._exchange({"run_id": hooks.run_id} if self.leader else None)["run_id"]
        hooks.run_id = base if self.leader else f"{base}.rank{self.rank}"
        log.info("mlprefs: run %s: rank %d of %d follows rank 0's preferences", hooks.run_id,
                 self.rank, self.world)

    # -- the driver's boundaries ----------------------------------------------------
    def train_start(self) -> None:
        """Every rank starts from rank 0's values, counters and plugin state."""
        hooks = self.hooks
        message = None
        if self.leader:
            self._sent = hooks.view
            message = {"snapshot": _snapshot(self._sent), "state": hooks.state,
                       "counters": [hooks.iteration, hooks.steps, hooks.checks, hooks.resumed]}
        received = self._exchange(message)
        if not self.leader:
            hooks.iteration, hooks.steps, hooks.checks, hooks.resumed = received["counters"]
            hooks.state = received["state"]
            hooks.view = self._follow(received["snapshot"])
            self._drop_local()
        self.every = hooks.get(SYNC_STEPS)

    def step_end(self) -> None:
        """Every `every` steps: one small broadcast; the payload only when a change is pending."""
        if self.every and self.hooks.steps % self.every == 0:
            self._sync()

    def boundary(self, metrics: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """An epoch end or evaluation: pending changes, then rank 0's metrics, on every rank."""
        extra = None
        if self.leader and metrics is not None:
            extra = {"metrics": {str(name): value for name, value in metrics.items()}}
        return self._sync(extra).get("metrics")

    def decide(self, decide_here: Callable[[], None]) -> None:
        """Rank 0's plugins decide; a stop asked for on any rank stops every rank."""
        hooks, torch = self.hooks, self._torch
        if self.leader:
            decide_here()
        reason = (hooks.stop_reason or "").encode() if self.leader else b""
        flags = torch.tensor([hooks.stop_reason is not None, len(reason)], dtype=torch.int64,
                             device=self._device)
        self._dist.all_reduce(flags, op=self._dist.ReduceOp.MAX, group=self.group)
        stop, size = (int(x) for x in flags.tolist())
        if stop:
            hooks.request_stop(self._bytes(size, reason).decode() if size else OTHER_RANK)

    def close(self) -> None:
        """The run is over: this rank's client goes back to its own values."""
        if not self.leader:
            self.hooks.client.set_rank_layer(None, origin="the end of distributed run "
                                             + self.hooks.run_id)

    # -- internals ------------------------------------------------------------------
    def _sync(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        message = self._outbox(extra) if self.leader else None
        received = self._exchange(message)
        if "changes" in received:
            batches = decode_changes(received["changes"])
            view = self._sent if self.leader else self._follow(received["snapshot"])
            assert view is not None  # rank 0 set _sent when it sent these changes
            if not self.leader:
                self._drop_local()
            self.hooks.apply_changes(batches, view)
            self.every = self.hooks.get(SYNC_STEPS)
        elif not self.leader and self.hooks.changes_pending:
            self._drop_local()
        return received

    def _outbox(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """Rank 0's message: its pending ChangeSets with the view they lead to, plus `extra`."""
        hooks = self.hooks
        message = dict(extra or {})
        if hooks.changes_pending:
            batches = hooks.drain_changes()
            if batches:
                self._sent = hooks.client.view
                message["changes"] = encode_changes(batches)
                message["snapshot"] = _snapshot(self._sent)
        return message

    def _exchange(self, message: Mapping[str, Any] | None) -> dict[str, Any]:
        """Rank 0's message, decoded from the same bytes on every rank ({} when it had none)."""
        data = _encode(message) if self.leader and message else b""
        header = self._header
        if self.leader:
            header.fill_(len(data))
        self._dist.broadcast(header, src=self._src, group=self.group)
        size = int(header.item())
        if not size:
            return {}
        return json.loads(self._bytes(size, data))

    def _bytes(self, size: int, data: bytes) -> bytes:
        torch = self._torch
        if self.leader:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self._device)
        else:
            buf = torch.empty(size, dtype=torch.uint8, device=self._device)
        self._dist.broadcast(buf, src=self._src, group=self.group)
        return data if self.leader else bytes(buf.cpu().tolist())

    def _follow(self, snapshot: Mapping[str, Any]) -> View:
        """Rank 0's view for this rank's driver; its client holds the same values."""
        values = snapshot["values"]
        sources = {key: Source(*src) for key, src in snapshot["sources"].items()}
        client = self.hooks.client
        self._hold(client, values, sources)
        return attrs.evolve(client.view, values=MappingProxyType(values),
                            sources=MappingProxyType(sources), enabled=dict(snapshot["enabled"]))

    def _hold(self, client: ClientHandle, values: Mapping[str, Any], sources: Mapping[str, Source]) -> None:
        """Put rank 0's values into this rank's client as a runtime layer that says so."""
        catalog = client.catalog
        entries = {key: Entry(value, Source("runtime", detail=f"rank 0: {sources[key]}"))
                   for key, value in values.items() if key in catalog}
        client.set_rank_layer(Layer("runtime", entries), origin="rank 0's preferences")
        view = client.view  # rejected here (the error went to on_error): this rank's own values
        mine = view.values
        for key, value in values.items():
            if key in catalog and mine.get(key) != value and key not in self._warned:
                self._warned.add(key)
                log.warning("mlprefs: run %s: rank 0 has %s = %r (%s) but this rank's client keeps "
                            "%r (%s); the training hooks use rank 0's value", self.hooks.run_id, key,
                            value, sources[key], mine.get(key), view.sources.get(key))

    def _drop_local(self) -> None:
        """This rank's own changes never reach its driver; its deferred callbacks still run."""
        dropped = self.hooks.drain_changes()
        if dropped:
            log.debug("mlprefs: run %s: %d local change set(s) left to rank 0's values",
                      self.hooks.run_id, len(dropped))

    def __repr__(self) -> str:
        return f"<RankSync rank {self.rank}/{self.world} every {self.every} steps>"
