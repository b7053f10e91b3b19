"""The platform's registered clients and their bearer tokens; remote-signing credentials, their
activations (SADs) and hashes, and the signature log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("role", sa.String(32)),
        sa.Column("cas", sa.JSON),
        sa.Column("profiles", sa.JSON),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS),
    )
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("client_pk", sa.Integer, sa.ForeignKey("api_clients.id"), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
    )
    op.create_index("ix_access_tokens_client_pk", "access_tokens", ["client_pk"])
    op.create_index("ix_access_tokens_expires_at", "access_tokens", ["expires_at"])
    op.create_table(
        "signing_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("credential_id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("certificate_id", sa.Integer, sa.ForeignKey("certificates.id"),
                  nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pin_hash", sa.String(256), nullable=False),
        sa.Column("otp_sealed", sa.LargeBinary, nullable=False),
        sa.Column("otp_last_step", sa.Integer, nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("locked_at", _TS),
        sa.Column("multisign", sa.Integer, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_signing_credentials_user_id", "signing_credentials", ["user_id"])
    op.create_index("ix_signing_credentials_certificate_id", "signing_credentials",
                    ["certificate_id"])
    op.create_table(
        "credential_clients",
        sa.Column("credential_pk", sa.Integer, sa.ForeignKey("signing_credentials.id"),
                  primary_key=True),
        sa.Column("client_pk", sa.Integer, sa.ForeignKey("api_clients.id"), primary_key=True),
    )
    op.create_table(
        "signature_activations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sad_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("credential_pk", sa.Integer, sa.ForeignKey("signing_credentials.id"),
                  nullable=False),
        sa.Column("client_pk", sa.Integer, sa.ForeignKey("api_clients.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("hash_algorithm_oid", sa.String(64), nullable=False),
        sa.Column("num_signatures", sa.Integer, nullable=False),
        sa.Column("signatures_used", sa.Integer, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
    )
    op.create_index("ix_signature_activations_credential_pk", "signature_activations",
                    ["credential_pk"])
    op.create_index("ix_signature_activations_expires_at", "signature_activations",
                    ["expires_at"])
    op.create_table(
        "activation_hashes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("activation_pk", sa.Integer, sa.ForeignKey("signature_activations.id"),
                  nullable=False),
        sa.Column("hash_hex", sa.String(128), nullable=False),
        sa.Column("used_at", _TS),
        sa.UniqueConstraint("activation_pk", "hash_hex", name="uq_activation_hash"),
    )
    op.create_table(
        "signature_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("credential_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("hash_hex", sa.String(128), nullable=False),
        sa.Column("hash_algorithm_oid", sa.String(64), nullable=False),
        sa.Column("sign_algorithm_oid", sa.String(64), nullable=False),
        sa.Column("activation_pk", sa.Integer, nullable=False),
    )
    for column in ("at", "credential_id", "user_id"):
        op.create_index(f"ix_signature_records_{column}", "signature_records", [column])


def downgrade() -> None:
    for table in ("signature_records", "activation_hashes", "signature_activations",
                  "credential_clients", "signing_credentials", "access_tokens", "api_clients"):
        op.drop_table(table)
