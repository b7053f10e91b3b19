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
from typing import Iterable, NamedTuple

from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import der, signing
from ca.clock import ensure_utc, truncate_seconds
from ca.errors import IssuanceError
from ca.keys.base import SigningKey
from ca.revocation import ASN1_NAMES

__all__ = ["CrlParams", "RevokedEntry", "StoredRevocation", "build_crl"]

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
    freshest_crl: str | None = None  # the delta CRL's URL, in complete CRLs (RFC 5280 5.2.6)

    def __post_init__(self) -> None:
        if self.number < 0 or self.number.bit_length() > 159:
            raise ValueError("cRLNumber must be a non-negative integer of at most 20 octets")
        if self.next_update <= self.this_update:
            raise ValueError("nextUpdate must be later than thisUpdate")
        if self.hash not in signing.HASHES or self.rsa_padding not in signing.RSA_PADDINGS:
            raise ValueError(f"unsupported CRL signature {self.hash}/{self.rsa_padding}")
        if self.delta_base is not None and self.freshest_crl is not None:
            raise ValueError("a delta CRL carries no Freshest CRL extension (RFC 5280 5.2.6)")
        if self.delta_base is not None and not 0 <= self.delta_base < self.number:
            raise ValueError("a delta CRL's base must be an earlier cRLNumber")


def build_crl(issuer: x509.Certificate, key: SigningKey,
              entries: Iterable[RevokedEntry | StoredRevocation], params: CrlParams) -> bytes:
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
    encoder = _EntryEncoder(params.delta_base is not None)
    for entry in entries:
        body += encoder.encode(entry)
    issuer_der = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    fields: dict = {
        "version": "v2",
        "signature": algorithm,
        "issuer": issuer_der["tbs_certificate"]["subject"],
        "this_update": _time(params.this_update),
        "next_update": _time(params.next_update),
    }
    # asn1crypto encodes every field; the revokedCertificates SEQUENCE (tens of MB for a
    # million entries) is spliced between nextUpdate and crlExtensions without being copied
    # into asn1crypto objects, so the peak is about twice the entries' size, not five times.
    head = asn1_crl.TbsCertList(fields).contents
    tail = asn1_crl.TbsCertList({**fields, "crl_extensions": _crl_extensions(issuer, params)}
                                ).contents[len(head):]
    revoked = der.header(0x30, len(body)) if body else b""
    tbs = bytearray(der.header(0x30, len(head) + len(revoked) + len(body) + len(tail)))
    tbs += head
    tbs += revoked
    tbs += body
    del body
    tbs += tail
    tbs = bytes(tbs)  # type: ignore[assignment]  # HSM backends want bytes
    signature = signing.sign(key, tbs, params.hash, params.rsa_padding)
    signing.verify(issuer.public_key(), signature, tbs,  # type: ignore[arg-type]
                   params.hash, params.rsa_padding)
    trailer = algorithm.dump() + asn1_core.OctetBitString(signature).dump()
    out = bytearray(der.header(0x30, len(tbs) + len(trailer)))
    out += tbs
    del tbs
    out += trailer
    return bytes(out)


class StoredRevocation(NamedTuple):
    """A revoked certificate as the store streams it: the serial in hex and UTC times as the
    14 digits YYYYMMDDHHMMSS (formatted by the database), so a million rows cost no datetime
    or int objects beyond the one being encoded."""

    serial_hex: str
    revoked: str
    reason: str | None = None
    invalidity: str | None = None


class _EntryEncoder:
    """DER of revokedCertificates entries, fast enough for a million of them (issue 3: under
    10 s). An asn1crypto RevokedCertificate costs ~190 us to build, and even its primitive
    types ~4 us per ``dump()``; at that rate the framing alone would take the whole budget.
    So each entry is framed with :mod:`ca.der` (tag, DER length, contents; tested byte for
    byte against asn1crypto) around contents that are either trivially fixed (INTEGER magnitude,
    the time's digits) or encoded by asn1crypto once and cached (the entry extensions).
    """

    def __init__(self, delta: bool) -> None:
        self._delta = delta
        self._extensions: dict[tuple[str | None, str | None], bytes] = {}

    def encode(self, entry: RevokedEntry | StoredRevocation) -> bytes:
        if isinstance(entry, RevokedEntry):
            serial = entry.serial
            revoked, invalidity = _digits(entry.revoked_at), _digits(entry.invalidity_date)
            reason = entry.reason
        else:  # a StoredRevocation or a database row of the same shape
            serial_hex, revoked, reason, invalidity = entry
            serial = int(serial_hex, 16)
        if serial <= 0:
            raise IssuanceError(f"serial {serial} is not a certificate serial")
        key = (reason, invalidity)
        extensions = self._extensions.get(key)
        if extensions is None:
            if len(self._extensions) > 65536:
                self._extensions.clear()
            extensions = self._extensions[key] = self._encode_extensions(reason, invalidity)
        try:
            time = der.time_from_digits(revoked)  # type: ignore[arg-type]
        except ValueError as exc:
            raise IssuanceError(str(exc)) from None
        # the INTEGER's contents: a positive serial's magnitude with room for a sign bit
        magnitude = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
        length = 2 + len(magnitude) + len(time) + len(extensions)
        if length < 0x80:  # every real entry: one-octet lengths, framed in one step
            return bytes((der.SEQUENCE, length, der.INTEGER, len(magnitude))) + magnitude \
                + time + extensions
        return der.tlv(der.SEQUENCE, der.tlv(der.INTEGER, magnitude), time, extensions)

    def _encode_extensions(self, reason: str | None, invalidity: str | None) -> bytes:
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
                               "extn_value": asn1_core.GeneralizedTime(
                                   contents=f"{invalidity}Z".encode())})
        return asn1_crl.CRLEntryExtensions(extensions).dump() if extensions else b""


def _digits(value: datetime | None) -> str | None:
    if value is None:
        return None
    return ensure_utc(value).strftime("%Y%m%d%H%M%S")


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
    if params.freshest_crl is not None:
        extensions.append({"extn_id": "freshest_crl", "critical": False, "extn_value": [
            {"distribution_point": {"full_name": [asn1_x509.GeneralName(
                name="uniform_resource_identifier", value=params.freshest_crl)]}}]})
    return extensions
