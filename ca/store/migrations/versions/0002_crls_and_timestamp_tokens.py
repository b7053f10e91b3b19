"""CRL records (monotonic numbers per issuer) and the TSA's token log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "crls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issuer_id", sa.Integer, sa.ForeignKey("authorities.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("delta_base", sa.Integer, nullable=True),
        sa.Column("this_update", _TS, nullable=False),
        sa.Column("next_update", _TS, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("issuer_id", "number", name="uq_crls_issuer_number"),
    )
    op.create_table(
        "timestamp_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("gen_time", _TS, nullable=False),
        sa.Column("imprint_algorithm", sa.String(16), nullable=False),
        sa.Column("imprint_hex", sa.String(128), nullable=False),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("nonce_hex", sa.String(80), nullable=True),
        sa.Column("requester", sa.String(64), nullable=True),
        sa.UniqueConstraint("unit", "serial_hex", name="uq_timestamp_tokens_serial"),
    )
    op.create_index("ix_timestamp_tokens_gen_time", "timestamp_tokens", ["gen_time"])


def downgrade() -> None:
    op.drop_table("timestamp_tokens")
    op.drop_table("crls")
