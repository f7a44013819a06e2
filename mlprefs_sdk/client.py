"""The Client: resolves every key from the layers, caches an immutable view, swaps it whole."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from . import layers as L
from ._log import ensure_visible
from .attachments import Attachments
from .catalog import Catalog, InvalidValueError, KeySpec
from .errors import ConfigFileError, LockedKeyError, MlprefsError, UnknownKeyError, ValidationError
from .events import Dispatcher, Subscription
from .locations import Locations, locate
from .resolve import View, add_key, resolve
from .sources import SCOPES, Sources
from .values import LAYERS, UNSET, Change, ChangeSet, Explanation, HistoryEntry, Problem, Source

if TYPE_CHECKING:
    from .events import Dispatcher as _Events
    from .handle import ClientHandle
    from .store import Store
    from .watch import Watcher

__all__ = ["Client"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING: Any = object()


@functools.lru_cache(maxsize=1)
def _packaged_catalog() -> Catalog:
    return Catalog.packaged()


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


class Client(Attachments):
    """What are my ML preferences right now? Reads never lock: they hit an immutable view."""

    def __init__(
        self,
        project: str | None = None,
        user: str | None = None,
        store: str | None = None,
        files: Iterable[str | os.PathLike[str]] = (),
        template: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        discover: bool = True,
        env: bool = True,
        watch: bool = False,
    ) -> None:
        ensure_visible()  # a run's changes and stops show without logging set-up (_log.py)
        self.locations: Locations = locate(store)
        self.user = user or _login()
        self._catalog = _packaged_catalog().copy()
        self._events = Dispatcher()
        self._lock = threading.RLock()  # serialises rebuilds; get() never takes it
        self._watcher: Watcher | None = None
        self._closed = False
        self._sections: dict[str, Any] = {}
        self._services: dict[type, Any] = {}
        from .store import open_store  # sqlite3 and json load with the first Client

        self._store: Store = open_store(self.locations.store)
        self.sources = Sources(self.locations, self._store, self.user, files=files,
                               discover=discover, env=env, overrides=overrides)
        self._slots: dict[str, tuple[L.Layer, ...]] = {}  # the layers the view was resolved from
        self._installs = 0     # views installed so far, and reads of the store scopes among
        self._store_reads = 0  # them: _write() tells by these whether what it checked is current
        try:
            project_layer = self.sources.read_project_file()
            meta = project_layer.meta
            self.sources.project = (project or os.environ.get("MLPREFS_PROJECT") or meta.get("name")
                                    or None)
            self.sources.template = template or meta.get("template") or None
            self._slots["project-file"] = (project_layer,)
            self._slots.update(self._read_slots(s for s in LAYERS if s != "project-file"))
            view, problems = self._resolve()
            if problems:
                raise _error(problems)
        except BaseException:
            self._store.close()  # a Client that failed to start holds no connection
            raise
        self._install(view)
        self._log_warnings(view)
        self._pm: Any = None
        if watch:
            self.watch()

    # -- reading: the hot path --------------------------------------------------
    def get(self, key: str, default: Any = _MISSING) -> Any:
        try:
            return self._values[key]
        except KeyError:
            if self._plugin_key(key):
                return self._values[key]
            if default is not _MISSING:
                return default
            raise UnknownKeyError(key, self._catalog.suggest(key)) from None

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            if self._plugin_key(key):
                return self._values[key]
            raise UnknownKeyError(key, self._catalog.suggest(key)) from None

    def _plugin_key(self, key: str) -> bool:
        """Plugins register their keys when they first load: load them on a miss, then look again."""
        if self._pm is not None or key.startswith("ml."):
            return False
        self.plugin_manager
        return key in self._values

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def enabled(self, key: str) -> bool:
        """A bool key's value; ml.features.* flags are off unless ml.global.enabled."""
        try:
            return self._enabled[key]
        except KeyError:
            if key in self._values:
                raise TypeError(f"{key} is a {self._catalog[key].type_name} key, not a flag") from None
            raise UnknownKeyError(key, self._catalog.suggest(key)) from None

    def snapshot(self) -> Mapping[str, Any]:
        """Every key's value, immutable; later changes build a new mapping."""
        return self._view.values

    def section(self, prefix: str) -> Any:  # its fields depend on the catalog: Any
        """A frozen attrs object with one typed field per key below prefix (e.g. "ml.training")."""
        cache, view = self._sections, self._view  # a swap replaces both; never mix two views
        obj = cache.get(prefix)
        if obj is None:
            from .sections import build_section

            obj = build_section(view.catalog, view.values, prefix)
            if self._view is view:
                cache[prefix] = obj
        return obj

    def load(self, cls: type[T], prefix: str) -> T:
        """Structure the user's attrs class or dataclass from the keys below prefix (its fields only)."""
        from ._convert import fields, structure

        values = self._view.values
        data = {}
        for name, required in fields(cls):
            key = f"{prefix}.{name}"
            if key in values:
                data[name] = values[key]
            elif required:
                raise UnknownKeyError(key, self._catalog.suggest(key))
        return structure(data, cls, prefix)

    def explain(self, key: str) -> Explanation:
        if key not in self._values and not self._plugin_key(key):
            raise UnknownKeyError(key, self._catalog.suggest(key))
        return self._view.explain(key)

    def tables(self, name: str) -> list[tuple[Source, Mapping[str, Any]]]:
        """The `[name]` table (e.g. "tune") of every TOML layer that has one, lowest layer first."""
        return [(Source(layer.name, layer.path), layer.tables[name])
                for slot in LAYERS for layer in self._slots.get(slot, ()) if name in layer.tables]

    def spec(self, key: str) -> KeySpec:
        return self._catalog[key]

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def view(self) -> View:
        """The resolved view in place now (immutable: values, sources, flags, locked keys)."""
        return self._view

    @property
    def project(self) -> str | None:
        return self.sources.project

    @property
    def template(self) -> str | None:
        return self.sources.template

    @property
    def project_file(self) -> tuple[str, str | None] | None:
        """(path, table) of the project file in use, or None (discovery runs on every read)."""
        return self.sources.project_file

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self._view.warnings

    # -- writing ------------------------------------------------------------------
    def set(self, key: str, value: Any, scope: str = "user", reason: str | None = None) -> HistoryEntry:
        """Validate (key, type, range, cross-key rules), then write store and history at once."""
        entries = self.set_many({key: value}, scope, reason)
        return entries[0] if entries else self.history(key, limit=1)[0]

    def unset(self, key: str, scope: str = "user", reason: str | None = None) -> HistoryEntry | None:
        self._catalog[key]
        entries = self._write(scope, [(key, UNSET)], reason)
        return entries[0] if entries else None

    def set_many(self, values: Mapping[str, Any], scope: str = "user", reason: str | None = None,
                 from_string: bool = False) -> list[HistoryEntry]:
        """Several keys in one write and one validation; from_string: parse "0.1", "true"...
        as the CLI and files give them. Returns the history entries of what changed."""
        self._check_writable(values.items())
        scope_id = self.sources.scope_id(scope)
        source = Source(scope, detail=f"{scope} {scope_id!r}")
        typed, problems = [], []
        for key, value in values.items():
            try:
                typed.append((key, self._catalog[key].check(value, from_string=from_string)))
            except InvalidValueError as e:
                problems.append(Problem.for_value(key, e.value, source, e.reason, e.rule))
        if problems:
            raise ValidationError(problems)
        return self._write(scope, typed, reason)

    def _check_writable(self, changes: Iterable[tuple[str, Any]]) -> None:
        """Locked keys first (before any other rule), then unknown keys."""
        changes = list(changes)
        locked = self._view.locked
        for key, value in changes:
            if key in locked and value is not UNSET:
                entry = locked[key]
                raise LockedKeyError(key, value, entry.value, entry.source)
        for key, _ in changes:
            if key not in self._catalog:
                raise UnknownKeyError(key, self._catalog.suggest(key))

    def _write(self, scope: str, changes: list[tuple[str, Any]], reason: str | None) -> list[HistoryEntry]:
        """Write to a store scope; the result is validated inside the write transaction.

        Both store scopes are re-read under the store's write lock, so the cross-key rules see
        what other processes committed meanwhile: two writers cannot each pass validation
        against a stale view and together store a combination that breaks a rule.

        Neither the wait for the store's write lock nor the transaction holds this client's
        lock, so reloads, reads and history() carry on while another process holds the store
        (and a change callback that writes cannot deadlock with a waiting write). Once the
        commit is done, the store scopes are read again under the client lock and swapped in.
        """
        self._check_writable(changes)
        scope_id = self.sources.scope_id(scope)
        checked: list[tuple[dict[str, tuple[L.Layer, ...]], View, int]] = []

        def check() -> None:
            installs = self._installs  # before _resolve copies the slots
            fresh = self._read_slots(SCOPES)
            view, problems = self._resolve(fresh)
            if problems:
                raise _error(problems)
            checked[:] = [(fresh, view, installs)]

        reads = self._store_reads
        entries = self._store.write(scope, scope_id, changes, self.user, reason, check=check)
        # What the last check() read under the write's locks is what its commit left: install
        # it without reading the store again (nor resolving again, if no other layer changed),
        # unless this client installed a read of the store since the write began (its
        # watcher's), which may hold later commits of others.
        origin = "a set() by this client"
        with self._lock:
            if not checked or reads != self._store_reads:
                self._apply(self._read_slots(SCOPES), origin)
            elif checked[0][2] != self._installs:
                self._apply(checked[0][0], origin)
            else:
                self._install_slots(checked[0][0], checked[0][1])
        return entries

    _set_many = set_many  # the name it had before it was public

    def history(self, key: str | None = None, limit: int = 100, scope: str | None = None) -> list[HistoryEntry]:
        """Audit entries, newest first."""
        if key is not None and key not in self._catalog:
            raise UnknownKeyError(key, self._catalog.suggest(key))
        return self._store.history(key=key, scope=scope, limit=limit)

    def rollback(self, key: str, scope: str = "user", to: int | None = None) -> HistoryEntry | None:
        """Restore the value history entry `to` set (recorded as a new entry)."""
        if to is None:
            raise ValueError("rollback needs to=<history entry id>")
        entry = self._store.history_entry(int(to))
        scope_id = self.sources.scope_id(scope)
        if entry is None or entry.key != key or entry.scope != scope or entry.scope_id != scope_id:
            raise MlprefsError(f"history entry #{to} is not a change of {key} in scope "
                               f"{scope} {scope_id!r}; see prefs.history({key!r})")
        reason = f"rollback to #{to}"
        if entry.new is None:
            return self.unset(key, scope=scope, reason=reason)
        return self.set_many({key: entry.new}, scope, reason)[0]

    @contextlib.contextmanager
    def override(self, values: Mapping[str, Any], detail: str | None = None) -> Iterator[Client]:
        """Runtime values for the block (validated first); the previous view returns on exit.

        `detail` says where they come from in explain() (e.g. "optuna trial 3 of study s").
        """
        frame = (dict(values), detail or "override")
        with self._lock:
            self.sources.push_override(frame)
            try:
                self.refresh(("runtime",), origin="override", strict=True)
            except MlprefsError:
                self.sources.drop_override(frame)
                raise
        try:
            yield self
        finally:
            with self._lock:
                self.sources.drop_override(frame)
                self.refresh(("runtime",), origin="override")

    def register(self, key: str, type: type | str, default: Any, *, min: float | None = None,
                 max: float | None = None, choices: Iterable[Any] | None = None,
                 description: str = "", access: str = "user", sensitive: bool = False,
                 nonempty: bool = False) -> KeySpec:
        """Add a key outside the ml. namespace; it then behaves exactly like a built-in one."""
        spec = KeySpec.build(key, type, default, min=min, max=max, choices=choices,
                             description=description, access=access, sensitive=sensitive,
                             nonempty=nonempty)
        with self._lock:
            if key in self._catalog and self._catalog[key] == spec:
                return spec
            catalog = self._catalog.copy()
            catalog.register(spec)
            (defaults,) = self._slots["defaults"]
            defaults = attrs.evolve(defaults, entries={**defaults.entries,
                                                       key: L.default_entry(catalog, spec)})
            slots = {**self._slots, "defaults": (defaults,)}
            view, problems = add_key(self._view, catalog,
                                     [layer for slot in LAYERS for layer in slots[slot]], spec)
            if problems:
                raise _error(problems)
            self._catalog = catalog
            self._slots["defaults"] = (defaults,)
            self.sources.set_defaults(catalog, defaults)
            self._swap(view, keys=(key,))
        return spec

    # -- change events ----------------------------------------------------------
    def on_change(self, pattern: str, callback: Callable[[ChangeSet], Any],
                  deliver: str = "immediate") -> Subscription:
        """Call back with one ChangeSet per applied edit for keys matching the glob."""
        return self._events.subscribe(pattern, callback, deliver)

    def on_error(self, callback: Callable[[MlprefsError], Any]) -> Callable[[], None]:
        """Reload and validation errors (the last good view stays in place)."""
        return self._events.listen("error", callback)

    def apply_pending(self) -> int:
        """Deliver deferred ChangeSets now, on this thread."""
        return self._events.apply_pending()

    def reload(self) -> ChangeSet:
        """Re-read every file and the store now; on a bad source keep the view and raise."""
        cs = self.refresh(tuple(LAYERS), origin="reload", strict=True)
        assert cs is not None  # only accept= can veto a refresh
        return cs

    # -- rebuilding the view ----------------------------------------------------
    def _read_slots(self, slots: Iterable[str]) -> dict[str, tuple[L.Layer, ...]]:
        return self.sources.read(slots, self._catalog)

    def _resolve(self, replace: Mapping[str, tuple[L.Layer, ...]] | None = None) -> tuple[View, list[Problem]]:
        slots = {**self._slots, **(replace or {})}
        layers = [layer for slot in LAYERS for layer in slots[slot]]
        return resolve(self._catalog, layers)

    def refresh(self, slots: Iterable[str], origin: str, strict: bool = False,
                accept: Callable[[bool], bool] | None = None) -> ChangeSet | None:
        """Re-read the named layers, resolve, and swap the view in if it is valid.

        A bad source never replaces the last good view: the error goes to on_error callbacks
        (and the log) and, when strict, is raised to the caller too. `accept(valid)`, asked
        after the read, may veto it (None is returned, no one is told): the watcher drops a
        read that raced with a write, or a bad one that may still be a save in progress.
        """
        with self._lock:
            return self._apply(self._read_slots(slots), origin, strict, accept)

    def _apply(self, fresh: dict[str, tuple[L.Layer, ...]], origin: str, strict: bool = False,
               accept: Callable[[bool], bool] | None = None) -> ChangeSet | None:
        """refresh() once the layers are read (under self._lock)."""
        view, problems = self._resolve(fresh)
        if accept is not None and not accept(not problems):
            return None
        if problems:
            err = _error(problems)
            log.error("mlprefs: %s rejected; keeping the last good preferences:\n%s", origin, err)
            self._events.fire("error", err)
            if strict:
                raise err
            return ChangeSet(())
        return self._install_slots(fresh, view)

    def _install_slots(self, fresh: dict[str, tuple[L.Layer, ...]], view: View) -> ChangeSet:
        """Keep the layers a valid view was resolved from, and swap that view in."""
        self._slots.update(fresh)
        if not fresh.keys().isdisjoint(SCOPES):
            self._store_reads += 1
        return self._swap(view)

    def set_rank_layer(self, layer: L.Layer | None, origin: str) -> bool:
        """Hold rank 0's values as an extra runtime layer (None: drop it); False when the
        new layer was rejected (the error went to on_error) and the previous one stays."""
        with self._lock:
            previous = self.sources.rank_layers
            if layer is None and not previous:
                return True
            self.sources.rank_layers = () if layer is None else (layer,)
            self.refresh(("runtime",), origin=origin)
            if layer is not None and not any(held is layer for held in self._slots["runtime"]):
                self.sources.rank_layers = previous
                return False
            return True

    def _swap(self, view: View, keys: Iterable[str] | None = None) -> ChangeSet:
        """Install the view and announce what changed (only among `keys`, when given)."""
        old = self._view
        self._installs += 1
        self._install(view)
        new_values, old_values = view.values, old.values
        if keys is None:
            # A key's type is fixed by its spec, so plain equality finds every change.
            keys = () if new_values == old_values else new_values
        changes = tuple(
            Change(key, old_values.get(key), new_values[key], view.sources[key])
            for key in keys
            if key not in old_values or old_values[key] != new_values[key]
        )
        cs = ChangeSet(changes)
        if changes:
            self._events.emit(cs)
            if self._pm is not None:
                self._pm.hook.mlprefs_preferences_changed(client=self, changes=cs)
        return cs

    def _install(self, view: View) -> None:
        self._view = view
        self._sections = {}
        self._enabled = view.enabled
        self._values = view.values  # last: get() reads only this

    def _log_warnings(self, view: View) -> None:
        """At most MAX_LISTED lines, then a count: 100,000 unregistered keys log 21 lines."""
        from .errors import cap_lines

        for line in cap_lines([w.message for w in view.warnings],
                              more="warnings (every one is in Client.warnings)"):
            log.warning("mlprefs: %s", line)

    # -- lifecycle ----------------------------------------------------------------
    def watch(self) -> Client:
        """Start hot reload; returns once the watcher is armed (docs/hot-reload.md)."""
        from .watch import Watcher

        with self._lock:
            if self._watcher is None or not self._watcher.alive:
                self._watcher = Watcher(self)
                self._watcher.start()
        return self

    @property
    def watcher(self) -> Watcher | None:
        """The hot-reload Watcher (paths, backend, alive), or None before watch()."""
        return self._watcher

    @property
    def closed(self) -> bool:
        return self._closed

    def watched_paths(self) -> list[str]:
        """Every TOML file behind a layer, existing or not (what the watcher follows)."""
        return self.sources.watched_paths()

    # -- fork (the watcher holds these across os.fork(): see _watchfork) ---------------
    def fork_locks(self) -> list[Any]:
        """The locks a watcher thread takes: this client's and its dispatcher's (the store
        holds its own across fork(): see store.py)."""
        return [self._lock, self._events.lock]

    def renew_fork_locks(self) -> None:
        """In a forked child: fresh locks for the ones a thread that is not there still holds."""
        self._lock = threading.RLock()
        self._events.renew_lock()

    def forget_watcher(self, watcher: Watcher) -> None:
        """In a forked child: the parent's watcher thread is not here; watch() starts a new one."""
        if self._watcher is watcher:
            self._watcher = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for service in self._services.values():
            close = getattr(service, "close", None)
            if close is not None:
                close()
        self._store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<mlprefs Client user={self.user!r} project={self.project!r} "
                f"store={self._store.shown!r} "  # no password
                f"keys={len(self._values)}>")

    # -- what the collaborators hold -------------------------------------------------
    @property
    def store(self) -> Store:
        return self._store

    @property
    def events(self) -> _Events:
        """This client's dispatcher: change subscriptions and named events (error, alert, ...)."""
        return self._events


def _error(problems: list[Problem]) -> ValidationError:
    """One error for every problem; a file that does not parse makes it a ConfigFileError."""
    for p in problems:
        if p.rule == "toml" and p.source is not None:
            reason = p.message.split("cannot parse TOML: ", 1)[-1]
            column = int(p.source.detail.split()[-1]) if p.source.detail else None
            return ConfigFileError(p.source.path or "", p.source.line, column, reason, problems)
    return ValidationError(problems)


if TYPE_CHECKING:
    _HANDLE: type[ClientHandle] = Client  # services hold a Client through this narrow handle
