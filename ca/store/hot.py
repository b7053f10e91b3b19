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
systemFailure) and the next statement connects afresh. An integrity error (a duplicate key)
only rolls back: it is the caller's to explain.
"""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, Engine, Select, Table, insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from ca.errors import StoreError

__all__ = ["HotInsert", "HotQuery", "stream_rows"]

_STREAMS = itertools.count()  # names of PostgreSQL server-side cursors


class _KeptConnections:
    """Pool connections kept checked out for one statement, never across a fork."""

    def __init__(self, engine: Engine, *, autocommit: bool, keep: int) -> None:
        self.engine = engine
        self._autocommit = autocommit
        self._keep = keep
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
        except DBAPIError as exc:
            raise StoreError(f"database unreachable: {exc.orig}") from None
        if self._autocommit and self.engine.dialect.name != "sqlite":
            fairy.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        return fairy

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
        except IntegrityError:
            self.checkin(fairy)
            raise
        except self.errors as exc:
            _invalidate(fairy)
            stale, self._idle = self._idle, []
            for other in stale:
                _invalidate(other)
            raise StoreError(f"database {what} failed: {exc}") from None
        except BaseException:
            _invalidate(fairy)
            raise
        self.checkin(fairy)

    def close(self) -> None:
        """Return every kept connection to the engine's pool (before ``engine.dispose()``)."""
        while self._idle:
            self._to_pool(self._idle.pop())

    def _to_pool(self, fairy: Any) -> None:
        if self._autocommit and self.engine.dialect.name != "sqlite":
            fairy.dbapi_connection.autocommit = False  # type: ignore[union-attr]
        fairy.close()


class HotQuery:
    """``HotQuery(engine, statement).first(params)``: the first row, processed, or None."""

    def __init__(self, engine: Engine, statement: Select, *, keep: int = 8) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns)
        self._connections = _KeptConnections(engine, autocommit=True, keep=keep)

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
    and raises SQLAlchemy's IntegrityError (as a Session would); any other failure is a
    StoreError."""

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str], *,
                 keep: int = 1) -> None:
        dialect = engine.dialect
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        self._sql = compiled.string
        processors = {name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                      for name in columns}
        self._processors = {name: p for name, p in processors.items() if p is not None}
        # positional parameters (SQLite): each in its place with its processor, looked up once
        self._positions = tuple((name, processors.get(name)) for name in compiled.positiontup
                                or ()) if compiled.positional else None
        self._connections = _KeptConnections(engine, autocommit=False, keep=keep)

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        processed = [self._bind(row) for row in rows]
        with self._connections.use("write") as connection:
            cursor = connection.cursor()
            try:
                cursor.executemany(self._sql, processed)
                connection.commit()
            except self._connections.integrity_errors as exc:
                connection.rollback()
                raise IntegrityError(self._sql, None, exc) from None
            finally:
                cursor.close()

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
