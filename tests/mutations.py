"""Byte-level mutations of protocol requests for the hypothesis tests of the OCSP and TSA
readers: bit flips, truncations, cut spans, inserted and deleted bytes."""
from __future__ import annotations

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
