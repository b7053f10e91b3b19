"""The OCSP responder over HTTP (Flask's client; tests/test_http.py runs it under gunicorn),
judged by OpenSSL, GnuTLS ocsptool, pkilint, cryptography and pyhanko-certvalidator."""
from __future__ import annotations

import base64
import datetime as dt
import secrets
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from asn1crypto import core as acore
from asn1crypto import ocsp as aocsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.errors import BackendUnavailableError
from ca.testing import Hierarchy
from web.app import create_app
from tests import helpers_x509 as hx
from tests.mutations import assert_mutated_readers_agree, mutate

# OpenSSL checks thisUpdate/nextUpdate against the real clock (-attime only moves chain checks)
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DOCTOR = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"
REQUEST = "application/ocsp-request"


class World:
    def __init__(self, pki: Hierarchy, tmp_path: Path, ca: str = "issuing-ca") -> None:
        self.pki = pki
        self.ca_name = ca
        self.app = create_app(pki.service)
        self.http = self.app.test_client()
        self.dir = tmp_path
        self.root = hx.write_pem(tmp_path / "root.pem", pki.root)
        self.ca = hx.write_pem(tmp_path / "ca.pem", pki.ca(ca))
        self.chain = tmp_path / "chain.pem"
        self.chain.write_bytes(self.root.read_bytes() + self.ca.read_bytes())

    def leaf(self, name: str = "leaf"):
        issued = self.pki.issue("clinician", DOCTOR, ca=self.ca_name, key_type="ec-p256")
        return issued, hx.write_pem(self.dir / f"{name}-{issued.serial_hex}.pem",
                                    issued.certificate)

    def request(self, *certs: Path, digest: str = "-sha1", nonce: bool = True) -> bytes:
        out = self.dir / f"req-{secrets.token_hex(4)}.der"
        args = ["openssl", "ocsp", "-issuer", str(self.ca), digest, "-reqout", str(out)]
        for cert in certs:
            args += ["-cert", str(cert)]
        if not nonce:
            args.append("-no_nonce")
        subprocess.run(args, check=True, capture_output=True)
        return out.read_bytes()

    def post(self, der: bytes) -> bytes:
        response = self.http.post("/ocsp", data=der, content_type=REQUEST)
        assert response.status_code == 200 and response.mimetype == "application/ocsp-response"
        return response.data

    def openssl_check(self, request: bytes, response: bytes, *certs: Path,
                      digest: str = "-sha1") -> str:
        """OpenSSL verifies the signature, the nonce against the request, and prints status."""
        req, resp = self.dir / "check-req.der", self.dir / "check-resp.der"
        req.write_bytes(request)
        resp.write_bytes(response)
        verified = subprocess.run(["openssl", "ocsp", "-reqin", str(req), "-respin", str(resp),
                                   "-CAfile", str(self.chain), "-attime",
                                   str(int(NOW.timestamp()) + 60)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0 and "Response verify OK" in verified.stderr, \
            verified.stdout + verified.stderr
        args = ["openssl", "ocsp", "-respin", str(resp), "-issuer", str(self.ca), digest, "-CAfile",
                str(self.chain), "-no_nonce", "-attime", str(int(NOW.timestamp()) + 60)]
        for cert in certs:
            args += ["-cert", str(cert)]
        status = subprocess.run(args, capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
        return status.stdout


@pytest.fixture
def world(tmp_path: Path):
    with Hierarchy.from_spec(at=NOW) as pki:
        yield World(pki, tmp_path)


def status_of(der: bytes) -> str:
    return aocsp.OCSPResponse.load(der)["response_status"].native


def test_good_revoked_unknown_as_openssl_sees_them(world: World) -> None:
    good, good_pem = world.leaf()
    bad, bad_pem = world.leaf()
    world.pki.revoke(bad, "keyCompromise")
    request = world.request(good_pem, bad_pem)
    response = world.post(request)
    out = world.openssl_check(request, response, good_pem, bad_pem)
    assert f"{good_pem}: good" in out and f"{bad_pem}: revoked" in out
    assert "Reason: keyCompromise" in out

    parsed = ocsp.load_der_ocsp_response(response)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.responder_key_hash is not None and parsed.produced_at_utc == NOW
    singles = list(parsed.responses)
    assert [s.certificate_status for s in singles] == [ocsp.OCSPCertStatus.GOOD,
                                                       ocsp.OCSPCertStatus.REVOKED]
    assert all(s.next_update_utc - s.this_update_utc == dt.timedelta(hours=12) for s in singles)
    delegated = parsed.certificates[0]
    assert x509.ExtendedKeyUsageOID.OCSP_SIGNING in \
        delegated.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    # a serial the CA never issued: unknown, never good (CA/B Forum 4.9.10)
    never = world.dir / "never.pem"
    other = Hierarchy.from_spec(at=NOW)
    try:
        stranger = other.issue("citizen", "CN=X, UID=CCCD:001234567890", key_type="ec-p256")
    finally:
        other.close()
    forged = aocsp.OCSPRequest.load(world.request(good_pem, nonce=False))
    forged["tbs_request"]["request_list"][0]["req_cert"]["serial_number"] = \
        stranger.certificate.serial_number
    single = ocsp.load_der_ocsp_response(world.post(forged.dump()))
    assert single.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    del never


def test_sha256_cert_ids_are_answered_in_kind(world: World) -> None:
    _, pem = world.leaf()
    request = world.request(pem, digest="-sha256")
    response = world.post(request)
    assert f"{pem}: good" in world.openssl_check(request, response, pem, digest="-sha256")
    single = aocsp.OCSPResponse.load(response).basic_ocsp_response["tbs_response_data"][
        "responses"][0]
    assert single["cert_id"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert single["cert_id"].dump() == aocsp.OCSPRequest.load(request)["tbs_request"][
        "request_list"][0]["req_cert"].dump()


def test_get_with_cache_headers_and_revocation_seen_at_once(world: World) -> None:
    issued, pem = world.leaf()
    request = world.request(pem, nonce=False)
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(request).decode(), safe="")
    first = world.http.get(path)
    assert first.status_code == 200
    assert first.cache_control.max_age == 12 * 3600 and first.headers["ETag"]
    assert first.last_modified == NOW and first.expires == NOW + dt.timedelta(hours=12)
    assert "good" in world.openssl_check(request, first.data, pem)
    world.pki.revoke(issued, "cessationOfOperation")
    second = world.http.get(path)
    assert "revoked" in world.openssl_check(request, second.data, pem)
    assert second.headers["ETag"] != first.headers["ETag"]
    # base64 with '/' and '+' not URL-encoded, as some clients send it, still works
    raw = world.http.get("/ocsp/" + base64.b64encode(request).decode())
    assert raw.status_code == 200 and status_of(raw.data) == "successful"


def test_independent_clients_accept_the_response(world: World) -> None:
    _, pem = world.leaf()
    request = world.request(pem)
    response = world.post(request)
    path = world.dir / "resp.der"
    path.write_bytes(response)
    info = subprocess.run(["ocsptool", "--response-info", "--load-response", str(path)],
                          capture_output=True, text=True)
    assert info.returncode == 0 and "Certificate Status: good" in info.stdout, info.stderr
    signer = hx.write_pem(world.dir / "signer.pem",
                          ocsp.load_der_ocsp_response(response).certificates[0])
    verified = subprocess.run(["ocsptool", "-e", "--load-signer", str(signer), "--load-response",
                               str(path)], capture_output=True, text=True)
    assert "Verifying OCSP Response: Success" in verified.stdout + verified.stderr, \
        verified.stdout + verified.stderr
    tool = shutil.which("lint_ocsp_response", path=str(Path(sys.executable).parent))
    assert tool is not None
    lint = subprocess.run([tool, "lint", "-s", "WARNING", str(path)], capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_certvalidator_requires_and_uses_ocsp(world: World) -> None:
    import asyncio

    from asn1crypto import x509 as ax
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    good, good_pem = world.leaf()
    bad, bad_pem = world.leaf()
    world.pki.revoke(bad, "privilegeWithdrawn")
    root_crl = world.pki.service.publication.publish_crl("root-ca").der

    def validate(issued, pem: Path) -> None:
        response = world.post(world.request(pem))
        context = ValidationContext(
            trust_roots=[ax.Certificate.load(hx.der_of(world.pki.root))],
            ocsps=[response], crls=[root_crl], revocation_mode="require",
            moment=NOW + dt.timedelta(minutes=1), allow_fetching=False)
        validator = CertificateValidator(
            ax.Certificate.load(hx.der_of(issued.certificate)),
            [ax.Certificate.load(hx.der_of(world.pki.ca("issuing-ca")))],
            validation_context=context)
        asyncio.run(validator.async_validate_usage({"non_repudiation"}))

    validate(good, good_pem)
    with pytest.raises(RevokedError):
        validate(bad, bad_pem)


# --- bad input ------------------------------------------------------------------------------

def _with_nonce(request: bytes, nonce: bytes) -> bytes:
    parsed = aocsp.OCSPRequest.load(request)
    tbs = parsed["tbs_request"]
    tbs["request_extensions"] = [{"extn_id": "nonce", "critical": False,
                                  "extn_value": acore.OctetString(nonce)}]
    return aocsp.OCSPRequest({"tbs_request": tbs}).dump()


def test_a_ca_created_while_serving_is_answered_without_a_restart(world: World,
                                                                   tmp_path: Path) -> None:
    """The app was built before the CA existed: its first question reloads the served keys
    (issue 18: it was unauthorized until a restart); unknown issuers reload at most once per
    interval, so a client asking about strangers cannot make every request reload."""
    import yaml

    from ca.hierarchy import load_hierarchy
    from ca.testing import DEMO_SPEC

    responder = world.app.extensions["tincay.ocsp"]
    reloads = []
    reload_keys = responder.reload_keys or (lambda: responder.keys)  # (None: never reloads)
    responder.reload_keys = lambda: reloads.append(1) or reload_keys()
    spec = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    spec["authorities"].append({"name": "second-ca", "parent": "root-ca",
                                "profile": "issuing-ca", "key": "ec-p256",
                                "subject": "C=VN, O=Trường THPT Tincay, CN=Tincay School CA"})
    spec["services"] = []
    world.pki.service.authorities.init_hierarchy(load_hierarchy(spec, world.pki.service.profiles))
    (tmp_path / "school").mkdir()
    school = World(world.pki, tmp_path / "school", ca="second-ca")
    school.http = world.http  # the app built before second-ca existed
    issued, pem = school.leaf()
    request = school.request(pem)
    answer = world.post(request)
    assert status_of(answer) == "successful" and reloads == [1]
    parsed = ocsp.load_der_ocsp_response(answer)  # signed by second-ca's own key
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == issued.certificate.serial_number
    from cryptography.hazmat.primitives.asymmetric import ec

    world.pki.ca("second-ca").public_key().verify(  # raises unless second-ca signed it
        parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(parsed.signature_hash_algorithm))
    with Hierarchy.from_spec(at=NOW) as stranger:  # another PKI's CA: not ours, reloaded once
        (tmp_path / "other").mkdir()
        other = World(stranger, tmp_path / "other")
        _, other_pem = other.leaf()
        for _ in range(3):
            assert status_of(world.post(other.request(other_pem))) == "unauthorized"
    assert reloads == [1]  # within reload_every of the first: no further reload


def test_bad_requests_get_ocsp_errors_never_500(world: World) -> None:
    _, pem = world.leaf()
    good = world.request(pem, nonce=False)
    cases = {
        "empty": b"",
        "truncated": good[:-3],
        "random": secrets.token_bytes(200),
        "trailing garbage": good + b"\x00",
        "nonce of 0 octets": _with_nonce(good, b""),
        "nonce of 33 octets": _with_nonce(good, b"\x01" * 33),
    }
    for name, body in cases.items():
        assert status_of(world.post(body)) == "malformed_request", name
    assert status_of(world.post(_with_nonce(good, b"\x01" * 32))) == "successful"
    assert status_of(world.post(_with_nonce(good, b"\x01"))) == "successful"

    too_many = aocsp.OCSPRequest.load(world.request(*([pem] * 11), nonce=False)).dump()
    assert status_of(world.post(too_many)) == "malformed_request"
    assert status_of(world.post(world.request(*([pem] * 10), nonce=False))) == "successful"

    # an issuer we do not serve; a CertID hash we do not support
    with Hierarchy.from_spec(at=NOW) as other:
        stranger = hx.write_pem(world.dir / "stranger-ca.pem", other.ca("issuing-ca"))
        leaf = hx.write_pem(world.dir / "stranger.pem", other.issue(
            "citizen", "CN=X, UID=CCCD:001234567890", key_type="ec-p256").certificate)
        out = world.dir / "stranger.der"
        subprocess.run(["openssl", "ocsp", "-issuer", str(stranger), "-cert", str(leaf),
                        "-reqout", str(out)], check=True, capture_output=True)
        assert status_of(world.post(out.read_bytes())) == "unauthorized"
    md5 = world.request(pem, digest="-md5", nonce=False)
    assert status_of(world.post(md5)) == "unauthorized"

    wrong_type = world.http.post("/ocsp", data=good, content_type="application/octet-stream")
    assert wrong_type.status_code == 415
    huge = world.http.post("/ocsp", data=b"\x30" * 70_000, content_type=REQUEST)
    assert huge.status_code == 413
    for path in ("/ocsp/%%%", "/ocsp/not-base64!", "/ocsp/" + "A" * 30_000):
        response = world.http.get(path)
        assert response.status_code == 200 and status_of(response.data) == "malformed_request"
        assert "no-store" in response.headers["Cache-Control"]


def test_unreachable_backend_means_try_later(world: World, monkeypatch) -> None:
    _, pem = world.leaf()

    def down(*_: object) -> None:
        raise BackendUnavailableError("HSM token 'tincay' unavailable: DeviceRemoved")

    monkeypatch.setattr(world.pki.service.revocation, "certificate_status", down)
    assert status_of(world.post(world.request(pem))) == "try_later"


def _request_der(cert_ids: list[dict], nonce: bytes | None, *, wrap_nonce: bool = True,
                 critical: bool = False) -> bytes:
    from ca import der

    request_list = aocsp.Requests([{"req_cert": cert_id} for cert_id in cert_ids]).dump()
    extensions = b""
    if nonce is not None:  # framed by hand: asn1crypto will not build a bare nonce
        value = acore.OctetString(nonce).dump() if wrap_nonce else nonce
        extension = der.tlv(0x30, acore.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2").dump(),
                            b"\x01\x01\xff" if critical else b"", der.tlv(0x04, value))
        extensions = der.tlv(0xA2, der.tlv(0x30, extension))
    return der.tlv(0x30, der.tlv(0x30, request_list, extensions))


def _read(reader, der: bytes):
    from ocsp.requests import MalformedRequest

    try:
        return reader(der)
    except MalformedRequest:
        return "malformed"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_direct_request_reader_agrees_with_asn1crypto(data: st.DataObject) -> None:
    """ocsp/requests.py reads the common request shape without asn1crypto: whatever it
    accepts (or refuses) must be what the asn1crypto reader makes of the same bytes, and it
    must really take the common shapes (else the fast path is dead)."""
    from ocsp import requests as reader

    hash_name = data.draw(st.sampled_from(["sha1", "sha256"]))
    size = 20 if hash_name == "sha1" else 32
    algorithm = {"algorithm": hash_name}
    if data.draw(st.booleans()):
        algorithm["parameters"] = acore.Null()
    cert_ids = [{"hash_algorithm": algorithm,
                 "issuer_name_hash": data.draw(st.binary(min_size=size, max_size=size)),
                 "issuer_key_hash": data.draw(st.binary(min_size=size, max_size=size)),
                 "serial_number": data.draw(st.integers(0, 2 ** 160))}
                for _ in range(data.draw(st.integers(1, 3)))]
    nonce = data.draw(st.one_of(st.none(), st.binary(min_size=0, max_size=40)))
    body = _request_der(cert_ids, nonce)
    direct = reader._read_common_shape(body)
    if nonce is None or 1 <= len(nonce) <= 32:
        assert direct is not None and direct == reader._read_any_shape(body)
        assert [c.serial for c in direct.cert_ids] == [c["serial_number"] for c in cert_ids]
        assert direct.nonce == (None if nonce is None else acore.OctetString(nonce).dump())
    assert_mutated_readers_agree(data, body, fast=reader._read_common_shape,
                                 general=reader._read_any_shape, combined=reader.read_request,
                                 outcome=_read)


def test_uncommon_request_shapes_are_read_by_asn1crypto() -> None:
    """A critical nonce, a requestor name, an MD5 CertID: the direct reader declines and the
    request is still read as RFC 6960 and RFC 8954 say; a bare nonce is malformed either way."""
    from ocsp import requests as reader

    cert_id = {"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": b"\x01" * 20,
               "issuer_key_hash": b"\x02" * 20, "serial_number": 7}
    shapes = {
        "critical nonce": _request_der([cert_id], b"\x05" * 8, critical=True),
        "requestor name": aocsp.OCSPRequest({"tbs_request": {
            "requestor_name": {"dns_name": "emr.example.vn"},
            "request_list": [{"req_cert": cert_id}]}}).dump(),
    }
    for name, der in shapes.items():
        assert reader._read_common_shape(der) is None, name
        assert reader.read_request(der).cert_ids[0].serial == 7, name
    assert reader.read_request(shapes["critical nonce"]).nonce == \
        acore.OctetString(b"\x05" * 8).dump()
    bare = _request_der([cert_id], b"\x05" * 8, wrap_nonce=False)
    assert reader._read_common_shape(bare) is None
    assert _read(reader.read_request, bare) == "malformed"
    md5 = dict(cert_id, hash_algorithm={"algorithm": "md5"})
    assert reader._read_common_shape(_request_der([md5], None)) is None
    assert reader.read_request(_request_der([md5], None)).cert_ids[0].hash_name == "md5"


def _ocsp_request(*cert_ids: bytes, nonce_value: bytes | None = None, after: bytes = b"") -> bytes:
    """An OCSPRequest framed by hand around CertIDs given as bytes; ``nonce_value`` is the
    nonce extension's extnValue contents as sent; ``after`` follows the TBSRequest."""
    from ca import der

    extensions = b""
    if nonce_value is not None:
        extensions = der.tlv(0xA2, der.tlv(0x30, der.tlv(
            0x30, acore.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2").dump(),
            der.tlv(0x04, nonce_value))))
    requests = der.tlv(0x30, *(der.tlv(0x30, cert_id) for cert_id in cert_ids))
    return der.tlv(0x30, der.tlv(0x30, requests, extensions), after)


def _cert_id_parts(world: World, pem: Path) -> tuple[bytes, bytes, bytes, int]:
    """The DER of the SHA-1 OID, the issuer name and key hashes, and the serial OpenSSL asks."""
    cert_id = aocsp.OCSPRequest.load(world.request(pem, nonce=False))["tbs_request"][
        "request_list"][0]["req_cert"]
    return (cert_id["hash_algorithm"]["algorithm"].dump(), cert_id["issuer_name_hash"].native,
            cert_id["issuer_key_hash"].native, cert_id["serial_number"].native)


def _not_der_cert_ids(oid: bytes, name: bytes, key: bytes, serial: int) -> dict[str, bytes]:
    from ca import der

    algorithm, name_der, key_der = der.tlv(0x30, oid, b"\x05\x00"), der.tlv(0x04, name), \
        der.tlv(0x04, key)
    serial_der = der.integer(serial)
    body = algorithm + name_der + key_der + serial_der
    return {
        "long-form length": b"\x30\x81" + bytes((len(body),)) + body,
        "null with contents": der.tlv(0x30, der.tlv(0x30, oid, b"\x05\x01\x00"), name_der,
                                      key_der, serial_der),
        "integer parameters": der.tlv(0x30, der.tlv(0x30, oid, b"\x02\x01\x00"), name_der,
                                      key_der, serial_der),
        "constructed name hash": der.tlv(0x30, algorithm, der.tlv(0x24, der.tlv(
            0x04, name[:4]), der.tlv(0x04, name[4:])), key_der, serial_der),
        "key hash long-form": der.tlv(0x30, algorithm, name_der, b"\x04\x81" +
                                      bytes((len(key),)) + key, serial_der),
        "serial not minimal": der.tlv(0x30, algorithm, name_der, key_der,
                                      der.tlv(0x02, b"\x00" + serial_der[2:])),
        "trailing element": der.tlv(0x30, body, b"\x05\x00"),
    }


def test_answers_echo_only_der_cert_ids_and_nonces(world: World) -> None:
    """Answers echo each CertID and the nonce as sent. asn1crypto reads BER (and a NULL with
    contents, parameters other than NULL, an element after the serial), and the responder
    signed such CertIDs into "successful" answers cryptography's load_der_ocsp_response then
    refused: 441 of a campaign's mutated requests. They are malformedRequest now; the DER forms
    (NULL parameters or none) are answered, and cryptography and OpenSSL read the answers."""
    from ca import der

    _, pem = world.leaf()
    oid, name, key, serial = _cert_id_parts(world, pem)
    for label, cert_id in _not_der_cert_ids(oid, name, key, serial).items():
        assert status_of(world.post(_ocsp_request(cert_id))) == "malformed_request", label
    nonce = secrets.token_bytes(16)
    for label, value in {"long-form nonce": b"\x04\x81\x10" + nonce,
                         "constructed nonce": der.tlv(0x24, der.tlv(0x04, nonce[:3]),
                                                      der.tlv(0x04, nonce[3:]))}.items():
        good_id = der.tlv(0x30, der.tlv(0x30, oid), der.tlv(0x04, name), der.tlv(0x04, key),
                          der.integer(serial))
        assert status_of(world.post(_ocsp_request(good_id, nonce_value=value))) == \
            "malformed_request", label
    for null in (b"", b"\x05\x00"):  # with an unusual shape around them: the general reader
        good_id = der.tlv(0x30, der.tlv(0x30, oid, null), der.tlv(0x04, name),
                          der.tlv(0x04, key), der.integer(serial))
        request = _ocsp_request(good_id, nonce_value=der.tlv(0x04, nonce), after=der.tlv(
            0xA0, der.tlv(0x30, der.tlv(0x30, acore.ObjectIdentifier("1.2.3.4").dump()),
                          der.tlv(0x03, b"\x00"))))  # an optionalSignature
        response = world.post(request)
        parsed = ocsp.load_der_ocsp_response(response)
        assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert parsed.serial_number == serial and parsed.extensions.get_extension_for_class(
            x509.OCSPNonce).value.nonce == nonce
        path = world.dir / "answer.der"
        path.write_bytes(response)
        text = subprocess.run(["openssl", "ocsp", "-respin", str(path), "-resp_text",
                               "-noverify"], capture_output=True, text=True)
        assert text.returncode == 0 and "Cert Status: good" in text.stdout, text.stderr


@pytest.fixture(scope="module")
def core_responder(tmp_path_factory):
    """The responder core of the demo hierarchy and requests OpenSSL and cryptography build
    for one issued certificate (SHA-1 and SHA-256, nonces, two CertIDs), for the mutation test."""
    from cryptography.hazmat.primitives import hashes

    with Hierarchy.from_spec(at=NOW) as pki:
        world = World(pki, tmp_path_factory.mktemp("ocsp-mutations"))
        issued, pem = world.leaf()
        seeds = [world.request(pem), world.request(pem, pem, digest="-sha256"),
                 world.request(pem, nonce=False)]
        for algorithm in (hashes.SHA1(), hashes.SHA256()):
            seeds.append(ocsp.OCSPRequestBuilder().add_certificate(
                issued.certificate, pki.ca("issuing-ca"), algorithm).add_extension(
                x509.OCSPNonce(secrets.token_bytes(32)), critical=False).build().public_bytes(
                serialization.Encoding.DER))
        yield world, world.app.extensions["tincay.ocsp"], seeds


@given(seed=st.integers(0, 2 ** 64))  # a failure prints the seed that reproduces it
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_ten_thousand_mutated_requests_through_the_responder(core_responder, seed: int) -> None:
    """tests/mutations.py's byte and structural mutations of real requests, 500 per example,
    through the responder core: every answer is malformedRequest, unauthorized or a successful
    response that cryptography reads whole (each SingleResponse, the nonce) and whose CertIDs
    are DER (asn1crypto re-encodes them byte for byte); OpenSSL reads the first of each
    example's successful answers; nothing is logged above INFO (no traceback)."""
    import logging
    import random

    from tests.mutations import mutate_many

    world, responder, seeds = core_responder
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append  # type: ignore[method-assign]
    logger = logging.getLogger("tincay.ocsp")
    logger.addHandler(handler)
    checked_by_openssl = False
    try:
        for body in mutate_many(random.Random(seed), seeds, 500):
            answer = responder.respond(body)
            assert status_of(answer) in ("successful", "malformed_request", "unauthorized"), \
                body.hex()
            if status_of(answer) != "successful":
                continue
            parsed = ocsp.load_der_ocsp_response(answer)
            for single in parsed.responses:
                assert single.serial_number >= 0 and single.issuer_key_hash
                assert single.certificate_status is not None and single.hash_algorithm
            assert parsed.extensions is not None
            for single in aocsp.OCSPResponse.load(answer).basic_ocsp_response[
                    "tbs_response_data"]["responses"]:
                echoed = single["cert_id"].dump()
                assert aocsp.CertId.load(echoed).dump(force=True) == echoed, body.hex()
            if not checked_by_openssl:
                path = world.dir / f"mutant-{seed}.der"
                path.write_bytes(answer)
                read = subprocess.run(["openssl", "ocsp", "-respin", str(path), "-resp_text",
                                       "-noverify"], capture_output=True, text=True)
                assert read.returncode == 0, (body.hex(), read.stderr)
                checked_by_openssl = True
    finally:
        logger.removeHandler(handler)
    assert logged == []


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_never_break_the_responder(world: World, data: st.DataObject) -> None:
    if not hasattr(world, "base_request"):
        _, pem = world.leaf()
        world.base_request = world.request(pem)  # type: ignore[attr-defined]
    body = mutate(data, world.base_request)  # type: ignore[attr-defined]
    response = world.http.post("/ocsp", data=body, content_type=REQUEST)
    assert response.status_code == 200
    assert status_of(response.data) in ("successful", "malformed_request", "unauthorized")


@pytest.mark.softhsm
def test_responder_keys_on_softhsm(hsm_backend, unique_label: str, tmp_path: Path) -> None:
    spec = {"authorities": [
        {"name": f"{unique_label}-root", "profile": "root-ca", "key": "ec-p256",
         "subject": "C=VN, O=T, CN=Root"},
        {"name": f"{unique_label}-ca", "parent": f"{unique_label}-root", "profile": "issuing-ca",
         "key": "ec-p256", "subject": "C=VN, O=T, CN=Issuing"}],
        "services": [{"name": f"{unique_label}-ocsp", "kind": "ocsp",
                      "issuer": f"{unique_label}-ca", "profile": "ocsp-responder",
                      "key": "rsa-2048", "subject": "C=VN, O=T, CN=OCSP"}]}
    with Hierarchy.from_spec(spec, keys=hsm_backend, at=NOW) as pki:
        world = World(pki, tmp_path, ca=f"{unique_label}-ca")
        _, pem = world.leaf()
        request = world.request(pem)
        response = world.post(request)
        assert f"{pem}: good" in world.openssl_check(request, response, pem)
        assert "sha256WithRSAEncryption" in subprocess.run(
            ["openssl", "ocsp", "-respin", str(world.dir / "check-resp.der"), "-resp_text",
             "-noverify"], capture_output=True, text=True).stdout



def _asn1crypto_answer(responder, key, answers, nonce, produced_at, signature: bytes) -> bytes:
    """The reference: the response built field by field with asn1crypto, as the responder
    did before ocsp/answers.py, with a given signature (ECDSA signatures are randomised)."""
    from ca import signing
    from ca.revocation import ASN1_NAMES
    from ocsp.responder import EPOCH, CertStatus

    now = produced_at.replace(microsecond=0)
    extended = False
    singles = []
    for cert_id, info in answers:
        if info.status is CertStatus.GOOD:
            status = aocsp.CertStatus(name="good", value=aocsp.StatusGood())
        elif info.status is CertStatus.REVOKED:
            revoked: dict = {"revocation_time": info.revoked_at.replace(microsecond=0)}
            if info.reason is not None and info.reason != "unspecified":
                revoked["revocation_reason"] = ASN1_NAMES[info.reason]
            status = aocsp.CertStatus(name="revoked", value=revoked)
        elif responder.extended_revoke:
            extended = True
            status = aocsp.CertStatus(name="revoked", value={
                "revocation_time": EPOCH, "revocation_reason": "certificate_hold"})
        else:
            status = aocsp.CertStatus(name="unknown", value=aocsp.StatusUnknown())
        singles.append({"cert_id": aocsp.CertId.load(cert_id.der), "cert_status": status,
                        "this_update": now,
                        "next_update": now + responder.validity_for(key)})
    extensions = []
    if nonce is not None:
        extensions.append(aocsp.ResponseDataExtension({"extn_id": "nonce", "critical": False}))
        extensions[-1]["extn_value"] = acore.ParsableOctetString(contents=nonce)
    if extended:
        extensions.append({"extn_id": "extended_revoke", "critical": False,
                           "extn_value": acore.Null()})
    signer = aocsp.Certificate.load(key.signer_certificate.public_bytes(
        serialization.Encoding.DER))
    data: dict = {"responder_id": aocsp.ResponderId(name="by_key", value=signer.public_key.sha1),
                  "produced_at": now, "responses": singles}
    if extensions:
        data["response_extensions"] = extensions
    hash_name = signing.default_hash(key.key)
    basic: dict = {"tbs_response_data": aocsp.ResponseData(data),
                   "signature_algorithm": signing.signature_algorithm(key.key.public_key,
                                                                      hash_name),
                   "signature": signature}
    if key.signer_certificate != key.issuer_certificate:
        basic["certs"] = [signer]
    return aocsp.OCSPResponse({
        "response_status": "successful",
        "response_bytes": {"response_type": "basic_ocsp_response",
                           "response": aocsp.BasicOCSPResponse(basic)}}).dump()


@pytest.mark.parametrize("extended", [False, True], ids=["unknown", "extended-revoke"])
def test_answers_are_asn1crypto_der_byte_for_byte(world: World, extended: bool) -> None:
    """ocsp/answers.py frames responses by hand for speed: every shape (each status, reasons
    or none, nonce or none, SHA-1 and SHA-256 CertIDs, several answers, delegated responder or
    the CA itself) must be exactly what asn1crypto encodes."""
    from ocsp.responder import CertStatus, StatusInfo

    responder = world.app.extensions["tincay.ocsp"]
    responder.extended_revoke = extended
    _, pem = world.leaf()
    nonce = responder.parse(world.request(pem)).nonce
    at = NOW - dt.timedelta(days=3, microseconds=1)
    statuses = [StatusInfo(CertStatus.GOOD), StatusInfo(CertStatus.UNKNOWN),
                StatusInfo(CertStatus.REVOKED, at, None),
                StatusInfo(CertStatus.REVOKED, at, "unspecified"),
                *[StatusInfo(CertStatus.REVOKED, at, reason)
                  for reason in ("keyCompromise", "certificateHold", "aACompromise")]]
    assert {key.signer_certificate != key.issuer_certificate
            for key in responder.keys} == {True, False}  # delegated and CA-signed both
    for key in responder.keys:
        for count in (1, len(statuses)):
            answers = [(responder.cert_id(key, 0x1234 + i, ("sha1", "sha256")[i % 2]), info)
                       for i, info in enumerate(statuses[:count])]
            for with_nonce in (None, nonce):
                ours = responder.sign(key, answers, with_nonce, NOW + dt.timedelta(seconds=0.5))
                signature = aocsp.OCSPResponse.load(ours).basic_ocsp_response["signature"].native
                assert ours == _asn1crypto_answer(responder, key, answers, with_nonce,
                                                  NOW + dt.timedelta(seconds=0.5), signature)


# --- pre-produced responses -----------------------------------------------------------------

def test_preproduced_answers_are_served_without_signing_and_never_hide_a_revocation(
        world: World) -> None:
    from ocsp.preproduce import PreProducer

    issued, pem = world.leaf()
    responder = world.app.extensions["tincay.ocsp"]
    producer = PreProducer(world.pki.service.ocsp_answers, responder)
    assert producer.refresh() >= 3  # the leaf, the responder's own and the TSA's certificates
    assert producer.refresh() == 0  # nothing due
    stored = world.pki.service.ocsp_answers.preproduced_response("issuing-ca",
                                                    issued.certificate.serial_number)
    assert stored is not None

    signatures: list[bytes] = []
    real_sign = responder.sign
    responder.sign = lambda *a, **k: signatures.append(b"") or real_sign(*a, **k)  # type: ignore
    world.pki.clock.advance(dt.timedelta(minutes=5))
    no_nonce = world.request(pem, nonce=False)
    assert world.post(no_nonce) == stored and not signatures  # from the store, unsigned
    with_nonce = world.request(pem)
    assert world.post(with_nonce) != stored and len(signatures) == 1  # live, nonce echoed
    sha256 = world.request(pem, digest="-sha256", nonce=False)
    world.post(sha256)
    assert len(signatures) == 2  # only SHA-1 CertIDs are pre-produced

    # revoked but not yet re-produced: the stale answer is not served, the next query is live
    world.pki.revoke(issued, "keyCompromise")
    live = world.post(no_nonce)
    assert "revoked" in world.openssl_check(no_nonce, live, pem) and len(signatures) == 3
    assert producer.refresh(serial=issued.serial_hex) == 1
    cached = world.post(no_nonce)
    assert len(signatures) == 4  # the refresh signed once; serving it signed nothing
    assert cached == world.pki.service.ocsp_answers.preproduced_response(
        "issuing-ca", issued.certificate.serial_number)
    assert "revoked" in world.openssl_check(no_nonce, cached, pem)

    # due within the margin (half the validity): refreshed; expired ones are never served
    world.pki.clock.advance(dt.timedelta(hours=7))
    assert producer.refresh() >= 3
    world.pki.clock.advance(dt.timedelta(hours=13))
    assert world.pki.service.ocsp_answers.preproduced_response(
        "issuing-ca", issued.certificate.serial_number) is None


def test_the_endpoint_answers_before_flask_with_http_semantics(world: World, monkeypatch
                                                               ) -> None:
    """web.ocsp.OcspEndpoint serves /ocsp in front of the Flask app: repeated questions get
    identical bytes and headers, media type parameters and case are accepted, HEAD, 405 with
    Allow, 413 for a chunked upload over the limit; a revocation still shows at once and a
    store failure still means tryLater. Flask never sees an OCSP request."""
    import io

    from ca.errors import StoreError
    from ocsp.preproduce import PreProducer

    issued, pem = world.leaf()
    dispatched: list[str] = []
    world.app.before_request(lambda: dispatched.append("flask") and None)
    PreProducer(world.pki.service.ocsp_answers, world.app.extensions["tincay.ocsp"]).refresh()
    question = world.request(pem, nonce=False)
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(question).decode(), safe="")

    first, again = world.http.get(path), world.http.get(path)
    assert again.data == first.data and sorted(again.headers.items()) == \
        sorted(first.headers.items())
    assert "good" in world.openssl_check(question, again.data, pem)
    head = world.http.head(path)
    assert head.status_code == 200 and head.data == b"" and \
        head.headers["Content-Length"] == str(len(first.data)) and head.headers["ETag"]
    posted = world.http.post("/ocsp/", data=question,
                             content_type="Application/OCSP-Request; charset=binary")
    assert posted.data == first.data and posted.mimetype == "application/ocsp-response"

    put = world.http.put("/ocsp", data=question, content_type=REQUEST)
    assert put.status_code == 405 and put.headers["Allow"] == "POST"
    post_path = world.http.post(path, data=question, content_type=REQUEST)
    assert post_path.status_code == 405 and post_path.headers["Allow"] == "GET, HEAD"
    chunked = world.http.post("/ocsp", input_stream=io.BytesIO(b"\x30" * 9000),
                              content_type=REQUEST, headers={"Transfer-Encoding": "chunked"})
    assert chunked.status_code == 413
    assert world.http.get("/healthz").status_code == 200
    assert dispatched == ["flask"]  # only /healthz went through Flask

    world.pki.revoke(issued, "keyCompromise")
    assert "revoked" in world.openssl_check(question, world.http.get(path).data, pem)

    def down(*_: object) -> None:
        raise StoreError("database read failed: server closed the connection")

    monkeypatch.setattr(world.pki.service.ocsp_answers, "preproduced_response", down)
    assert status_of(world.http.get(path).data) == "try_later"


def test_each_ca_answers_with_its_own_validity(tmp_path: Path) -> None:
    """ocsp_validity from the hierarchy spec, changed later by configure_authority: live and
    pre-produced answers carry it (a worker picks a change up when it loads its keys)."""
    import yaml

    from ca.testing import DEMO_SPEC
    from ocsp.preproduce import PreProducer

    spec = yaml.safe_load(DEMO_SPEC.read_text())
    for authority in spec["authorities"]:
        if authority["name"] == "issuing-ca":
            authority["ocsp_validity"] = "2h"
    with Hierarchy.from_spec(spec, at=NOW) as pki:
        world = World(pki, tmp_path)
        issued, pem = world.leaf()

        def validity(der: bytes) -> dt.timedelta:
            single = ocsp.load_der_ocsp_response(der)
            return single.next_update_utc - single.this_update_utc

        assert validity(world.post(world.request(pem))) == dt.timedelta(hours=2)
        PreProducer(pki.service.ocsp_answers, world.app.extensions["tincay.ocsp"]).refresh()
        assert validity(pki.service.ocsp_answers.preproduced_response(
            "issuing-ca", issued.certificate.serial_number)) == dt.timedelta(hours=2)
        pki.service.publication.configure("issuing-ca", ocsp_validity=dt.timedelta(minutes=30))
        assert pki.service.listings.show_authority("issuing-ca")["ocsp_validity"] == "30m"
        assert validity(World(pki, tmp_path).post(world.request(pem))) == \
            dt.timedelta(minutes=30)


def test_service_units_are_renewed_and_served_without_a_restart(tmp_path: Path) -> None:
    """Issue 18: the delegated responder's certificate (92 days in the demo) and a TSA unit's
    (30 days here) are renewed by what every maintenance pass runs, and an app built before
    signs with the new ones: OpenSSL accepts its OCSP answers and time-stamps 30, 60 and 400
    days on, where the first certificates have long ended, and pyhanko-certvalidator
    validates the signer's certificate with that OCSP answer."""
    import asyncio

    import yaml
    from asn1crypto import x509 as ax
    from pyhanko_certvalidator import CertificateValidator, ValidationContext

    from ca.testing import DEMO_SPEC

    spec = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    spec["services"][1]["validity_days"] = 30
    with Hierarchy.from_spec(spec, at=NOW) as pki:
        world = World(pki, tmp_path)
        world.app.extensions["tincay.ocsp"].reload_every = 0  # workers: every 30 s
        endpoint = world.app.wsgi_app
        while not hasattr(endpoint, "refresh_every"):  # TSA endpoint in front of OCSP's
            endpoint = endpoint.app
        endpoint.refresh_every = 0
        issued = pki.issue("clinician", DOCTOR, key_type="ec-p256", days=1000)  # outlives +400
        pem = hx.write_pem(tmp_path / "doctor.pem", issued.certificate)
        first = {u.name: u.certificate for u in pki.service.authorities.service_units("ocsp")
                 + pki.service.authorities.service_units("tsa")}
        data = tmp_path / "record.txt"
        data.write_bytes(b"don thuoc")
        renewed_ever: set[str] = set()
        retired: set[str] = set()
        for days in (30, 60, 400):
            when = NOW + dt.timedelta(days=days)
            pki.clock.set(when)
            renewed_ever |= {u["name"] for u in pki.service.renewal.renew_due()}
            attime = str(int(when.timestamp()) + 60)
            request = world.request(pem)
            (tmp_path / "req.der").write_bytes(request)
            (tmp_path / "resp.der").write_bytes(world.post(request))
            checked = subprocess.run(
                ["openssl", "ocsp", "-reqin", str(tmp_path / "req.der"), "-respin",
                 str(tmp_path / "resp.der"), "-CAfile", str(world.chain), "-attime", attime],
                capture_output=True, text=True)
            assert checked.returncode == 0 and "Response verify OK" in checked.stderr, \
                (days, checked.stdout + checked.stderr)
            status = subprocess.run(
                ["openssl", "ocsp", "-respin", str(tmp_path / "resp.der"), "-issuer",
                 str(world.ca), "-cert", str(pem), "-no_nonce", "-CAfile", str(world.chain),
                 "-attime", attime], capture_output=True, text=True)
            # (OpenSSL warns the status times are not now: the clock is days ahead)
            assert "\ngood\n" in status.stdout or f"{pem}: good" in status.stdout, \
                (days, status.stdout + status.stderr)
            context = ValidationContext(
                trust_roots=[ax.Certificate.load(hx.der_of(pki.root))],
                ocsps=[(tmp_path / "resp.der").read_bytes()],
                crls=[pki.service.publication.publish_crl("root-ca").der],
                revocation_mode="require", moment=when + dt.timedelta(minutes=1),
                allow_fetching=False)
            asyncio.run(CertificateValidator(
                ax.Certificate.load(hx.der_of(issued.certificate)),
                [ax.Certificate.load(hx.der_of(pki.ca("issuing-ca")))],
                validation_context=context).async_validate_usage({"non_repudiation"}))
            query, reply = tmp_path / "q.tsq", tmp_path / "r.tsr"
            subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert",
                            "-out", str(query)], check=True, capture_output=True)
            answer = world.http.post("/tsa", data=query.read_bytes(),
                                     content_type="application/timestamp-query")
            reply.write_bytes(answer.data)
            verified = subprocess.run(
                ["openssl", "ts", "-verify", "-data", str(data), "-in", str(reply), "-CAfile",
                 str(world.chain), "-attime", attime], capture_output=True, text=True)
            assert verified.returncode == 0, (days, verified.stdout + verified.stderr)
            # a later pass: the key just renewed away from is retired once workers moved on
            assert pki.service.renewal.retire_old_keys() == []  # not yet: too soon
            pki.clock.advance(dt.timedelta(minutes=11))
            retired |= set(pki.service.renewal.retire_old_keys())
        assert renewed_ever == {"ocsp-issuing-ca", "tsa"}
        now = {u.name: u.certificate for u in pki.service.authorities.service_units("ocsp")
               + pki.service.authorities.service_units("tsa")}
        assert all(now[name] != first[name] for name in first)
        events = [e["action"] for e in pki.service.listings.list_events(limit=1000)]
        assert events.count("service.renew") >= 4  # tsa at 30, 60, 400; ocsp at 400
        # the keys renewed away from are destroyed once every worker has moved on (10 min)
        old_keys = {e["details"]["previous_key_uri"]
                    for e in pki.service.listings.list_events(limit=1000)
                    if e["action"] == "service.renew"}
        assert retired == old_keys
        assert not any(pki.service.keys.exists(uri.removeprefix("memory:")) for uri in old_keys)
        assert pki.service.renewal.retire_old_keys() == []
        assert status_of(world.post(world.request(pem))) == "successful"  # the new key signs
