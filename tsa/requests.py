"""Reading time-stamp requests (RFC 3161 2.4.1): DER in, what the TSA needs out, or Rejected
with the failInfo RFC 3161 2.4.2 names for the fault.

Clients nearly all send one shape: version 1, a MessageImprint with an accepted hash (its
AlgorithmIdentifier with NULL parameters or none), perhaps an accepted policy, perhaps a
nonce, certReq TRUE or absent, no extensions. Parsing that with asn1crypto cost about a tenth
of a granted token's CPU (the HSM signature is a third), so that shape is read here directly
with :func:`ca.der.read`; anything else (an extension, an unknown policy or hash, a broken or
non-minimal encoding) goes to asn1crypto, which decides it and words the rejection.
tests/test_tsa.py checks both readers agree on generated and mutated requests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import tsp as asn1_tsp

from ca import der

__all__ = ["DIGEST_SIZES", "MAX_NONCE_OCTETS", "Rejected", "RequestReader", "TsaQuestion"]

# RFC 3161 imprint hashes by asn1crypto name, with their digest sizes
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
# RFC 3161 sets no bound on the nonce; clients send 64 bits, signing tools up to 256 or 512
# (with the sign octet, 33 or 65 octets). 1024 bits and its sign octet bounds what a token
# (and the token log's nonce_hex column) carries.
MAX_NONCE_OCTETS = 129
_VERSION_1 = b"\x01"
_TRUE = b"\xff"


class Rejected(Exception):
    """A request the TSA refuses: ``fail_info`` is an RFC 3161 name (badAlg, ...)."""

    def __init__(self, fail_info: str, text: str) -> None:
        super().__init__(text)
        self.fail_info = fail_info


@dataclass(frozen=True)
class TsaQuestion:
    """A request the TSA will answer: its MessageImprint DER as sent (TSTInfo copies it),
    the imprint's hash and digest, the policy asked for, the nonce, and certReq."""

    imprint: bytes
    algorithm: str
    digest: bytes
    policy: str | None
    nonce: int | None
    cert_req: bool


class RequestReader:
    """Reads requests for a TSA that accepts imprints hashed with ``hashes`` and the
    policies ``policies`` (dotted OIDs)."""

    def __init__(self, hashes: Iterable[str], policies: Iterable[str]) -> None:
        self.hashes = tuple(hashes)
        self.policies = frozenset(policies)
        self._algorithms = {  # AlgorithmIdentifier DER without parameters and with NULL
            der.tlv(der.SEQUENCE, asn1_algos.DigestAlgorithmId(name).dump(), null): name
            for name in self.hashes for null in (b"", b"\x05\x00")}
        self._policy_oids = {asn1_core.ObjectIdentifier(policy).dump(): policy
                             for policy in self.policies}

    def read(self, request_der: bytes) -> TsaQuestion:
        """The request's content; Rejected with the fitting failInfo otherwise."""
        data = bytes(request_der)
        question = self._read_common_shape(data)
        return question if question is not None else self._read_any_shape(data)

    def _read_common_shape(self, data: bytes) -> TsaQuestion | None:
        """The request if it has the common shape (module docstring), else None."""
        try:
            tag, pos, end = der.read(data, 0, len(data))
            if tag != der.SEQUENCE or end != len(data):
                return None
            tag, start, pos = der.read(data, pos, end)
            if tag != der.INTEGER or data[start:pos] != _VERSION_1:
                return None
            imprint_start = pos
            tag, start, imprint_end = der.read(data, pos, end)
            if tag != der.SEQUENCE:
                return None
            tag, _, algorithm_end = der.read(data, start, imprint_end)
            algorithm = self._algorithms.get(data[start:algorithm_end])
            tag, digest_start, digest_end = der.read(data, algorithm_end, imprint_end)
            if algorithm is None or tag != der.OCTET_STRING or digest_end != imprint_end or \
                    digest_end - digest_start != DIGEST_SIZES[algorithm]:
                return None
            policy = nonce = None
            cert_req = False
            pos = imprint_end
            if pos < end and data[pos] == der.OID:
                _, _, oid_end = der.read(data, pos, end)
                policy = self._policy_oids.get(data[pos:oid_end])
                if policy is None:
                    return None
                pos = oid_end
            if pos < end and data[pos] == der.INTEGER:
                _, start, pos = der.read(data, pos, end)
                nonce = der.read_unsigned(data[start:pos])
                if nonce is None or pos - start > MAX_NONCE_OCTETS:
                    return None  # empty, long, negative or non-minimal: asn1crypto decides
            if pos < end and data[pos] == der.BOOLEAN:
                _, start, pos = der.read(data, pos, end)
                if data[start:pos] != _TRUE:  # FALSE is the DEFAULT: DER leaves it out
                    return None
                cert_req = True
            if pos != end:  # extensions, or fields out of order
                return None
        except ValueError:
            return None
        return TsaQuestion(data[imprint_start:imprint_end], algorithm,
                           data[digest_start:digest_end], policy, nonce, cert_req)

    def _read_any_shape(self, data: bytes) -> TsaQuestion:
        """Any request asn1crypto can read, checked as RFC 3161 asks."""
        if der.nested_deeper(data, der.MAX_NESTING):
            raise Rejected("badDataFormat", f"nested deeper than {der.MAX_NESTING} levels")
        try:
            request = asn1_tsp.TimeStampReq.load(data, strict=True)
            request.native  # noqa: B018 - parse every field now, not lazily later
        except der.UNREADABLE as exc:
            raise Rejected("badDataFormat", f"not a DER TimeStampReq: {exc}") from None
        if request["version"].native != "v1":
            raise Rejected("badRequest", f"version {_short(request['version'])} (only v1)")
        imprint = request["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        if algorithm not in self.hashes:
            raise Rejected("badAlg", f"imprint hash {algorithm} not accepted (accepted: "
                                     f"{', '.join(self.hashes)})")
        if imprint["hash_algorithm"]["parameters"].native is not None:
            raise Rejected("badAlg", f"{algorithm} with parameters")
        digest = bytes(imprint["hashed_message"].native)
        if len(digest) != DIGEST_SIZES[algorithm]:
            raise Rejected("badDataFormat", f"a {algorithm} imprint of {len(digest)} octets "
                                            f"(expected {DIGEST_SIZES[algorithm]})")
        # TSTInfo copies the MessageImprint as sent, and asn1crypto reads more than DER: a
        # NULL with contents (05 01 00), long-form lengths, a constructed OCTET STRING, an
        # element trailing the digest. A token is signed DER only, so the imprint must be
        # exactly one of the encodings the common shape takes (module docstring).
        sent = imprint.dump()
        algorithm_der = imprint["hash_algorithm"].dump()
        if self._algorithms.get(algorithm_der) != algorithm or sent != der.tlv(
                der.SEQUENCE, algorithm_der, der.tlv(der.OCTET_STRING, digest)):
            raise Rejected("badDataFormat", "the MessageImprint is not DER")
        policy = request["req_policy"].native
        if policy is not None and policy not in self.policies:
            raise Rejected("unacceptedPolicy", f"policy {policy} not accepted")
        nonce = request["nonce"].native
        if nonce is not None and len(request["nonce"].contents) > MAX_NONCE_OCTETS:
            raise Rejected("badRequest", f"nonce longer than {MAX_NONCE_OCTETS} octets "
                                         f"({(MAX_NONCE_OCTETS - 1) * 8} bits)")
        for extension in request["extensions"] or ():
            if extension["critical"].native:
                raise Rejected("unacceptedExtension",
                               f"critical extension {extension['extn_id'].dotted}")
        return TsaQuestion(imprint.dump(), algorithm, digest, policy, nonce,
                           bool(request["cert_req"].native))


def _short(value: asn1_core.Integer) -> str:
    """An INTEGER a client sent, for a rejection's text: its value if short, else its size
    (Python refuses to print an int of more than 4,300 digits, and no one reads it)."""
    contents = value.contents or b""
    return str(value.native) if len(contents) <= 8 else f"of {len(contents)} octets"
