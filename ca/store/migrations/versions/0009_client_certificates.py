"""TLS client certificates bound to registered clients (RFC 8705 tls_client_auth): the SHA-256
of each certificate's DER, unique, with its issuer, serial and validity.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "client_certificates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("client_pk", sa.Integer, sa.ForeignKey("api_clients.id"), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("bound_at", _TS, nullable=False),
    )
    op.create_index("ix_client_certificates_client_pk", "client_certificates", ["client_pk"])


def downgrade() -> None:
    op.drop_index("ix_client_certificates_client_pk", "client_certificates")
    op.drop_table("client_certificates")
