"""genTime that never goes backwards: a token's genTime is never earlier than one already
issued by this process or logged before it started.

The TSA starts its mark at the latest genTime its unit's token log holds (read by
tsa/config.py when the worker builds its TSA, and carried over when a renewed unit's TSA
replaces it), then raises it with every token. When the clock reads earlier than the mark
(an NTP step back, a host whose clock lags another's on a shared database):

- by at most the accuracy, the token gets the mark itself: a time the TSA stamped moments
  ago, later than its clock reads now by no more than the accuracy. Such a genTime can be off
  by the clock's error plus that lag, which is why the lag is bounded by the accuracy and why
  a site that counts every millisecond sets TINCAY_TSA_CLOCK_MARGIN to cover it; refusing
  instead would turn every harmless step of a few milliseconds into refusals (ntpd and
  chrony step only past 128 ms by default, and slew, never reading backwards, below that);
- by more, :class:`Rejected` timeNotAvailable until the clock catches up: either the earlier
  tokens or the clock now are wrong by more than the accuracy, and a genTime that claims the
  mark would then claim a time the TSA cannot vouch for.

What is guaranteed, and where:

- one process (all threads, greenlets): genTimes never decrease, across unit renewals too;
- restarts, any number of workers or hosts: a process never issues a genTime earlier than
  the latest one its unit's log held when it started;
- the workers of one host, with a mark file (``TINCAY_TSA_MARK_FILE``; ``tincay serve``
  puts one in TINCAY_HOME unless told otherwise): they share the mark through
  :class:`HostMark`, so no worker issues a genTime earlier than one any of them issued, and
  a step back of the clock is clamped or refused for all of them alike. Without one, each
  worker has its own mark: they read the same clock, so only a step back of it lets one
  worker issue a genTime earlier than another's recent token, by as much as the step;
- hosts on one PostgreSQL database: each host's genTimes are ordered as above; between
  hosts, a genTime can be earlier than another host's token logged moments before by at
  most the two clocks' disagreement, which the sync check (required on such a deployment)
  bounds by twice the accuracy - within what two tokens of ordering false promise (RFC 3161
  2.4.2: tokens closer than their accuracies are not ordered). A strict order across hosts
  would need a database row locked per token, the very round trip the token log's group
  commit was built to avoid.

The mark file costs about 6 us a token (measured: 8.2 us against 2.0 us for the per-process
mark; one fcntl lock and unlock, a read of 8 bytes, a write when the mark moves), about 1% of
a token.
"""
from __future__ import annotations

import fcntl
import os
import stat
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from ca.clock import Clock, ensure_utc
from tsa.requests import Rejected

__all__ = ["GenTimes", "HostMark"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class HostMark:
    """The genTime mark the processes of one host share: microseconds since 1970 as 8 bytes
    at the start of a file, read and raised under an exclusive fcntl lock (released by the
    kernel if a process dies holding it). The file is created 0600; one that is a symlink or
    belongs to another user is refused, so no other local account can hold the TSA back."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC |
                               os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ValueError(f"cannot open the genTime mark file {self.path}: "
                             f"{exc.strerror}") from None
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(self._fd)
            raise ValueError(f"the genTime mark file {self.path} is not a regular file of "
                             "this user")

    @contextmanager
    def locked(self) -> Iterator[list[datetime]]:
        """``[mark]`` while the lock is held; the mark the caller leaves in it is stored."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            data = os.pread(self._fd, 8, 0)
            before = _EPOCH + int.from_bytes(data, "big") * _MICROSECOND if len(data) == 8 \
                else _EPOCH
            box = [before]
            yield box
            if box[0] != before:
                os.pwrite(self._fd, ((box[0] - _EPOCH) // _MICROSECOND).to_bytes(8, "big"), 0)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class GenTimes:
    """genTime source for one TSA unit: the clock truncated to ``fraction_digits``, never
    earlier than the mark (see the module docstring for what happens when it reads earlier)."""

    def __init__(self, clock: Clock, accuracy: timedelta, fraction_digits: int,
                 not_before: datetime | None = None, host: HostMark | None = None) -> None:
        self.clock = clock
        self.host = host
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
            if self.host is None:
                self._mark = self._after(now, self._mark)
            else:
                with self.host.locked() as shared:
                    self._mark = shared[0] = self._after(now, max(shared[0], self._mark))
            return self._mark

    def _after(self, now: datetime, mark: datetime) -> datetime:
        if now >= mark:
            return now
        lag = mark - now
        if lag > self.accuracy:
            raise Rejected("timeNotAvailable",
                           f"the clock reads {lag.total_seconds():g} s earlier than the last "
                           "genTime issued; no tokens until it catches up")
        return mark
