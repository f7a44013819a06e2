"""The one cattrs converter, built here and used at the boundary (user attrs classes)."""

from __future__ import annotations

import functools

__all__ = ["converter"]


@functools.cache
def converter():
    """Import cattrs only when first needed; extra keys are errors, so typos surface."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)
    return conv
