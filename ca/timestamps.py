"""What a granted time-stamp token leaves behind: one record type shared by the pure TSA core
(which grants it), its HTTP layer (which adds the requester) and the store (which logs it).
Pure: imports no flask, sqlalchemy or click."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["TimestampRecord"]


@dataclass(frozen=True)
class TimestampRecord:
    """The RFC 3161 TSTInfo fields the TSA log keeps of a token, and who asked for it."""

    unit: str
    serial: int
    gen_time: datetime
    imprint_algorithm: str
    imprint: bytes
    policy: str
    nonce: int | None = None
    requester: str | None = None
