"""Pure CRL construction: revoked entries -> signed CertificateList (RFC 5280 section 5).

Entries are consumed as a stream and each is DER-encoded on its own (asn1crypto), so a CRL of a
million revoked certificates costs about 40 MB of encoded bytes instead of a million Python
objects. The encoded entries become the ``revokedCertificates`` SEQUENCE through asn1crypto's
``contents=`` (it writes the header; nothing is parsed back). The TBSCertList is signed through
the issuer's key object, so HSM keys sign CRLs exactly as they sign certificates.

Imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import signing
from ca.clock import ensure_utc, truncate_seconds
from ca.errors import IssuanceError
from ca.keys.base import SigningKey
from ca.revocation import ASN1_NAMES

__all__ = ["CrlParams", "RevokedEntry", "build_crl"]

_UTC_TIME_END = datetime(2050, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate; ``reason`` is the RFC 5280 name, None for no reasonCode."""

    serial: int
    revoked_at: datetime
    reason: str | None = None
    invalidity_date: datetime | None = None


@dataclass(frozen=True)
class CrlParams:
    """The CRL's own fields. ``delta_base`` makes it a delta CRL (deltaCRLIndicator)."""

    number: int
    this_update: datetime
    next_update: datetime
    delta_base: int | None = None
    hash: str = "sha256"
    rsa_padding: str = "pkcs1v15"  # pkcs1v15 | pss

    def __post_init__(self) -> None:
        if self.number < 0 or self.number.bit_length() > 159:
            raise ValueError("cRLNumber must be a non-negative integer of at most 20 octets")
        if self.next_update <= self.this_update:
            raise ValueError("nextUpdate must be later than thisUpdate")
        if self.hash not in signing.HASHES or self.rsa_padding not in signing.RSA_PADDINGS:
            raise ValueError(f"unsupported CRL signature {self.hash}/{self.rsa_padding}")


def build_crl(issuer: x509.Certificate, key: SigningKey, entries: Iterable[RevokedEntry],
              params: CrlParams) -> bytes:
    """The DER of a v2 CRL issued by ``issuer`` and signed with ``key`` (its key).

    Entries carry reasonCode (omitted for unspecified, as RFC 5280 5.3.1 recommends) and
    invalidityDate; the CRL carries AKI (the issuer's SKI), cRLNumber and, for deltas, a
    critical deltaCRLIndicator. removeFromCRL is only allowed in a delta CRL. The signature is
    verified with the issuer's public key before the CRL is returned.
    """
    if key.public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo) != \
            issuer.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo):
        raise IssuanceError("the CRL signing key is not the issuer certificate's key")
    algorithm = signing.signature_algorithm(key.public_key, params.hash, params.rsa_padding)
    body = bytearray()
    count = 0
    encoder = _EntryEncoder(params.delta_base is not None)
    for entry in entries:
        body += encoder.encode(entry)
        count += 1
    issuer_der = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    tbs_fields: dict = {
        "version": "v2",
        "signature": algorithm,
        "issuer": issuer_der["tbs_certificate"]["subject"],
        "this_update": _time(params.this_update),
        "next_update": _time(params.next_update),
        "crl_extensions": _crl_extensions(issuer, params),
    }
    if count:
        tbs_fields["revoked_certificates"] = asn1_crl.RevokedCertificates(contents=bytes(body))
    del body
    tbs = asn1_crl.TbsCertList(tbs_fields)
    tbs_der = tbs.dump()
    signature = signing.sign(key, tbs_der, params.hash, params.rsa_padding)
    signing.verify(issuer.public_key(), signature, tbs_der,  # type: ignore[arg-type]
                   params.hash, params.rsa_padding)
    return asn1_crl.CertificateList({"tbs_cert_list": tbs, "signature_algorithm": algorithm,
                                     "signature": signature}).dump()


class _EntryEncoder:
    """DER of revokedCertificates entries, fast enough for a million of them.

    Building each entry as an asn1crypto RevokedCertificate costs ~190 us; encoding its parts
    with asn1crypto's primitive types and framing them with ``contents=`` costs ~10 us, and the
    parts that repeat (revocation seconds, reason/invalidity extensions) are encoded once.
    """

    def __init__(self, delta: bool) -> None:
        self._delta = delta
        self._times: dict[datetime, bytes] = {}
        self._extensions: dict[tuple[str | None, datetime | None], bytes] = {}

    def encode(self, entry: RevokedEntry) -> bytes:
        if entry.serial <= 0:
            raise IssuanceError(f"serial {entry.serial} is not a certificate serial")
        parts = asn1_core.Integer(entry.serial).dump() + self._time(entry.revoked_at)
        parts += self._entry_extensions(entry.reason, entry.invalidity_date)
        return asn1_core.Sequence(contents=parts).dump()

    def _time(self, value: datetime) -> bytes:
        encoded = self._times.get(value)
        if encoded is None:
            if len(self._times) > 65536:
                self._times.clear()
            encoded = self._times[value] = _time_der(value)
        return encoded

    def _entry_extensions(self, reason: str | None, invalidity: datetime | None) -> bytes:
        key = (reason, invalidity)
        encoded = self._extensions.get(key)
        if encoded is None:
            if len(self._extensions) > 65536:
                self._extensions.clear()
            encoded = self._extensions[key] = self._encode_extensions(reason, invalidity)
        return encoded

    def _encode_extensions(self, reason: str | None, invalidity: datetime | None) -> bytes:
        extensions = []
        if reason is not None and reason != "unspecified":
            code = ASN1_NAMES.get(reason)
            if code is None:
                raise IssuanceError(f"unknown revocation reason {reason!r}")
            if code == "remove_from_crl" and not self._delta:
                raise IssuanceError("removeFromCRL belongs in delta CRLs only (RFC 5280 5.3.1)")
            extensions.append({"extn_id": "crl_reason", "critical": False, "extn_value": code})
        if invalidity is not None:
            extensions.append({"extn_id": "invalidity_date", "critical": False,
                               "extn_value": truncate_seconds(ensure_utc(invalidity))})
        return asn1_crl.CRLEntryExtensions(extensions).dump() if extensions else b""


def _time_der(value: datetime) -> bytes:
    """What ``_time(value).dump()`` gives, without building the CHOICE (the hot path)."""
    value = truncate_seconds(ensure_utc(value))
    if value < _UTC_TIME_END:
        return asn1_core.UTCTime(contents=value.strftime("%y%m%d%H%M%SZ").encode()).dump()
    return asn1_core.GeneralizedTime(contents=value.strftime("%Y%m%d%H%M%SZ").encode()).dump()


def _time(value: datetime) -> asn1_x509.Time:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 5.1.2.4)."""
    value = truncate_seconds(ensure_utc(value))
    return asn1_x509.Time({"utc_time" if value < _UTC_TIME_END else "general_time": value})


def _crl_extensions(issuer: x509.Certificate, params: CrlParams) -> list[dict]:
    try:
        key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        key_id = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest  # type: ignore[arg-type]
    extensions = [
        {"extn_id": "authority_key_identifier", "critical": False,
         "extn_value": {"key_identifier": key_id}},
        {"extn_id": "crl_number", "critical": False, "extn_value": params.number},
    ]
    if params.delta_base is not None:
        extensions.append({"extn_id": "delta_crl_indicator", "critical": True,
                           "extn_value": params.delta_base})
    return extensions
