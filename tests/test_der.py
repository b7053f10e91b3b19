"""ca/der.py, the hot paths' DER framing, is asn1crypto's encoding byte for byte."""
from __future__ import annotations

import datetime as dt

import pytest
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
    for edge in (-129, -128, -1, 0, 127, 128, -2 ** 63, 2 ** 63):  # where octet counts change
        assert der.integer(edge) == asn1_core.Integer(edge).dump()


@given(st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(9999, 12, 31),
                    timezones=st.just(dt.timezone.utc)))
@settings(max_examples=200, deadline=None)
def test_times(value: dt.datetime) -> None:
    assert der.generalized_time(value) == asn1_core.GeneralizedTime(value).dump()
    value = value.replace(microsecond=0)
    digits = value.strftime("%Y%m%d%H%M%S")
    choice = "utc_time" if value.year < 2050 else "general_time"
    assert der.time_from_digits(digits) == asn1_x509.Time({choice: value}).dump()


@pytest.mark.parametrize("digits", ["2026112410300", "202611241030000", "2026-11-24 10:3",
                                    "2026112410300\u0661", "\u00b2026112410300"])
def test_times_refuse_what_are_not_fourteen_ascii_digits(digits: str) -> None:
    with pytest.raises(ValueError):
        der.time_from_digits(digits)


@given(st.integers(min_value=0, max_value=70_000), st.binary(max_size=3))
@settings(max_examples=60, deadline=None)
def test_reading_back_what_was_framed(length: int, after: bytes) -> None:
    element = der.tlv(0x04, bytes(length))
    data = b"\x30" + element + after
    assert der.read(data, 1, 1 + len(element)) == (0x04, len(element) - length + 1,
                                                   1 + len(element))
    for cut in (0, 1, len(element) - 1):
        if cut < len(element):
            try:
                der.read(data, 1, 1 + cut)
            except ValueError:
                continue
            raise AssertionError(f"read past a cut at {cut}")


def test_reading_refuses_what_der_forbids() -> None:
    for bad in (b"\x04\x80\x00\x00",  # indefinite length
                b"\x04\x81\x05hello",  # long form for a short length
                b"\x04\x82\x00\x80" + bytes(128),  # a leading zero length octet
                b"\x1f\x22\x01\x00",  # multi-octet identifier
                b"\x04"):
        try:
            der.read(bad, 0, len(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad[:6].hex()}")


@given(st.binary(max_size=6))
@settings(max_examples=300, deadline=None)
def test_read_unsigned_takes_exactly_the_der_non_negative_integers(contents: bytes) -> None:
    value = der.read_unsigned(contents)
    if value is None:
        assert not contents or contents[0] & 0x80 or der.integer(
            int.from_bytes(contents, "big", signed=True)) != der.tlv(der.INTEGER, contents)
    else:
        assert value >= 0 and der.integer(value) == der.tlv(der.INTEGER, contents)


def test_read_unsigned_at_the_octet_boundaries() -> None:
    for boundary in (0, 1, 127, 128, 255, 256, 2 ** 63):
        assert der.read_unsigned(der.integer(boundary)[2:]) == boundary
    assert der.read_unsigned(b"\x00\x7f") is None and der.read_unsigned(b"\x80") is None


def _nested(depth: int, *, indefinite: bool = False, long_form: bool = False) -> bytes:
    body = b"\x05\x00"
    for _ in range(depth):
        if indefinite:
            body = b"\x30\x80" + body + b"\x00\x00"
        elif long_form:
            body = b"\x30\x82" + len(body).to_bytes(2, "big") + body
        else:
            body = der.tlv(0x30, body)
    return body


@pytest.mark.parametrize("framing", [{}, {"indefinite": True}, {"long_form": True}],
                         ids=["der", "indefinite", "long-form"])
def test_nested_deeper_counts_constructed_levels_in_any_ber_framing(framing: dict) -> None:
    """The general request readers refuse what nests past MAX_NESTING before asn1crypto reads
    it (its cost grows with the square of the depth; past Python's limit it raised
    RecursionError): every BER framing of the same nesting counts alike, and siblings, an
    OCTET STRING's contents and broken framing do not add depth."""
    limit = der.MAX_NESTING
    assert not der.nested_deeper(_nested(limit, **framing), limit)
    assert der.nested_deeper(_nested(limit + 1, **framing), limit)
    assert der.nested_deeper(b"\x30\x00" + _nested(limit + 1, **framing), limit)
    siblings = der.tlv(0x30, *[_nested(limit - 1, **framing)] * 40)
    assert not der.nested_deeper(siblings, limit)
    assert not der.nested_deeper(der.tlv(0x04, _nested(limit + 5)), limit)
    assert not der.nested_deeper(b"\x30\x85\xff\xff\xff\xff\xff", limit)
    assert not der.nested_deeper(b"", limit) and not der.nested_deeper(b"\x30", limit)
