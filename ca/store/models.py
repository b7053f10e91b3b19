"""Typed SQLAlchemy 2.0 models: authorities, certificates, service units and the audit log.

Serials are stored as lower-case hex text (never BigInteger: a 20-octet serial does not fit) and
are unique per issuer by a constraint, so a CSPRNG collision fails loudly instead of shadowing a
certificate. Times are timezone-aware UTC on the way in and out, whatever the database keeps.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ca.clock import UTC, ensure_utc

# Certificate.status values. A revoked certificate (certificateHold included) is "revoked";
# releasing a hold makes it "issued" again.
PENDING, ISSUED, FAILED, REVOKED = "pending", "issued", "failed", "revoked"
CERTIFICATE_STATUSES = (PENDING, ISSUED, FAILED, REVOKED)
# Authority.status values: "pending" until its own certificate is recorded.
AUTHORITY_STATUSES = ("pending", "active", "retired")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (naive storage) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect: Dialect) -> Any:
        if value is None:
            return None
        value = ensure_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Authority(Base):
    """A certification authority tincay operates: its key (by URI) and its current certificate."""

    __tablename__ = "authorities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    profile: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    key_uri: Mapped[str] = mapped_column(String(512))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("authorities.id"))
    certificate_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("certificates.id", use_alter=True, name="fk_authorities_certificate"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # What it publishes: CRL nextUpdate - thisUpdate, delta CRLs (None: none), OCSP validity.
    crl_validity_seconds: Mapped[int] = mapped_column(Integer, server_default="604800")
    delta_crl_validity_seconds: Mapped[Optional[int]] = mapped_column(Integer)
    ocsp_validity_seconds: Mapped[int] = mapped_column(Integer, server_default="43200")

    parent: Mapped[Optional["Authority"]] = relationship(remote_side="Authority.id",
                                                         foreign_keys=[parent_id])
    certificate: Mapped[Optional["Certificate"]] = relationship(foreign_keys=[certificate_id],
                                                                post_update=True)


class Certificate(Base):
    """Every certificate a tincay CA signed or was about to sign (``pending`` before signing)."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("issuer_id", "serial_hex", name="uq_certificates_issuer_serial"),
        # Covering: a CRL is read from this index alone (no table pages of DER blobs), and it
        # also serves every lookup by issuer and status.
        Index("ix_certificates_crl", "issuer_id", "status", "serial_hex", "revoked_at",
              "revocation_reason", "invalidity_date"),
        Index("ix_certificates_status_changed", "issuer_id", "status_changed_at"),
        Index("ix_certificates_not_after", "not_after"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"))
    serial_hex: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    profile: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    san: Mapped[Optional[list[str]]] = mapped_column(JSON)
    not_before: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    tbs_der: Mapped[bytes] = mapped_column(LargeBinary)
    der: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    fingerprint_sha256: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    key_uri: Mapped[Optional[str]] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    issued_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)
    failure: Mapped[Optional[str]] = mapped_column(Text)
    # Revocation (RFC 5280 5.3): reason as the RFC name (keyCompromise, certificateHold, ...).
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)
    revocation_reason: Mapped[Optional[str]] = mapped_column(String(32))
    invalidity_date: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)
    # When it was last revoked, put on hold or released: what delta CRLs select by.
    status_changed_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)

    issuer: Mapped[Authority] = relationship(foreign_keys=[issuer_id])


class ServiceUnit(Base):
    """An OCSP responder or TSA unit: its key and its certificate from one of our CAs."""

    __tablename__ = "service_units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    authority_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"))
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"))
    key_uri: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    authority: Mapped[Authority] = relationship()
    certificate: Mapped[Certificate] = relationship()


class CrlRecord(Base):
    """Every CRL a CA published: numbers are monotonic per issuer (RFC 5280 5.2.3), enforced by
    a unique constraint, and the DER is kept so the repository serves exactly what was signed."""

    __tablename__ = "crls"
    __table_args__ = (UniqueConstraint("issuer_id", "number", name="uq_crls_issuer_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"))
    number: Mapped[int] = mapped_column(Integer)
    delta_base: Mapped[Optional[int]] = mapped_column(Integer)  # set for delta CRLs
    this_update: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    next_update: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    entries: Mapped[int] = mapped_column(Integer)
    der: Mapped[bytes] = mapped_column(LargeBinary)

    issuer: Mapped[Authority] = relationship()


class TimestampToken(Base):
    """A time-stamp token the TSA granted, recorded durably before the reply leaves, so no
    client holds a token the operator cannot account for."""

    __tablename__ = "timestamp_tokens"
    __table_args__ = (UniqueConstraint("unit", "serial_hex", name="uq_timestamp_tokens_serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit: Mapped[str] = mapped_column(String(64))
    serial_hex: Mapped[str] = mapped_column(String(40))
    gen_time: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    imprint_algorithm: Mapped[str] = mapped_column(String(16))
    imprint_hex: Mapped[str] = mapped_column(String(128))
    policy: Mapped[str] = mapped_column(String(128))
    nonce_hex: Mapped[Optional[str]] = mapped_column(String(260))  # 1,024 bits + sign octet
    requester: Mapped[Optional[str]] = mapped_column(String(64))


class OcspResponse(Base):
    """A response signed ahead of time for one certificate (SHA-1 CertID, no nonce), so the
    OCSP hot path neither signs nor touches the HSM. ``status_token`` is the certificate's
    revocation state it encodes; a response whose token no longer matches is never served."""

    __tablename__ = "ocsp_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), unique=True)
    status_token: Mapped[str] = mapped_column(String(96))
    this_update: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    next_update: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)

    certificate: Mapped[Certificate] = relationship()


def status_token(status: str, reason: str | None, revoked_at: dt.datetime | None) -> str:
    """What a stored OCSP response must agree with to be served: status, reason and time."""
    when = revoked_at.astimezone(UTC).strftime("%Y%m%d%H%M%S") if revoked_at else ""
    return f"{status}|{reason or ''}|{when}"


class AuditEvent(Base):
    """Append-only record of every key generation, issuance and (later) revocation.

    Names, not foreign keys: an audit line must outlive anything it mentions. A database trigger
    (see the migrations) refuses UPDATE and DELETE.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    action: Mapped[str] = mapped_column(String(64))
    authority: Mapped[Optional[str]] = mapped_column(String(64))
    serial_hex: Mapped[Optional[str]] = mapped_column(String(40))
    subject: Mapped[Optional[str]] = mapped_column(Text)
    details: Mapped[Optional[str]] = mapped_column(Text)
