"""Property tests: any input validates or raises ValidationError, and string coercion round-trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlprefs_sdk import Client, ValidationError
from mlprefs_sdk.catalog import Catalog, KeySpec

CATALOG = Catalog.packaged()
KEYS = sorted(CATALOG)

# Anything a caller, a TOML file or a JSON row could hand over.
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.decimals() | st.fractions() | st.complex_numbers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)

numbers = st.one_of(st.integers(min_value=-10**6, max_value=10**6),
                    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))


@st.composite
def key_specs(draw) -> KeySpec:
    """Registered-key definitions of every type, with and without limits and choices."""
    type_name = draw(st.sampled_from(["bool", "int", "float", "str"]))
    kwargs: dict = {}
    if type_name == "bool":
        default = draw(st.booleans())
    elif type_name == "str":
        choices = draw(st.none() | st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
        default = draw(st.sampled_from(choices)) if choices else draw(st.text(min_size=1, max_size=8))
        kwargs = {"choices": choices, "nonempty": draw(st.booleans()) and bool(default.strip())}
    else:
        lo, hi = sorted(draw(st.lists(numbers, min_size=2, max_size=2)))
        if type_name == "int":
            lo, hi = math.ceil(lo), math.floor(hi)
            assume(lo <= hi)
            default = draw(st.integers(min_value=lo, max_value=hi))
        else:
            default = draw(st.floats(min_value=lo, max_value=hi))
        kwargs = {"min": lo if draw(st.booleans()) else None, "max": hi if draw(st.booleans()) else None}
    return KeySpec.build("team.prop.key", type_name, default, **kwargs)


def _valid_values(spec: KeySpec):
    if spec.type is bool:
        return st.booleans()
    if spec.type is str:
        if spec.choices:  # a nonempty key's choices may include " ", which it refuses
            return st.sampled_from([c for c in spec.choices if c.strip() or not spec.nonempty])
        return st.text(min_size=1).filter(lambda s: s.strip() or not spec.nonempty)
    lo = spec.min if spec.min is not None else -1e9
    hi = spec.max if spec.max is not None else 1e9
    if spec.type is int:
        return st.integers(min_value=math.ceil(lo), max_value=math.floor(hi))
    return st.floats(min_value=lo, max_value=hi, allow_nan=False)


@given(spec=key_specs(), value=anything, from_string=st.booleans())
def test_check_either_validates_or_raises_validation_error(spec, value, from_string):
    try:
        typed = spec.check(value, from_string=from_string)
    except ValidationError as e:
        assert e.problems and e.problems[0].key == spec.key
        return
    assert type(typed) is spec.type
    assert spec.check(typed) == typed  # a checked value passes again unchanged


@given(key=st.sampled_from(KEYS), value=anything | st.text(), from_string=st.booleans())
def test_built_in_keys_validate_or_raise_validation_error(key, value, from_string):
    spec = CATALOG[key]
    try:
        typed = spec.check(value, from_string=from_string)
    except ValidationError:
        return
    assert type(typed) is spec.type


def _as_text(value) -> str:
    """How a user would write the value in an env variable or on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@given(data=st.data(), spec=key_specs())
def test_string_coercion_round_trips(data, spec):
    value = data.draw(_valid_values(spec))
    typed = spec.check(value)
    assert spec.check(_as_text(typed), from_string=True) == typed


@given(key=st.sampled_from(KEYS), data=st.data())
def test_built_in_values_round_trip_through_strings(key, data):
    spec = CATALOG[key]
    typed = spec.check(data.draw(_valid_values(spec)))
    again = spec.check(_as_text(typed), from_string=True)
    assert again == typed and type(again) is type(typed)


@pytest.fixture
def memory_client(home):
    with Client(store=":memory:", discover=False, env=False) as client:
        yield client


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=anything)
def test_set_either_stores_the_value_or_raises_validation_error(memory_client, key, value):
    before = memory_client.snapshot()
    try:
        entry = memory_client.set(key, value)
    except ValidationError:
        assert memory_client.snapshot() == before
        return
    assert memory_client.get(key) == entry.new == CATALOG[key].check(value)
    memory_client.unset(key)


# -- every key of any TOML document gets the line it is written on -------------------------

key_part = st.text(st.characters(codec="utf-8", exclude_characters="\x7f"), min_size=1, max_size=6)
toml_values = st.one_of(st.integers(), st.booleans(), st.text(max_size=8),
                        st.lists(st.integers(), max_size=3), st.just("a\n]b\n[c = 1"))
documents = st.recursive(
    st.dictionaries(key_part, toml_values, min_size=1, max_size=4),
    lambda inner: st.dictionaries(key_part, inner | toml_values, min_size=1, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(data=documents)
def test_every_key_gets_the_line_it_is_written_on(data):
    """tomli_w writes each leaf as `key = value` on its own line under its table header."""
    import tomli_w

    from mlprefs_sdk._tomllines import path_lines
    from mlprefs_sdk.tomlfile import _walk

    text = tomli_w.dumps(data, multiline_strings=True)
    lines = path_lines(text)
    rows = text.split("\n")
    for path, _ in _walk(data):
        key = tomli_w.dumps({path[-1]: 0}).split(" = ")[0]
        assert rows[lines[path] - 1].startswith(key + " = "), (path, text)
