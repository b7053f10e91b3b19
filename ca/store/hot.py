"""Hot-path statements: prebuilt Core SQL run straight on kept DBAPI connections.

The OCSP responder asks the database once per request and the TSA records every token it
grants. Through a SQLAlchemy ``Session`` or ``Connection`` that costs a pool checkout, an
execution context and result wrapping: for the TSA's one-row transaction 0.30 ms of CPU
against 0.07 ms for the same INSERT and COMMIT on the DBAPI connection. Here a statement is
compiled once for the engine's dialect with its bind and result processors (so UTC datetimes
go in and come back exactly as through the ORM), and runs on a connection from a small free
list of connections checked out of the engine's pool (so the engine's connect events, SQLite's
pragmas among them, still apply).

:class:`HotQuery` reads in autocommit, so a kept connection never holds a transaction (nor a
PostgreSQL snapshot) open and every query sees the latest commit. :class:`HotInsert` writes
rows in one transaction and commits before it returns.

A failed statement invalidates its connection and the kept ones (a server restart takes them
all); the caller gets :class:`StoreError` (the OCSP responder answers tryLater, the TSA
systemFailure) and the next statement connects afresh; a database that cannot be reached is a
DatabaseUnavailableError, logged once per outage (ca.store.outage). An integrity error (a
duplicate key) only rolls back: it is the caller's to explain.

A write that meets a lock another connection holds (a long transaction in another process)
waits at most ``busy_wait`` seconds, and never inside the driver: SQLite's busy handler sleeps
in C, which under gevent stops every request of the worker for the whole wait, so the insert's
connection has no busy timeout and retries after cooperative sleeps (``time.sleep``, which
gevent patched); PostgreSQL waits on the server (psycopg2 waits cooperatively), bounded by the
connection's lock_timeout and statement_timeout. Then DatabaseBusyError.
"""
from __future__ import annotations

import itertools
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from sqlalchemy import Connection, Engine, Select, Table, insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from ca.errors import DatabaseBusyError
from ca.store.db import SQLITE_BUSY_MS
from ca.store.outage import DatabaseOutage, is_busy

T = TypeVar("T")

__all__ = ["HotInsert", "HotQuery", "stream_rows"]

_STREAMS = itertools.count()  # names of PostgreSQL server-side cursors


class _KeptConnections:
    """Pool connections kept checked out for one statement, never across a fork."""

    def __init__(self, engine: Engine, *, autocommit: bool, keep: int,
                 outage: DatabaseOutage | None = None,
                 setup: Sequence[str] = (), teardown: Sequence[str] = ()) -> None:
        self.engine = engine
        self._autocommit = autocommit
        self._keep = keep
        self.outage = outage or DatabaseOutage(engine)
        self._setup, self._teardown = setup, teardown  # run on a connection kept, and returned
        self._idle: list[Any] = []  # checked-out pool connections; list pop/append are atomic
        self._pid = os.getpid()
        dbapi_error = getattr(engine.dialect.dbapi, "Error", None)
        self.errors = (DBAPIError, *((dbapi_error,) if isinstance(dbapi_error, type) else ()))
        integrity = getattr(engine.dialect.dbapi, "IntegrityError", None)
        self.integrity_errors = (integrity,) if isinstance(integrity, type) else ()

    def checkout(self) -> Any:
        if self._pid != os.getpid():  # never a connection opened before a fork
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            pass
        try:
            fairy = self.engine.raw_connection()
        except self.errors as exc:  # the pool hands the driver's own error on unwrapped
            raise self.outage.unreachable(exc) from None
        try:
            if self._autocommit and self.engine.dialect.name != "sqlite":
                fairy.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self._run(fairy, self._setup)
        except self.errors as exc:
            _invalidate(fairy)
            raise self.outage.error(exc, "connection set-up") from None
        return fairy

    def _run(self, fairy: Any, statements: Sequence[str]) -> None:
        if not statements:
            return
        cursor = fairy.dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        if not self._autocommit and self.engine.dialect.name != "sqlite":
            fairy.dbapi_connection.commit()  # PostgreSQL's SET opened a transaction

    def checkin(self, fairy: Any) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(fairy)
        else:
            self._to_pool(fairy)

    @contextmanager
    def use(self, what: str) -> Iterator[Any]:
        """A kept DBAPI connection for one statement: back to the free list afterwards, also
        after an IntegrityError (the caller rolled back); a driver error invalidates it and
        the kept ones (a server restart took them all) and becomes StoreError("database
        <what> failed")."""
        fairy = self.checkout()
        try:
            yield fairy.dbapi_connection
        except (IntegrityError, DatabaseBusyError):
            self.checkin(fairy)  # the caller rolled back
            raise
        except self.errors as exc:
            _invalidate(fairy)
            stale, self._idle = self._idle, []
            for other in stale:
                _invalidate(other)
            raise self.outage.error(exc, what) from None
        except BaseException:
            _invalidate(fairy)
            raise
        self.checkin(fairy)

    def close(self) -> None:
        """Return every kept connection to the engine's pool (before ``engine.dispose()``)."""
        while self._idle:
            self._to_pool(self._idle.pop())

    def _to_pool(self, fairy: Any) -> None:
        try:
            self._run(fairy, self._teardown)
        except self.errors:
            _invalidate(fairy)
            return
        if self._autocommit and self.engine.dialect.name != "sqlite":
            fairy.dbapi_connection.autocommit = False  # type: ignore[union-attr]
        fairy.close()


class HotQuery:
    """``HotQuery(engine, statement).first(params)``: the first row, processed, or None."""

    def __init__(self, engine: Engine, statement: Select, *, keep: int = 8,
                 outage: DatabaseOutage | None = None) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns)
        self._connections = _KeptConnections(engine, autocommit=True, keep=keep, outage=outage)

    def first(self, params: Mapping[str, Any]) -> tuple | None:
        bound = tuple(params[name] for name in self._order) if self._order is not None \
            else params
        with self._connections.use("read") as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(self._sql, bound)
                row = cursor.fetchone()
            finally:
                cursor.close()
        if row is None:
            return None
        return tuple(value if process is None else process(value)
                     for value, process in zip(row, self._processors))

    def close(self) -> None:
        self._connections.close()


class HotInsert:
    """``HotInsert(engine, table, columns).insert(rows)``: the rows (mappings of column name
    to value) inserted in one transaction, committed on return. A duplicate key rolls back
    and raises SQLAlchemy's IntegrityError (as a Session would); a lock held elsewhere for
    ``busy_wait`` seconds (or until the caller's deadline) DatabaseBusyError; any other failure
    is a StoreError."""

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str], *,
                 keep: int = 1, busy_wait: float = 5.0,
                 outage: DatabaseOutage | None = None,
                 prepare: Callable[[Any, list[dict[str, Any]]], None] | None = None) -> None:
        dialect = engine.dialect
        self.busy_wait = busy_wait
        # run first in each attempt's transaction on its cursor, with fresh copies of the
        # rows to complete (the log's hash chain: ca.store.chain_store.ChainAppender.append)
        self._prepare = prepare
        self._retry_busy = dialect.name == "sqlite"  # PostgreSQL waits on the server
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        self._sql = compiled.string
        processors = {name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                      for name in columns}
        self._processors = {name: p for name, p in processors.items() if p is not None}
        # positional parameters (SQLite): each in its place with its processor, looked up once
        self._positions = tuple((name, processors.get(name)) for name in compiled.positiontup
                                or ()) if compiled.positional else None
        setup, teardown = lock_waits(dialect.name, busy_wait)
        self._connections = _KeptConnections(engine, autocommit=False, keep=keep,
                                             outage=outage, setup=setup, teardown=teardown)

    def insert(self, rows: Sequence[Mapping[str, Any]], *,
               deadline: float | None = None) -> None:
        """Insert and commit ``rows``; a lock held elsewhere is waited for until ``deadline``
        (``time.monotonic()``) or ``busy_wait`` seconds from now, whichever comes first."""
        processed = None if self._prepare else [self._bind(row) for row in rows]
        give_up = time.monotonic() + self.busy_wait
        if deadline is not None:
            give_up = min(give_up, deadline)
        retry_while_busy(lambda: self._insert(rows, processed, give_up), give_up,
                         retry=self._retry_busy)

    def _insert(self, rows: Sequence[Mapping[str, Any]], processed: list[Any] | None,
                give_up: float) -> None:
        with self._connections.use("write") as connection:
            cursor = connection.cursor()
            try:
                self._bound_wait(cursor, give_up)
                if self._prepare is not None:
                    completed = [dict(row) for row in rows]
                    self._prepare(cursor, completed)
                    processed = [self._bind(row) for row in completed]
                    # the prepare step may have waited (for a chain's lock, held by a batch
                    # that meets the same table lock): the insert gets what is left, so the
                    # whole transaction, not each statement, stays within the bound
                    self._bound_wait(cursor, give_up)
                cursor.executemany(self._sql, processed)
                connection.commit()
            except self._connections.integrity_errors as exc:
                connection.rollback()
                raise IntegrityError(self._sql, None, exc) from None
            except DatabaseBusyError:  # the bound spent before the insert (_bound_wait)
                connection.rollback()
                raise
            except self._connections.errors as exc:
                if not is_busy(exc):
                    raise
                connection.rollback()
                raise DatabaseBusyError(str(exc)) from None
            finally:
                cursor.close()

    def _bound_wait(self, cursor: Any, give_up: float) -> None:
        if not self._retry_busy:
            bound_wait(cursor, give_up, self.busy_wait)

    def _bind(self, row: Mapping[str, Any]) -> Any:
        if self._positions is not None:
            return tuple(row[name] if process is None else process(row[name])
                         for name, process in self._positions)
        values = dict(row)
        for name, process in self._processors.items():
            values[name] = process(values[name])
        return values

    def close(self) -> None:
        self._connections.close()


def stream_rows(connection: Connection, statement: Select, batch: int) -> Iterator[tuple]:
    """The rows of ``statement`` as the driver returns them, ``batch`` at a time, on
    ``connection`` and in its transaction; on PostgreSQL through a named (server-side) cursor,
    so the client never holds more than a batch.

    For the million-row reads (a CRL's entries): SQLAlchemy's streaming Result makes a Row of
    each tuple, about a microsecond a row, 12% of a million-entry CRL. The statement's
    parameters and columns must need no type processing (integers, strings): ValueError
    otherwise, since here nothing would apply it.
    """
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect)
    types = [bind.type for bind in compiled.binds.values()]
    if any(t.dialect_impl(dialect).bind_processor(dialect) for t in types) or any(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns):
        raise ValueError("stream_rows is for statements without type processing")
    params = compiled.construct_params()
    bound = tuple(params[name] for name in compiled.positiontup or ()) \
        if compiled.positional else params
    driver = connection.connection.driver_connection
    cursor = driver.cursor(f"tincay_stream_{next(_STREAMS)}") \
        if dialect.name == "postgresql" else driver.cursor()
    try:
        cursor.execute(compiled.string, bound)
        while rows := cursor.fetchmany(batch):
            yield from rows
    finally:
        cursor.close()


def _invalidate(fairy: Any) -> None:
    try:
        fairy.invalidate()
    except Exception:  # noqa: BLE001 - already broken; the pool replaces it
        pass


def lock_waits(dialect: str, busy_wait: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The statements that set a kept write connection's own lock waits, and those that
    restore the pool's defaults: on SQLite no busy handler (retry_while_busy sleeps
    cooperatively instead), on PostgreSQL the server waits at most ``busy_wait`` seconds."""
    milliseconds = max(1, int(busy_wait * 1000))
    return {
        "sqlite": (("PRAGMA busy_timeout=0",), (f"PRAGMA busy_timeout={SQLITE_BUSY_MS}",)),
        "postgresql": ((f"SET lock_timeout = {milliseconds}",
                        f"SET statement_timeout = {milliseconds}"),
                       ("RESET lock_timeout", "RESET statement_timeout")),
    }.get(dialect, ((), ()))


def bound_wait(cursor: Any, give_up: float, busy_wait: float) -> None:
    """On PostgreSQL, where each statement may wait ``busy_wait`` for a lock: once time has
    been spent in a transaction (behind a batch that met a lock, or in its earlier
    statements), the server's waits in the rest of it end at ``give_up``, so the whole
    transaction, not each statement, stays within the bound. A transaction that has spent
    next to nothing sets nothing (the usual commit pays no statement for it)."""
    left = give_up - time.monotonic()
    if left >= busy_wait - 0.25:
        return
    if left <= 0:
        raise DatabaseBusyError("the write waited its whole bound for a lock")
    milliseconds = max(1, int(left * 1000))
    cursor.execute(f"SET LOCAL lock_timeout = {milliseconds}")
    cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")


def retry_while_busy(attempt: Callable[[], T], give_up: float, *, retry: bool) -> T:
    """``attempt()``, tried again after cooperative sleeps (under gevent the worker serves
    on) while it raises DatabaseBusyError, until ``give_up`` (``time.monotonic()``); with
    ``retry`` false (PostgreSQL, whose lock_timeout already waited) the first refusal stands."""
    started, pause = time.monotonic(), 0.001
    while True:
        try:
            return attempt()
        except DatabaseBusyError as exc:
            left = give_up - time.monotonic()
            if not retry or left <= 0:
                raise DatabaseBusyError(
                    f"the write waited {time.monotonic() - started:.1f} s for a lock "
                    f"another connection holds ({exc})") from None
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
