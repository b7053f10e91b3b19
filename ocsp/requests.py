"""Reading OCSP requests (RFC 6960 4.1): DER in, the CertIDs and the nonce out, or
MalformedRequest.

Validators nearly all send one shape: an unsigned v1 request (version left at its default),
one or a few CertIDs hashed with SHA-1 or SHA-256, and a non-critical nonce or none. Parsing
that shape with asn1crypto cost 0.35 ms, more than the HSM's P-256 signature; every nonce
answer paid it. So that shape is read here directly with :func:`ca.der.read`, and anything
else (a requestor name, a signature, other extensions, an unusual algorithm encoding, BER, a
broken length) goes to asn1crypto, which decides it as before. The direct reader only ever
accepts what asn1crypto would read the same way: tests/test_ocsp.py checks both agree on
mutated requests.
"""
from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp

from ca import der

__all__ = ["MAX_NONCE", "MalformedRequest", "OcspQuestion", "RequestedCert", "read_request"]

MAX_NONCE = 32  # RFC 8954: 1..32 octets
_IGNORED_EXTENSIONS = ("acceptable_responses", "preferred_signature_algorithms",
                       "1.3.6.1.5.5.7.48.1.7")  # service locator
# AlgorithmIdentifier DER as clients send it, with NULL parameters or none
_HASHES = {
    asn1_core.Sequence(contents=bytes.fromhex(oid) + suffix).dump(): name
    for name, oid in (("sha1", "06052b0e03021a"), ("sha256", "0609608648016503040201"))
    for suffix in (b"\x05\x00", b"")}
_NONCE_OID = asn1_core.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2").dump()
_REQUEST_EXTENSIONS = 0xA2  # [2] EXPLICIT in TBSRequest


class MalformedRequest(ValueError):
    """The request does not parse or breaks a rule the responder enforces."""


@dataclass(frozen=True)
class RequestedCert:
    """One CertID as asked: its hash, the issuer's name and key hashes, the serial, and its
    DER exactly as the client sent it (answers echo it)."""

    hash_name: str
    name_hash: bytes
    key_hash: bytes
    serial: int
    der: bytes


@dataclass(frozen=True)
class OcspQuestion:
    """A parsed request: its CertIDs and the octets of its nonce's extnValue, or None."""

    cert_ids: tuple[RequestedCert, ...]
    nonce: bytes | None


def read_request(request_der: bytes) -> OcspQuestion:
    """The CertIDs and nonce of ``request_der``; MalformedRequest for anything that does
    not parse, a negative serial, an unknown critical extension or a nonce outside RFC 8954's
    1..32 octets."""
    if not request_der:
        raise MalformedRequest("empty request")
    question = _read_common_shape(bytes(request_der))
    return question if question is not None else _read_any_shape(bytes(request_der))


def _read_common_shape(data: bytes) -> OcspQuestion | None:
    """The request if it has the common shape (module docstring), else None."""
    try:
        tag, start, end = der.read(data, 0, len(data))
        if tag != der.SEQUENCE or end != len(data):
            return None
        tag, pos, tbs_end = der.read(data, start, end)
        if tag != der.SEQUENCE or tbs_end != end:  # no optionalSignature
            return None
        tag, pos, list_end = der.read(data, pos, tbs_end)
        if tag != der.SEQUENCE:  # a version or a requestorName comes first: not the common shape
            return None
        cert_ids = []
        while pos < list_end:
            tag, item, item_end = der.read(data, pos, list_end)
            if tag != der.SEQUENCE:
                return None
            tag, cert_start, cert_end = der.read(data, item, item_end)
            if tag != der.SEQUENCE or cert_end != item_end:  # singleRequestExtensions
                return None
            cert_id = _read_cert_id(data, item, cert_start, cert_end)
            if cert_id is None:
                return None
            cert_ids.append(cert_id)
            pos = item_end
        nonce = None
        if list_end != tbs_end:
            nonce = _read_nonce_only(data, list_end, tbs_end)
            if nonce is None:
                return None
    except ValueError:
        return None
    if not cert_ids:
        raise MalformedRequest("no request in requestList")
    return OcspQuestion(tuple(cert_ids), nonce)


def _read_cert_id(data: bytes, begin: int, pos: int, end: int) -> RequestedCert | None:
    tag, start, alg_end = der.read(data, pos, end)
    hash_name = _HASHES.get(data[pos:alg_end])
    tag, name_start, name_end = der.read(data, alg_end, end)
    if hash_name is None or tag != der.OCTET_STRING:
        return None
    tag, key_start, key_end = der.read(data, name_end, end)
    if tag != der.OCTET_STRING:
        return None
    tag, serial_start, serial_end = der.read(data, key_end, end)
    if tag != der.INTEGER or serial_end != end:
        return None
    serial = der.read_unsigned(data[serial_start:serial_end])
    if serial is None:
        return None  # empty, negative or non-minimal: asn1crypto decides
    return RequestedCert(hash_name, data[name_start:name_end], data[key_start:key_end], serial,
                         data[begin:end])


def _read_nonce_only(data: bytes, pos: int, end: int) -> bytes | None:
    """requestExtensions holding exactly one non-critical nonce wrapped in an OCTET STRING:
    the octets of its extnValue; None for anything else. MalformedRequest for a nonce of the
    wrong length."""
    tag, start, outer_end = der.read(data, pos, end)
    if tag != _REQUEST_EXTENSIONS or outer_end != end:
        return None
    tag, start, list_end = der.read(data, start, end)
    if tag != der.SEQUENCE or list_end != end:
        return None
    tag, start, ext_end = der.read(data, start, end)
    if tag != der.SEQUENCE or ext_end != end:
        return None
    tag, oid_start, oid_end = der.read(data, start, end)
    if data[start:oid_end] != _NONCE_OID:
        return None
    tag, value_start, value_end = der.read(data, oid_end, end)
    if tag != der.OCTET_STRING or value_end != end:
        return None  # a critical flag comes first: asn1crypto decides
    tag, inner_start, inner_end = der.read(data, value_start, value_end)
    if tag != der.OCTET_STRING or inner_end != value_end:
        return None
    _check_nonce_length(inner_end - inner_start)
    return data[value_start:value_end]


def _check_nonce_length(length: int) -> None:
    if not 1 <= length <= MAX_NONCE:
        raise MalformedRequest(f"nonce of {length} octets (RFC 8954: 1 to 32)")


def _read_any_shape(data: bytes) -> OcspQuestion:
    """Any request asn1crypto can read, checked as RFC 6960 and RFC 8954 ask."""
    if der.nested_deeper(data, der.MAX_NESTING):
        raise MalformedRequest(f"nested deeper than {der.MAX_NESTING} levels")
    try:
        request = asn1_ocsp.OCSPRequest.load(data, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native != "v1":
            raise MalformedRequest("version is not v1")
        cert_ids = []
        for item in tbs["request_list"]:
            cert_ids.append(_checked_cert_id(item["req_cert"]))
            _check_extensions(item["single_request_extensions"])
        nonce = _check_extensions(tbs["request_extensions"])
        request["optional_signature"].native  # noqa: B018 - parsed, not required
    except MalformedRequest:
        raise
    except der.UNREADABLE as exc:
        raise MalformedRequest(f"does not parse: {exc}") from None
    if not cert_ids:
        raise MalformedRequest("no request in requestList")
    return OcspQuestion(tuple(cert_ids), nonce)


def _checked_cert_id(cert_id: asn1_ocsp.CertId) -> RequestedCert:
    """A CertID asn1crypto read, if it is DER: answers echo it, and asn1crypto reads more
    than DER (long-form lengths, constructed OCTET STRINGs, a NULL with contents, elements
    after the serial), which cryptography and OpenSSL then refuse in the signed answer."""
    serial = cert_id["serial_number"].native
    if serial < 0:
        raise MalformedRequest("negative serial number")
    algorithm = cert_id["hash_algorithm"]
    name_hash, key_hash = cert_id["issuer_name_hash"].native, cert_id["issuer_key_hash"].native
    oid = asn1_core.ObjectIdentifier(algorithm["algorithm"].dotted).dump()
    sent = cert_id.dump()
    if sent not in {der.tlv(der.SEQUENCE, der.tlv(der.SEQUENCE, oid, null),
                            der.tlv(der.OCTET_STRING, name_hash),
                            der.tlv(der.OCTET_STRING, key_hash), der.integer(serial))
                    for null in (b"", b"\x05\x00")}:
        raise MalformedRequest("a CertID that is not DER (or hashed with parameters)")
    return RequestedCert(algorithm["algorithm"].native, name_hash, key_hash, serial, sent)


def _check_extensions(extensions: asn1_core.Asn1Value) -> bytes | None:
    """The nonce among ``extensions`` as the octets of its extnValue (echoed byte for byte),
    after RFC 8954's 1..32-octet rule; unknown critical extensions are refused. A nonce must be
    an OCTET STRING inside extnValue (RFC 6960 4.4.1): asn1crypto refuses a bare one while
    parsing, so it is malformed."""
    nonce = None
    if not extensions:
        return None
    for extension in extensions:
        name = extension["extn_id"].native
        if name == "nonce":
            octets = extension["extn_value"].parsed.native
            _check_nonce_length(len(octets))
            nonce = extension["extn_value"].contents
            if nonce != der.tlv(der.OCTET_STRING, octets):  # echoed: DER only
                raise MalformedRequest("a nonce that is not DER")
        elif extension["critical"].native and name not in _IGNORED_EXTENSIONS:
            raise MalformedRequest(f"unsupported critical extension {name}")
    return nonce
