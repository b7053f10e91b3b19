"""Subscribers' keys generated in the HSM and stored wrapped under its key-encryption key
(ca.keys.wrapping), instead of one token object per subscriber.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kek_label", sa.String(64), nullable=False),
        sa.Column("spec", sa.String(16), nullable=False),
        sa.Column("public_key_der", sa.LargeBinary, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_subscriber_keys_created_at", "subscriber_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_subscriber_keys_created_at", "subscriber_keys")
    op.drop_table("subscriber_keys")
