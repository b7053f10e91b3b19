"""Initial schema: authorities, certificates, service units, append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ca.store.db import append_only_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # authorities.certificate_id and certificates.issuer_id point at each other. SQLite accepts
    # the forward reference inline; PostgreSQL gets the constraint once both tables exist.
    certificate_fk = ([sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"],
                                               name="fk_authorities_certificate")]
                      if sqlite else [])
    op.create_table(
        "authorities",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("key_uri", sa.String(512), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("authorities.id"), nullable=True),
        sa.Column("certificate_id", sa.Integer, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        *certificate_fk,
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issuer_id", sa.Integer, sa.ForeignKey("authorities.id"), nullable=False),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("san", sa.JSON, nullable=True),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("tbs_der", sa.LargeBinary, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=True),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=True),
        sa.Column("key_uri", sa.String(512), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("issued_at", _TS, nullable=True),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("invalidity_date", _TS, nullable=True),
        sa.UniqueConstraint("issuer_id", "serial_hex", name="uq_certificates_issuer_serial"),
    )
    op.create_index("ix_certificates_issuer_status", "certificates", ["issuer_id", "status"])
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.create_index("ix_certificates_fingerprint_sha256", "certificates", ["fingerprint_sha256"])
    if not sqlite:
        op.create_foreign_key("fk_authorities_certificate", "authorities", "certificates",
                              ["certificate_id"], ["id"])
    op.create_table(
        "service_units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("authority_id", sa.Integer, sa.ForeignKey("authorities.id"), nullable=False),
        sa.Column("certificate_id", sa.Integer, sa.ForeignKey("certificates.id"),
                  nullable=False),
        sa.Column("key_uri", sa.String(512), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("authority", sa.String(64), nullable=True),
        sa.Column("serial_hex", sa.String(40), nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    _append_only("audit_events", sqlite)


def _append_only(table: str, sqlite: bool) -> None:
    """The audit log refuses UPDATE and DELETE in the database itself, not just in our code."""
    for statement in append_only_ddl(table, "sqlite" if sqlite else "postgresql"):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("audit_events")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only() CASCADE")
        op.drop_constraint("fk_authorities_certificate", "authorities", type_="foreignkey")
    op.drop_table("service_units")
    op.drop_table("certificates")
    op.drop_table("authorities")
