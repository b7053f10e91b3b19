"""What issuance takes and gives: the issuer, the request, the URLs and the prepared certificate.

Plain frozen dataclasses, so a request can be checked, prepared and persisted without anything
changing under it between :func:`ca.issuance.prepare` and :func:`ca.issuance.sign`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ca.issuance.signature import frame, lint_key, sign_data
from ca.keys.base import KeySpec, PublicKey, SigningKey
from ca.profiles import Profile


@dataclass(frozen=True)
class IssuerInfo:
    """Who signs: the CA's tincay name (used in URLs), its certificate and its signing key.

    ``certificate`` is None only while creating a self-signed root, whose subject is then also
    the issuer name.
    """

    name: str
    certificate: x509.Certificate | None
    key: SigningKey
    publishes_deltas: bool = False  # its certificates may then point at its delta CRL


@dataclass(frozen=True)
class Urls:
    """Where relying parties fetch status and the issuer certificate (AIA, CRL DP, freshestCRL)."""

    ocsp: str | None = None
    ca_issuers: str | None = None
    crl: str | None = None
    freshest_crl: str | None = None


def urls_for(public_url: str, issuer_name: str, *, deltas: bool = False) -> Urls:
    """The repository layout tincay serves under one public base URL, for one issuing CA.

    ``{base}/ocsp``, ``{base}/certs/{ca}.cer``, ``{base}/crl/{ca}.crl`` and
    ``{base}/crl/{ca}-delta.crl`` (only for a CA that publishes delta CRLs, so no certificate
    points at a CRL that will never exist); one function so the HTTP routes and the
    certificates agree.
    """
    base = public_url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ValueError(f"public URL {public_url!r} must be an absolute http(s) URL")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", issuer_name):
        raise ValueError(f"CA name {issuer_name!r} is not safe in a URL path")
    return Urls(ocsp=f"{base}/ocsp", ca_issuers=f"{base}/certs/{issuer_name}.cer",
                crl=f"{base}/crl/{issuer_name}.crl",
                freshest_crl=f"{base}/crl/{issuer_name}-delta.crl" if deltas else None)


@dataclass(frozen=True)
class CertificateRequest:
    """What to certify. ``subject`` is already validated against the profile (ca/subject.py).

    ``not_after`` defaults to the profile's default validity; validity periods are inclusive
    (RFC 5280 4.1.2.5), so N days end one second before ``not_before + N days``.
    """

    profile: Profile
    subject: x509.Name
    public_key: PublicKey
    serial: int
    not_before: datetime
    not_after: datetime | None = None
    emails: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedCertificate:
    """A checked, fully encoded certificate that is not signed yet.

    ``tbs_der`` is the exact TBSCertificate :func:`ca.issuance.sign` will sign; persist it
    before signing. ``algorithm_der`` is its signature AlgorithmIdentifier, which frames the
    signature. :attr:`preview` is the same TBS signed by a throwaway key, made only when
    asked (for a linter before the real signature): issuance itself does not need it.
    """

    tbs_der: bytes
    algorithm_der: bytes
    issuer_spec: KeySpec
    serial: int
    not_before: datetime
    not_after: datetime
    profile_name: str
    issuer_name: str
    issuer_spki: bytes
    hash_algorithm: hashes.HashAlgorithm | None
    rsa_padding: padding.AsymmetricPadding | None

    @property
    def serial_hex(self) -> str:
        """Lower-case hex without leading zeros: how the store and logs name a certificate."""
        return format(self.serial, "x")

    @cached_property
    def preview(self) -> x509.Certificate:
        """The TBS signed by the process's throwaway key of the issuer's spec (never the
        issuer's key: it does not verify under the issuer), for linting."""
        signature = sign_data(lint_key(self.issuer_spec), self.tbs_der, self.hash_algorithm,
                              self.rsa_padding)
        return x509.load_der_x509_certificate(frame(self.tbs_der, self.algorithm_der,
                                                    signature))
