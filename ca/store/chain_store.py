"""Appending to the logs' hash chains (ca.chain) in the writers' transactions.

An append's lock is one statement that also reads the chain's head:
``UPDATE log_chains SET seq = seq + :n WHERE name = :name RETURNING seq, head_hex``. On
PostgreSQL it takes the chain's row lock, held to the commit, so appends from every worker and
host serialise and a chain never forks; on SQLite it takes the write lock with no read before
it that would have to upgrade (the read-then-upgrade deadlock). Then the n hashes are computed,
the rows inserted with them and the head set. The unique constraint on each table's chain_seq
is the backstop: two appends that somehow took one seq cannot both commit.

Three writers, one statement set:
- the hot paths (the TSA's HotInsert, signHash's HotTransaction) call :class:`ChainAppender`
  on their DBAPI cursor inside their batch's transaction;
- ORM transactions (``queries.record_event``, the remote-signing fallback, batch issuance)
  call :func:`defer`: the rows wait in the session and are chained and inserted in
  ``before_commit``, so the row lock is held only for the commit itself (an issuance's
  transaction never holds it while the HSM signs); :func:`append_now` when the caller needs
  the rows' ids at once.
Deferred rows do not follow ORM savepoints (none of the services uses one).
"""
from __future__ import annotations

from typing import Any, MutableMapping, Sequence

from sqlalchemy import Engine, Table, bindparam, event, insert, update
from sqlalchemy.orm import Session

from ca import chain
from ca.errors import StoreError
from ca.store.hot_tx import HotStatement
from ca.store.models import AuditEvent, LogChain, SignatureRecord, TimestampToken

TABLES: dict[str, Table] = {"audit": AuditEvent.__table__, "tsa": TimestampToken.__table__,
                            "signatures": SignatureRecord.__table__}  # type: ignore[dict-item]
_PENDING = "tincay_chain_pending"

_HEADS = LogChain.__table__
_LOCK = (update(_HEADS).where(_HEADS.c.name == bindparam("chain_name"))
         .values(seq=_HEADS.c.seq + bindparam("n")).returning(_HEADS.c.seq, _HEADS.c.head_hex))
_HEAD = (update(_HEADS).where(_HEADS.c.name == bindparam("chain_name"))
         .values(head_hex=bindparam("head")))


def _missing(name: str) -> StoreError:
    return StoreError(f"log chain {name!r} has no head row: is the database at migration 0010?")


class ChainAppender:
    """``append(cursor, rows)``: the chain's lock, the rows' seq and hash, the new head, on a
    DBAPI cursor inside the caller's transaction (the rows are then the caller's to insert,
    before it commits)."""

    def __init__(self, engine: Engine, name: str) -> None:
        if name not in chain.FIELDS:
            raise ValueError(f"no chain {name!r}")
        self.name = name
        self._lock = HotStatement(engine, _LOCK)
        self._head = HotStatement(engine, _HEAD)

    def append(self, cursor: Any, rows: Sequence[MutableMapping[str, Any]]) -> None:
        if not rows:
            return
        self._lock.run(cursor, {"chain_name": self.name, "n": len(rows)})
        found = self._lock.rows(cursor)
        if not found:
            raise _missing(self.name)
        seq, head = found[0]
        head = chain.link(self.name, seq - len(rows), head, rows)
        self._head.run(cursor, {"chain_name": self.name, "head": head})


def link_in_session(session: Session, name: str,
                    rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Take chain ``name``'s lock in ``session``'s transaction and give ``rows`` their seq and
    hash, the head moved past them (the caller inserts them before the commit)."""
    found = session.execute(_LOCK, {"chain_name": name, "n": len(rows)}).first()
    if found is None:
        raise _missing(name)
    head = chain.link(name, found[0] - len(rows), found[1], rows)
    session.execute(_HEAD, {"chain_name": name, "head": head})


def append_now(session: Session, name: str, rows: Sequence[MutableMapping[str, Any]]) -> list[int]:
    """Chain and insert ``rows`` now (the caller needs their ids, and commits soon: the row
    lock is held until then); their ids, in order."""
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

