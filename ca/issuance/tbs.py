"""The TBSCertificate's DER, framed directly: what ``CertificateBuilder.sign`` would encode,
without a signature.

cryptography has no unsigned TBSCertificate: the only way to its bytes is to sign the builder,
and :func:`ca.issuance.prepare` used to sign every certificate twice, once with a throwaway
"lint key" only to read the TBS back (a builder, its encoding and an ECDSA signature: about
80 us of a batch row's 300 us of pure work). Here the TBS is framed from parts cryptography
itself encodes, each with the encoder the builder uses (the subject and issuer ``Name``, the
``SubjectPublicKeyInfo``, every extension value through ``ExtensionType.public_bytes``, the
signature AlgorithmIdentifier read once per algorithm from a certificate the builder signed);
only the outer framing, the version, the serial, the validity times and the Extension
SEQUENCEs are written here (RFC 5280 4.1). tests/test_issuance_tbs.py compares the result
byte for byte with the builder's over every profile and subscriber key type.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from ca.der import OCTET_STRING, SEQUENCE, integer, read, time_from_digits, tlv
from ca.issuance.signature import lint_key, sign_builder
from ca.keys.base import KeySpec, PublicKey

_VERSION_3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2
_CRITICAL = b"\x01\x01\xff"  # BOOLEAN TRUE; FALSE is the DEFAULT, so DER leaves it out

Extensions = list[tuple[x509.ExtensionType, bool]]


def tbs_der(subject: x509.Name, issuer: x509.Name, public_key: PublicKey, serial: int,
            not_before: datetime, not_after: datetime, extensions: Extensions,
            algorithm_der: bytes) -> bytes:
    """The TBSCertificate the builder makes of these parts, in this extension order.

    ``algorithm_der`` is the signature AlgorithmIdentifier (:func:`algorithm_identifier`);
    times are whole-second UTC (ca.issuance.checks.validity makes them so)."""
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    parts = [_VERSION_3, integer(serial), algorithm_der, issuer.public_bytes(),
             tlv(SEQUENCE, _time(not_before), _time(not_after)), subject.public_bytes(), spki]
    if extensions:
        parts.append(tlv(0xA3, tlv(SEQUENCE, *[_extension(v, c) for v, c in extensions])))
    return tlv(SEQUENCE, *parts)


def _extension(value: x509.ExtensionType, critical: bool) -> bytes:
    """Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }."""
    body = tlv(OCTET_STRING, value.public_bytes())
    if critical:
        return tlv(SEQUENCE, _oid(value.oid.dotted_string), _CRITICAL, body)
    return tlv(SEQUENCE, _oid(value.oid.dotted_string), body)


@lru_cache(maxsize=256)
def _oid(dotted: str) -> bytes:
    return asn1_core.ObjectIdentifier(dotted).dump()


def _time(value: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, whole seconds."""
    v = value.astimezone(timezone.utc)
    return time_from_digits(f"{v.year:04d}{v.month:02d}{v.day:02d}{v.hour:02d}{v.minute:02d}"
                            f"{v.second:02d}")


_ALGORITHMS: dict[tuple[KeySpec, str | None, str | None, str | None], bytes] = {}


def algorithm_identifier(issuer_spec: KeySpec, algorithm: hashes.HashAlgorithm | None,
                         rsa_padding: padding.AsymmetricPadding | None) -> bytes:
    """The signature AlgorithmIdentifier DER the builder writes for an issuer key of
    ``issuer_spec`` signing with ``algorithm`` and ``rsa_padding``: read from a certificate
    the builder signed with the throwaway key of that spec, once per combination."""
    salt = rsa_padding._salt_length if isinstance(rsa_padding, padding.PSS) else None  # noqa: SLF001
    key = (issuer_spec, algorithm.name if algorithm else None,
           None if rsa_padding is None else rsa_padding.name, repr(salt))
    found = _ALGORITHMS.get(key)
    if found is None:
        found = _ALGORITHMS[key] = _algorithm(issuer_spec, algorithm, rsa_padding)
    return found


def _algorithm(issuer_spec: KeySpec, algorithm: hashes.HashAlgorithm | None,
               rsa_padding: padding.AsymmetricPadding | None) -> bytes:
    key = lint_key(issuer_spec)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "algorithm")])
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)  # type: ignore[arg-type]
               .not_valid_before(moment).not_valid_after(moment + timedelta(days=1)))
    der = sign_builder(builder, key, algorithm, rsa_padding).public_bytes(
        serialization.Encoding.DER)
    _, start, end = read(der, 0, len(der))
    _, _, tbs_end = read(der, start, end)
    _, _, algorithm_end = read(der, tbs_end, end)
    return der[tbs_end:algorithm_end]
