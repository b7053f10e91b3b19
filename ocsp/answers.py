"""The DER of signed OCSP answers (RFC 6960 4.2.1), framed from pieces encoded once.

Building a response with asn1crypto cost about 2 ms of Python per answer (some 200 ``dump``
calls), several times the HSM's signature; every answer signed live (a nonce, a SHA-256
CertID, a first question) paid it. The structure is fixed apart from a few fields, so it is
framed with :mod:`ca.der` around constant parts (the responder ID, the signature algorithm,
the responder's certificate, status encodings) that the responder key encodes once with
asn1crypto; the request's CertID is echoed as the client sent it. tests/test_ocsp.py checks
every shape byte for byte against the same response built with asn1crypto.
"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl

from ca import der
from ca.revocation import ASN1_NAMES

__all__ = ["GOOD", "UNKNOWN", "EXTENDED_REVOKE", "revoked", "single_response",
           "nonce_extension", "response_data", "ocsp_response", "responder_id"]

GOOD = b"\x80\x00"  # certStatus good: [0] IMPLICIT NULL
UNKNOWN = b"\x82\x00"  # unknown: [2] IMPLICIT NULL
_REASONS = {name: der.tlv(0xA0, asn1_crl.CRLReason(asn1_name).dump())
            for name, asn1_name in ASN1_NAMES.items()}
_NONCE = asn1_core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2").dump()
_BASIC = asn1_core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.1").dump()
# RFC 6960 4.4.8: extnValue NULL; what "revoked" for a never-issued serial announces
EXTENDED_REVOKE = der.tlv(0x30, asn1_core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.9").dump(),
                          der.tlv(0x04, asn1_core.Null().dump()))
_SUCCESSFUL = b"\x0a\x01\x00"  # responseStatus successful (0)


def responder_id(key_sha1: bytes) -> bytes:
    """ResponderID byKey: [2] EXPLICIT KeyHash (the SHA-1 of the responder's public key)."""
    return der.tlv(0xA2, der.tlv(0x04, key_sha1))


def revoked(revoked_at: datetime, reason: str | None) -> bytes:
    """certStatus revoked: [1] IMPLICIT RevokedInfo; no reason for unspecified (RFC 5280
    5.3.1 recommends leaving it out)."""
    reason_der = _REASONS[reason] if reason is not None and reason != "unspecified" else b""
    return der.tlv(0xA1, der.generalized_time(revoked_at.replace(microsecond=0)), reason_der)


def single_response(cert_id: bytes, status: bytes, this_update: bytes,
                    next_update: bytes) -> bytes:
    """SingleResponse; the times already encoded (:func:`ca.der.generalized_time`)."""
    return der.tlv(0x30, cert_id, status, this_update, der.tlv(0xA0, next_update))


def nonce_extension(octets: bytes) -> bytes:
    """The nonce extension (not critical) with extnValue holding ``octets`` as received."""
    return der.tlv(0x30, _NONCE, der.tlv(0x04, octets))


def response_data(responder: bytes, produced_at: bytes, singles: Sequence[bytes],
                  extensions: Sequence[bytes] = ()) -> bytes:
    """ResponseData (version v1, the default, left out)."""
    parts = [responder, produced_at, der.tlv(0x30, *singles)]
    if extensions:
        parts.append(der.tlv(0xA1, der.tlv(0x30, *extensions)))
    return der.tlv(0x30, *parts)


def ocsp_response(tbs: bytes, algorithm: bytes, signature: bytes,
                  certificates: bytes | None = None) -> bytes:
    """A successful OCSPResponse around the BasicOCSPResponse; ``certificates`` is the DER of
    a SEQUENCE OF Certificate (the delegated responder's) or None."""
    basic = [tbs, algorithm, der.tlv(0x03, b"\x00", signature)]
    if certificates is not None:
        basic.append(der.tlv(0xA0, certificates))
    return der.tlv(0x30, _SUCCESSFUL,
                   der.tlv(0xA0, der.tlv(0x30, _BASIC, der.tlv(0x04, der.tlv(0x30, *basic)))))
