"""Facts issuance reads from encoded keys and certificates: SPKI bytes, key identifiers,
extensions.

Keys are compared by their SubjectPublicKeyInfo DER, never by object identity: an HSM key, a
memory key and a certificate's key of one pair are different objects with the same SPKI.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.keys.base import PublicKey


def spki(public_key: PublicKey) -> bytes:
    """The key's SubjectPublicKeyInfo DER."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_identifier(public_key: PublicKey) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (the
    unused-bits octet skipped), as cryptography computes it in Rust: asn1crypto's parse of
    the SPKI cost a batch's certificate more than its hash."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def extension_value(cert: x509.Certificate, ext_type: type) -> x509.ExtensionType | None:
    """The value of ``cert``'s extension of ``ext_type``, None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None
