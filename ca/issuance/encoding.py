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


_KEPT: dict[int, tuple[object, bytes]] = {}  # id -> (the object, kept alive; its SPKI)
_KEPT_MAX = 32


def kept_spki(owner: PublicKey | x509.Certificate) -> bytes:
    """The SPKI DER of an issuer's key or certificate, kept per object: prepare and sign
    asked it four times a certificate of the same few issuer objects (5 us each). Only for
    long-lived objects (issuers): the few kept are held alive, so their ids stay theirs."""
    found = _KEPT.get(id(owner))
    if found is not None and found[0] is owner:
        return found[1]
    key = owner.public_key() if isinstance(owner, x509.Certificate) else owner
    der = spki(key)  # type: ignore[arg-type]
    if len(_KEPT) >= _KEPT_MAX:
        _KEPT.clear()
    _KEPT[id(owner)] = (owner, der)
    return der


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
