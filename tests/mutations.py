"""Mutations of protocol requests for the hypothesis tests of the OCSP and TSA readers and
cores: byte-level edits (bit flips, truncations, cut spans, inserted and deleted bytes) and
structural ones (an element of the DER tree replaced, framed as BER, retagged, or a hostile
element put beside it: the values asn1crypto reads but cannot convert, nesting past Python's
recursion limit, an INTEGER past its int-to-str limit, encodings that are BER but not DER).

:func:`mutate` draws from a hypothesis ``DataObject`` (one draw per decision, so examples
shrink); :func:`mutate_many` draws from a ``random.Random`` (hypothesis's ``st.randoms()``),
cheap enough to drive tens of thousands of requests through a core in a few seconds.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Protocol, Sequence, Union

from hypothesis import strategies as st

from ca import der as ca_der


def _nested(depth: int) -> bytes:
    body = b"\x05\x00"
    for _ in range(depth):
        body = ca_der.tlv(0x30, body)
    return body


# Elements a reader meets only from a hostile client, each a case a campaign found or its kin
HOSTILE: tuple[bytes, ...] = (
    b"\x09\x03\x80\x01\x01",  # REAL: asn1crypto declares it, cannot convert it
    b"\x07\x01x",  # ObjectDescriptor
    b"\x28\x03\x02\x01\x01",  # EXTERNAL
    b"\x05\x01\x00",  # NULL with contents
    b"\x01\x01\x01",  # BOOLEAN TRUE that is not DER's FF
    b"\x02\x00",  # empty INTEGER
    b"\x02\x02\x00\x01",  # non-minimal INTEGER
    b"\x02\x01\xff",  # negative INTEGER
    ca_der.tlv(0x02, b"\x7f" + b"\x01" * 1999),  # 4,800 decimal digits: past str()'s limit
    _nested(1500),  # past Python's recursion limit in asn1crypto's parse and native
    b"\x30\x80\x05\x00\x00\x00",  # indefinite length (BER)
    b"\x04\x81\x01\x00",  # long-form length for a short element (BER)
    b"\x24\x06\x04\x01\x00\x04\x01\x00",  # constructed OCTET STRING (BER)
    b"\x06\x03\x2a\x80\x01",  # OID with a padded subidentifier
    b"\x06\x00",  # empty OID
    b"\x0c\x01\xff",  # UTF8String that is not UTF-8
    b"\x18\x01A",  # GeneralizedTime that is not one
    b"\x03\x02\x08\x00",  # BIT STRING with 8 unused bits
    b"\x1f\x81\x00\x00",  # multi-octet identifier
)
_TAGS = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x0C, 0x10, 0x13, 0x18, 0x28,
         0x30, 0x31, 0x80, 0x81, 0xA0, 0xA1, 0xA2, 0xBF)


class _Draws(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def choice(self, options: Sequence[Any]) -> Any: ...
    def binary(self, low: int, high: int) -> bytes: ...


class _FromData:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.data.draw(st.sampled_from(options))

    def binary(self, low: int, high: int) -> bytes:
        return self.data.draw(st.binary(min_size=low, max_size=high))


class _FromRandom:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def binary(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))


# --- byte-level edits ------------------------------------------------------------------------

def _edit_bytes(draw: _Draws, der: bytes, min_steps: int, max_steps: int) -> bytes:
    body = bytearray(der)
    for _ in range(draw.integer(min_steps, max_steps)):
        kind = draw.choice(["flip", "truncate", "cut", "insert", "delete"])
        at = draw.integer(0, max(len(body) - 1, 0))
        if kind == "flip" and body:
            body[at] ^= 1 << draw.integer(0, 7)
        elif kind == "truncate":
            del body[at:]
        elif kind == "cut":
            del body[at:at + draw.integer(1, 8)]
        elif kind == "insert":
            body[at:at] = draw.binary(1, 8)
        elif body:
            del body[at]
    return bytes(body)


# --- structural edits ------------------------------------------------------------------------

# A node of the DER tree: [tag, contents] with contents the children (a list) when they parse
# as DER elements (constructed types, and OCTET or BIT STRINGs wrapping DER), else the bytes;
# tag None for raw bytes put in as they are (BER framings, hostile elements).
Node = list
Contents = Union[bytes, list]


def _parse(data: bytes) -> list[Node] | None:
    nodes, pos = [], 0
    try:
        while pos < len(data):
            tag, start, end = ca_der.read(data, pos, len(data))
            contents: Contents = data[start:end]
            if tag & 0x20 or tag == 0x04:
                children = _parse(data[start:end]) if end > start else None
                contents = children if children is not None else contents
            nodes.append([tag, contents])
            pos = end
    except ValueError:
        return None
    return nodes


def _encode(node: Node) -> bytes:
    tag, contents = node
    if tag is None:
        return contents
    return ca_der.tlv(tag, contents if isinstance(contents, bytes)
                      else b"".join(_encode(child) for child in contents))


def _places(nodes: list[Node], into: list[tuple[list[Node], int]]) -> list:
    for index, node in enumerate(nodes):
        into.append((nodes, index))
        if node[0] is not None and isinstance(node[1], list):
            _places(node[1], into)
    return into


def _edit_structure(draw: _Draws, der: bytes, steps: int) -> bytes:
    tree = _parse(der)
    if not tree:
        return _edit_bytes(draw, der, 1, steps)
    for _ in range(steps):
        places = _places(tree, [])
        if not places:
            break
        siblings, index = draw.choice(places)
        node = siblings[index]
        kind = draw.choice(["replace", "beside", "delete", "duplicate", "retag", "long",
                            "indefinite", "chunked", "bytes"])
        encoded = _encode(node)
        if kind == "replace":
            siblings[index] = [None, draw.choice(HOSTILE)]
        elif kind == "beside":
            siblings.insert(index + draw.integer(0, 1), [None, draw.choice(HOSTILE)])
        elif kind == "delete":
            del siblings[index]
        elif kind == "duplicate":
            siblings.insert(index, [None, encoded])
        elif kind == "retag" and node[0] is not None:
            node[0] = draw.choice(_TAGS)
        elif kind in ("long", "indefinite", "chunked") and node[0] is not None:
            body = _encode([None, node[1]]) if isinstance(node[1], bytes) else \
                b"".join(_encode(child) for child in node[1])
            if kind == "long":  # the length in long form, one octet longer than DER's
                size = len(body).to_bytes(max(1, (len(body).bit_length() + 7) // 8), "big")
                framed = bytes((node[0], 0x80 | (len(size) + 1), 0)) + size + body
            elif kind == "indefinite":
                framed = bytes((node[0] | 0x20, 0x80)) + body + b"\x00\x00"
            else:  # a constructed string of two chunks
                framed = ca_der.tlv(node[0] | 0x20, ca_der.tlv(node[0], body[:1]),
                                    ca_der.tlv(node[0], body[1:]))
            siblings[index] = [None, framed]
        elif kind == "bytes":
            siblings[index] = [None, _edit_bytes(draw, encoded, 1, 2)]
    return b"".join(_encode(node) for node in tree)


def mutate(data: st.DataObject, der: bytes, min_steps: int = 1, max_steps: int = 4) -> bytes:
    """``der`` after between ``min_steps`` and ``max_steps`` random byte edits drawn from
    ``data``."""
    return _edit_bytes(_FromData(data), der, min_steps, max_steps)


def mutate_many(rng: random.Random, seeds: Sequence[bytes], count: int) -> list[bytes]:
    """``count`` mutants of ``seeds``, drawn from ``rng``: half byte-level edits, half
    structural (module docstring), one to three steps each."""
    draw = _FromRandom(rng)
    mutants = []
    for _ in range(count):
        seed = draw.choice(seeds)
        steps = draw.integer(1, 3)
        mutants.append(_edit_bytes(draw, seed, 1, steps) if draw.integer(0, 1) else
                       _edit_structure(draw, seed, steps))
    return mutants


def assert_mutated_readers_agree(data: st.DataObject, der: bytes, *, fast: Callable,
                                 general: Callable, combined: Callable,
                                 outcome: Callable[[Callable, bytes], Any]) -> None:
    """For a hot-path request reader (``fast``: the common shape or None) beside the general
    one: after up to three mutations of ``der``, whatever ``fast`` decides is what ``general``
    decides, and ``combined`` (what the service calls) agrees with whichever decides.
    ``outcome(reader, der)`` is the reader's result, or a comparable marker of its refusal."""
    body = mutate(data, der, min_steps=0, max_steps=3)
    direct = outcome(fast, body)
    if direct is not None:
        assert direct == outcome(general, body)
    assert outcome(combined, body) == (direct if direct is not None else outcome(general, body))
