"""The key catalog: every known key's type, default and constraints (defaults.toml + registered)."""

from __future__ import annotations

import builtins
import heapq
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from .errors import MlprefsError, UnknownKeyError, ValidationError
from .values import Problem

__all__ = ["KeySpec", "Catalog", "InvalidValueError", "KEY_PATTERN"]

log = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
ACCESS_LEVELS = ("user", "admin", "superadmin")
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


class InvalidValueError(ValidationError):
    """One value breaks its own key's type or range; callers add where it came from."""

    def __init__(self, key: str, value: Any, reason: str, rule: str) -> None:
        self.key, self.value, self.reason, self.rule = key, value, reason, rule
        super().__init__([Problem.for_value(key, value, None, reason, rule)])


@attrs.frozen
class KeySpec:
    """One key's contract. `check` is the only place values are typed and range-checked."""

    key: str
    type: type
    default: Any
    description: str = ""
    min: float | int | None = None
    max: float | int | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False
    access: str = "user"
    sensitive: bool = False
    line: int | None = None  # line of the key's table in defaults.toml

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    def check(self, value: Any, *, from_string: bool = False) -> Any:
        """Return the value typed for this key, or raise InvalidValueError naming the rule.

        Any input either passes or raises InvalidValueError (a ValidationError), nothing else.
        """
        typed = value
        if from_string and isinstance(value, str) and self.type is not str:
            typed = self._parse(value)
        typed = self._typed(typed, value)
        # A string read from env or the command line is shown parsed (64, not "64"); any
        # other value as the caller wrote it (2, not 2.0).
        shown = typed if typed is not value and isinstance(value, str) else value
        if self.choices is not None and typed not in self.choices:
            options = ", ".join(str(c) for c in self.choices)
            raise InvalidValueError(self.key, shown, f"is not one of the allowed values: {options}",
                               "choices")
        if self.nonempty and not typed.strip():
            raise InvalidValueError(self.key, shown, "must not be empty", "nonempty")
        if self.type is int or self.type is float:
            if self.type is float and not math.isfinite(typed):
                raise InvalidValueError(self.key, shown, "is not a finite number", "type")
            if self.min is not None and typed < self.min:
                raise InvalidValueError(self.key, shown, f"is below the minimum {self.min!r}", "min")
            if self.max is not None and typed > self.max:
                raise InvalidValueError(self.key, shown, f"is above the maximum {self.max!r}", "max")
        return typed

    def _typed(self, value: Any, original: Any) -> Any:
        """Exact builtin types; numbers of other classes (numpy scalars) are converted, but a
        bool is never a number."""
        t = self.type
        if type(value) is t:
            return value
        if t is bool:
            if isinstance(value, bool):
                return value
        elif isinstance(value, bool):
            pass
        elif t is int:
            if isinstance(value, numbers.Integral):
                return int(value)
        elif t is float:
            if isinstance(value, numbers.Real) and type(value).__name__ != "bool_":
                try:
                    return float(value)
                except OverflowError:
                    raise InvalidValueError(self.key, original, "is too large for a float",
                                       "type") from None
        elif isinstance(value, str):
            return str(value)
        raise InvalidValueError(self.key, original,
                           f"has type {type(value).__name__}, expected {self.type_name}", "type")

    def _parse(self, text: str) -> Any:
        """Strings from env and the CLI: "true"/"false", "1e-3", "64"."""
        s = text.strip()
        try:
            if self.type is bool:
                if s.lower() in TRUE_WORDS:
                    return True
                if s.lower() in FALSE_WORDS:
                    return False
                raise ValueError(s)
            if self.type is int:
                return int(s)
            return float(s)
        except ValueError:
            raise InvalidValueError(self.key, text, f"cannot be read as {self.type_name}",
                               "type") from None

    @classmethod
    def build(
        cls,
        key: str,
        type: builtins.type | str,
        default: Any,
        *,
        description: str = "",
        min: float | None = None,
        max: float | None = None,
        choices: Iterable[Any] | None = None,
        nonempty: bool = False,
        access: str = "user",
        sensitive: bool = False,
        line: int | None = None,
    ) -> KeySpec:
        """Validate a key definition itself (name, type, default within its own rules)."""
        if not KEY_PATTERN.match(key):
            raise ValueError(
                f"invalid key name {key!r}: use lower-case dotted segments like 'team.eval.every_n_steps'"
            )
        t = TYPES.get(type) if isinstance(type, str) else type
        if t not in TYPE_NAMES:
            raise ValueError(f"key {key!r}: type must be one of bool, int, float, str, not {type!r}")
        if access not in ACCESS_LEVELS:
            raise ValueError(f"key {key!r}: access must be one of {', '.join(ACCESS_LEVELS)}")
        spec = cls(
            key=key,
            type=t,
            default=default,
            description=description,
            min=min,
            max=max,
            choices=tuple(choices) if choices is not None else None,
            nonempty=nonempty,
            access=access,
            sensitive=sensitive,
            line=line,
        )
        try:
            return attrs.evolve(spec, default=spec.check(default))
        except InvalidValueError as e:
            raise ValueError(f"key {key!r}: default {default!r} {e.reason}") from None


def _packaged_defaults() -> tuple[str, str]:
    """defaults.toml inside the installed package (the wheel puts it there), else at the
    repository top level (a source checkout or an editable install).

    Plain paths first: importlib.resources costs ~10 ms of import time and is needed only
    when the package is imported from a zip.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "defaults.toml"),
                 os.path.join(os.path.dirname(here), "defaults.toml")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return path, f.read()
    from importlib import resources

    res = resources.files("mlprefs_sdk").joinpath("defaults.toml")
    try:
        return str(res), res.read_text("utf-8")
    except OSError as e:
        raise MlprefsError(f"the packaged key catalog defaults.toml is missing ({e}); "
                           f"reinstall mlprefs-sdk") from None


class Catalog:
    """Known keys: the packaged ones plus any registered by the user or plugins."""

    def __init__(self, specs: Iterable[KeySpec] = (), path: str | None = None) -> None:
        self._specs: dict[str, KeySpec] = {s.key: s for s in specs}
        self.path = path
        self._index: _Index | None = None  # built by the first suggest() on a large catalog

    @classmethod
    def packaged(cls) -> Catalog:
        path, text = _packaged_defaults()
        return cls.from_toml(text, path)

    @classmethod
    def from_toml(cls, text: str, path: str) -> Catalog:
        import tomllib

        from .tomlfile import key_lines

        data = tomllib.loads(text)
        lines = key_lines(text)
        specs = []
        for key, table in _tables(data):
            table = dict(table)
            specs.append(KeySpec.build(key, table.pop("type"), table.pop("default"),
                                       line=lines.get(key), **table))
        return cls(specs, path)

    def copy(self) -> Catalog:
        return Catalog(self._specs.values(), self.path)

    def register(self, spec: KeySpec) -> None:
        old = self._specs.get(spec.key)
        if old is not None and attrs.evolve(old, line=None) != attrs.evolve(spec, line=None):
            raise ValueError(f"key {spec.key!r} is already defined differently")
        if spec.key.startswith("ml.") and old is None:
            raise ValueError(f"key {spec.key!r}: the ml. namespace is reserved for built-in keys")
        self._specs[spec.key] = spec
        self._index = None

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def __getitem__(self, key: str) -> KeySpec:
        try:
            return self._specs[key]
        except KeyError:
            raise UnknownKeyError(key, self.suggest(key)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def specs(self) -> Mapping[str, KeySpec]:
        return self._specs

    def suggest(self, key: str, n: int = 3) -> list[str]:
        """Nearest known keys: a typo in the whole key, a near or partial last segment in any
        section (`ml.training.batch` -> ml.performance.batch_size), initials (`lr`), closest
        first."""
        import difflib

        tail = key.rsplit(".", 1)[-1].lower()
        words = set(tail.split("_")) - {""}
        whole, last = difflib.SequenceMatcher(), difflib.SequenceMatcher()
        whole.set_seq2(key)  # seq2 is the one SequenceMatcher caches
        last.set_seq2(tail)
        scored = []
        for known in self._specs if len(self._specs) <= SCAN_ALL else self._candidates(key):
            known_tail = known.rsplit(".", 1)[-1]
            score = _ratio(whole, known, 0.75)
            if score < 0.75:
                tail_score = _ratio(last, known_tail, 0.8)
                if tail_score >= 0.8:
                    score = 0.7 + tail_score / 10
                elif words and len(tail) >= 3 and words <= set(known_tail.split("_")):
                    score = 0.6  # every word of the name appears in the known one
                elif len(tail) >= 2 and tail == "".join(w[:1] for w in known_tail.split("_")):
                    score = 0.55  # initials: lr -> learning_rate
                else:
                    continue
            scored.append((score, known))
        scored.sort(key=lambda sk: (-sk[0], sk[1]))
        return [k for _, k in scored[:n]]


    def _candidates(self, key: str) -> list[str]:
        """The keys of a large catalog worth scoring for `key`, found without scoring all.

        Scoring every one of 10,000 registered keys took 0.1-0.6 s per suggestion; this
        keeps the keys that share the most letter pairs with the key or its last segment,
        plus those whose last segment holds every word of it, or has it as initials.
        """
        index = self._index
        if index is None:
            index = self._index = _Index(self._specs)
        tail = key.rsplit(".", 1)[-1].lower()
        whole, last = _pairs(key), _pairs(tail)
        near = _top(whole, index.whole)
        near_tail = _top(last, index.tail)
        words = [w for w in tail.split("_") if w]
        by_words = (set.intersection(*(index.by_word.get(w, set()) for w in words))
                    if words and len(tail) >= 3 else set())
        found = [index.keys[i] for i in near + near_tail]
        found += sorted(by_words)[:CANDIDATES] + index.by_initials.get(tail, [])[:CANDIDATES]
        return list(dict.fromkeys(found))


SCAN_ALL = 500  # up to this many keys, suggest() scores every one
CANDIDATES = 64  # beyond it, how many keys each cheap pre-filter keeps


class _Index:
    """Letter pairs, words and initials of every key's last segment, for _candidates."""

    def __init__(self, specs: Mapping[str, Any]) -> None:
        self.keys = list(specs)
        self.whole = [_pairs(key) for key in self.keys]
        self.tail = [_pairs(key.rsplit(".", 1)[-1]) for key in self.keys]
        self.by_word: dict[str, set[str]] = {}
        self.by_initials: dict[str, list[str]] = {}
        for key in self.keys:
            tail = key.rsplit(".", 1)[-1]
            words = tail.split("_")
            for word in words:
                self.by_word.setdefault(word, set()).add(key)
            self.by_initials.setdefault("".join(w[:1] for w in words), []).append(key)


def _pairs(text: str) -> frozenset[str]:
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


def _top(pairs: frozenset[str], known: list[frozenset[str]]) -> list[int]:
    """Indexes of the CANDIDATES entries of known sharing the most letter pairs (C-speed maps)."""
    shared = list(map(len, map(pairs.intersection, known)))
    return heapq.nlargest(CANDIDATES, range(len(shared)), key=shared.__getitem__)


def _ratio(matcher: Any, text: str, cutoff: float) -> float:
    """difflib ratio, skipping the full computation when the cheap upper bounds miss cutoff."""
    matcher.set_seq1(text)
    if matcher.real_quick_ratio() < cutoff or matcher.quick_ratio() < cutoff:
        return 0.0
    return matcher.ratio()


def _tables(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Leaf tables of a nested dict: a table holding "type" is one key definition."""
    for name, value in data.items():
        if not isinstance(value, dict):
            continue
        key = f"{prefix}.{name}" if prefix else name
        if "type" in value and "default" in value:
            yield key, value
        else:
            yield from _tables(value, key)
