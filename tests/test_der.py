"""ca/der.py, the hot paths' DER framing, is asn1crypto's encoding byte for byte."""
from __future__ import annotations

import datetime as dt

from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from hypothesis import given, settings
from hypothesis import strategies as st

from ca import der


@given(st.integers(min_value=0, max_value=70_000))
@settings(max_examples=60, deadline=None)
def test_framing_short_and_long_lengths(length: int) -> None:
    contents = bytes(length % 251 for _ in range(length))
    assert der.tlv(0x30, contents) == asn1_core.Sequence(contents=contents).dump()
    assert der.tlv(0x04, contents) == asn1_core.OctetString(contents).dump()
    assert der.tlv(0x30, contents[:3], contents[3:]) == der.tlv(0x30, contents)


@given(st.integers(min_value=-(2 ** 200), max_value=2 ** 200))
@settings(max_examples=200, deadline=None)
def test_integers(value: int) -> None:
    assert der.integer(value) == asn1_core.Integer(value).dump()


@given(st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(9999, 12, 31),
                    timezones=st.just(dt.timezone.utc)))
@settings(max_examples=200, deadline=None)
def test_times(value: dt.datetime) -> None:
    assert der.generalized_time(value) == asn1_core.GeneralizedTime(value).dump()
    value = value.replace(microsecond=0)
    digits = value.strftime("%Y%m%d%H%M%S")
    choice = "utc_time" if value.year < 2050 else "general_time"
    assert der.time_from_digits(digits) == asn1_x509.Time({choice: value}).dump()
