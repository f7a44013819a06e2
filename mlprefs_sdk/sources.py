"""What a Client reads: which file, store scope or mapping feeds which layer slot.

A Client resolves its view from the layer slots (values.LAYERS). `Sources` owns everything
behind those slots: the files and where project discovery starts, the store scopes and their
ids, the environment, the runtime overrides (the constructor's, the `override()` stack and
the values rank 0 sends under torch.distributed). It reads any slots on request (`read`) and
tells the watcher which files feed which slots (`groups`): the file <-> slot map is written
here once, so a changed path is never turned into a slot name and back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import layers as L
from .catalog import Catalog
from .errors import MlprefsError
from .locations import Locations, find_project_file
from .templates import BUILTIN_TEMPLATES

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Sources", "SCOPES", "STORE_SLOTS", "POLICY_SLOTS", "Group"]

SCOPES = ("user", "project")  # the store scopes a Client writes
STORE_SLOTS = ("template", "user", "project")  # the slots read from the store
POLICY_SLOTS = ("org", "locked")  # one file, the policy, holds both tables
PROJECT_FILE_NAMES = ("mlprefs.toml", "pyproject.toml")

Group = tuple[tuple[str, ...], list[str]]  # (slots, paths): files read together into those slots


class Sources:
    """The inputs of one Client's layers; `read(slots)` turns them into layers."""

    def __init__(self, locations: Locations, store: Store, user: str,
                 files: Iterable[str | os.PathLike[str]] = (), discover: bool = True,
                 env: bool = True, overrides: Mapping[str, Any] | None = None) -> None:
        self.locations, self.store, self.user = locations, store, user
        self.files = tuple(os.path.abspath(os.fspath(f)) for f in files)
        self.discover_from = os.getcwd() if discover else None
        self.use_env = env
        self.project: str | None = None
        self.template: str | None = None
        self.project_file: tuple[str, str | None] | None = None
        self._overrides = dict(overrides or {})
        self._override_stack: list[tuple[Mapping[str, Any], str]] = []  # (values, source detail)
        self.rank_layers: tuple[L.Layer, ...] = ()  # rank 0's values on other ranks (distributed.py)
        self._defaults: tuple[Catalog | None, L.Layer | None] = (None, None)
        self._discovery_dirs: list[str] = []  # only ever grows: a deleted project file can come back

    # -- scopes ---------------------------------------------------------------------
    def scope_id(self, scope: str) -> str:
        """Whose values a store scope holds: the user's login or the project's name."""
        if scope == "user":
            return self.user
        if scope == "project":
            if not self.project:
                raise MlprefsError("scope 'project' needs a project: pass Client(project=...), "
                                   "set MLPREFS_PROJECT, or name it in mlprefs.toml [project]")
            return self.project
        raise ValueError(f"scope must be 'user' or 'project', not {scope!r}")

    # -- runtime values ---------------------------------------------------------------
    def push_override(self, frame: tuple[Mapping[str, Any], str]) -> None:
        self._override_stack.append(frame)

    def drop_override(self, frame: tuple[Mapping[str, Any], str]) -> None:
        self._override_stack = [f for f in self._override_stack if f is not frame]

    # -- reading ----------------------------------------------------------------------
    def read(self, slots: Iterable[str], catalog: Catalog) -> dict[str, tuple[L.Layer, ...]]:
        """The named slots' layers, read now (the policy file fills org and locked at once)."""
        out: dict[str, tuple[L.Layer, ...]] = {}
        for slot in slots:
            if slot in POLICY_SLOTS:
                if slot not in out:
                    out.update(zip(POLICY_SLOTS, ((layer,) for layer in
                                                  L.policy_layers(self.locations.policy)), strict=True))
            else:
                out[slot] = self._read_slot(slot, catalog)
        return out

    def defaults(self, catalog: Catalog) -> L.Layer:
        """The defaults layer, built once per catalog: 10,000 registered keys stay cheap."""
        layer = self._defaults[1]
        if self._defaults[0] is not catalog or layer is None:
            layer = L.defaults_layer(catalog)
            self._defaults = (catalog, layer)
        return layer

    def set_defaults(self, catalog: Catalog, layer: L.Layer) -> None:
        """A key was registered: `layer` is the defaults layer of the new catalog."""
        self._defaults = (catalog, layer)

    def read_project_file(self) -> L.Layer:
        """Discovery runs again on every read: a project file created, moved or deleted since
        the Client started is seen by reload() and the watcher."""
        if self.discover_from is not None:
            self.project_file = find_project_file(self.discover_from)
        if self.project_file is None:
            return L.Layer("project-file", {})
        path, section = self.project_file
        return L.file_layer("project-file", path, section)

    def _read_slot(self, slot: str, catalog: Catalog) -> tuple[L.Layer, ...]:
        if slot == "defaults":
            return (self.defaults(catalog),)
        if slot == "template":
            if not self.template:
                return (L.Layer("template", {}),)
            known = {**self.store.saved_templates(), **BUILTIN_TEMPLATES}  # a built-in name wins
            return (L.template_layer(self.template, known),)
        if slot in SCOPES:
            if slot == "project" and not self.project:
                return (L.Layer("project", {}),)
            scope_id = self.scope_id(slot)
            return (L.store_layer(slot, scope_id, self.store.scope_values(slot, scope_id)),)
        if slot == "user-file":
            return (L.file_layer("user-file", self.locations.user_file),)
        if slot == "project-file":
            return (self.read_project_file(),)
        if slot == "file":
            return tuple(L.file_layer("file", f) for f in self.files)
        if slot == "env":
            return (L.env_layer() if self.use_env else L.Layer("env", {}),)
        if slot == "runtime":
            entries = dict(L.mapping_layer("runtime", self._overrides, detail="override").entries)
            for values, detail in self._override_stack:
                entries.update(L.mapping_layer("runtime", values, detail=detail).entries)
            return (L.Layer("runtime", entries), *self.rank_layers)
        raise AssertionError(slot)

    # -- what the watcher follows ---------------------------------------------------------
    def groups(self) -> list[Group]:
        """The files behind each file-fed slot, existing or not: read together into those slots.

        With discovery on, the project-file group holds every candidate from the working
        directory up to the project file in use (see `_discovery_files`).
        """
        loc = self.locations
        plan: list[Group] = [(POLICY_SLOTS, [loc.policy]), (("user-file",), [loc.user_file])]
        if self.files:
            plan.append((("file",), list(self.files)))
        if self.discover_from is not None:
            plan.append((("project-file",), self._discovery_files(self.discover_from)))
        elif self.project_file is not None:
            plan.append((("project-file",), [self.project_file[0]]))
        return plan

    def watched_paths(self) -> list[str]:
        """Every TOML file behind a layer, existing or not (what the watcher follows)."""
        paths = [self.locations.policy, self.locations.user_file, *self.files]
        if self.project_file is not None:
            paths.append(self.project_file[0])
        elif self.discover_from is not None:  # where a new project file would be found
            paths.append(os.path.join(self.discover_from, "mlprefs.toml"))
        return paths

    def _discovery_files(self, start: str) -> list[str]:
        """mlprefs.toml and pyproject.toml from the working directory up to the project file.

        Creating a nearer mlprefs.toml, adding [tool.mlprefs] to the pyproject.toml, or
        deleting the file in use changes which file is the project layer, as for a new Client.
        The directories followed only ever grow, so a deleted project file can come back.
        """
        here = Path(start).resolve()
        chain = [here, *here.parents]
        current = self.project_file
        stop_at: Path | None = Path(current[0]).parent if current else None
        if stop_at is None or stop_at not in chain:
            stop_at = next((d for d in chain if (d / "pyproject.toml").is_file()), here)
        for d in chain[: chain.index(stop_at) + 1] if stop_at in chain else [here]:
            if str(d) not in self._discovery_dirs:
                self._discovery_dirs.append(str(d))
        files = [os.path.join(d, name) for d in self._discovery_dirs for name in PROJECT_FILE_NAMES]
        if current is not None and current[0] not in files:
            files.append(current[0])
        return files
