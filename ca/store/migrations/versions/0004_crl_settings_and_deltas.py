"""Per-CA CRL and OCSP validity, the status-change time delta CRLs select by, and a covering
index that lets a million-entry CRL be read from the index alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("authorities") as batch:
        batch.add_column(sa.Column("crl_validity_seconds", sa.Integer, nullable=False,
                                   server_default="604800"))
        batch.add_column(sa.Column("delta_crl_validity_seconds", sa.Integer, nullable=True))
        batch.add_column(sa.Column("ocsp_validity_seconds", sa.Integer, nullable=False,
                                   server_default="43200"))
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("status_changed_at", _TS, nullable=True))
    op.execute("UPDATE certificates SET status_changed_at = revoked_at "
               "WHERE revoked_at IS NOT NULL")
    op.drop_index("ix_certificates_issuer_status", table_name="certificates")
    op.create_index("ix_certificates_crl", "certificates",
                    ["issuer_id", "status", "serial_hex", "revoked_at", "revocation_reason",
                     "invalidity_date"])
    op.create_index("ix_certificates_status_changed", "certificates",
                    ["issuer_id", "status_changed_at"])


def downgrade() -> None:
    op.drop_index("ix_certificates_status_changed", table_name="certificates")
    op.drop_index("ix_certificates_crl", table_name="certificates")
    op.create_index("ix_certificates_issuer_status", "certificates", ["issuer_id", "status"])
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("status_changed_at")
    with op.batch_alter_table("authorities") as batch:
        batch.drop_column("ocsp_validity_seconds")
        batch.drop_column("delta_crl_validity_seconds")
        batch.drop_column("crl_validity_seconds")
