"""A few DER encoders for the hot paths: framing, times, integers.

asn1crypto builds and checks every structure tincay signs, but it pays for its generality on
every call (an object per field, dump by dump). Where a structure is built thousands of times
a second or a million times in a row (OCSP answers, CRL entries, RFC 3161 tokens) its parts are
framed here instead, from constant pieces encoded once with asn1crypto; every caller's output
is tested byte for byte against asn1crypto's.
"""
from __future__ import annotations

from datetime import datetime

from ca.clock import ensure_utc

__all__ = ["BOOLEAN", "INTEGER", "OCTET_STRING", "OID", "SEQUENCE", "header", "tlv", "integer",
           "generalized_time", "time_from_digits", "read", "read_unsigned", "nested_deeper",
           "MAX_NESTING", "UNREADABLE"]

# universal identifier octets the hot-path readers compare against
BOOLEAN, INTEGER, OCTET_STRING, OID, SEQUENCE = 0x01, 0x02, 0x04, 0x06, 0x30

# What asn1crypto raises on a client's bytes it cannot read, beside ValueError: TypeError,
# KeyError, IndexError and OverflowError on malformed contents, AttributeError for the
# universal types it declares but cannot decode (a REAL, an ObjectDescriptor or an EXTERNAL
# where an ANY or an unknown field sits: ``'Real' object has no attribute 'native'``), and
# RecursionError for elements nested a few hundred deep (asn1crypto parses and converts them
# recursively; a few kilobytes of ``30 82 ...`` reach Python's limit). The request readers
# turn each into the protocol's own refusal, never a logged traceback.
UNREADABLE = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
              RecursionError)
# How deep the general request readers let asn1crypto go: a TimeStampReq nests 4 deep, an OCSP
# request with a signature and its certificates about 12. asn1crypto's cost grows with the
# square of the depth (each level re-checks its subtree): 600 levels took 120 ms of CPU.
MAX_NESTING = 32


def header(tag: int, length: int) -> bytes:
    """Identifier and definite length in the shortest form X.690 8.1.3 allows; ``tag`` is a
    single identifier octet (class, constructed bit and number below 31)."""
    if length < 0x80:
        return bytes((tag, length))
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets


def tlv(tag: int, *contents: bytes) -> bytes:
    """One DER element of ``tag`` around the concatenated ``contents``."""
    body = contents[0] if len(contents) == 1 else b"".join(contents)
    length = len(body)
    if length < 0x80:
        return bytes((tag, length)) + body
    return header(tag, length) + body


def integer(value: int) -> bytes:
    """An INTEGER (two's complement, minimal octets: -128 is one octet, 128 two)."""
    magnitude = value if value >= 0 else ~value
    return tlv(INTEGER, value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True))


def generalized_time(value: datetime) -> bytes:
    """A GeneralizedTime in UTC, ``YYYYMMDDHHMMSS[.f]Z``: a fraction only for non-zero
    microseconds, without trailing zeros (X.690 11.7; RFC 3161 genTime)."""
    v = ensure_utc(value)
    text = f"{v.year:04d}{v.month:02d}{v.day:02d}{v.hour:02d}{v.minute:02d}{v.second:02d}"
    if v.microsecond:
        text += "." + f"{v.microsecond:06d}".rstrip("0")
    return tlv(0x18, (text + "Z").encode())


def time_from_digits(digits: str) -> bytes:
    """An RFC 5280 Time from UTC digits ``YYYYMMDDHHMMSS``: UTCTime through 2049,
    GeneralizedTime from 2050 (5.1.2.4). ValueError for anything else."""
    if len(digits) != 14 or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a UTC time in YYYYMMDDHHMMSS digits: {digits!r}")
    if digits < "2050":  # the tag and length octets of 13 and 15 characters, written out
        return b"\x17\x0d" + digits[2:].encode() + b"Z"
    return b"\x18\x0f" + digits.encode() + b"Z"


def read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The element at ``data[pos:end]``: (identifier octet, contents start, contents end).

    Strict DER (X.690 10.1): single-octet identifiers, definite lengths in their shortest
    form, no element running past ``end``; ValueError for anything else. For hot-path readers
    of known shapes, which hand anything unusual to asn1crypto."""
    if end - pos < 2:
        raise ValueError("truncated element")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-octet identifier")
    if first < 0x80:
        start, length = pos + 2, first
    else:
        count = first & 0x7F
        start = pos + 2 + count
        if count == 0 or count > 4 or start > end or data[pos + 2] == 0:
            raise ValueError("indefinite or non-minimal length")
        length = int.from_bytes(data[pos + 2:start], "big")
        if length < 0x80:
            raise ValueError("non-minimal length")
    if start + length > end:
        raise ValueError("element runs past its container")
    return tag, start, start + length


def read_unsigned(contents: bytes) -> int | None:
    """The value of an INTEGER's ``contents`` if they are DER and not negative; None if they
    are empty, negative, or open with a zero octet DER does not need (X.690 8.3.2), which
    hot-path readers leave to asn1crypto to word."""
    if not contents or contents[0] & 0x80 or \
            (len(contents) > 1 and contents[0] == 0 and not contents[1] & 0x80):
        return None
    return int.from_bytes(contents, "big")


def nested_deeper(data: bytes, limit: int) -> bool:
    """Whether ``data`` holds constructed elements nested more than ``limit`` deep, read as BER
    framing (definite lengths in any form, indefinite ones); checked before asn1crypto reads a
    client's bytes (MAX_NESTING). The contents of primitive elements are not looked into, and
    framing that breaks off ends the scan (False): the parser words that fault itself."""
    ends: list[int | None] = []  # where each open element ends; None: indefinite length
    pos, size = 0, len(data)
    while pos < size:
        while ends and ends[-1] is not None and pos >= ends[-1]:  # type: ignore[operator]
            ends.pop()
        if data[pos] == 0 and pos + 1 < size and data[pos + 1] == 0 and ends and \
                ends[-1] is None:  # end-of-contents of an indefinite length
            ends.pop()
            pos += 2
            continue
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # a multi-octet identifier
            while pos < size and data[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= size:
            return False
        first = data[pos]
        pos += 1
        length: int | None = first
        if first == 0x80:
            length = None
        elif first & 0x80:
            length = int.from_bytes(data[pos:pos + (first & 0x7F)], "big")
            pos += first & 0x7F
        if tag & 0x20:
            ends.append(None if length is None else pos + length)
            if len(ends) > limit:
                return True
        elif length is None:
            return False
        else:
            pos += length
    return False
