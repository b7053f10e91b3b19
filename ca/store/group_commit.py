"""Group commit: many threads' durable writes share one transaction.

A time-stamp reply may only leave once its token is recorded; committing every token alone makes
the database's commit latency the TSA's ceiling. Here each caller hands its record to one writer
thread per process and blocks until the transaction holding it has committed, so concurrent
requests pay for one commit together (the classic group-commit of databases' own logs).
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

from ca.errors import StoreError

T = TypeVar("T")
Transaction = Callable[[list[T]], None]


class GroupCommitter(Generic[T]):
    """``submit(item)`` returns once ``transaction([..., item, ...])`` has committed.

    ``max_batch`` bounds one transaction. A failing batch is retried item by item, so one bad
    record (a duplicate serial) fails only its own caller. The writer thread starts on first use
    and again after a fork (gunicorn workers each get their own).
    """

    def __init__(self, transaction: Transaction[T], *, max_batch: int = 256,
                 timeout: float = 30.0) -> None:
        self._transaction = transaction
        self._max_batch = max_batch
        self._timeout = timeout
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[T, Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self.commits = 0  # transactions committed, for tests and benchmarks

    def submit(self, item: T) -> None:
        self._ensure_thread()
        done: Future[None] = Future()
        self._queue.put((item, done))
        try:
            done.result(timeout=self._timeout)
        except TimeoutError:
            raise StoreError(f"the database did not commit within {self._timeout} s") from None

    def close(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                self._queue.put(None)
                self._thread.join(timeout=self._timeout)
            self._thread = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()  # a forked child must not share the parent's
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="tincay-group-commit",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[tuple[T, Future[None]]]) -> None:
        try:
            self._transaction([item for item, _ in batch])
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - not hidden: handed to the waiting caller
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for entry in batch:  # isolate the failing record: the others still commit
                self._commit([entry])
            return
        for _, done in batch:
            done.set_result(None)
