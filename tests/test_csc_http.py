"""The CSC API over real HTTP on loopback.

The adapter's own rules (405, 415, 413, bearer tokens, auth/login and auth/revoke) are checked
against the real app served by ca.testing with the real Clients service. The end-to-end test
runs `tincay demo` and `tincay serve` (gunicorn, SoftHSM, SQLite) with the real remote-signing
service (ca.services.credentials): a client registered, clinician certificates issued with
HSM keys (EC and RSA), credentials enrolled, TOTP codes from the otpauth URI, authorize and
signHash in v1 and v2 names, signatures checked by cryptography and by `openssl pkeyutl`;
then pyHanko's own CSC client signs a PDF (PAdES B-LT, a tincay time-stamp and OCSP answers
embedded) and pyHanko's validator accepts it; after revocation authorize is refused.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ca.testing import Hierarchy

TINCAY = str(Path(sys.executable).parent / "tincay")
SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA, RSA_PKCS1 = "1.2.840.10045.2.1", "1.2.840.113549.1.1.1"
PIN = "hai-bốn-sáu"
USER = "CCCD:079073009568"
PORTS = range(9200, 9300)  # this suite's loopback ports
SIGN_HASH_BODY = {"credentialID": "no-such-credential", "SAD": "no-such-sad",
                  "hashes": [base64.b64encode(bytes(32)).decode()],
                  "hashAlgorithmOID": SHA256, "signAlgo": "1.2.840.10045.4.3.2"}


def post(url: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None,
         content_type: str = "application/json", method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, payload = exc.code, dict(exc.headers), exc.read()
    return status, head, json.loads(payload) if payload else None


def _port(ports: range = PORTS) -> int:
    """A free loopback port among ``ports`` (each suite has its own range)."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {ports.start}-{ports.stop - 1}")


# --- the adapter, over the app ca.testing serves ------------------------------------------

@pytest.fixture(scope="module")
def pki() -> Iterator[Hierarchy]:
    with Hierarchy.from_spec(port=_port()) as pki:
        yield pki


@pytest.fixture(scope="module")
def served(pki: Hierarchy) -> Iterator[tuple[str, Any]]:
    with pki.serve() as url:
        yield url, pki.service


def test_an_expired_token_is_expired_token(served, pki: Hierarchy) -> None:
    url, service = served
    grant = service.clients.grant(*_client(service, "expiry"))
    with pki.at(pki.clock.now() + dt.timedelta(minutes=11)):
        status, head, body = post(f"{url}/csc/v1/credentials/list", {},
                                  token=grant.access_token)
        assert (status, body["error"]) == (401, "expired_token")
        assert 'error="expired_token"' in head["WWW-Authenticate"]
        # signHash checks its token in its own transaction: the same answer
        status, head, body = post(f"{url}/csc/v2/signatures/signHash", SIGN_HASH_BODY,
                                  token=grant.access_token)
        assert (status, body["error"]) == (401, "expired_token")
        assert 'error="expired_token"' in head["WWW-Authenticate"]


def test_info_needs_no_token_and_every_other_method_does(served) -> None:
    url, service = served
    for version, specs in (("v1", "1.0.4.0"), ("v2", "2.0.0.2")):
        status, _, body = post(f"{url}/csc/{version}/info", {})
        assert status == 200 and body["specs"] == specs and body["region"] == "VN"
        assert "signatures/timestamp" in body["methods"]
        assert post(f"{url}/csc/{version}/info")[0] == 200  # no body at all
    for token in (None, "tct_nonsense", "not a b64token!"):
        for method, body in (("credentials/list", {}), ("signatures/signHash", SIGN_HASH_BODY)):
            status, head, answer = post(f"{url}/csc/v2/{method}", body, token=token)
            assert (status, answer["error"]) == (401, "invalid_token")
            assert head["WWW-Authenticate"].startswith("Bearer ")
    status, head, _ = post(f"{url}/csc/v2/credentials/list", headers={
        "Authorization": "Basic Zm9vOmJhcg=="}, body={})
    assert status == 401 and head["WWW-Authenticate"].startswith("Bearer ")


def test_methods_content_types_and_sizes(served) -> None:
    url, service = served
    grant = service.clients.grant(*_client(service, "sizes"))
    assert post(f"{url}/csc/v2/info", method="GET")[0] == 405
    status, head, body = post(f"{url}/csc/v2/credentials/list", method="PUT", raw=b"{}")
    assert status == 405 and head["Allow"] == "POST" and body["error"] == "invalid_request"
    assert post(f"{url}/csc/v2/credentials/list", raw=b"{}", content_type="text/plain",
                token=grant.access_token)[0] == 415
    status, _, body = post(f"{url}/csc/v2/credentials/list", token=grant.access_token,
                           raw=b'{"clientData": "' + b"x" * 70000 + b'"}')
    assert status == 413 and body["error"] == "invalid_request"
    assert post(f"{url}/csc/v3/info", {})[0] == 404
    status, _, body = post(f"{url}/csc/v2/credentials/list", raw=b"{nope",
                           token=grant.access_token)
    assert (status, body["error"]) == (400, "invalid_request")


def _chunked(url: str, chunks: list[bytes], token: str) -> tuple[int, Any]:
    """A POST whose body is sent chunked (no Content-Length): status and JSON body."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, body=iter(chunks), encode_chunked=True,
                           headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {token}",
                                    "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_chunked_bodies_are_read_and_bounded(served) -> None:
    """A body without Content-Length is read up to the limit, then refused 413: the endpoint
    reads the stream itself (no framework limit in front of it)."""
    url, service = served
    grant = service.clients.grant(*_client(service, "chunked"))
    status, body = _chunked(f"{url}/csc/v2/credentials/list", [b"{", b"}"], grant.access_token)
    assert status == 200 and body["credentialIDs"] == []
    status, body = _chunked(f"{url}/csc/v2/credentials/list",
                            [b'{"clientData": "', b"x" * 40000, b"x" * 40000, b'"}'],
                            grant.access_token)
    assert (status, body["error"]) == (413, "invalid_request")


def _client(service: Any, name: str) -> tuple[str, str]:
    registered = service.clients.add(name)
    return registered.client.client_id, registered.client_secret


def test_login_with_basic_and_revoke(served) -> None:
    url, service = served
    client_id, secret = _client(service, "login")
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    status, head, body = post(f"{url}/csc/v1/auth/login", {},
                              headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and body["expires_in"] == 600 and head["Cache-Control"] == "no-store"
    token = body["access_token"]
    assert service.clients.verify(token).client_id == client_id
    wrong = base64.b64encode(f"{client_id}:nope".encode()).decode()
    status, head, body = post(f"{url}/csc/v1/auth/login", {},
                              headers={"Authorization": f"Basic {wrong}"})
    assert (status, body["error"]) == (401, "invalid_client")
    assert post(f"{url}/csc/v2/credentials/list", {}, token=token)[0] != 401
    other = service.clients.grant(*_client(service, "login-other")).access_token
    status, _, body = post(f"{url}/csc/v2/auth/revoke", {"token": other}, token=token)
    assert (status, body["error"]) == (400, "invalid_request")  # not this client's token
    assert service.clients.verify(other)
    status, _, body = post(f"{url}/csc/v2/auth/revoke", {"token": token}, token=token)
    assert (status, body) == (204, None)
    status, _, body = post(f"{url}/csc/v2/credentials/list", {}, token=token)
    assert (status, body["error"]) == (401, "invalid_token")


def test_timestamp_through_the_worker_tsa_is_logged(served) -> None:
    from asn1crypto import cms as acms

    url, service = served
    grant = service.clients.grant(*_client(service, "stamps"))
    digest = hashlib.sha256(b"a signature value").digest()
    status, _, body = post(f"{url}/csc/v2/signatures/timestamp", {
        "hash": base64.b64encode(digest).decode(), "hashAlgo": SHA256, "nonce": "abcdef"},
        token=grant.access_token)
    assert status == 200, body
    token = acms.ContentInfo.load(base64.b64decode(body["timestamp"]))
    info = token["content"]["encap_content_info"]["content"].parsed
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["nonce"].native == 0xabcdef
    logged = {int(t["serial"], 16): t for t in service.token_log.find()}
    assert logged[info["serial_number"].native]["requester"] == "127.0.0.1"


# --- end to end: tincay serve with the real remote-signing service --------------------------

HELPER = r"""
import json, sys
from cli.context import AppContext
args = json.loads(sys.argv[1])
app = AppContext()
try:
    service = app.service
    if args["do"] == "client":
        registered = service.clients.add(args["name"])
        grant = service.clients.grant(registered.client.client_id, registered.client_secret)
        print(json.dumps({"token": grant.access_token}))
    elif args["do"] == "credential":
        info, uri = service.credentials.create(args["serial"], args["user"], args["clients"],
                                               args["pin"])
        print(json.dumps({"id": info.credential_id, "uri": uri}))
finally:
    app.close()
"""


class Instance:
    """`tincay demo` + `tincay serve` on a port of this suite, and the CLI beside it."""

    def __init__(self, tmp_path: Path, stack: ExitStack, *serve_args: str) -> None:
        port = _port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
        env.update(TINCAY_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "user"),
                   TINCAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.env, self.home, self.base = env, tmp_path / "home", f"http://127.0.0.1:{port}"
        self.run("demo")
        log = stack.enter_context((tmp_path / "serve.log").open("wb"))
        server = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "2",
                                   "--no-maintenance", *serve_args], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        stack.callback(server.wait, timeout=30)
        stack.callback(server.terminate)
        self.log = tmp_path / "serve.log"
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.log.read_text().count("Worker ready") >= 2:
                    urllib.request.urlopen(f"{self.base}/healthz", timeout=2).read()
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(self.log.read_text())
            time.sleep(0.2)

    def run(self, *args: str) -> str:
        done = subprocess.run([TINCAY, *args], env=self.env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def python(self, **args: Any) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", HELPER, json.dumps(args)], env=self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def issue(self, key_type: str) -> dict[str, Any]:
        return json.loads(self.run(
            "issue", "--ca", "issuing-ca", "--profile", "clinician", "--subject",
            f"C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID={USER}", "--generate-key",
            "--key-type", key_type, "--out", str(self.home.parent / f"{key_type}.pem"),
            "--json"))


def sign_v2(base: str, token: str, credential_id: str, pin: str, otp: str, digest: bytes,
            sign_algo: str) -> tuple[bytes, str]:
    """One SHA-256 hash authorised (PIN, OTP) and signed through the CSC v2 names:
    (the signature, the SAD it used)."""
    hashes_b64 = [base64.b64encode(digest).decode()]
    status, _, auth = post(f"{base}/csc/v2/credentials/authorize", {
        "credentialID": credential_id, "numSignatures": 1, "hashes": hashes_b64,
        "hashAlgorithmOID": SHA256,
        "authData": [{"id": "PIN", "value": pin}, {"id": "OTP", "value": otp}]}, token=token)
    assert status == 200, auth
    status, _, signed = post(f"{base}/csc/v2/signatures/signHash", {
        "credentialID": credential_id, "SAD": auth["SAD"], "hashes": hashes_b64,
        "hashAlgorithmOID": SHA256, "signAlgo": sign_algo}, token=token)
    assert status == 200, signed
    return base64.b64decode(signed["signatures"][0]), auth["SAD"]


class Otp:
    """TOTP codes from the otpauth URI, each step used once and in order (the service
    refuses a code already used, or older than the last one)."""

    def __init__(self, uri: str) -> None:
        import pyotp

        self.totp = pyotp.parse_uri(uri)
        self.last = 0

    def next(self) -> str:
        while True:
            now = int(time.time()) // self.totp.interval
            step = max(self.last + 1, now - 1)
            if step <= now + 1:
                self.last = step
                return self.totp.generate_otp(step)
            time.sleep(1)


def _openssl_verify(tmp: Path, certificate: x509.Certificate, digest: bytes,
                    signature: bytes, rsa: bool) -> None:
    (tmp / "pub.pem").write_bytes(certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp / "digest.bin").write_bytes(digest)
    (tmp / "sig.bin").write_bytes(signature)
    extra = ["-pkeyopt", "digest:sha256"] if rsa else []
    done = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                           str(tmp / "pub.pem"), "-in", str(tmp / "digest.bin"), "-sigfile",
                           str(tmp / "sig.bin"), *extra], capture_output=True, text=True)
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, \
        done.stdout + done.stderr


@pytest.mark.softhsm
def test_remote_signing_end_to_end_with_pyhanko(tmp_path: Path) -> None:
    pytest.importorskip("ca.services.credentials")  # the other half of issue 20
    with ExitStack() as stack:
        tincay = Instance(tmp_path, stack)
        base = tincay.base
        token = tincay.python(do="client", name="emr-q11")["token"]
        ec_cert, rsa_cert = tincay.issue("ec-p256"), tincay.issue("rsa-2048")
        ec_cred = tincay.python(do="credential", serial=ec_cert["serial"], user=USER,
                                clients=["emr-q11"], pin=PIN)
        rsa_cred = tincay.python(do="credential", serial=rsa_cert["serial"], user=USER,
                                 clients=["emr-q11"], pin=PIN)
        ec_otp, rsa_otp = Otp(ec_cred["uri"]), Otp(rsa_cred["uri"])

        status, _, body = post(f"{base}/csc/v2/credentials/list", {}, token=token)
        assert status == 200 and set(body["credentialIDs"]) == {ec_cred["id"], rsa_cred["id"]}
        status, _, info = post(f"{base}/csc/v1/credentials/info", {
            "credentialID": ec_cred["id"], "certificates": "chain", "certInfo": True},
            token=token)
        assert status == 200 and info["cert"]["status"] == "valid", info
        signer_cert = x509.load_der_x509_certificate(
            base64.b64decode(info["cert"]["certificates"][0]))
        assert format(signer_cert.serial_number, "x") == info["cert"]["serialNumber"]

        # v2 names, ECDSA
        digest = hashlib.sha256("đơn thuốc".encode()).digest()
        hashes_b64 = [base64.b64encode(digest).decode()]
        signature, sad = sign_v2(base, token, ec_cred["id"], PIN, ec_otp.next(), digest, ECDSA)
        signer_cert.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        _openssl_verify(tmp_path, signer_cert, digest, signature, rsa=False)
        status, _, again = post(f"{base}/csc/v2/signatures/signHash", {
            "credentialID": ec_cred["id"], "SAD": sad, "hashes": hashes_b64,
            "hashAlgorithmOID": SHA256, "signAlgo": ECDSA}, token=token)
        assert (status, again["error"]) == (400, "invalid_request")  # the SAD is used up

        # v1 names, RSA PKCS#1 v1.5
        status, _, rsa_info = post(f"{base}/csc/v1/credentials/info",
                                   {"credentialID": rsa_cred["id"]}, token=token)
        rsa_signer = x509.load_der_x509_certificate(
            base64.b64decode(rsa_info["cert"]["certificates"][0]))
        status, _, auth = post(f"{base}/csc/v1/credentials/authorize", {
            "credentialID": rsa_cred["id"], "numSignatures": 1, "hash": hashes_b64,
            "PIN": PIN, "OTP": rsa_otp.next()}, token=token)
        assert status == 200, auth
        status, _, signed = post(f"{base}/csc/v1/signatures/signHash", {
            "credentialID": rsa_cred["id"], "SAD": auth["SAD"], "hash": hashes_b64,
            "hashAlgo": SHA256, "signAlgo": RSA_PKCS1}, token=token)
        assert status == 200, signed
        signature = base64.b64decode(signed["signatures"][0])
        rsa_signer.public_key().verify(signature, digest, padding.PKCS1v15(),
                                       Prehashed(hashes.SHA256()))
        _openssl_verify(tmp_path, rsa_signer, digest, signature, rsa=True)
        status, _, wrong = post(f"{base}/csc/v1/credentials/authorize", {
            "credentialID": rsa_cred["id"], "numSignatures": 1, "hash": hashes_b64,
            "PIN": "000000", "OTP": rsa_otp.next()}, token=token)
        assert (status, wrong["error"]) == (400, "invalid_pin")

        # pyHanko's own CSC client: PAdES B-LT with a tincay time-stamp and OCSP embedded
        root = tincay.home / "public" / "root-ca.pem"
        _pyhanko_signs_and_validates(base, token, ec_cred["id"], ec_otp, root)

        # revoked: authorize is refused at once
        tincay.run("revoke", ec_cert["serial"], "--ca", "issuing-ca", "--reason",
                   "keyCompromise")
        status, _, refused = post(f"{base}/csc/v2/credentials/authorize", {
            "credentialID": ec_cred["id"], "numSignatures": 1, "hashes": hashes_b64,
            "hashAlgorithmOID": SHA256,
            "authData": [{"id": "PIN", "value": PIN}, {"id": "OTP", "value": ec_otp.next()}]},
            token=token)
        assert (status, refused["error"]) == (403, "access_denied"), refused
        status, _, info = post(f"{base}/csc/v2/credentials/info",
                               {"credentialID": ec_cred["id"]}, token=token)
        assert info["cert"]["status"] == "revoked"
        served_log = tincay.log.read_text()
        assert PIN not in served_log and auth["SAD"] not in served_log \
            and token not in served_log and "Traceback" not in served_log


def _pyhanko_signs_and_validates(base: str, token: str, credential_id: str, otp: Otp,
                                 root_pem: Path) -> None:
    import aiohttp
    from asn1crypto import pem
    from asn1crypto import x509 as ax509
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import fields, signers
    from pyhanko.sign.signers.csc_signer import (CSCAuthorizationManager, CSCServiceSessionInfo,
                                                 CSCSigner, fetch_certs_in_csc_credential)
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    from tests.test_tsa import _minimal_pdf

    _, _, der = pem.unarmor(root_pem.read_bytes())
    root = ax509.Certificate.load(der)

    class PinAndOtp(CSCAuthorizationManager):
        """credentials/authorize with the signer's PIN and a fresh TOTP code (v1 names)."""

        def __init__(self, session_info: Any, credential_info: Any,
                     http: aiohttp.ClientSession) -> None:
            super().__init__(session_info, credential_info)
            self.http = http

        async def authorize_signature(self, hash_b64s: list[str]) -> Any:
            body = self.format_csc_auth_request(pin=PIN, otp=otp.next(), hash_b64s=hash_b64s)
            async with self.http.post(
                    self.csc_session_info.endpoint_url("credentials/authorize"),
                    headers=self.auth_headers, json=body, raise_for_status=True) as response:
                return self.parse_csc_auth_response(await response.json())

    async def sign() -> bytes:
        async with aiohttp.ClientSession() as http:
            session_info = CSCServiceSessionInfo(base, credential_id, oauth_token=token,
                                                 api_ver="v1")
            credential_info = await fetch_certs_in_csc_credential(http, session_info)
            signer = CSCSigner(http, PinAndOtp(session_info, credential_info, http))
            context = ValidationContext(trust_roots=[root], allow_fetching=True)
            metadata = signers.PdfSignatureMetadata(
                field_name="Signature1", embed_validation_info=True,
                validation_context=context, subfilter=fields.SigSeedSubFilter.PADES)
            out = await signers.async_sign_pdf(
                IncrementalPdfFileWriter(io.BytesIO(_minimal_pdf())), metadata, signer=signer,
                timestamper=HTTPTimeStamper(f"{base}/tsa"))
            return out.getvalue()

    signed = asyncio.run(sign())
    [embedded] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    context = ValidationContext(trust_roots=[root], allow_fetching=True)
    status = asyncio.run(async_validate_pdf_signature(
        embedded, signer_validation_context=context, ts_validation_context=context))
    assert status.intact and status.valid and status.bottom_line, status.pretty_print_details()
    assert status.timestamp_validity is not None and status.timestamp_validity.valid
    dss = PdfFileReader(io.BytesIO(signed)).root["/DSS"]
    assert "/OCSPs" in dss  # the OCSP answers tincay served, embedded (B-LT)


def test_an_unreachable_database_while_checking_the_token_is_503(
        pki: Hierarchy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients.verify meets a database outage (ca.store.outage raises this when the database
    is away): the client is told to come back, in the protocol's own words."""
    from ca.errors import DatabaseUnavailableError
    from web.app import create_app

    def away(token: str) -> None:
        raise DatabaseUnavailableError("the database is unreachable")

    app = create_app(pki.service)
    monkeypatch.setattr(pki.service.clients, "verify", away)
    response = app.test_client().post("/csc/v2/credentials/list", json={},
                                      headers={"Authorization": "Bearer tct_abc"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert response.get_json()["error"] == "temporarily_unavailable"
