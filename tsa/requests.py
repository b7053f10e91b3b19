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
MAX_NONCE_OCTETS = 32  # far above the 64-bit nonces clients send; bounds what we echo
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
        try:
            request = asn1_tsp.TimeStampReq.load(data, strict=True)
            request.native  # noqa: B018 - parse every field now, not lazily later
        except der.UNREADABLE as exc:
            raise Rejected("badDataFormat", f"not a DER TimeStampReq: {exc}") from None
        if request["version"].native != "v1":
            raise Rejected("badRequest", f"version {request['version'].native} (only v1)")
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
        policy = request["req_policy"].native
        if policy is not None and policy not in self.policies:
            raise Rejected("unacceptedPolicy", f"policy {policy} not accepted")
        nonce = request["nonce"].native
        if nonce is not None and len(request["nonce"].contents) > MAX_NONCE_OCTETS:
            raise Rejected("badRequest", f"nonce longer than {MAX_NONCE_OCTETS} octets")
        for extension in request["extensions"] or ():
            if extension["critical"].native:
                raise Rejected("unacceptedExtension",
                               f"critical extension {extension['extn_id'].dotted}")
        return TsaQuestion(imprint.dump(), algorithm, digest, policy, nonce,
                           bool(request["cert_req"].native))
