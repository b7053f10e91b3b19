"""TLS client certificates bound to registered clients (RFC 8705 tls_client_auth): what
`tincay client bind` stores and what ca.services.clients.Clients.by_certificate asks.

A binding is the SHA-256 of the certificate's DER, the value a TLS handshake hands the server
and no other certificate shares, so authenticating a presented certificate is one indexed
lookup, with no parsing and no name matching (RFC 8705 2.2's self-signed variant, by
fingerprint, applied to every certificate: the handshake has already proved the key, and the
gunicorn ssl context has already checked the chain against the client-CA bundle). Issuer,
serial and validity are kept beside it for operators and for the expiry check.

A certificate tincay issued is also checked against tincay's own certificate table at every
use (one outer join), so `tincay revoke` or a hold ends its logins at once, on every worker;
one from another CA can be bound too (``--cert-file``), and then tincay knows only its
validity.

Functions here take the caller's Session; ca.services.clients owns the transactions.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ca.errors import AlreadyExistsError, CertificateBindingError, NotFoundError
from ca.services.context import as_json
from ca.store import queries
from ca.store.models import ISSUED, ApiClient, Certificate, ClientCertificate
from ca.subject import format_name


@dataclass(frozen=True)
class CertificateBinding:
    """One bound certificate as operators see it (`tincay client list --json`)."""

    client: str
    fingerprint_sha256: str
    issuer: str
    serial_hex: str
    not_before: datetime
    not_after: datetime
    bound_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"fingerprint_sha256": self.fingerprint_sha256, "issuer": self.issuer,
                "serial": self.serial_hex, "not_before": self.not_before,
                "not_after": self.not_after, "bound_at": self.bound_at}


def fingerprint(der: bytes) -> str:
    """The key a certificate is bound by: SHA-256 of its DER, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as operators paste it (``openssl x509 -fingerprint -sha256``:
    ``sha256 Fingerprint=AB:CD:...``, colons, any case) -> 64 lower-case hex digits."""
    value = text.strip().lower().rpartition("=")[2].replace(":", "").replace(" ", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CertificateBindingError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value


def checked_certificate(der: bytes, now: datetime) -> x509.Certificate:
    """``der`` parsed, if a TLS client could log in with it: an end-entity certificate whose
    keyUsage (if any) allows digitalSignature and whose extendedKeyUsage (if any) names
    clientAuth, valid now. OpenSSL refuses the others in the handshake, so binding one would
    only hide the mistake until the client's first call."""
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = {e.oid: e.value for e in cert.extensions}
    except ValueError as exc:
        raise CertificateBindingError(f"not an X.509 certificate: {exc}") from None
    what = f"certificate {format(cert.serial_number, 'x')} of {format_name(cert.issuer)}"
    constraints = extensions.get(x509.BasicConstraints.oid)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise CertificateBindingError(f"{what} is a CA certificate, not a TLS client's")
    usage = extensions.get(x509.KeyUsage.oid)
    if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
        raise CertificateBindingError(f"{what}: its keyUsage lacks digitalSignature, which a "
                                      "TLS client needs to prove its key")
    purposes = extensions.get(x509.ExtendedKeyUsage.oid)
    if isinstance(purposes, x509.ExtendedKeyUsage) and not (
            {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
            & set(purposes)):
        raise CertificateBindingError(f"{what} is not for TLS client authentication: its "
                                      "extendedKeyUsage lacks clientAuth (issue it from the "
                                      "tls-client profile)")
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CertificateBindingError(f"{what} is not valid now (valid "
                                      f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                                      f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)")
    return cert


def tincay_der(session: Session, ca: str, serial: str, *, issued: bool = True) -> bytes:
    """The DER of certificate ``serial`` of tincay's CA ``ca`` (NotFoundError if there is
    none); with ``issued``, only while it is issued and not revoked or on hold (to bind it),
    else CertificateBindingError."""
    row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
    if row.der is None or (issued and row.status != ISSUED):
        raise CertificateBindingError(f"certificate {row.serial_hex} of {ca} is {row.status}: "
                                      "only an issued certificate can be bound")
    return row.der


def bind(session: Session, client: ApiClient, der: bytes, now: datetime) -> CertificateBinding:
    """Bind ``der`` to ``client`` (one certificate, one client), with an audit event."""
    cert = checked_certificate(der, now)
    digest = fingerprint(der)
    holder = session.scalar(select(ApiClient.name).join(
        ClientCertificate, ClientCertificate.client_pk == ApiClient.id).where(
        ClientCertificate.fingerprint_sha256 == digest))
    if holder is not None:
        raise AlreadyExistsError(f"certificate {digest} is already bound to client {holder}")
    row = ClientCertificate(client_pk=client.id, fingerprint_sha256=digest,
                            issuer=format_name(cert.issuer),
                            serial_hex=format(cert.serial_number, "x"),
                            not_before=cert.not_valid_before_utc,
                            not_after=cert.not_valid_after_utc, bound_at=now)
    session.add(row)
    session.flush()
    queries.record_event(session, at=now, action="client.bind_certificate",
                         serial_hex=row.serial_hex, subject=format_name(cert.subject),
                         details=as_json({"client": client.name, "client_id": client.client_id,
                                          "fingerprint_sha256": digest, "issuer": row.issuer}))
    return _binding(client.name, row)


def unbind(session: Session, client: ApiClient, digest: str, now: datetime
           ) -> CertificateBinding:
    """Remove the binding of certificate ``digest`` from ``client``, with an audit event."""
    row = session.scalar(select(ClientCertificate).where(
        ClientCertificate.client_pk == client.id, ClientCertificate.fingerprint_sha256 == digest))
    if row is None:
        raise NotFoundError(f"client {client.name} has no certificate {digest} bound")
    binding = _binding(client.name, row)
    session.delete(row)
    queries.record_event(session, at=now, action="client.unbind_certificate",
                         serial_hex=row.serial_hex,
                         details=as_json({"client": client.name, "client_id": client.client_id,
                                          "fingerprint_sha256": digest, "issuer": row.issuer}))
    return binding


def bindings(session: Session, client: ApiClient | None = None) -> list[CertificateBinding]:
    """The bound certificates of ``client`` (of every client without one), by client and
    expiry."""
    query = (select(ApiClient.name, ClientCertificate)
             .join(ApiClient, ApiClient.id == ClientCertificate.client_pk)
             .order_by(ApiClient.name, ClientCertificate.not_after, ClientCertificate.id))
    if client is not None:
        query = query.where(ClientCertificate.client_pk == client.id)
    return [_binding(name, row) for name, row in session.execute(query)]


def _binding(name: str, row: ClientCertificate) -> CertificateBinding:
    return CertificateBinding(name, row.fingerprint_sha256, row.issuer, row.serial_hex,
                              row.not_before, row.not_after, row.bound_at)


# The one query behind Clients.by_certificate (a ca.store.hot.HotQuery): the binding, its
# client, and the certificate's status if tincay issued it.
BOUND_CLIENT_QUERY = (
    select(ClientCertificate.not_before, ClientCertificate.not_after, ApiClient.client_id,
           ApiClient.name, ApiClient.status, ApiClient.role, ApiClient.cas, ApiClient.profiles,
           ApiClient.created_at, Certificate.status)
    .join(ApiClient, ApiClient.id == ClientCertificate.client_pk)
    .outerjoin(Certificate,
               Certificate.fingerprint_sha256 == ClientCertificate.fingerprint_sha256)
    .where(ClientCertificate.fingerprint_sha256 == bindparam("fingerprint")))


def refusal(row: Sequence[Any] | None, now: datetime) -> str | None:
    """Why a row of :data:`BOUND_CLIENT_QUERY` does not authenticate its client now, or None."""
    if row is None:
        return "the client certificate is not bound to a registered client"
    not_before, not_after, _, _, client_status, *_, certificate_status = row
    if client_status != "active":
        return "the client certificate's client is disabled"
    if not not_before <= now < not_after:
        return "the client certificate has expired or is not yet valid"
    if certificate_status not in (None, ISSUED):  # revoked, on hold (both "revoked"), pending
        return "the client certificate is revoked or on hold"
    return None
