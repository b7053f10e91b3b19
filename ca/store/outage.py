"""Whether this process can reach its database, and the one log line when that changes.

A server worker keeps running while its database is away (a SQLite file moved, a PostgreSQL
server restarted): every request that needs the database is refused in-protocol until it
answers again. Logging each refusal would bury the operator's log under one line per
request, so the store reports an outage once when it begins and once when it ends, and the
protocol layers stay silent about :class:`DatabaseUnavailableError`.

A driver error is sorted into one of three kinds: ``busy`` (a lock another connection holds:
SQLite's SQLITE_BUSY/SQLITE_LOCKED, PostgreSQL's lock_timeout and statement_timeout), an
outage (the driver's OperationalError or InterfaceError: no file, no server, a dropped
connection) and anything else (a constraint, a bug), which stays the caller's.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import Engine, event

from ca.errors import DatabaseBusyError, DatabaseUnavailableError, StoreError

log = logging.getLogger("tincay.store")

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_PG_BUSY = ("55P03", "57014")  # lock_not_available, query_canceled (statement_timeout)


def is_busy(error: BaseException) -> bool:
    """Whether the DBAPI ``error`` says a lock another connection holds stopped the statement."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return getattr(error, "pgcode", None) in _PG_BUSY


def is_outage(error: BaseException) -> bool:
    """Whether the DBAPI ``error`` says the database itself cannot serve (PEP 249's
    OperationalError and InterfaceError, by name: every driver has its own classes), except
    PostgreSQL's transaction rollbacks (class 40: a deadlock or a serialization failure, which
    psycopg2 also counts as operational), which concern one transaction only."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if "TransactionRollbackError" in names or \
            str(getattr(error, "pgcode", None) or "").startswith("40"):
        return False
    return bool(names & {"OperationalError", "InterfaceError"})


class DatabaseOutage:
    """One per process and engine (ca.services.context.ServiceContext): turns driver errors
    into the store's errors, logging an outage when it begins and when it ends.

    It ends when the engine opens a new connection, not when any statement succeeds: while a
    SQLite file is away, connections opened before still work on it and new ones fail, and
    counting their successes would log the outage again at every new connection."""

    def __init__(self, engine: Engine) -> None:
        self.where = engine.url.render_as_string(hide_password=True)
        self.down = False
        event.listen(engine, "connect", self._connected)

    def _connected(self, _dbapi_connection: Any, _record: Any) -> None:
        self.answered()

    def error(self, error: BaseException, what: str = "statement") -> StoreError:
        """The store's error for the DBAPI ``error``: DatabaseBusyError, DatabaseUnavailableError
        (logged if it begins an outage) or a plain StoreError."""
        if is_busy(error):
            return DatabaseBusyError(f"database {what} waited for a lock another connection "
                                     f"holds: {_first_line(error)}")
        if is_outage(error):
            return self.unreachable(error)
        return StoreError(f"database {what} failed: {_first_line(error)}")

    def unreachable(self, error: Any) -> DatabaseUnavailableError:
        if not self.down:
            self.down = True
            log.error("database %s is unreachable (pid %d): %s; requests that need it are "
                      "refused (OCSP tryLater, TSA systemFailure, HTTP 503) until it answers",
                      self.where, os.getpid(), _first_line(error))
        return DatabaseUnavailableError(f"database {self.where} is unreachable: "
                                        f"{_first_line(error)}")

    def answered(self) -> None:
        """The database took a new connection: if an outage was logged, log its end."""
        if self.down:
            self.down = False
            log.warning("database %s answers again (pid %d)", self.where, os.getpid())


def _first_line(error: Any) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
