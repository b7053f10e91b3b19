"""Group commit: many threads' durable writes share one transaction.

A time-stamp reply may only leave once its token is recorded; committing every token alone makes
the database's commit latency the TSA's ceiling. Here concurrent callers queue their records and
one of them, the leader, commits everything queued in one transaction while the others wait;
when it is done, a waiter whose record came too late leads the next one (the leader/follower
group commit of databases' own logs, e.g. LevelDB's writer queue).

The leader is a caller, not a background writer thread: a caller that is about to wait anyway
can do the work itself, so no thread is woken per batch and nothing needs restarting after a
fork. (Measured under wrk it serves as many tokens/s as the writer thread did. What the log
costs the TSA is less the database's work, 60-90 us a commit, than the hand-offs between the
waiting threads: each wake-up is a context switch and a GIL hand-over.)

Under gevent (``tincay serve``'s default worker) the callers are greenlets of one thread and a
transaction blocks them all, so a leader that committed at once would always commit alone.
Instead the leader first lets the worker's other requests run until each waits (or 2 ms under a
load that never pauses): every request in hand gets as far as queueing its record, and one
transaction commits the lot. No thread wakes anyone; measured on 2 cores, this served 1.3-1.5x
the tokens/s of gthread workers with the same log. Waiting for the idle loop rather than
yielding once doubled the batches (7.5 -> 14.6 tokens a commit, 16 connections a worker),
which is what makes a synchronous (fsync'd) commit affordable: each blocks the worker for an
fsync, about 0.2 ms here.

Under OS threads (gthread workers, or another threaded WSGI server) a leader that committed at
once took a few records a batch, and two worker processes took turns at SQLite's one write
lock behind each other's fsyncs. It gathers too: while records keep arriving, each within
``quiet`` (0.5 ms) of the one before, for at most ``gather`` (2026-12-03, 2 workers, wrk -c32,
P-256 on SoftHSM: gthread workers 1,052 -> 1,599-1,796 tokens/s, p99 232-297 -> 32-41 ms;
granian's 2 x 8 threads 1,951-2,260 -> 3,618-3,794 tokens/s, p99 278-346 -> 16-17 ms).

What the log costs under load is mostly not the database. Worker CPU per P-256 token on
SoftHSM, wrk -c32 (2026-12-01): 265 us with no log, 305 us with no log but one
``gevent.sleep(0)`` per request, 350 us batching as here with a transaction that writes
nothing, 375-385 us with SQLite (synchronous=FULL). A request answered at once never waits in
the event loop under such a load (its client's next request is on the socket before it reads
again); a request held for a batch waits twice, for the commit and then for its next request,
which its client sends only after the burst of replies. Thread pools for the commit, a single
yield instead of the idle wait, or no gathering at all measured the same or worse.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

from ca.errors import DatabaseBusyError, DatabaseUnavailableError, StoreError
from ca.store.greenlets import gevent_patched, wait_for_other_greenlets

T = TypeVar("T")
QUIET = 0.0005  # seconds: under threads, a gathering leader's wait for one more record
# ``transaction(items, deadline)``: commit the items, waiting for a lock held elsewhere no
# later than ``deadline`` (time.monotonic()), when the batch's oldest caller gives up
Transaction = Callable[[list[T], float], None]


class _Entry(Generic[T]):
    __slots__ = ("item", "deadline", "done", "error")

    def __init__(self, item: T, deadline: float) -> None:
        self.item = item
        self.deadline = deadline
        self.done = False
        self.error: BaseException | None = None


class GroupCommitter(Generic[T]):
    """``submit(item)`` returns once ``transaction([..., item, ...])`` has committed.

    ``max_batch`` bounds one transaction. A failing batch is retried item by item, so one bad
    record (a duplicate serial) fails only its own caller; a batch the database could not
    take at all (unreachable, or a lock held elsewhere: DatabaseUnavailableError,
    DatabaseBusyError) fails every caller in it at once, since retrying each alone would only
    wait again. No caller waits more than ``timeout`` seconds: the transaction is given the
    batch's oldest caller's deadline, and a caller that waited that long for others'
    transactions gets a DatabaseBusyError (its record may still be committed later: a
    recorded token nobody received is harmless, the converse is what must not happen).
    """

    def __init__(self, transaction: Transaction[T], *, max_batch: int = 256,
                 timeout: float = 30.0, gather: float = 0.002, quiet: float = QUIET,
                 on_commit: Callable[[int, float], None] | None = None) -> None:
        self._transaction = transaction
        # told (batch size, seconds the transaction took) after each commit: the token log's
        # metrics (ca.metrics), which show whether batching works and what a commit costs
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._timeout = timeout
        self._gather = gather  # a leader's longest wait for more records
        self._quiet = quiet  # under threads: the pause between records that ends the wait
        lock = threading.Lock()
        self._changed = threading.Condition(lock)  # a batch committed, or leading is free
        self._arrived = threading.Condition(lock)  # a record queued (the leader gathering)
        self._pending: list[_Entry[T]] = []
        self._leading = False
        self.commits = 0  # transactions committed, for tests and benchmarks

    def submit(self, item: T) -> None:
        deadline = time.monotonic() + self._timeout
        entry = _Entry(item, deadline)
        with self._changed:
            self._pending.append(entry)
            self._arrived.notify()
        while not entry.done:
            if self._lead_or_wait(entry, deadline):
                try:
                    self._gather_records()
                    with self._changed:  # the oldest queued records, up to max_batch
                        batch, self._pending = (self._pending[:self._max_batch],
                                                self._pending[self._max_batch:])
                    self._commit(batch)
                finally:
                    with self._changed:
                        self._leading = False
                        self._changed.notify_all()
        if entry.error is not None:
            raise entry.error

    def _gather_records(self) -> None:
        """Before leading, let the records of requests in hand reach the queue. Under gevent:
        until the event loop idles (ca.store.greenlets). Under OS threads (gthread workers,
        or another threaded WSGI server): while records keep arriving, each within ``quiet``
        of the one before, for at most ``gather`` (the module's docstring has the figures)."""
        if gevent_patched():
            wait_for_other_greenlets(self._gather)
            return
        end = time.monotonic() + self._gather
        with self._changed:
            seen = len(self._pending)
            while (left := end - time.monotonic()) > 0:
                self._arrived.wait(min(self._quiet, left))
                if len(self._pending) == seen:
                    return  # nobody came within the quiet pause
                seen = len(self._pending)

    def _lead_or_wait(self, entry: _Entry[T], deadline: float) -> bool:
        """Wait while another caller leads; then False if that committed ``entry``, else True:
        this caller leads now."""
        with self._changed:
            while self._leading and not entry.done:
                if not self._changed.wait(deadline - time.monotonic()):
                    if entry in self._pending:  # not taken by a leader: withdraw it
                        self._pending.remove(entry)
                    raise DatabaseBusyError(f"the database did not commit within "
                                            f"{self._timeout:g} s")
            if entry.done:
                return False
            self._leading = True
            return True

    def _commit(self, batch: list[_Entry[T]]) -> None:
        """Commit ``batch``, each record alone if together they fail. Until a transaction
        returns, a record counts as not recorded: if the leader is interrupted (KeyboardInterrupt,
        SystemExit), at any depth of the retries, no caller whose record was not committed
        returns as if it had been."""
        for entry in batch:
            entry.error = StoreError("the transaction was interrupted")
        try:
            started = time.perf_counter()
            self._transaction([entry.item for entry in batch], batch[0].deadline)
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(len(batch), time.perf_counter() - started)
            for entry in batch:
                entry.error = None
        except Exception as exc:  # noqa: BLE001 - not hidden: handed to the waiting caller
            if len(batch) == 1 or isinstance(exc, (DatabaseBusyError, DatabaseUnavailableError)):
                for entry in batch:
                    entry.error = exc
            else:
                for entry in batch:  # isolate the failing record: the others still commit
                    self._commit([entry])
        finally:
            for entry in batch:
                entry.done = True
