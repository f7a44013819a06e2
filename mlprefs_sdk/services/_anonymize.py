"""Record anonymisation: ids become keyed pseudonyms, PII fields go, free text is scrubbed.

Scrubbing is a safety net for identifiers that slip into free text (a support note holding an
e-mail address), not a guarantee: names and addresses in prose are not detected. Fields known
to hold personal data belong in `pii_fields`, where they are removed whole.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["anonymize_record", "scrub"]

log = logging.getLogger(__name__)

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                  r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
IPV6_CANDIDATE = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"
                            r"(?![0-9A-Fa-f:])")
# 13 to 19 digits, optionally grouped by single spaces or dashes: every payment-card layout.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
# A phone number: optional +country code, optional (area), digit groups split by space . or -.
# Not part of a decimal number: no "." before it, no ".<digit>" after it.
PHONE = re.compile(r"(?<![\w+.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}"
                   r"(?:[ .-]?\d{2,5}){1,5}(?!\w|\.\d)")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DECIMAL = re.compile(r"\d+\.\d+")

REDACTED_EMAIL, REDACTED_IP, REDACTED_CARD, REDACTED_PHONE = "[email]", "[ip]", "[card]", "[phone]"


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text.strip(":") if text.count("::") == 0 else text)
    except ValueError:
        return text
    return REDACTED_IP


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    marked = text.startswith(("+", "("))
    enough = 9 <= digits <= 15 or (marked and 7 <= digits <= 15)
    if not enough or ISO_DATE.match(text) or DECIMAL.fullmatch(text):
        return text
    return REDACTED_PHONE


def scrub(text: str) -> str:
    """Replace e-mail addresses, IP addresses, card-like numbers and phone numbers."""
    if not any(c.isdigit() or c == "@" for c in text):
        return text
    text = EMAIL.sub(REDACTED_EMAIL, text)
    text = IPV4.sub(REDACTED_IP, text)
    if "::" in text or text.count(":") >= 2:
        text = IPV6_CANDIDATE.sub(_ipv6, text)
    text = CARD.sub(REDACTED_CARD, text)
    return PHONE.sub(_phone, text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    return value


def anonymize_record(record: Mapping[str, Any], id_fields: Iterable[str],
                     pii_fields: Iterable[str], pseudonym: Callable[[str], str]) -> dict[str, Any]:
    """A new dict: id fields pseudonymised, PII fields removed, every other string scrubbed.

    A field named in id_fields or pii_fields that the record lacks is an error: a typo there
    would otherwise leave personal data in place without a word.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"anonymize expects a mapping (dict) record, got {type(record).__name__}")
    ids, pii = _names("id_fields", id_fields), _names("pii_fields", pii_fields)
    both = set(ids) & set(pii)
    if both:
        raise ValueError(f"anonymize: field(s) {sorted(both)} are in both id_fields and "
                         "pii_fields; an id is pseudonymised, PII is removed - choose one")
    missing = [f for f in (*ids, *pii) if f not in record]
    if missing:
        raise KeyError(f"anonymize: field(s) {missing} are not in the record "
                       f"(it has {sorted(map(str, record))}); nothing was anonymised")
    out: dict[str, Any] = {}
    for name, value in record.items():
        if name in pii:
            continue
        if name in ids:
            out[name] = _pseudonymise(name, value, pseudonym)
        else:
            out[name] = _scrub_value(value)
    return out


def _names(label: str, fields: Iterable[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        return (fields,)  # anonymize(r, id_fields="user_id") means the one field, not its letters
    names = tuple(fields)
    for f in names:
        if not isinstance(f, str):
            raise TypeError(f"anonymize: {label} must name fields as strings, got {f!r}")
    return names


def _pseudonymise(name: str, value: Any, pseudonym: Callable[[str], str]) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"anonymize: id field {name!r} holds a {type(value).__name__}; "
                        "ids must be str or int")
    return pseudonym(str(value))
