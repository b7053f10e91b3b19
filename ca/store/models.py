"""Typed SQLAlchemy 2.0 models: authorities, certificates, service units and the audit log.

Serials are stored as lower-case hex text (never BigInteger: a 20-octet serial does not fit) and
are unique per issuer by a constraint, so a CSPRNG collision fails loudly instead of shadowing a
certificate. Times are timezone-aware UTC on the way in and out, whatever the database keeps.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
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
    __table_args__ = (UniqueConstraint("unit", "serial_hex", name="uq_timestamp_tokens_serial"),
                      UniqueConstraint("chain_seq", name="uq_timestamp_tokens_chain_seq"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit: Mapped[str] = mapped_column(String(64))
    serial_hex: Mapped[str] = mapped_column(String(40))
    gen_time: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    imprint_algorithm: Mapped[str] = mapped_column(String(16))
    imprint_hex: Mapped[str] = mapped_column(String(128))
    policy: Mapped[str] = mapped_column(String(128))
    nonce_hex: Mapped[Optional[str]] = mapped_column(String(260))  # 1,024 bits + sign octet
    requester: Mapped[Optional[str]] = mapped_column(String(64))
    # the hash chain (ca.chain): the record's place in its log and its hash after the one before
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))


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
    __table_args__ = (UniqueConstraint("chain_seq", name="uq_audit_events_chain_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    action: Mapped[str] = mapped_column(String(64))
    authority: Mapped[Optional[str]] = mapped_column(String(64))
    serial_hex: Mapped[Optional[str]] = mapped_column(String(40))
    subject: Mapped[Optional[str]] = mapped_column(Text)
    details: Mapped[Optional[str]] = mapped_column(Text)
    # the hash chain (ca.chain): the record's place in its log and its hash after the one before
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))


# --- the platform's registered clients (remote signing, registration API) ------------------

class ApiClient(Base):
    """A relying application (a hospital's EMR, a school platform) registered by the operator.

    Its secret is stored only as a SHA-256 hash: it is 256 random bits, so a fast hash is as
    strong as a slow one (a PIN, short and chosen by a person, gets a memory-hard KDF instead).
    ``role``, ``cas`` and ``profiles`` scope what the registration API lets it do."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    role: Mapped[Optional[str]] = mapped_column(String(32))
    cas: Mapped[Optional[list[str]]] = mapped_column(JSON)
    profiles: Mapped[Optional[list[str]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    disabled_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)


class ClientCertificate(Base):
    """A TLS client certificate bound to a registered client (`tincay client bind`): the client
    may authenticate with it instead of its secret (RFC 8705 tls_client_auth). Kept by the
    SHA-256 of its DER, the one thing a TLS handshake hands over that no other certificate
    shares; issuer, serial and validity are kept for operators and for the expiry check, so
    the certificate need not be parsed at every request. One certificate, one client."""

    __tablename__ = "client_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), index=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(Text)
    serial_hex: Mapped[str] = mapped_column(String(40))
    not_before: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    bound_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` a client sent with ``POST /api/v1/certificates``: a retry with
    the same key and body gets the certificate it names, never a second one. The unique
    (client, key) pair is the lock two concurrent requests race for: the loser reads the
    winner's row. ``certificate_id`` is empty while the winner is still issuing."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("client_id", "key", name="uq_idempotency_client_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    certificate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("certificates.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AccessToken(Base):
    """A short-lived bearer token a client obtained; kept as a hash so a database reader holds
    nothing a client could present. Every worker on every host checks tokens here."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), index=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)

    client: Mapped[ApiClient] = relationship()


# --- remote signing (CSC API): credentials, their activations and the signature log --------

class SigningCredential(Base):
    """A certificate whose key is on the HSM, bound to its holder (``user_id``, e.g.
    ``CCCD:079073009568``) and to the clients that may drive it. The PIN is a memory-hard KDF
    hash; the TOTP seed is sealed under an HSM key (it must be read back to check a code)."""

    __tablename__ = "signing_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credential_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    pin_hash: Mapped[str] = mapped_column(String(256))
    otp_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    otp_last_step: Mapped[int] = mapped_column(Integer, default=0)  # a used code never again
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)
    multisign: Mapped[int] = mapped_column(Integer, default=1)  # hashes one SAD may cover
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    certificate: Mapped[Certificate] = relationship()
    clients: Mapped[list[ApiClient]] = relationship(secondary="credential_clients")


class CredentialClient(Base):
    """Which clients may list, authorise and sign with a credential."""

    __tablename__ = "credential_clients"

    credential_pk: Mapped[int] = mapped_column(ForeignKey("signing_credentials.id"),
                                               primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("api_clients.id"), primary_key=True)


class SignatureActivation(Base):
    """A SAD (signature activation data, CSC credentials/authorize): bound to one credential,
    one client and the exact hashes it covers, for ``num_signatures`` uses until
    ``expires_at``. Only its hash is kept; ``status`` is ready for out-of-band approval."""

    __tablename__ = "signature_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sad_hash: Mapped[str] = mapped_column(String(64), unique=True)
    credential_pk: Mapped[int] = mapped_column(ForeignKey("signing_credentials.id"), index=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("api_clients.id"))
    status: Mapped[str] = mapped_column(String(16), default="authorized")
    hash_algorithm_oid: Mapped[str] = mapped_column(String(64))
    num_signatures: Mapped[int] = mapped_column(Integer)
    signatures_used: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)


class ActivationHash(Base):
    """One hash a SAD covers; ``used_at`` is set by the one UPDATE that signs it, so a hash is
    signed at most once even when two workers race."""

    __tablename__ = "activation_hashes"
    __table_args__ = (UniqueConstraint("activation_pk", "hash_hex", name="uq_activation_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    activation_pk: Mapped[int] = mapped_column(ForeignKey("signature_activations.id"))
    hash_hex: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[Optional[dt.datetime]] = mapped_column(UtcDateTime)


class SignatureRecord(Base):
    """Every signature the remote-signing service made, recorded durably before it is returned
    (like the TSA's tokens). Names, not foreign keys: the record outlives what it names."""

    __tablename__ = "signature_records"
    __table_args__ = (UniqueConstraint("chain_seq", name="uq_signature_records_chain_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    credential_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    client: Mapped[str] = mapped_column(String(64))
    authority: Mapped[str] = mapped_column(String(64))
    serial_hex: Mapped[str] = mapped_column(String(40))
    hash_hex: Mapped[str] = mapped_column(String(128))
    hash_algorithm_oid: Mapped[str] = mapped_column(String(64))
    sign_algorithm_oid: Mapped[str] = mapped_column(String(64))
    activation_pk: Mapped[int] = mapped_column(Integer)
    # the hash chain (ca.chain): the record's place in its log and its hash after the one before
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))


# --- subscribers' keys, wrapped under the HSM's key-encryption key --------------------------

class SubscriberKey(Base):
    """An end-entity key generated in the HSM and stored wrapped under its KEK (AES key wrap
    with padding, RFC 5649; ca.keys.wrapping): the HSM holds one KEK instead of one object per
    subscriber. Certificates name it ``tincay:subscriber-key:<id>`` in ``key_uri``. The blob
    is useless without the KEK, and ``kek_label`` says which KEK unwraps it."""

    __tablename__ = "subscriber_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kek_label: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(String(16))  # KeySpec text: "ec-p256", "rsa-3072"
    public_key_der: Mapped[bytes] = mapped_column(LargeBinary)  # SubjectPublicKeyInfo
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


# --- the logs' hash chains (ca.chain) ---------------------------------------------------------

class LogChain(Base):
    """One row per log chain: a registry, and on SQLite what an ORM append writes to take the
    write lock before it reads the chain's last row (ca.store.chain_store). The head itself is
    the chain's last row; nothing else is stored here, so the hot paths never write it."""

    __tablename__ = "log_chains"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)


class LogCheckpoint(Base):
    """A chain's head signed by the audit key (ca.services.audit_chain): everything up to
    ``seq`` can no longer be rewritten unseen, even with the hashes after it recomputed."""

    __tablename__ = "log_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hex: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    key_label: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
