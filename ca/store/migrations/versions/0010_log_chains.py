"""Hash chains over the audit log, the TSA's token log and the remote-signing log (issue 22):
``chain_seq`` and ``chain_hash`` on each (a chain's head is its last row), one row per chain in
``log_chains`` (SQLite's ORM appends lock there) and the signed heads in ``log_checkpoints``.

Existing rows are chained in id order (ca.chain's encoding, as the writers use it), so an
upgraded database verifies. The audit log's append-only triggers are dropped for the backfill
and made again (SQLite's batch mode rebuilds the table, which drops them anyway).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ca import chain

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
TABLES = {"audit": "audit_events", "tsa": "timestamp_tokens", "signatures": "signature_records"}
_DATETIMES = {"at", "gen_time"}
_BATCH = 5000


def _table(name: str, chain_name: str) -> sa.Table:
    columns = [sa.Column("id", sa.Integer, primary_key=True)]
    columns += [sa.Column(field, _TS if field in _DATETIMES else
                          (sa.Integer if field == "activation_pk" else sa.Text))
                for field in chain.FIELDS[chain_name]]
    columns += [sa.Column("chain_seq", sa.BigInteger), sa.Column("chain_hash", sa.String(64))]
    return sa.Table(name, sa.MetaData(), *columns)


def _drop_audit_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")


def _create_audit_triggers(dialect: str) -> None:
    from ca.store.db import append_only_ddl

    statements = append_only_ddl("audit_events", dialect)
    if dialect != "sqlite":  # the function of 0001 is still there: only the trigger again
        statements = statements[1:]
    for statement in statements:
        op.execute(statement)


def _backfill(connection: sa.Connection, chain_name: str, table: sa.Table) -> None:
    """Chain the rows in id order, a batch of updates at a time."""
    seq, head, after = 0, chain.GENESIS, 0
    fields = chain.FIELDS[chain_name]
    update = table.update().where(table.c.id == sa.bindparam("b_id")).values(
        chain_seq=sa.bindparam("b_seq"), chain_hash=sa.bindparam("b_hash"))
    while True:
        rows = connection.execute(sa.select(table.c.id, *(table.c[f] for f in fields))
                                  .where(table.c.id > after).order_by(table.c.id)
                                  .limit(_BATCH)).all()
        if not rows:
            return
        changes = []
        for row in rows:
            seq += 1
            head = chain.record_hash(head, chain_name, seq, dict(zip(fields, row[1:])))
            changes.append({"b_id": row[0], "b_seq": seq, "b_hash": head})
        connection.execute(update, changes)
        after = rows[-1][0]


def upgrade() -> None:
    connection = op.get_bind()
    dialect = connection.dialect.name
    heads = op.create_table(
        "log_chains",
        sa.Column("name", sa.String(32), primary_key=True),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("chain", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("head_hex", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("key_label", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_log_checkpoints_chain", "log_checkpoints", ["chain"])
    _drop_audit_triggers(dialect)
    for chain_name, name in TABLES.items():
        op.add_column(name, sa.Column("chain_seq", sa.BigInteger, nullable=True))
        op.add_column(name, sa.Column("chain_hash", sa.String(64), nullable=True))
        _backfill(connection, chain_name, _table(name, chain_name))
        connection.execute(heads.insert().values(name=chain_name))
        with op.batch_alter_table(name) as batch:
            batch.alter_column("chain_seq", existing_type=sa.BigInteger, nullable=False)
            batch.alter_column("chain_hash", existing_type=sa.String(64), nullable=False)
            batch.create_unique_constraint(f"uq_{name}_chain_seq", ["chain_seq"])
    _create_audit_triggers(dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_audit_triggers(dialect)
    for name in TABLES.values():
        with op.batch_alter_table(name) as batch:
            batch.drop_constraint(f"uq_{name}_chain_seq", type_="unique")
            batch.drop_column("chain_hash")
            batch.drop_column("chain_seq")
    _create_audit_triggers(dialect)
    op.drop_index("ix_log_checkpoints_chain", "log_checkpoints")
    op.drop_table("log_checkpoints")
    op.drop_table("log_chains")
