"""The one cattrs converter, built here and used at the boundary (user attrs classes and
dataclasses)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from .errors import ValidationError
from .values import Problem, Source, format_value

__all__ = ["converter", "fields", "structure"]

T = TypeVar("T")


@functools.cache
def converter() -> Any:
    """Import cattrs only when first needed; extra keys are errors, so typos surface, and a
    scalar that does not fit its field is an error rather than quietly converted (cattrs
    alone would make int(0.001) == 0, str(5) == "5", bool("false") == True)."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _to_int)
    conv.register_structure_hook(float, _to_float)
    conv.register_structure_hook(bool, _exactly(bool))
    conv.register_structure_hook(str, _exactly(str))
    return conv


def _to_int(value: Any, _: type) -> int:
    """An int, or a float with nothing after the point (a value like 0.5 would be cut)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{format_value(value)} is not a whole number")


def _to_float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{format_value(value)} is not a number")


def _exactly(kind: type) -> Any:
    def hook(value: Any, _: type) -> Any:
        if type(value) is not kind:
            raise ValueError(f"{format_value(value)} is not a {kind.__name__}")
        return value

    return hook


def fields(cls: type) -> list[tuple[str, bool]]:
    """(name, required) for each field of an attrs class or a dataclass; TypeError otherwise."""
    if attrs.has(cls):
        return [(f.name, f.default is attrs.NOTHING) for f in attrs.fields(cls) if f.init]
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return [(f.name, f.default is dataclasses.MISSING
                 and f.default_factory is dataclasses.MISSING)
                for f in dataclasses.fields(cls) if f.init]
    raise TypeError(f"load() needs an attrs class or a dataclass, not {cls!r}")


def structure(data: Mapping[str, Any], cls: type[T], prefix: str) -> T:
    """Build the user's class; a field whose type cannot hold the value is a ValidationError."""
    import cattrs

    try:
        return converter().structure(dict(data), cls)
    except cattrs.BaseValidationError as e:
        problems = []
        for message in cattrs.transform_error(e, path=prefix):
            reason, _, where = message.rpartition(" @ ")
            key = where.replace("['", ".").replace("']", "").replace("[", ".").rstrip("]")
            field = key[len(prefix) + 1 :].split(".", 1)[0]
            value = data.get(field)
            problems.append(Problem(
                key=key, value=value, rule="type",
                message=f"{key} = {format_value(value)} does not fit {cls.__name__}.{field}: {reason}",
                source=Source("runtime", detail=f"load({cls.__name__})")))
        raise ValidationError(problems) from None
