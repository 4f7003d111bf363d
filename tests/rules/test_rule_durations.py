"""``parse_duration``: the one accepted notation for intervals in Python, YAML and the CLI."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilient.rules import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("1.5h", 5400),
        ("2d", 172800),
        ("1d2h3m4s", 93784),
        (".5m", 30),
        ("0.25s", 0.25),
    ],
)
def test_parses_number_unit_parts(text, seconds):
    assert parse_duration(text, name="interval") == timedelta(seconds=seconds)


def test_timedelta_passes_through():
    assert parse_duration(timedelta(minutes=7), name="interval") == timedelta(minutes=7)


@pytest.mark.parametrize(
    "text", ["", "30", "m", "30x", "30M", "1m1h", "1h1h", "1h 30m", " 30m", "-5m", "1e3s"]
)
def test_malformed_text_names_the_key_and_the_accepted_form(text):
    with pytest.raises(ValueError, match=r'my_key must be .*"1h30m"'):
        parse_duration(text, name="my_key")


def test_overflowing_duration_is_a_value_error():
    with pytest.raises(ValueError, match="my_key is too large"):
        parse_duration("999999999999d", name="my_key")


@pytest.mark.parametrize("value", ["0s", "0h0m", timedelta(0), timedelta(seconds=-1)])
def test_non_positive_duration_refused(value):
    with pytest.raises(ValueError, match="my_key must be a positive duration"):
        parse_duration(value, name="my_key")


@pytest.mark.parametrize("value", [30, 1.5, None, ["30m"]])
def test_wrong_type_refused(value):
    with pytest.raises(TypeError, match="my_key"):
        parse_duration(value, name="my_key")
