"""The RFC 3161 TSA: the pure core (tsa/core.py) and POST /tsa (web/tsa.py), judged by
OpenSSL (`openssl ts -verify`), rfc3161-client, asn1crypto and pyHanko."""
from __future__ import annotations

import datetime as dt
import hashlib
import random
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import algos as aalgos
from asn1crypto import cms as acms
from asn1crypto import core as acore
from asn1crypto import tsp as atsp
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.der import tlv
from ca.clock import FrozenClock
from ca.errors import BackendUnavailableError, StoreError
from ca.testing import Hierarchy
from web.app import create_app
from tests import helpers_x509 as hx
from tests import mutations
from tests.mutations import assert_mutated_readers_agree, mutate
from tsa.core import (TimeStampAuthority, TimeStampResp, TsaPolicy, TsaUnit,
                      time_ordered_serial)

QUERY = "application/timestamp-query"
REPLY = "application/timestamp-reply"
DATA = "Đơn thuốc số 0042: Amoxicillin 500 mg".encode()
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class World:
    """The demo hierarchy (it has a TSA unit) served by the real app through Flask's client."""

    def __init__(self, pki: Hierarchy, tmp_path: Path) -> None:
        self.pki = pki
        self.app = create_app(pki.service)
        self.http = self.app.test_client()
        self.dir = tmp_path
        [self.unit] = pki.service.authorities.service_units("tsa")
        self.root = hx.write_pem(tmp_path / "root.pem", pki.root)
        self.tsa_pem = hx.write_pem(tmp_path / "tsa.pem", self.unit.certificate,
                                    *self.unit.chain[:-1])
        self.data = tmp_path / "record.txt"
        self.data.write_bytes(DATA)

    def query(self, *args: str) -> bytes:
        out = self.dir / f"q-{secrets.token_hex(4)}.tsq"
        subprocess.run(["openssl", "ts", "-query", "-data", str(self.data), *args, "-out",
                        str(out)], check=True, capture_output=True)
        return out.read_bytes()

    def post(self, der: bytes, content_type: str = QUERY):
        return self.http.post("/tsa", data=der, content_type=content_type)

    def stamp(self, der: bytes) -> bytes:
        response = self.post(der)
        assert response.status_code == 200 and response.mimetype == REPLY
        return response.data

    def openssl_verify(self, reply: bytes, *extra: str) -> subprocess.CompletedProcess:
        path = self.dir / f"r-{secrets.token_hex(4)}.tsr"
        path.write_bytes(reply)
        return subprocess.run(["openssl", "ts", "-verify", "-data", str(self.data), "-in",
                               str(path), "-CAfile", str(self.root), *extra],
                              capture_output=True, text=True)


@pytest.fixture
def world(tmp_path: Path):
    with Hierarchy.from_spec(at=NOW) as pki:
        yield World(pki, tmp_path)


def status(reply: bytes) -> tuple[str, set[str] | None]:
    parsed = TimeStampResp.load(reply)["status"]
    return parsed["status"].native, parsed["fail_info"].native


def tst_info(reply: bytes) -> atsp.TSTInfo:
    token = TimeStampResp.load(reply)["time_stamp_token"]
    return token["content"]["encap_content_info"]["content"].parsed


# --- what clients we did not write accept ---------------------------------------------------

@pytest.mark.parametrize("digest", ["-sha256", "-sha384", "-sha512"])
@pytest.mark.parametrize("cert_req", [True, False], ids=["certReq", "noCertReq"])
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "noNonce"])
def test_openssl_verifies_every_accepted_hash(world: World, digest: str, cert_req: bool,
                                              nonce: bool) -> None:
    args = [digest] + (["-cert"] if cert_req else []) + ([] if nonce else ["-no_nonce"])
    reply = world.stamp(world.query(*args))
    assert status(reply) == ("granted", None)
    # without certReq the token carries no certificate: the verifier is given them; with it,
    # the token carries the TSA certificate and its issuing CA, and the root is enough
    untrusted = ["-untrusted", str(world.tsa_pem)] if not cert_req else []
    result = world.openssl_verify(reply, *untrusted)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stderr
    signed = TimeStampResp.load(reply)["time_stamp_token"]["content"]
    assert len(signed["certificates"] or []) == (2 if cert_req else 0)
    info = tst_info(reply)
    assert info["policy"].dotted == "1.3.6.1.4.1.59999.1.3"  # the TSA certificate's policy
    assert info["message_imprint"]["hashed_message"].native == \
        hashlib.new(digest[1:], DATA).digest()
    assert (info["nonce"].native is not None) is nonce
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["ordering"].native is False and info["gen_time"].native == NOW
    text = subprocess.run(["openssl", "ts", "-reply", "-in", str(sorted(world.dir.glob(
        "r-*.tsr"))[0]), "-text"], capture_output=True, text=True).stdout
    assert "Policy OID: 1.3.6.1.4.1.59999.1.3" in text and "Ordering: no" in text


def test_token_structure_rfc5816(world: World) -> None:
    """Signed attributes contentType, messageDigest and signingCertificateV2 naming exactly the
    TSA certificate; eContentType id-ct-TSTInfo; the unit's EKU is timeStamping, critical."""
    reply = world.stamp(world.query("-sha256", "-cert"))
    signed = TimeStampResp.load(reply)["time_stamp_token"]["content"]
    assert signed["encap_content_info"]["content_type"].native == "tst_info"
    [signer] = signed["signer_infos"]
    attributes = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert set(attributes) == {"content_type", "message_digest", "signing_certificate_v2"}
    [ess] = attributes["signing_certificate_v2"]["certs"]
    cert_der = hx.der_of(world.unit.certificate)
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == world.unit.certificate.serial_number
    content = signed["encap_content_info"]["content"].contents
    assert attributes["message_digest"].native == hashlib.sha256(content).digest()
    eku = world.unit.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]


def _asn1crypto_token(authority: TimeStampAuthority, imprint: atsp.MessageImprint,
                      info: atsp.TSTInfo, cert_req: bool, signature: bytes) -> bytes:
    """The reference: the reply built field by field with asn1crypto, as the TSA did before
    tsa/tokens.py, around a given signature (ECDSA signatures are randomised)."""
    from ca import signing
    from tsa.core import _signing_certificate_v2
    from tsa.tokens import accuracy_fields

    policy, hash_name = authority.policy, authority.hash
    signer = hx.asn1_cert(authority.unit.certificate)
    fields: dict = {"version": "v1", "policy": info["policy"].dotted,
                    "message_imprint": imprint, "serial_number": info["serial_number"].native,
                    "gen_time": info["gen_time"].native,
                    "accuracy": accuracy_fields(policy.accuracy)}
    if info["nonce"].native is not None:
        fields["nonce"] = info["nonce"].native
    if policy.tsa_name:
        fields["tsa"] = {"directory_name": signer.subject}
    tst_info = atsp.TSTInfo(fields).dump()
    attributes = sorted(
        (acms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
         acms.CMSAttribute({"type": "message_digest",
                            "values": [hashlib.new(hash_name, tst_info).digest()]}),
         acms.CMSAttribute({"type": "signing_certificate_v2", "values": [
             _signing_certificate_v2(signer, hx.der_of(authority.unit.certificate))]})),
        key=lambda a: a.dump())
    signer_info = acms.SignerInfo({
        "version": "v1", "sid": {"issuer_and_serial_number": {
            "issuer": signer.issuer, "serial_number": signer.serial_number}},
        "digest_algorithm": {"algorithm": hash_name},
        "signed_attrs": acms.CMSAttributes(attributes),
        "signature_algorithm": signing.signature_algorithm(authority.unit.key.public_key,
                                                           hash_name),
        "signature": signature})
    signed_data: dict = {
        "version": "v3", "digest_algorithms": [aalgos.DigestAlgorithm({"algorithm": hash_name})],
        "encap_content_info": {"content_type": "tst_info",
                               "content": acore.ParsableOctetString(tst_info)},
        "signer_infos": [signer_info]}
    if cert_req:
        chain = [hx.asn1_cert(c) for c in authority.unit.chain
                 if policy.include_chain and c.subject != c.issuer]
        signed_data["certificates"] = [signer, *chain]
    return TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": {
        "content_type": "signed_data", "content": acms.SignedData(signed_data)}}).dump()


@pytest.mark.parametrize("policy", [
    TsaPolicy(),
    TsaPolicy(accuracy=dt.timedelta(milliseconds=10), tsa_name=True, include_chain=True),
    TsaPolicy(accuracy=dt.timedelta(microseconds=1500), hashes=("sha1", "sha512"),
              accepted_policies=("1.2.3.4.5",), include_chain=False),
], ids=["default", "name-chain-10ms", "sha1-1500us-policy-no-chain"])
def test_tokens_are_asn1crypto_der_byte_for_byte(world: World, policy: TsaPolicy) -> None:
    """tsa/tokens.py frames tokens by hand for speed: every shape (certReq or not, nonce or
    not, tsa name, chain, accuracy with fractions, requested policy, each hash) must be
    exactly what asn1crypto encodes."""
    clock = FrozenClock(NOW + dt.timedelta(microseconds=123456))
    authority = _authority(world.pki, policy, clock)
    for algorithm in policy.hashes:
        imprint = atsp.MessageImprint({"hash_algorithm": {"algorithm": algorithm},
                                       "hashed_message": hashlib.new(algorithm, DATA).digest()})
        for cert_req in (True, False):
            for extra in ({}, {"nonce": 2 ** 63 + 5}, {"nonce": -128},  # echoed as sent
                          {"nonce": 2 ** 1023 + 7},
                          {"req_policy": "1.2.3.4.5"}):
                if "req_policy" in extra and "1.2.3.4.5" not in policy.accepted_policies:
                    continue
                reply = authority.respond(request(message_imprint=imprint, cert_req=cert_req,
                                                  **{"nonce": None, **extra})).response
                assert status(reply) == ("granted", None)
                signature = TimeStampResp.load(reply)["time_stamp_token"]["content"][
                    "signer_infos"][0]["signature"].native
                assert reply == _asn1crypto_token(authority, imprint, tst_info(reply),
                                                  cert_req, signature)


def test_rfc3161_client_verifies(world: World) -> None:
    from rfc3161_client import (HashAlgorithm, TimestampRequestBuilder, VerifierBuilder,
                                decode_timestamp_response)

    request = TimestampRequestBuilder().data(DATA).hash_algorithm(HashAlgorithm.SHA512) \
        .nonce(nonce=True).cert_request(cert_request=True).build()
    response = decode_timestamp_response(world.stamp(request.as_bytes()))
    verifier = VerifierBuilder.from_request(request).add_root_certificate(world.pki.root) \
        .add_intermediate_certificate(world.unit.chain[0]).build()
    assert verifier.verify_message(response, DATA)
    assert response.tst_info.serial_number > 2 ** 64  # time-ordered with random low bits
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type per version
        verifier.verify_message(response, DATA + b"tampered")


def test_pyhanko_signs_a_pdf_with_a_timestamp_from_the_served_tsa(tmp_path: Path) -> None:
    """A clinician's key from the CA core signs a PDF; the signature timestamp comes from
    POST /tsa on a real loopback server; pyHanko's validator accepts signature and token."""
    import asyncio
    import io

    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import signers
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    with Hierarchy.from_spec(at=NOW) as pki, pki.serve() as url:
        doctor = pki.issue("clinician", "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, "
                                        "UID=CCCD:079073009568", key_type="ec-p256")
        export = pki.export(tmp_path / "out")
        signer = signers.SimpleSigner.load(
            str(export / f"{doctor.serial_hex}-key.pem"),
            str(export / f"{doctor.serial_hex}.pem"),
            ca_chain_files=[str(export / "issuing-ca.pem"), str(export / "root-ca.pem")])
        pdf = _minimal_pdf()
        out = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                               signers.PdfSignatureMetadata(field_name="Signature1"),
                               signer=signer, timestamper=HTTPTimeStamper(f"{url}/tsa"))
        roots = [hx.asn1_cert(pki.root)]
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        [embedded] = PdfFileReader(out).embedded_signatures
        status_ = asyncio.run(async_validate_pdf_signature(
            embedded, signer_validation_context=context,
            ts_validation_context=ValidationContext(
                trust_roots=roots, allow_fetching=False,
                other_certs=[hx.asn1_cert(pki.ca("issuing-ca"))])))
        assert status_.intact and status_.valid and status_.bottom_line, status_.pretty_print_details()
        assert status_.timestamp_validity is not None and status_.timestamp_validity.valid \
            and status_.timestamp_validity.trusted
        [token] = [a["values"][0] for a in embedded.signer_info["unsigned_attrs"]
                   if a["type"].native == "signature_time_stamp_token"]
        serial = token["content"]["encap_content_info"]["content"].parsed["serial_number"]
        logged = {int(t["serial"], 16): t for t in pki.service.token_log.find()}
        assert logged[serial.native]["requester"] == "127.0.0.1"  # the embedded token, logged


def _minimal_pdf() -> bytes:
    from pyhanko.pdf_utils.writer import PdfFileWriter
    import io

    writer = PdfFileWriter()
    from pyhanko.pdf_utils import generic

    page = generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Page"),
        generic.NameObject("/MediaBox"): generic.ArrayObject([generic.NumberObject(n)
                                                              for n in (0, 0, 595, 842)])})
    writer.insert_page(page)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# --- durability -----------------------------------------------------------------------------

def test_each_granted_token_is_logged_before_the_reply(world: World, monkeypatch) -> None:
    reply = world.stamp(world.query("-sha384"))
    info = tst_info(reply)
    [logged] = world.pki.service.token_log.find()
    assert int(logged["serial"], 16) == info["serial_number"].native
    assert logged["imprint_algorithm"] == "sha384"
    assert logged["policy"] == info["policy"].dotted

    def fail(record) -> None:
        raise StoreError("database is gone")

    monkeypatch.setattr(world.pki.service.token_log, "record", fail)
    refused = world.stamp(world.query("-sha256"))
    assert status(refused) == ("rejection", {"system_failure"})  # no unrecorded token leaves
    assert len(world.pki.service.token_log.find()) == 1


# --- refusals: every failInfo from a real request --------------------------------------------

def request(**overrides) -> bytes:
    fields = {"version": "v1",
              "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                  "hashed_message": hashlib.sha256(DATA).digest()},
              "nonce": 12345, "cert_req": True}
    fields.update(overrides)
    return atsp.TimeStampReq(fields).dump()


REFUSED = [
    ("bad-alg-sha1", request(message_imprint={"hash_algorithm": {"algorithm": "sha1"},
                                              "hashed_message": b"\0" * 20}), "bad_alg"),
    ("bad-alg-md5", request(message_imprint={"hash_algorithm": {"algorithm": "md5"},
                                             "hashed_message": b"\0" * 16}), "bad_alg"),
    ("short-imprint", request(message_imprint={"hash_algorithm": {"algorithm": "sha256"},
                                               "hashed_message": b"\0" * 31}),
     "bad_data_format"),
    ("truncated", request()[:-3], "bad_data_format"),
    ("trailing", request() + b"\0", "bad_data_format"),
    ("empty", b"", "bad_data_format"),
    ("version-2", request(version=2), "bad_request"),
    ("policy", request(req_policy="1.2.3.4"), "unaccepted_policy"),
    ("critical-extension", request(extensions=[{"extn_id": "1.2.3.4", "critical": True,
                                                "extn_value": b"\x05\x00"}]),
     "unaccepted_extensions"),
    ("huge-nonce", request(nonce=2 ** 1031), "bad_request"),  # 130 octets with its sign octet
    ("version-of-2000-octets", tlv(0x30, tlv(0x02, b"\x7f" + b"\x01" * 1999),
                                   atsp.TimeStampReq.load(request()).contents[3:]),
     "bad_request"),  # past Python's 4,300-digit int-to-str limit: was systemFailure
]


@pytest.mark.parametrize("label,der,fail_info", REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals_carry_the_fitting_fail_info(world: World, label: str, der: bytes,
                                              fail_info: str) -> None:
    reply = world.stamp(der)
    assert status(reply) == ("rejection", {fail_info})
    assert TimeStampResp.load(reply)["status"]["status_string"].native  # for humans
    # OpenSSL reads the rejection too
    path = world.dir / "rejected.tsr"
    path.write_bytes(reply)
    text = subprocess.run(["openssl", "ts", "-reply", "-in", str(path), "-text"],
                          capture_output=True, text=True).stdout
    assert "Status: Rejected." in text
    assert world.pki.service.token_log.find() == []


def test_a_type_asn1crypto_cannot_decode_is_bad_data_not_a_bug(world: World, caplog) -> None:
    """A REAL (or an ObjectDescriptor) where an optional field may sit: asn1crypto declares the
    type but cannot decode it (AttributeError from ``.native``). Found by the mutation test
    below; it was answered systemFailure with a logged traceback."""
    fields = atsp.TimeStampReq.load(request(cert_req=False)).contents
    for odd in (tlv(0x09, b"\xff"), tlv(0x07, b"x")):
        with caplog.at_level("ERROR", logger="tincay.tsa"):
            reply = world.stamp(tlv(0x30, fields, odd))
        assert status(reply) == ("rejection", {"bad_data_format"})
        assert not [r for r in caplog.records if r.exc_info], caplog.text


def _imprint_request(imprint: bytes, *after: bytes) -> bytes:
    """A TimeStampReq v1 around a MessageImprint given as bytes (certReq TRUE)."""
    return tlv(0x30, tlv(0x02, b"\x01"), imprint, *after, b"\x01\x01\xff")


_SHA256 = aalgos.DigestAlgorithmId("sha256").dump()
_DIGEST = hashlib.sha256(DATA).digest()


@pytest.mark.parametrize("imprint", [
    tlv(0x30, tlv(0x30, _SHA256, b"\x05\x01\x00"), tlv(0x04, _DIGEST)),  # NULL with contents
    tlv(0x30, tlv(0x30, _SHA256, b"\x05\x81\x00"), tlv(0x04, _DIGEST)),  # NULL, long length
    b"\x30\x81\x2f" + tlv(0x30, _SHA256) + tlv(0x04, _DIGEST),  # long-form length
    tlv(0x30, tlv(0x30, _SHA256), b"\x04\x81\x20" + _DIGEST),
    tlv(0x30, tlv(0x30, _SHA256), tlv(0x24, tlv(0x04, _DIGEST[:5]), tlv(0x04, _DIGEST[5:]))),
    tlv(0x30, tlv(0x30, _SHA256), tlv(0x04, _DIGEST), b"\x02\x01\x05"),  # a trailing element
    tlv(0x30, tlv(0x30, b"\x06\x0a\x60\x86\x48\x01\x65\x03\x04\x02\x80\x01"), tlv(0x04, _DIGEST)),
], ids=["null-with-contents", "null-long-length", "imprint-long-length", "digest-long-length",
        "digest-constructed", "imprint-trailing-element", "oid-padded"])
def test_a_token_never_echoes_an_imprint_that_is_not_der(world: World, imprint: bytes) -> None:
    """TSTInfo copies the request's MessageImprint. asn1crypto reads these BER (or worse)
    imprints, and the TSA signed them into tokens OpenSSL cannot read ("null is wrong
    length"); a token is DER, so they are refused."""
    reply = world.stamp(_imprint_request(imprint))
    assert status(reply)[0] == "rejection" and status(reply)[1] <= {"bad_data_format",
                                                                    "bad_alg"}, status(reply)
    assert world.pki.service.token_log.find() == []
    for null in (b"", b"\x05\x00"):  # the two DER forms clients send are granted
        reply = world.stamp(_imprint_request(tlv(0x30, tlv(0x30, _SHA256, null),
                                                 tlv(0x04, _DIGEST))))
        assert status(reply) == ("granted", None)
        result = world.openssl_verify(reply)
        assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stderr


@pytest.mark.parametrize("odd", [
    b"\x09\x03\x80\x01\x01", b"\x07\x01x", b"\x28\x03\x02\x01\x01",  # REAL, ObjectDescriptor,
    mutations.HOSTILE[9],  # EXTERNAL; and a SEQUENCE nested 1500 deep (RecursionError)
], ids=["real", "object-descriptor", "external", "nested-1500-deep"])
def test_values_asn1crypto_cannot_convert_are_the_clients_error(world: World, odd: bytes,
                                                                caplog) -> None:
    """In a field typed ANY (the parameters of a hash asn1crypto knows no parameters for, or
    of one it does not know) asn1crypto raises AttributeError converting these, and
    RecursionError on deep nesting: the client's error (badDataFormat), no logged traceback,
    on the general reader and through HTTP alike."""
    for oid in ("1.2.3.4", "1.2.840.113549.2.5"):  # an unknown hash, md5
        algorithm = tlv(0x30, acore.ObjectIdentifier(oid).dump(), odd)
        body = _imprint_request(tlv(0x30, algorithm, tlv(0x04, _DIGEST)))
        with caplog.at_level("INFO", logger="tincay.tsa"):
            reply = world.stamp(body)
        assert status(reply) == ("rejection", {"bad_data_format"}), oid
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"], caplog.text


@pytest.mark.parametrize("bits", [64, 256, 512, 1024])
def test_nonces_up_to_1024_bits_are_granted_and_logged(database_url: str, tmp_path: Path,
                                                       bits: int) -> None:
    """RFC 3161 bounds no nonce; tools send 256 and 512 bits, which took 33 and 65 octets
    with the sign octet and were refused as longer than 32. Up to 1024 bits are granted by
    the direct reader and the asn1crypto reader alike, OpenSSL checks the token against the
    request, and the token log (PostgreSQL's VARCHAR too) holds the nonce."""
    from tsa.requests import MAX_NONCE_OCTETS

    nonce = 1 << (bits - 1) | secrets.randbits(bits - 1)  # top bit set: a sign octet in DER
    body = request(nonce=nonce, cert_req=True)
    with Hierarchy.from_spec(at=NOW, database_url=database_url) as pki:
        world = World(pki, tmp_path)
        reader = world.app.extensions["tincay.tsa"]._reader
        direct = reader._read_common_shape(body)
        assert direct is not None and direct == reader._read_any_shape(body)
        assert direct.nonce == nonce
        reply = world.stamp(body)
        assert status(reply) == ("granted", None)
        assert tst_info(reply)["nonce"].native == nonce
        query, answer = tmp_path / "q.tsq", tmp_path / "r.tsr"
        query.write_bytes(body)
        answer.write_bytes(reply)
        verified = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(query), "-in",
                                   str(answer), "-CAfile", str(world.root)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0 and "Verification: OK" in verified.stdout, \
            verified.stderr
        [logged] = pki.service.token_log.find()
        assert int(logged["nonce"], 16) == nonce
        too_long = request(nonce=1 << (MAX_NONCE_OCTETS * 8 - 1))  # one octet past the bound
        assert reader._read_common_shape(too_long) is None
        assert status(world.stamp(too_long)) == ("rejection", {"bad_request"})


def test_tokens_carry_the_issuing_chain_but_not_the_root_unless_told_not_to(
        world: World, monkeypatch) -> None:
    """jarsigner, osslsigncode and signify build the TSA's path only from the token: by
    default it carries the TSA certificate and its issuing CA, never the self-signed root
    (the verifier's own trust anchor), so ``-CAfile root`` alone verifies.
    TINCAY_TSA_CHAIN=no: the TSA certificate only."""
    reply = world.stamp(world.query("-sha256", "-cert"))
    carried = [c.chosen for c in TimeStampResp.load(reply)["time_stamp_token"]["content"][
        "certificates"]]
    expected = [world.unit.certificate, *world.unit.chain[:-1]]
    assert sorted(c.dump() for c in carried) == sorted(hx.der_of(c) for c in expected)  # SET OF
    assert not [c for c in carried if c.self_signed != "no"]  # no root
    assert world.unit.chain[-1].subject == world.unit.chain[-1].issuer  # (it was there to take)
    result = world.openssl_verify(reply)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stderr

    from tsa.config import tsa_settings

    assert tsa_settings({})[1].include_chain and tsa_settings({"TINCAY_TSA_CHAIN": ""})[1] \
        .include_chain and not tsa_settings({"TINCAY_TSA_CHAIN": "no"})[1].include_chain
    monkeypatch.setenv("TINCAY_TSA_CHAIN", "no")
    http = create_app(world.pki.service).test_client()
    alone = http.post("/tsa", data=world.query("-sha256", "-cert"), content_type=QUERY).data
    carried = TimeStampResp.load(alone)["time_stamp_token"]["content"]["certificates"]
    assert [c.chosen.dump() for c in carried] == [hx.der_of(world.unit.certificate)]
    assert world.openssl_verify(alone).returncode != 0  # the issuing CA is missing
    ca_pem = hx.write_pem(world.dir / "issuing.pem", *world.unit.chain[:-1])
    assert world.openssl_verify(alone, "-untrusted", str(ca_pem)).returncode == 0


def test_non_critical_unknown_extensions_and_accepted_policies(world: World) -> None:
    der = request(extensions=[{"extn_id": "1.2.3.4", "critical": False,
                               "extn_value": b"\x05\x00"}], req_policy="1.3.6.1.4.1.59999.1.3")
    assert status(world.stamp(der)) == ("granted", None)


def test_http_errors_and_no_flask_on_the_way(world: World) -> None:
    """web.tsa.TsaEndpoint answers /tsa in front of the Flask app; Flask never sees it."""
    dispatched: list[str] = []
    world.app.before_request(lambda: dispatched.append("flask") and None)
    assert world.post(request(), content_type="application/octet-stream").status_code == 415
    assert world.post(b"\x30" * 9000).status_code == 413
    refused = world.http.get("/tsa")
    assert refused.status_code == 405 and refused.headers["Allow"] == "POST"
    reply = world.http.post("/tsa/", data=request(), content_type=QUERY + "; charset=binary")
    assert reply.status_code == 200 and reply.mimetype == REPLY
    assert status(reply.data) == ("granted", None)
    assert int(reply.headers["Content-Length"]) == len(reply.data)
    assert dispatched == []
    assert world.http.post("/tsa/other", data=request(), content_type=QUERY).status_code == 404
    assert dispatched == ["flask"]  # only the path that is not the TSA's


def test_unavailable_key_time_and_expired_certificate(world: World, monkeypatch) -> None:
    authority: TimeStampAuthority = world.app.extensions["tincay.tsa"]

    class Broken:
        def now(self) -> dt.datetime:
            raise OSError("clock source lost")

    monkeypatch.setattr(authority, "clock", Broken())
    assert status(world.stamp(request())) == ("rejection", {"time_not_available"})
    monkeypatch.undo()

    def unreachable(*args, **kwargs) -> bytes:
        raise BackendUnavailableError("token removed")

    monkeypatch.setattr("tsa.core.signing.sign", unreachable)
    assert status(world.stamp(request())) == ("rejection", {"system_failure"})
    monkeypatch.undo()

    world.pki.clock.advance(dt.timedelta(days=3000))  # past the TSA certificate
    assert status(world.stamp(request())) == ("rejection", {"system_failure"})


@given(data=st.data())
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_requests_never_break_the_tsa(world: World, data: st.DataObject) -> None:
    response = world.post(mutate(data, request()))
    assert response.status_code == 200
    assert status(response.data)[0] in ("granted", "rejection")


@pytest.fixture(scope="module")
def core_tsa():
    """One TSA core over the demo hierarchy for the mutation test (built once: hypothesis
    runs its examples against it), with a policy a request may ask for."""
    with Hierarchy.from_spec(at=NOW) as pki:
        yield _authority(pki, TsaPolicy(accepted_policies=("1.2.3.4",)), pki.clock)


def _mutation_seeds() -> list[bytes]:
    """Requests of every shape the readers take: the common one, a long nonce, a policy and
    a non-critical extension (the general reader), SHA-512 with NULL parameters."""
    return [request(), request(nonce=2 ** 511 + 3), request(
        req_policy="1.2.3.4", cert_req=False, extensions=[
            {"extn_id": "1.2.3.9", "critical": False, "extn_value": b"\x30\x03\x02\x01\x05"}]),
        request(message_imprint={"hash_algorithm": {"algorithm": "sha512",
                                                    "parameters": acore.Null()},
                                 "hashed_message": hashlib.sha512(DATA).digest()})]


@given(seed=st.integers(0, 2 ** 64))  # a failure prints the seed that reproduces it
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_thirty_thousand_mutated_requests_through_the_core(core_tsa: TimeStampAuthority,
                                                           seed: int) -> None:
    """tests/mutations.py's byte and structural mutations (REAL, ObjectDescriptor, EXTERNAL,
    nesting past the recursion limit, a 4,800-digit INTEGER, BER framings) of each request
    shape, 1,000 per example: every answer is a TimeStampResp, none is systemFailure (the key
    and the clock work: a systemFailure is a bug) or logs a traceback, and every granted
    token is DER (asn1crypto re-encodes its TSTInfo byte for byte, rfc3161-client and
    cryptography read it). The campaign behind issue 19 found 430 systemFailures and tokens
    OpenSSL could not read in 55,000 such requests."""
    import logging

    from cryptography.hazmat.primitives.serialization import pkcs7
    from rfc3161_client import decode_timestamp_response

    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append  # type: ignore[method-assign]
    logger = logging.getLogger("tincay.tsa")
    logger.addHandler(handler)
    try:
        for body in mutations.mutate_many(random.Random(seed), _mutation_seeds(), 1000):
            result = core_tsa.respond(body)
            answer = TimeStampResp.load(result.response)
            assert answer["status"]["status"].native in ("granted", "rejection"), body.hex()
            assert result.fail_info != "systemFailure", body.hex()
            if result.granted is None:
                continue
            token = answer["time_stamp_token"]
            info = token["content"]["encap_content_info"]["content"].contents
            assert atsp.TSTInfo.load(info).dump(force=True) == info, body.hex()
            decode_timestamp_response(result.response)
            if token["content"]["certificates"]:
                assert pkcs7.load_der_pkcs7_certificates(token.dump())
    finally:
        logger.removeHandler(handler)
    assert logged == []


def _read(reader, der: bytes):
    from tsa.requests import Rejected

    try:
        return reader(der)
    except Rejected as exc:
        return "rejected", exc.fail_info


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_direct_request_reader_agrees_with_asn1crypto(data: st.DataObject) -> None:
    """tsa/requests.py reads the common request shape without asn1crypto: whatever it
    accepts must be what the asn1crypto reader makes of the same bytes, and it must really
    take the common shapes (else the fast path is dead)."""
    from tsa.requests import RequestReader

    reader = RequestReader(("sha256", "sha384", "sha512"), {"1.2.3.4", "2.16.704.1.99"})
    algorithm = data.draw(st.sampled_from(["sha1", "sha256", "sha384", "sha512", "md5"]))
    size = data.draw(st.sampled_from([{"sha1": 20, "md5": 16, "sha256": 32, "sha384": 48,
                                       "sha512": 64}[algorithm], 31]))
    oid = aalgos.DigestAlgorithmId(algorithm).dump()
    null = data.draw(st.sampled_from([b"\x05\x00", b""]))  # clients send NULL or nothing
    digest = data.draw(st.binary(min_size=size, max_size=size))
    imprint = tlv(0x30, tlv(0x30, oid, null), tlv(0x04, digest))
    fields = {"version": "v1", "message_imprint": atsp.MessageImprint.load(imprint)}
    policy = data.draw(st.sampled_from([None, "1.2.3.4", "2.16.704.1.99", "1.2.3.5"]))
    nonce = data.draw(st.one_of(st.none(), st.integers(-2 ** 64, 2 ** 1040)))
    cert_req = data.draw(st.booleans())
    critical = data.draw(st.sampled_from([None, False, True]))
    if policy is not None:
        fields["req_policy"] = policy
    if nonce is not None:
        fields["nonce"] = nonce
    if cert_req:
        fields["cert_req"] = True
    if critical is not None:
        fields["extensions"] = [{"extn_id": "1.2.3.9", "critical": critical,
                                 "extn_value": b"\x05\x00"}]
    body = atsp.TimeStampReq(fields).dump()
    direct = reader._read_common_shape(body)
    common = (algorithm in reader.hashes and size != 31 and policy != "1.2.3.5"
              and critical is None and (nonce is None or 0 <= nonce < 2 ** 1031))
    assert (direct is not None) == common
    if direct is not None:
        assert direct == reader._read_any_shape(body)
        assert (direct.policy, direct.nonce, direct.cert_req) == (policy, nonce, cert_req)
    assert_mutated_readers_agree(data, body, fast=reader._read_common_shape,
                                 general=reader._read_any_shape, combined=reader.read,
                                 outcome=_read)


# --- time and serials -----------------------------------------------------------------------

def _authority(pki: Hierarchy, policy: TsaPolicy, clock) -> TimeStampAuthority:
    [unit] = pki.service.authorities.service_units("tsa")
    return TimeStampAuthority(TsaUnit(unit.name, unit.certificate,
                                      pki.service.authorities.signing_key(unit.key_uri), unit.chain),
                              policy, clock)


def test_gen_time_never_goes_back_and_carries_only_warranted_digits() -> None:
    with Hierarchy.from_spec(at=NOW) as pki:
        clock = FrozenClock(NOW + dt.timedelta(microseconds=123456))
        fine = _authority(pki, TsaPolicy(accuracy=dt.timedelta(milliseconds=10)), clock)
        first = tst_info(fine.respond(request()).response)
        assert first["gen_time"].native == NOW + dt.timedelta(microseconds=120000)
        assert first["gen_time"].contents.endswith(b".12Z")
        assert first["accuracy"].native == {"seconds": None, "millis": 10, "micros": None}
        clock.set(NOW + dt.timedelta(microseconds=113000))  # steps back within the accuracy
        assert tst_info(fine.respond(request()).response)["gen_time"].native == \
            first["gen_time"].native
        clock.set(NOW - dt.timedelta(hours=1))  # steps back further: no trusted time
        assert status(fine.respond(request()).response) == ("rejection", {"time_not_available"})
        clock.set(NOW + dt.timedelta(minutes=1, microseconds=999999))
        coarse = _authority(pki, TsaPolicy(), clock)
        assert b"." not in tst_info(coarse.respond(request()).response)["gen_time"].contents
        serials = {tst_info(coarse.respond(request()).response)["serial_number"].native
                   for _ in range(200)}
        assert len(serials) == 200


def test_serials_sort_by_issue_time_and_fit_rfc_3161() -> None:
    """Time-ordered, so the log's serial index grows at its right edge; still 63 random bits
    each, positive, and within RFC 3161's 160 bits."""
    drawn = []
    for _ in range(50):
        drawn.append(time_ordered_serial())
        time.sleep(0.000002)  # a later microsecond
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)
    assert all(0 < s < 2 ** 160 for s in drawn)
    assert len({s & (2 ** 63 - 1) for s in drawn}) == len(drawn)  # the random low bits
    hexes = [format(s, "x") for s in drawn]  # as the log's index stores them
    assert hexes == sorted(hexes)
    assert abs((drawn[0] >> 63) / 1e6 - time.time()) < 60  # microseconds since 1970


def test_misconfigured_units_fail_at_start() -> None:
    with Hierarchy.from_spec(at=NOW) as pki:
        [unit] = pki.service.authorities.service_units("tsa")
        [ocsp] = pki.service.authorities.service_units("ocsp")
        key = pki.service.authorities.signing_key(unit.key_uri)
        with pytest.raises(ValueError, match="timeStamping only and critical"):
            TimeStampAuthority(TsaUnit("x", ocsp.certificate, key), TsaPolicy(), pki.clock)
        with pytest.raises(ValueError, match="not the certificate's key"):
            TimeStampAuthority(TsaUnit("x", unit.certificate,
                                       pki.service.authorities.signing_key(ocsp.key_uri)),
                               TsaPolicy(), pki.clock)
        with pytest.raises(ValueError, match="accuracy"):
            TsaPolicy(accuracy=dt.timedelta(seconds=2))
        with pytest.raises(ValueError, match="hashes"):
            TsaPolicy(hashes=("md5",))


def test_sha1_only_when_configured_and_chain_on_request(world: World, tmp_path: Path) -> None:
    authority = _authority(world.pki, TsaPolicy(hashes=("sha1", "sha256"), include_chain=True,
                                                tsa_name=True), world.pki.clock)
    reply = authority.respond(world.query("-sha1", "-cert")).response
    assert status(reply) == ("granted", None)
    assert world.openssl_verify(reply).returncode == 0  # the chain travels in the token
    signed = TimeStampResp.load(reply)["time_stamp_token"]["content"]
    assert len(signed["certificates"]) == 2  # the TSA and its issuing CA (not the root)
    assert tst_info(reply)["tsa"].chosen.native == \
        hx.asn1_cert(world.unit.certificate).subject.native


@pytest.mark.parametrize("env,message", [
    ({"TINCAY_TSA_ACCURACY": "2s"}, "TINCAY_TSA_ACCURACY: accuracy must be"),
    ({"TINCAY_TSA_ACCURACY": "fast"}, "TINCAY_TSA_ACCURACY: 'fast' is not a duration"),
    ({"TINCAY_TSA_HASHES": "sha256,md5"}, "TINCAY_TSA_HASHES: hashes: \\['md5'\\]"),
    ({"TINCAY_TSA_POLICIES": "1.2.3,medical"}, "TINCAY_TSA_POLICIES: 'medical' is not"),
    ({"TINCAY_TSA_DEFAULT_POLICY": "1.2.03"}, "TINCAY_TSA_DEFAULT_POLICY: '1.2.03'"),
    ({"TINCAY_TSA_CHAIN": "maybe"}, "TINCAY_TSA_CHAIN='maybe': use yes or no"),
], ids=["accuracy-range", "accuracy-text", "hash", "policy", "default-policy", "flag"])
def test_bad_tsa_settings_name_the_variable(env: dict, message: str) -> None:
    from ca.errors import ConfigurationError
    from tsa.config import tsa_settings

    with pytest.raises(ConfigurationError, match=message):
        tsa_settings(env)


@pytest.mark.parametrize("env,message", [
    ({"TINCAY_TSA_HASHES": " , "}, "TINCAY_TSA_HASHES: hashes: none (choose from"),
    ({"TINCAY_TSA_CHAIN": 1}, "TINCAY_TSA_CHAIN: expected a string, got an integer 1"),
    ({"TINCAY_TSA_ACCURACY": 5}, "TINCAY_TSA_ACCURACY: expected a string, got an integer 5"),
    ({"TINCAY_TSA_POLICIES": ["1.2"]}, "TINCAY_TSA_POLICIES: expected a string, got a list"),
], ids=["no-hashes", "flag-type", "accuracy-type", "policies-type"])
def test_tsa_settings_are_strings_and_a_set_list_is_never_taken_for_unset(
        env: dict, message: str) -> None:
    """Read through a pydantic model (tsa.config.TsaEnvironment): blank is unset, but a list
    that is set and holds nothing is refused; a value that is not a string is named."""
    from ca.errors import ConfigurationError
    from tsa.config import tsa_settings

    with pytest.raises(ConfigurationError) as info:
        tsa_settings(env)
    assert str(info.value).startswith(message), info.value
    assert tsa_settings({"TINCAY_TSA_ACCURACY": " ", "TINCAY_TSA_CHAIN": "",
                         "TINCAY_TSA_POLICIES": ""}) == tsa_settings({})


def test_tsa_settings_from_the_environment_reach_the_served_tokens(world: World, monkeypatch
                                                                   ) -> None:
    from ca.errors import ConfigurationError
    from tsa.config import tsa_settings

    assert tsa_settings({}) == (None, TsaPolicy())
    env = {"TINCAY_TSA_UNIT": world.unit.name, "TINCAY_TSA_ACCURACY": "10ms",
           "TINCAY_TSA_DEFAULT_POLICY": "1.3.6.1.4.1.59999.1.3",
           "TINCAY_TSA_POLICIES": "1.2.3.4, 1.2.3.5", "TINCAY_TSA_HASHES": "sha256,sha1",
           "TINCAY_TSA_CHAIN": "yes", "TINCAY_TSA_NAME": "on"}
    assert tsa_settings(env) == (world.unit.name, TsaPolicy(
        default_policy="1.3.6.1.4.1.59999.1.3", accepted_policies=("1.2.3.4", "1.2.3.5"),
        accuracy=dt.timedelta(milliseconds=10), hashes=("sha256", "sha1"), include_chain=True,
        tsa_name=True))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    http = create_app(world.pki.service).test_client()
    reply = http.post("/tsa", data=world.query("-sha1", "-cert"), content_type=QUERY).data
    assert status(reply) == ("granted", None)
    info = tst_info(reply)
    assert info["accuracy"].native == {"seconds": None, "millis": 10, "micros": None}
    assert info["tsa"].chosen.native == hx.asn1_cert(world.unit.certificate).subject.native
    assert len(TimeStampResp.load(reply)["time_stamp_token"]["content"]["certificates"]) == 2
    assert world.openssl_verify(reply).returncode == 0
    asked = http.post("/tsa", data=request(req_policy="1.2.3.5"), content_type=QUERY).data
    assert tst_info(asked)["policy"].dotted == "1.2.3.5"
    monkeypatch.setenv("TINCAY_TSA_UNIT", "no-such-unit")
    with pytest.raises(ConfigurationError, match="TINCAY_TSA_UNIT: no TSA unit named"):
        create_app(world.pki.service)


@pytest.mark.softhsm
@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_tsa_keys_on_softhsm(hsm_backend, unique_label: str, tmp_path: Path,
                             key_type: str) -> None:
    spec = {"authorities": [
        {"name": f"{unique_label}-root", "profile": "root-ca", "key": "ec-p256",
         "subject": "C=VN, O=T, CN=Root"},
        {"name": f"{unique_label}-ca", "parent": f"{unique_label}-root",
         "profile": "issuing-ca", "key": "ec-p256", "subject": "C=VN, O=T, CN=Issuing"}],
        "services": [{"name": f"{unique_label}-tsa", "kind": "tsa",
                      "issuer": f"{unique_label}-ca", "profile": "tsa", "key": key_type,
                      "subject": "C=VN, O=T, CN=TSA"}]}
    with Hierarchy.from_spec(spec, keys=hsm_backend, at=NOW) as pki:
        world = World(pki, tmp_path)
        reply = world.stamp(world.query("-sha256", "-cert"))
        assert status(reply) == ("granted", None)
        chain = hx.write_pem(tmp_path / "ca.pem", pki.ca(f"{unique_label}-ca"))
        result = world.openssl_verify(reply, "-untrusted", str(chain))
        assert result.returncode == 0, result.stderr


def test_no_tsa_unit_is_a_plain_404() -> None:
    spec = {"authorities": [{"name": "root-ca", "profile": "root-ca", "key": "ec-p256",
                             "subject": "C=VN, O=T, CN=Root"}]}
    with Hierarchy.from_spec(spec, at=NOW) as pki:
        answer = create_app(pki.service).test_client().post("/tsa", data=request(),
                                                            content_type=QUERY)
    assert answer.status_code == 404 and b"no time-stamp unit" in answer.data
