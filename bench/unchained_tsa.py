"""A reference for the chained token log's cost (bench/chain_tsa.py): ``tincay serve``'s own
app whose token log makes the same durable insert (the same HotInsert under the same group
commit, one fsync'd transaction per batch) into a table of the same columns and unique key
without the hash chain's columns, and runs no chain statement (no lock-and-read of the head,
no hashes, no head update). A benchmark reference only: its tokens are in no chain."""
from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Column, MetaData, Table, UniqueConstraint
from sqlalchemy.exc import SQLAlchemyError

from ca.services.token_log import TOKEN_LOG_WAIT
from ca.store.hot import HotInsert
from ca.store.models import TimestampToken
from cli.serve import worker_app

UNCHAINED_COLUMNS = ("unit", "serial_hex", "gen_time", "imprint_algorithm", "imprint_hex",
                     "policy", "nonce_hex", "requester")
_METADATA = MetaData()
UNCHAINED = Table(
    "bench_unchained_tokens", _METADATA,
    *(Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, index=c.index)
      for c in TimestampToken.__table__.columns if not c.name.startswith("chain_")),
    UniqueConstraint("unit", "serial_hex", name="uq_bench_unchained_serial"))


def create_app() -> Flask:
    app = worker_app()
    unchained(app.extensions["tincay.service"])
    return app


def unchained(service: Any) -> None:
    """Make ``service``'s token log write to the unchained table (before its first token)."""
    engine = service.context.engine
    try:
        UNCHAINED.create(engine, checkfirst=True)
    except SQLAlchemyError:  # the other worker made it meanwhile
        pass
    log = service.token_log
    # before its first use: the group commit then wraps this insert (cached_property slot)
    log.__dict__["_insert"] = HotInsert(engine, UNCHAINED, UNCHAINED_COLUMNS,
                                        busy_wait=TOKEN_LOG_WAIT, outage=service.context.outage)
