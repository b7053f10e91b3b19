"""The DER of granted time-stamp tokens (RFC 3161 2.4.2, CMS SignedData, RFC 5816).

Built field by field with asn1crypto a token cost about 3 ms of Python, more than a P-256
signature on the HSM. Apart from TSTInfo's serial, genTime, imprint, policy and nonce and the
messageDigest attribute, a unit's tokens are the same bytes every time: :class:`TokenEncoder`
encodes those parts once with asn1crypto and frames each token with :mod:`ca.der` around them.
tests/test_tsa.py checks every shape byte for byte against the same token built with asn1crypto.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509

from ca import der

__all__ = ["TokenEncoder", "accuracy_fields"]

_GRANTED = der.tlv(0x30, der.integer(0))  # PKIStatusInfo {status granted}
_V1, _V3 = der.integer(1), der.integer(3)
_TST_INFO = asn1_cms.ContentType("tst_info").dump()
_SIGNED_DATA = asn1_cms.ContentType("signed_data").dump()
_MESSAGE_DIGEST = asn1_cms.CMSAttributeType("message_digest").dump()


class TokenEncoder:
    """Frames one TSA unit's tokens: ``signer`` and ``chain`` its certificates (the chain
    already without the root), the rest as :class:`tsa.core.TsaPolicy` says."""

    def __init__(self, signer: asn1_x509.Certificate, chain: Sequence[asn1_x509.Certificate],
                 signing_certificate: asn1_tsp.SigningCertificateV2, hash_name: str,
                 signature_algorithm: asn1_algos.SignedDigestAlgorithm, accuracy: timedelta,
                 tsa_name: bool) -> None:
        self._policies: dict[str, bytes] = {}
        self._accuracy = asn1_tsp.Accuracy(accuracy_fields(accuracy)).dump()
        self._tsa = der.tlv(0xA0, asn1_x509.GeneralName(
            name="directory_name", value=signer.subject).dump()) if tsa_name else b""
        certificates = asn1_cms.CertificateSet(
            [asn1_cms.CertificateChoices(name="certificate", value=c)
             for c in (signer, *chain)]).contents
        self._certificates = der.tlv(0xA0, certificates)  # [0] IMPLICIT CertificateSet
        self._content_type_attr = asn1_cms.CMSAttribute(
            {"type": "content_type", "values": ["tst_info"]}).dump()
        self._signing_certificate_attr = asn1_cms.CMSAttribute(
            {"type": "signing_certificate_v2", "values": [signing_certificate]}).dump()
        self._sid = asn1_cms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": signer.issuer, "serial_number": signer.serial_number}).dump()
        digest_algorithm = asn1_algos.DigestAlgorithm({"algorithm": hash_name})
        self._digest_algorithm = digest_algorithm.dump()
        self._digest_algorithms = asn1_cms.DigestAlgorithms([digest_algorithm]).dump()
        self._signature_algorithm = signature_algorithm.dump()

    def tst_info(self, policy: str, imprint: bytes, serial: int, gen_time: datetime,
                 nonce: int | None) -> bytes:
        """TSTInfo v1; ``imprint`` is the request's MessageImprint DER, copied."""
        policy_der = self._policies.get(policy)
        if policy_der is None:
            policy_der = self._policies[policy] = asn1_core.ObjectIdentifier(policy).dump()
        return der.tlv(0x30, _V1, policy_der, imprint, der.integer(serial),
                       der.generalized_time(gen_time), self._accuracy,
                       der.integer(nonce) if nonce is not None else b"", self._tsa)

    def signed_attributes(self, digest: bytes) -> bytes:
        """The SET OF signed attributes (what the key signs), ordered by encoding as DER
        requires; ``digest`` is the hash of the TSTInfo."""
        message_digest = der.tlv(0x30, _MESSAGE_DIGEST, der.tlv(0x31, der.tlv(0x04, digest)))
        return der.tlv(0x31, *sorted((self._content_type_attr, message_digest,
                                      self._signing_certificate_attr)))

    def response(self, tst_info: bytes, signed_attributes: bytes, signature: bytes,
                 with_certificates: bool) -> bytes:
        """A granted TimeStampResp carrying the token."""
        signer_info = der.tlv(0x30, _V1, self._sid, self._digest_algorithm,
                              b"\xa0" + signed_attributes[1:],  # [0] IMPLICIT, same length
                              self._signature_algorithm, der.tlv(0x04, signature))
        encapsulated = der.tlv(0x30, _TST_INFO, der.tlv(0xA0, der.tlv(0x04, tst_info)))
        signed_data = der.tlv(0x30, _V3, self._digest_algorithms, encapsulated,
                              self._certificates if with_certificates else b"",
                              der.tlv(0x31, signer_info))
        token = der.tlv(0x30, _SIGNED_DATA, der.tlv(0xA0, signed_data))
        return der.tlv(0x30, _GRANTED, token)


def accuracy_fields(accuracy: timedelta) -> dict[str, int]:
    """RFC 3161 Accuracy: seconds, millis and micros, each only when non-zero."""
    seconds, micros = divmod(round(accuracy.total_seconds() * 1_000_000), 1_000_000)
    millis, micros = divmod(micros, 1000)
    fields = {"seconds": seconds, "millis": millis, "micros": micros}
    return {name: value for name, value in fields.items() if value}
