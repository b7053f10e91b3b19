"""Durations as operators type them (ca/durations.py)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.durations import format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [("7d", 604800), ("12h", 43200), ("1d12h", 129600),
                                          ("90m", 5400), ("45s", 45), (" 2H ", 7200),
                                          ("500ms", 0.5), ("1s500ms", 1.5), ("100us", 0.0001),
                                          ("1ms1us", 0.001001)])
def test_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "-1d", "7 d", "1.5h", "1h1d", "5m5m", "7days",
                                  "1w", "1ms1s", "5 ms", "1.5ms", "3ns"])
def test_refuses_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10 ** 15))
def test_format_reads_back(micros: int) -> None:
    text = format_duration(timedelta(microseconds=micros))
    assert parse_duration(text) == timedelta(microseconds=micros)
