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
    """Import cattrs only when first needed; extra keys are errors, so typos surface."""
    import cattrs

    return cattrs.Converter(forbid_extra_keys=True)


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
