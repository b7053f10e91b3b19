"""Byte-level mutations of protocol requests for the hypothesis tests of the OCSP and TSA
readers: bit flips, truncations, cut spans, inserted and deleted bytes."""
from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st


def mutate(data: st.DataObject, der: bytes, min_steps: int = 1, max_steps: int = 4) -> bytes:
    """``der`` after between ``min_steps`` and ``max_steps`` random edits drawn from ``data``."""
    body = bytearray(der)
    for _ in range(data.draw(st.integers(min_steps, max_steps))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if kind == "flip" and body:
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del body[at:]
        elif kind == "cut":
            del body[at:at + data.draw(st.integers(1, 8))]
        elif kind == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif body:
            del body[at]
    return bytes(body)


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
