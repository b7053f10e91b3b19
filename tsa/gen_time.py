"""genTime that never goes backwards: a token's genTime is never earlier than one already
issued by this process or logged before it started.

The TSA starts its mark at the latest genTime its unit's token log holds (read by
tsa/config.py when the worker builds its TSA, and carried over when a renewed unit's TSA
replaces it), then raises it with every token. When the clock reads earlier than the mark
(an NTP step back, a host whose clock lags another's on a shared database):

- by at most the accuracy, the token gets the mark itself. The clock is then still within
  the accuracy of the mark, and the sync check (tsa/clock_sync.py) holds the clock within the
  accuracy of UTC, so the token stays inside the accuracy it states, give or take that lag;
  refusing here would turn every harmless step of a few milliseconds into refusals;
- by more, :class:`Rejected` timeNotAvailable until the clock catches up: either the earlier
  tokens or the clock now are wrong by more than the accuracy, and a genTime that claims the
  mark would then claim a time the TSA cannot vouch for.

What is guaranteed, and where:

- one process (all threads, greenlets): genTimes never decrease, across unit renewals too;
- restarts, any number of workers or hosts: a process never issues a genTime earlier than
  the latest one its unit's log held when it started;
- workers running side by side on one host read the same clock, so their genTimes are in
  clock order; only a step back of the system clock lets one worker issue a genTime earlier
  than another worker's recent token, by at most the accuracy (a larger step is refused as
  above once the worker has issued past it, and is a clock the sync check calls out of sync
  while the daemon steps it). Hosts on one PostgreSQL database likewise differ by at most the
  two clocks' disagreement, which the sync check bounds by twice the accuracy. A strict
  order across processes would need a shared mark taken per token (a lock file per host, a
  database row across hosts), which the token log's group commit was built to avoid.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from ca.clock import Clock, ensure_utc
from tsa.requests import Rejected

__all__ = ["GenTimes"]


class GenTimes:
    """genTime source for one TSA unit: the clock truncated to ``fraction_digits``, never
    earlier than the mark (see the module docstring for what happens when it reads earlier)."""

    def __init__(self, clock: Clock, accuracy: timedelta, fraction_digits: int,
                 not_before: datetime | None = None) -> None:
        self.clock = clock
        self.accuracy = accuracy
        self._step = 10 ** (6 - fraction_digits)  # in microseconds
        self._mark = ensure_utc(not_before) if not_before is not None else \
            datetime.min.replace(tzinfo=timezone.utc)
        self._lock = threading.Lock()

    @property
    def mark(self) -> datetime:
        """The latest genTime issued (or logged before this process started)."""
        return self._mark

    def raise_to(self, at: datetime | None) -> None:
        """Never issue earlier than ``at`` (a token logged elsewhere, a replaced TSA's mark)."""
        if at is not None:
            at = ensure_utc(at)
            with self._lock:
                if at > self._mark:
                    self._mark = at

    def next(self) -> datetime:
        """The next token's genTime; Rejected timeNotAvailable for no trusted time."""
        try:
            now = ensure_utc(self.clock.now())
        except Exception as exc:  # noqa: BLE001 - any clock fault means no trusted time
            raise Rejected("timeNotAvailable", f"no trusted time: {exc}") from None
        step = self._step
        now = now.replace(microsecond=now.microsecond // step * step)
        with self._lock:
            if now < self._mark:
                lag = self._mark - now
                if lag > self.accuracy:
                    raise Rejected("timeNotAvailable",
                                   f"the clock reads {lag.total_seconds():g} s earlier than "
                                   "the last genTime issued; no tokens until it catches up")
                now = self._mark
            self._mark = now
        return now
