"""Injected time.

Everything that stamps a time (issuance, CRLs, OCSP, the TSA) asks a :class:`Clock` so tests can
freeze or move time, and so no naive or local datetime ever reaches a certificate.
"""
from __future__ import annotations

import datetime as _dt
import threading
from typing import Protocol

UTC = _dt.timezone.utc


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; thread-safe so servers under test can share it."""

    def __init__(self, at: _dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = ensure_utc(at) if at is not None else _dt.datetime.now(UTC)

    def now(self) -> _dt.datetime:
        with self._lock:
            return self._now

    def set(self, at: _dt.datetime) -> None:
        with self._lock:
            self._now = ensure_utc(at)

    def advance(self, delta: _dt.timedelta) -> None:
        with self._lock:
            self._now = self._now + delta


def ensure_utc(value: _dt.datetime) -> _dt.datetime:
    """Refuse naive datetimes rather than guessing their zone; normalise aware ones to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: tincay only handles timezone-aware UTC times")
    return value.astimezone(UTC)


def truncate_seconds(value: _dt.datetime) -> _dt.datetime:
    """Certificates, CRLs and OCSP carry whole seconds."""
    return value.replace(microsecond=0)
