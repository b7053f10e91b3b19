"""Hot-path reads: a prebuilt Core SELECT run straight on a kept DBAPI connection.

The OCSP responder asks the database once per request. Through a SQLAlchemy ``Connection``
that costs a pool checkout, an execution context and result wrapping, several times what
SQLite or PostgreSQL spend answering the indexed lookup itself. :class:`HotQuery` compiles the
statement once for the engine's dialect, keeps its result processors (so UTC datetimes come
back exactly as through the ORM), and runs it on a connection taken from a small free list of
connections it checked out of the engine's pool (so the engine's connect events, SQLite's
pragmas among them, still apply). Reads only, in autocommit, so a kept connection never holds a
transaction (nor a PostgreSQL snapshot) open and every query sees the latest commit.

A failed query invalidates its connection and the kept ones (a server restart takes them all);
the caller gets :class:`StoreError` (the OCSP responder answers tryLater) and the next query
connects afresh.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from sqlalchemy import Engine, Select
from sqlalchemy.exc import DBAPIError

from ca.errors import StoreError

__all__ = ["HotQuery"]


class HotQuery:
    """``HotQuery(engine, statement).first(params)``: the first row, processed, or None."""

    def __init__(self, engine: Engine, statement: Select, *, keep: int = 8) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._engine = engine
        self._sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns)
        self._keep = keep
        self._idle: list[Any] = []  # checked-out pool connections; list pop/append are atomic
        self._pid = os.getpid()
        self._dbapi_errors = (DBAPIError, *_dbapi_error_classes(engine))

    def first(self, params: Mapping[str, Any]) -> tuple | None:
        bound = tuple(params[name] for name in self._order) if self._order is not None \
            else params
        fairy = self._checkout()
        try:
            cursor = fairy.dbapi_connection.cursor()
            try:
                cursor.execute(self._sql, bound)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except self._dbapi_errors as exc:
            _invalidate(fairy)
            stale, self._idle = self._idle, []  # a server restart took the others with it
            for other in stale:
                _invalidate(other)
            raise StoreError(f"database read failed: {exc}") from None
        except BaseException:
            _invalidate(fairy)
            raise
        self._checkin(fairy)
        if row is None:
            return None
        return tuple(value if process is None else process(value)
                     for value, process in zip(row, self._processors))

    def _checkout(self) -> Any:
        if self._pid != os.getpid():  # never a connection opened before a fork
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            pass
        try:
            fairy = self._engine.raw_connection()
        except DBAPIError as exc:
            raise StoreError(f"database unreachable: {exc.orig}") from None
        if self._engine.dialect.name != "sqlite":
            fairy.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        return fairy

    def _checkin(self, fairy: Any) -> None:
        if len(self._idle) < self._keep:
            self._idle.append(fairy)
        else:
            self._checkin_to_pool(fairy)

    def close(self) -> None:
        """Return every kept connection to the engine's pool (before ``engine.dispose()``)."""
        while self._idle:
            self._checkin_to_pool(self._idle.pop())

    def _checkin_to_pool(self, fairy: Any) -> None:
        if self._engine.dialect.name != "sqlite":
            fairy.dbapi_connection.autocommit = False  # type: ignore[union-attr]
        fairy.close()


def _invalidate(fairy: Any) -> None:
    try:
        fairy.invalidate()
    except Exception:  # noqa: BLE001 - already broken; the pool replaces it
        pass


def _dbapi_error_classes(engine: Engine) -> tuple[type[BaseException], ...]:
    dbapi = engine.dialect.dbapi
    error = getattr(dbapi, "Error", None)
    return (error,) if isinstance(error, type) else ()
