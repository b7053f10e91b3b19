"""The token log's nonce column holds the nonces the TSA accepts: up to 1,024 bits and the
sign octet (tsa/requests.py MAX_NONCE_OCTETS), 258 hex digits; it held 80 (320 bits), so a
512-bit nonce's token could not be recorded on PostgreSQL and was never sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timestamp_tokens") as batch:
        batch.alter_column("nonce_hex", existing_type=sa.String(80), type_=sa.String(260),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("timestamp_tokens") as batch:
        batch.alter_column("nonce_hex", existing_type=sa.String(260), type_=sa.String(80),
                           existing_nullable=True)
