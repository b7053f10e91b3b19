"""Is the system clock synchronised within the TSA's accuracy? (ETSI EN 319 421 7.7.2: a TSA
issues no token while its clock is outside its stated accuracy.)

Two sources answer, chosen by ``TINCAY_TSA_CLOCK_CHECK`` (tsa/config.py):

- ``kernel``: the kernel's own view, through adjtimex(2) with ``modes = 0`` (read only, no
  privilege needed). Out of sync when adjtimex returns TIME_ERROR (5) or the status carries
  STA_UNSYNC (what ntpd, chrony and systemd-timesyncd clear once they discipline the clock),
  or when ``maxerror + margin`` exceeds the accuracy. ``maxerror`` rather than ``esterror``:
  the synchronisation daemon sets it to its bound on the error (root delay / 2 + root
  dispersion) and the kernel grows it by 500 ppm a second while nobody refreshes it, so a
  daemon that died is noticed; the accuracy in a token is a promise, so the bound is checked,
  not the estimate (which is reported beside it). An unreadable state (adjtimex refused by a
  sandbox, not Linux) counts as out of sync: an operator who asked for the check gets it.
- ``command``: ``TINCAY_TSA_CLOCK_COMMAND``, run without a shell; exit status 0 means in sync,
  anything else (or no exit within 2 s) means out of sync, its first line of standard error
  the reason. For a site whose judge is elsewhere (``chronyc waitsync 1 0.01``, a PTP
  daemon's state, a GPS receiver's lock).
- ``off`` (the default): no check. The default because a development machine, a CI runner
  or a container often has no synchronised clock (this project's own build machine reports
  STA_UNSYNC with a 16 s maxerror), and ``make run`` and the test suite must still stamp; a
  deployment that claims ETSI EN 319 421 sets ``kernel`` or ``command`` and the server logs
  which it runs at start.

The answer is cached for ``every`` (1 s by default) so the hot path does not ask per token:
measured on the build machine (2 cores), adjtimex costs 4.4 us a call (7 us with its
judgement), a cached answer 0.15 us, against some 500 us for the token itself; a checker
command costs a fork and exec (2.2 ms for ``true``) once a second, paid by the one request
that finds the answer stale while the others wait for it (at most COMMAND_TIMEOUT).

:class:`ClockGuard` also reports each transition once (in sync -> out of sync and back),
which the TSA turns into the audit events ``tsa.clock_unsynchronised`` and
``tsa.clock_synchronised``. A guard starts believing the clock in sync, so a worker that
starts in sync says nothing and one that starts out of sync says so once. Each worker has
its own guard: with several workers each reports the transition once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Literal, Protocol

__all__ = ["ClockCheck", "ClockGuard", "ClockReading", "ClockSource", "CommandClockSource",
           "KernelClockSource", "KernelTime", "clock_source", "read_kernel_time"]

log = logging.getLogger("tincay.tsa")

TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronised
STA_UNSYNC = 0x0040  # status bit: the clock is not synchronised
COMMAND_TIMEOUT = 2.0  # seconds a checker command may take before it counts as out of sync


@dataclass(frozen=True)
class ClockCheck:
    """How the TSA controls its clock: ``mode`` off, kernel or command; ``margin`` added to
    the kernel's maxerror (the time the signature and the token log take, a site's own
    safety); ``every`` how long an answer is reused; ``mark_file`` where the workers of one
    host share their genTime mark (tsa/gen_time.py), None for a mark per process."""

    mode: Literal["off", "kernel", "command"] = "off"
    command: tuple[str, ...] = ()
    margin: timedelta = timedelta(0)
    every: timedelta = timedelta(seconds=1)
    mark_file: str | None = None

    def __post_init__(self) -> None:
        if self.mode == "command" and not self.command:
            raise ValueError("the clock check command is not set")
        if self.margin < timedelta(0) or self.every < timedelta(0):
            raise ValueError("margin and interval cannot be negative")


@dataclass(frozen=True)
class ClockReading:
    """One answer: in sync or not, why (for the audit event and the rejection's statusString),
    and the kernel's error bound and estimate when the kernel answered."""

    synchronised: bool
    reason: str
    max_error: timedelta | None = None
    estimated_error: timedelta | None = None


class ClockSource(Protocol):
    def read(self) -> ClockReading:
        """The clock's state now; never raises for a clock that is merely out of sync."""


@dataclass(frozen=True)
class KernelTime:
    """What adjtimex(2) says: its return value (TIME_OK 0 .. TIME_ERROR 5), the status bits,
    and maxerror and esterror in microseconds."""

    state: int
    status: int
    max_error_us: int
    estimated_error_us: int

    @property
    def unsynchronised(self) -> bool:
        return self.state == TIME_ERROR or bool(self.status & STA_UNSYNC)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """glibc's struct timex (<sys/timex.h>), with its reserved tail."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


_adjtimex: Callable | None = None


def read_kernel_time() -> KernelTime:
    """adjtimex(2) with ``modes = 0``: reads, changes nothing. OSError if the C library has
    no adjtimex (not Linux) or the kernel refuses it (a sandbox)."""
    global _adjtimex
    if _adjtimex is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = getattr(libc, "adjtimex", None) or getattr(libc, "ntp_adjtime", None)
        if function is None:
            raise OSError("the C library has no adjtimex")
        function.argtypes, function.restype = [ctypes.POINTER(_Timex)], ctypes.c_int
        _adjtimex = function
    timex = _Timex()
    state = _adjtimex(ctypes.byref(timex))
    if state < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"adjtimex: {os.strerror(errno)}")
    return KernelTime(state, timex.status, timex.maxerror, timex.esterror)


class KernelClockSource:
    """In sync when the kernel says synchronised and ``maxerror + margin <= accuracy``."""

    def __init__(self, accuracy: timedelta, margin: timedelta = timedelta(0),
                 read: Callable[[], KernelTime] = read_kernel_time) -> None:
        if margin >= accuracy:
            raise ValueError(f"the margin ({margin}) leaves nothing of the accuracy "
                             f"({accuracy})")
        self.accuracy = accuracy
        self.margin = margin
        self._read = read

    def read(self) -> ClockReading:
        try:
            kernel = self._read()
        except OSError as exc:
            return ClockReading(False, f"the kernel's clock state is unreadable: {exc}")
        max_error = timedelta(microseconds=kernel.max_error_us)
        estimated = timedelta(microseconds=kernel.estimated_error_us)
        errors = (f"maximum error {_ms(max_error)}, estimated error {_ms(estimated)}")
        if kernel.unsynchronised:
            return ClockReading(False, f"the kernel reports the clock unsynchronised "
                                f"({errors})", max_error, estimated)
        if max_error + self.margin > self.accuracy:
            return ClockReading(False, f"clock error beyond the accuracy of "
                                f"{_ms(self.accuracy)} ({errors}, margin {_ms(self.margin)})",
                                max_error, estimated)
        return ClockReading(True, f"the kernel reports the clock synchronised ({errors})",
                            max_error, estimated)


class CommandClockSource:
    """In sync when ``command`` (argv, no shell) exits 0 within COMMAND_TIMEOUT."""

    def __init__(self, command: tuple[str, ...], timeout: float = COMMAND_TIMEOUT) -> None:
        self.command = command
        self.timeout = timeout

    def read(self) -> ClockReading:
        name = self.command[0]
        try:
            done = subprocess.run(self.command, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return ClockReading(False, f"the clock check {name} gave no answer within "
                                f"{self.timeout:g} s")
        except OSError as exc:
            return ClockReading(False, f"the clock check {name} cannot run: {exc.strerror}")
        if done.returncode == 0:
            return ClockReading(True, f"the clock check {name} reports the clock in sync")
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return ClockReading(False, f"the clock check {name} exited with status "
                            f"{done.returncode}" + (f": {said[0][:160]}" if said else ""))


class ClockGuard:
    """A source's answer, reused for ``every`` seconds, and each transition reported once to
    ``on_change``. An ``on_change`` that fails (the audit log's database away) is logged and
    asked again at the next fresh reading, so the transition is not lost; the answer itself
    does not wait for it: tokens stop the moment the clock is out of sync."""

    def __init__(self, source: ClockSource, *, every: float = 1.0,
                 on_change: Callable[[ClockReading], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.every = every
        self.on_change = on_change
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, ClockReading] | None = None  # (when read, the reading)
        self._reported = True  # believed in sync until a reading says otherwise

    def reading(self) -> ClockReading:
        """The cached answer while fresh, else a new one (one caller reads, others wait)."""
        cached = self._cached  # one attribute read: no lock on the hot path
        if cached is not None and self._monotonic() - cached[0] < self.every:
            return cached[1]
        with self._lock:
            cached = self._cached
            if cached is not None and self._monotonic() - cached[0] < self.every:
                return cached[1]
            try:
                reading = self.source.read()
            except Exception as exc:  # noqa: BLE001 - a broken source means no trusted time
                log.exception("the TSA clock check failed")
                reading = ClockReading(False, f"the clock check failed: {exc}")
            self._cached = (self._monotonic(), reading)
            self._report(reading)
            return reading

    def _report(self, reading: ClockReading) -> None:
        if reading.synchronised == self._reported:
            return
        if reading.synchronised:
            log.warning("TSA clock synchronised again, issuing tokens: %s", reading.reason)
        else:
            log.error("TSA clock out of sync, refusing tokens: %s", reading.reason)
        if self.on_change is not None:
            try:
                self.on_change(reading)
            except Exception as exc:  # noqa: BLE001 - retried at the next fresh reading
                log.warning("TSA clock transition not recorded yet: %s", exc)
                return
        self._reported = reading.synchronised


def clock_source(check: ClockCheck, accuracy: timedelta) -> ClockSource | None:
    """The source ``check`` names, None for ``off``."""
    if check.mode == "kernel":
        return KernelClockSource(accuracy, check.margin)
    if check.mode == "command":
        return CommandClockSource(check.command)
    return None


def _ms(value: timedelta) -> str:
    return f"{value.total_seconds() * 1000:g} ms"
