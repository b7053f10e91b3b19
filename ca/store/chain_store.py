"""Appending to the logs' hash chains (ca.chain) in the writers' transactions.

A chain's head is its last row: the highest ``chain_seq`` (read through the unique index on
it) and that row's ``chain_hash``. No head is stored beside the rows: it would add no tamper
evidence against someone who can write to the database (they could rewrite it too; only the
signed checkpoints do, ca.services.audit_chain), and writing it cost every TSA group commit
one more page.

An append takes the chain's lock first, then reads the last row, computes the n hashes and
inserts the rows, all in the writer's transaction:
- PostgreSQL: ``SELECT pg_advisory_xact_lock(<the chain's key>)``, held to the commit and
  writing nothing, so appends from every worker and host serialise and a chain never forks
  (READ COMMITTED: the read after the lock sees the previous holder's commit);
- SQLite: the database's write lock. The hot paths start their transaction with ``BEGIN
  IMMEDIATE`` (HotTransaction does; :class:`ChainAppender` does it for HotInsert); an ORM
  transaction takes it with ``UPDATE log_chains SET name = name``, a write with no read before
  it (no read-then-upgrade deadlock), on the chain's row in the ``log_chains`` registry. The
  read of the last row then happens under the write lock, so it is never stale.
The unique constraint on each table's chain_seq is the backstop: two appends that somehow
took one seq cannot both commit.

Three writers, one scheme:
- the hot paths (the TSA's HotInsert, signHash's HotTransaction) call :class:`ChainAppender`
  on their DBAPI cursor inside their batch's transaction;
- ORM transactions (``queries.record_event``, the remote-signing fallback, batch issuance)
  call :func:`defer`: the rows wait in the session and are chained and inserted in
  ``before_commit``, so the lock is held only for the commit itself (an issuance's
  transaction never holds it while the HSM signs); :func:`append_now` when the caller needs
  the rows' ids at once.
Deferred rows do not follow ORM savepoints (none of the services uses one).
"""
from __future__ import annotations

from typing import Any, MutableMapping, Sequence

from sqlalchemy import Engine, Select, Table, bindparam, event, func, insert, select, update
from sqlalchemy.orm import Session

from ca import chain
from ca.errors import StoreError
from ca.store.hot_tx import HotStatement
from ca.store.models import AuditEvent, LogChain, SignatureRecord, TimestampToken

TABLES: dict[str, Table] = {"audit": AuditEvent.__table__, "tsa": TimestampToken.__table__,
                            "signatures": SignatureRecord.__table__}  # type: ignore[dict-item]
# each chain's PostgreSQL advisory lock key: b"tincay" and the chain's number, one constant
# every worker and host shares
ADVISORY_KEYS: dict[str, int] = {name: int.from_bytes(b"tincay\x00" + bytes([n + 1]), "big")
                                 for n, name in enumerate(chain.CHAINS)}
_PENDING = "tincay_chain_pending"

_REGISTRY = LogChain.__table__
_SQLITE_LOCK = (update(_REGISTRY).where(_REGISTRY.c.name == bindparam("chain_name"))
                .values(name=_REGISTRY.c.name))
_POSTGRES_LOCK = select(func.pg_advisory_xact_lock(bindparam("key")))


def last_row(name: str) -> Select:
    """The chain's head: its last row's (chain_seq, chain_hash), the max() read off the
    unique index on chain_seq (no LIMIT, so no bind parameter for HotStatement)."""
    table = TABLES[name]
    return (select(table.c.chain_seq, table.c.chain_hash)
            .where(table.c.chain_seq == select(func.max(table.c.chain_seq)).scalar_subquery()))


def head_of(found: Sequence[Any] | None) -> tuple[int, str]:
    """(seq, hash) of the last row found, or the empty chain's (0, GENESIS)."""
    return (int(found[0]), found[1]) if found else (0, chain.GENESIS)


def session_head(session: Session, name: str) -> tuple[int, str]:
    """Chain ``name``'s head, (seq, hash), as ``session``'s transaction sees it."""
    return head_of(session.execute(last_row(name)).first())


class ChainAppender:
    """``append(cursor, rows)``: the chain's lock, its last row, the rows' seq and hash, on a
    DBAPI cursor inside the caller's transaction (the rows are then the caller's to insert,
    before it commits)."""

    def __init__(self, engine: Engine, name: str) -> None:
        if name not in chain.FIELDS:
            raise ValueError(f"no chain {name!r}")
        self.name = name
        self._sqlite = engine.dialect.name == "sqlite"
        self._head = HotStatement(engine, last_row(name))
        # PostgreSQL: the lock and the read in one round trip (psycopg2 sends both statements
        # at once; the server runs them in order, so the read's snapshot follows the lock)
        self._lock = None if self._sqlite else HotStatement(engine, _POSTGRES_LOCK)
        self._locked_read = f"{self._lock.sql}; {self._head.sql}" \
            if self._lock is not None and engine.dialect.driver == "psycopg2" else None

    def append(self, cursor: Any, rows: Sequence[MutableMapping[str, Any]]) -> None:
        if not rows:
            return
        if self._locked_read is not None:
            cursor.execute(self._locked_read, {"key": ADVISORY_KEYS[self.name]})
        else:
            if self._lock is not None:
                self._lock.run(cursor, {"key": ADVISORY_KEYS[self.name]})
            elif not cursor.connection.in_transaction:  # HotInsert: the write lock, first
                cursor.execute("BEGIN IMMEDIATE")
            self._head.run(cursor, {})
        seq, head = head_of(next(iter(self._head.rows(cursor)), None))
        chain.link(self.name, seq, head, rows)


def link_in_session(session: Session, name: str,
                    rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Take chain ``name``'s lock in ``session``'s transaction and give ``rows`` their seq and
    hash after its last row (the caller inserts them before the commit)."""
    if session.get_bind().dialect.name == "sqlite":
        if session.execute(_SQLITE_LOCK, {"chain_name": name}).rowcount != 1:
            raise StoreError(f"log chain {name!r} is not in log_chains: is the database at "
                             "migration 0010?")
    else:
        session.execute(_POSTGRES_LOCK, {"key": ADVISORY_KEYS[name]})
    seq, head = session_head(session, name)
    chain.link(name, seq, head, rows)


def append_now(session: Session, name: str, rows: Sequence[MutableMapping[str, Any]]) -> list[int]:
    """Chain and insert ``rows`` now (the caller needs their ids, and commits soon: the lock
    is held until then); their ids, in order."""
    if not rows:
        return []
    link_in_session(session, name, rows)
    table = TABLES[name]
    return list(session.execute(insert(table).returning(table.c.id,
                                                        sort_by_parameter_order=True),
                                rows).scalars())


def defer(session: Session, name: str, rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Chain and insert ``rows`` when ``session`` commits (rolled back with it)."""
    pending: dict[str, list[MutableMapping[str, Any]]] = session.info.setdefault(_PENDING, {})
    pending.setdefault(name, []).extend(rows)


@event.listens_for(Session, "before_commit")
def _chain_deferred(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    for name in sorted(pending):  # one order for every transaction: no lock-order deadlock
        rows = pending[name]
        link_in_session(session, name, rows)
        session.execute(insert(TABLES[name]), rows)


@event.listens_for(Session, "after_soft_rollback")
def _drop_deferred(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
