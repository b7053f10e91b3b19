"""Hot-path transactions: several prebuilt statements in one transaction on a kept DBAPI
connection (ca.store.hot keeps the connections), for a write that must check and change
several rows atomically and commit before its caller answers (CSC signHash: check the
credential and the SAD, mark the hash used, count, log the signature).

Through an ORM ``Session`` that transaction was 80% of a signHash's time under cProfile
(statement building, cache keys, lazy loads; the HSM's signature 2%, the commit 7%); here
each statement is compiled once for the engine's dialect with its bind and result processors.

Locks: on SQLite the transaction starts with ``BEGIN IMMEDIATE`` (the write lock taken before
the first read, so what was checked cannot change before the commit) on a connection with no
busy timeout; a lock held elsewhere is retried after cooperative sleeps (never SQLite's busy
handler, which sleeps in C and would stop every greenlet of a gevent worker; see
ca.store.hot), at most ``busy_wait`` seconds, then DatabaseBusyError. PostgreSQL waits on
the server, bounded by lock_timeout and statement_timeout per statement; a transaction that
has waited (behind another process's batch holding the signature log's chain lock while it
meets a table lock) gives its later statements only the time left of its bound
(ca.store.hot.bound_wait), so the whole transaction stays within ``busy_wait``.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence, TypeVar

from sqlalchemy import Engine
from sqlalchemy.sql import ClauseElement

from ca.errors import DatabaseBusyError, StoreError
from ca.store.hot import _KeptConnections, bound_wait, lock_waits, retry_while_busy
from ca.store.outage import DatabaseOutage, is_busy

T = TypeVar("T")


class HotStatement:
    """A Core statement compiled once: ``run(cursor, params)`` executes it with its bind
    processors applied; ``rows(cursor)`` returns the fetched rows with result processors."""

    def __init__(self, engine: Engine, statement: ClauseElement) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._bind = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in ((b.key, b) for b in compiled.binds.values())}
        columns = getattr(statement, "selected_columns", None) or getattr(
            statement, "_returning", None) or ()
        self._results: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns)

    def run(self, cursor: Any, params: Mapping[str, Any]) -> int:
        """Execute; the driver's rowcount (rows an UPDATE matched)."""
        processed = {name: value if (process := self._bind.get(name)) is None
                     else process(value) for name, value in params.items()}
        bound = tuple(processed[name] for name in self._order) if self._order is not None \
            else processed
        cursor.execute(self.sql, bound)
        return cursor.rowcount

    def rows(self, cursor: Any) -> list[tuple]:
        return [tuple(value if process is None else process(value)
                      for value, process in zip(row, self._results))
                for row in cursor.fetchall()]


class HotTransaction:
    """``run(work)``: ``work(cursor)`` inside one transaction, committed when it returns,
    rolled back when it raises (its exception propagates)."""

    def __init__(self, engine: Engine, *, keep: int = 1, busy_wait: float = 5.0,
                 outage: DatabaseOutage | None = None) -> None:
        self.engine = engine
        self.busy_wait = busy_wait
        self._sqlite = engine.dialect.name == "sqlite"
        setup, teardown = lock_waits(engine.dialect.name, busy_wait)
        self._connections = _KeptConnections(engine, autocommit=False, keep=keep,
                                             outage=outage, setup=setup, teardown=teardown)

    def statement(self, statement: ClauseElement) -> HotStatement:
        return HotStatement(self.engine, statement)

    def run(self, work: Callable[[Any], T], *, deadline: float | None = None) -> T:
        """``work(cursor)``'s result once committed; a lock held elsewhere is waited for
        until ``deadline`` (``time.monotonic()``) or ``busy_wait`` from now, the earlier."""
        return self._run(lambda cursor, give_up: work(cursor), deadline)

    def _run(self, work: Callable[[Any, float], T], deadline: float | None) -> T:
        give_up = time.monotonic() + self.busy_wait
        if deadline is not None:
            give_up = min(give_up, deadline)
        return retry_while_busy(lambda: self._once(lambda cursor: work(cursor, give_up)),
                                give_up, retry=self._sqlite)

    def bound(self, give_up: float) -> Callable[[Any], None]:
        """``bound(cursor)``: the rest of this transaction's lock waits end at ``give_up``
        (PostgreSQL; SQLite's transaction holds the write lock from its BEGIN)."""
        if self._sqlite:
            return lambda cursor: None
        return lambda cursor: bound_wait(cursor, give_up, self.busy_wait)

    def _once(self, work: Callable[[Any], T]) -> T:
        failure: Exception | None = None
        with self._connections.use("write") as connection:
            cursor = connection.cursor()
            try:
                if self._sqlite:
                    if connection.in_transaction:
                        connection.rollback()
                    cursor.execute("BEGIN IMMEDIATE")
                result = work(cursor)
                connection.commit()
            except DatabaseBusyError:  # the bound spent between statements (bound_wait)
                _rollback(connection)
                raise
            except self._connections.errors as exc:
                _rollback(connection)
                if not is_busy(exc):
                    raise  # the kept connections are replaced (ca.store.hot): StoreError
                raise DatabaseBusyError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - the caller's refusal: raised below
                _rollback(connection)
                failure = exc
            finally:
                cursor.close()
        if failure is not None:  # outside use(): a refusal keeps its connection
            raise failure
        return result

    def run_each(self, works: Sequence[Callable[[Any], Any]], *,
                 deadline: float | None = None,
                 finish: Callable[[Any, list[tuple[Any, Exception | None]],
                                   Callable[[Any], None]], None] | None = None
                 ) -> list[tuple[Any, Exception | None]]:
        """Every work in one transaction, as if each ran in its own savepoint: a work that
        raises (a refusal) undoes only its own changes; one commit covers the others. Returns
        (result, None) or (None, exception) per work, in order, once committed. A driver
        error fails the whole transaction (raised, nothing committed).

        Refusals are rare (two requests racing for one hash), so the batch first runs
        without savepoints (two statements fewer per work); only when a work refuses is
        that transaction rolled back and the batch run again, each work in a savepoint.
        A work must therefore give the same answer when run again after a rollback.
        ``finish(cursor, outcomes, bound)`` runs last in the transaction, after every work
        (signHash appends the batch's records to the signature log's hash chain there: its
        lock is taken once, as late as it can be); ``bound(cursor)`` after a statement that
        may have waited keeps the rest within the transaction's bound, as it is called here
        before ``finish``."""
        def finished(cursor: Any, outcomes: list[tuple[Any, Exception | None]],
                     give_up: float) -> list[tuple[Any, Exception | None]]:
            if finish is not None:
                bound = self.bound(give_up)
                bound(cursor)
                finish(cursor, outcomes, bound)
            return outcomes

        try:
            return self._run(lambda cursor, give_up: finished(
                cursor, [(work(cursor), None) for work in works], give_up), deadline)
        except StoreError:
            raise  # the database's failure, not a work's refusal
        except Exception:  # noqa: BLE001 - a work refused: rolled back, each in a savepoint
            pass
        errors = self._connections.errors

        def each(cursor: Any, give_up: float) -> list[tuple[Any, Exception | None]]:
            outcomes: list[tuple[Any, Exception | None]] = []
            for n, work in enumerate(works):
                cursor.execute(f"SAVEPOINT hot_{n}")
                try:
                    outcomes.append((work(cursor), None))
                except errors:
                    raise
                except Exception as exc:  # noqa: BLE001 - the work's refusal, handed back
                    cursor.execute(f"ROLLBACK TO SAVEPOINT hot_{n}")
                    outcomes.append((None, exc))
                cursor.execute(f"RELEASE SAVEPOINT hot_{n}")
            return finished(cursor, outcomes, give_up)

        return self._run(each, deadline)

    def close(self) -> None:
        self._connections.close()


def _rollback(connection: Any) -> None:
    try:
        connection.rollback()
    except Exception:  # noqa: BLE001 - the connection is replaced if it is broken
        pass


__all__: Sequence[str] = ["HotStatement", "HotTransaction"]
