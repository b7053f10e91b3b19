"""What the CA services take and hand back: frozen values, no sessions or ORM rows inside."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.keys.base import KeySpec, PrivateKey


@dataclass(frozen=True)
class IssuedCertificate:
    """What an issuance hands back: the certificate and where its key lives.

    ``private_key`` is the signer object for a key the CA generated (an HSM handle that signs
    through PKCS#11, or an in-memory key for throwaway hierarchies); None for a CSR.
    """

    certificate: x509.Certificate
    serial_hex: str
    issuer: str
    profile: str
    key_uri: str | None = None
    private_key: PrivateKey | None = None

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class KeySource:
    """Where the subject's public key comes from: a verified CSR, or a key the CA generates:
    wrapped under the HSM's key-encryption key (ca.services.subscriber_keys), or with
    ``token_object`` a token object of its own, for a signing application that reaches the
    key through PKCS#11 itself (one object per subscriber: it does not scale to a province)."""

    csr: x509.CertificateSigningRequest | None = None
    generate: KeySpec | None = None
    token_object: bool = False

    def __post_init__(self) -> None:
        if (self.csr is None) == (self.generate is None):
            raise ValueError("give exactly one of csr and generate")
        if self.token_object and self.generate is None:
            raise ValueError("token_object goes with generate")


@dataclass(frozen=True)
class CertificateStatus:
    """What the store knows of one serial: status (issued, revoked, pending, failed) and, when
    revoked, when, why (RFC 5280 reason name) and since when the key was invalid."""

    status: str
    revoked_at: datetime | None = None
    reason: str | None = None
    invalidity_date: datetime | None = None


@dataclass(frozen=True)
class ServiceUnitKey:
    """An OCSP responder or TSA unit as the services need it. ``chain``: its CA up to the root."""

    name: str
    authority: str
    authority_certificate: x509.Certificate
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key_uri: str


@dataclass(frozen=True)
class CrlInfo:
    """A published CRL: its number, times, size and DER."""

    ca: str
    number: int
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes
    delta_base: int | None = None  # the complete CRL's number, for a delta CRL
