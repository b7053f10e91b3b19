"""The pure CSC core (csc/core.py) over an in-memory credential service written here.

The fake keeps to the contract of ca.services.credentials.Credentials (PIN + OTP, SADs bound
to the client, the credential and the hashes, numSignatures used up) with real keys, so the
signatures the core returns are verified; the real service is exercised end to end over HTTP
by tests/test_csc_http.py. Every client mistake must be an in-protocol 4xx, never an exception.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from typing import Any, Sequence

import pytest
from asn1crypto import cms as acms
from asn1crypto import tsp as atsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import (BackendUnavailableError, CredentialDisabledError, CredentialError,
                       CredentialLockedError, CredentialNotFoundError, DatabaseUnavailableError,
                       InvalidClientError, InvalidOtpError, InvalidPinError, InvalidSadError,
                       InvalidTokenError, NotFoundError, UnsupportedAlgorithmError)
from ca.services.credential_common import Activation
from ca.services.credential_common import CredentialInfo as Info
from csc.core import CscApi
from tsa.core import rejection

SHA256, SHA384, SHA512 = ("2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2",
                          "2.16.840.1.101.3.4.2.3")
RSA_PKCS1, ECDSA, ECDSA_SHA256 = "1.2.840.113549.1.1.1", "1.2.840.10045.2.1", "1.2.840.10045.4.3.2"
NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)


# --- the fake service ------------------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    client_id: str
    name: str


def _certificate(key: Any, name: str, issuer_key: Any = None, issuer: str | None = None
                 ) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(0x1234ABCD)
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=365))
            .sign(issuer_key or key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_DER = _certificate(CA_KEY, "Issuing CA")
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PIN, OTP = "246810", "123456"


class FakeCredentials:
    """The contract's CSC side, in memory: two credentials of alice's (EC, RSA) granted to
    the client "app", one of bob's granted to "other"."""

    def __init__(self) -> None:
        self.outage: type[Exception] | None = None
        self.raise_next: Exception | None = None
        self.keys: dict[str, Any] = {"cred-ec": EC_KEY, "cred-rsa": RSA_KEY, "cred-bob": EC_KEY}
        base = dict(status="active", certificate_status="valid", authority="issuing-ca",
                    serial_hex="1234abcd", hash_algorithm_oids=(SHA256, SHA384, SHA512),
                    multisign=10, created_at=NOW)
        self.infos = {
            "cred-ec": Info("cred-ec", "alice", certificates=(
                _certificate(EC_KEY, "Alice", CA_KEY, "Issuing CA"), CA_DER),
                key_algorithm_oid=ECDSA, key_length=256, curve_oid="1.2.840.10045.3.1.7",
                sign_algorithm_oids=(ECDSA, ECDSA_SHA256), clients=("app",), **base),
            "cred-rsa": Info("cred-rsa", "alice", certificates=(
                _certificate(RSA_KEY, "Alice RSA", CA_KEY, "Issuing CA"), CA_DER),
                key_algorithm_oid=RSA_PKCS1, key_length=2048, curve_oid=None,
                sign_algorithm_oids=(RSA_PKCS1, "1.2.840.113549.1.1.11"), clients=("app",),
                **base),
            "cred-bob": Info("cred-bob", "bob", certificates=(CA_DER,),
                             key_algorithm_oid=ECDSA, key_length=256,
                             curve_oid="1.2.840.10045.3.1.7", sign_algorithm_oids=(ECDSA,),
                             clients=("other",), **base)}
        self.sads: dict[str, dict[str, Any]] = {}

    def _check(self) -> None:
        if self.outage is not None:
            raise self.outage("down")
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc

    def _granted(self, client: Client, credential_id: str) -> Info:
        info = self.infos.get(credential_id)
        if info is None or client.name not in info.clients:
            raise CredentialNotFoundError("no such credential")
        return info

    def list_for(self, client: Client, user_id: str | None = None) -> list[Info]:
        self._check()
        return [i for i in self.infos.values() if client.name in i.clients
                and (user_id is None or i.user_id == user_id)]

    def info_for(self, client: Client, credential_id: str) -> Info:
        self._check()
        return self._granted(client, credential_id)

    def authorize(self, client: Client, credential_id: str, *, pin: str | None,
                  otp: str | None, hashes: Sequence[bytes], hash_algorithm_oid: str,
                  num_signatures: int) -> Activation:
        self._check()
        info = self._granted(client, credential_id)
        if pin != PIN:
            raise InvalidPinError("the PIN is wrong")
        if otp != OTP:
            raise InvalidOtpError("the OTP is wrong")
        if hash_algorithm_oid not in info.hash_algorithm_oids:
            raise UnsupportedAlgorithmError("hash algorithm not allowed")
        sad = secrets.token_urlsafe(32)
        self.sads[sad] = dict(client=client.client_id, credential=credential_id,
                              hashes=set(hashes), left=num_signatures, oid=hash_algorithm_oid)
        return Activation(sad, 300)

    def extend(self, client: Client, credential_id: str, sad: str) -> Activation:
        self._check()
        self._granted(client, credential_id)
        entry = self.sads.pop(sad, None)
        if entry is None or entry["client"] != client.client_id:
            raise InvalidSadError("the SAD is not valid")
        new = secrets.token_urlsafe(32)
        self.sads[new] = entry
        return Activation(new, 300)

    def sign_hashes(self, client: Client, credential_id: str, sad: str,
                    hashes: Sequence[bytes], hash_algorithm_oid: str | None,
                    sign_algorithm_oid: str, sign_parameters: bytes | None = None
                    ) -> list[bytes]:
        self._check()
        info = self._granted(client, credential_id)
        entry = self.sads.get(sad)
        if (entry is None or entry["client"] != client.client_id
                or entry["credential"] != credential_id or entry["left"] < len(hashes)
                or not set(hashes) <= entry["hashes"]):
            raise InvalidSadError("the SAD is not valid for these hashes")
        if sign_algorithm_oid not in info.sign_algorithm_oids:
            raise UnsupportedAlgorithmError("sign algorithm not allowed")
        entry["left"] -= len(hashes)
        key = self.keys[credential_id]
        chosen = {SHA256: hashes_mod.SHA256(), SHA384: hashes_mod.SHA384(),
                  SHA512: hashes_mod.SHA512()}[hash_algorithm_oid or SHA256]
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        if isinstance(key, rsa.RSAPrivateKey):
            return [key.sign(h, padding.PKCS1v15(), Prehashed(chosen)) for h in hashes]
        return [key.sign(h, ec.ECDSA(Prehashed(chosen))) for h in hashes]


hashes_mod = hashes


class FakeTokens:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    def grant(self, client_id: str, client_secret: str) -> Any:
        if (client_id, client_secret) != ("app-id", "s3cret"):
            raise InvalidClientError("client authentication failed")
        return type("Grant", (), {"access_token": "tct_x", "expires_in": 600})()

    def verify(self, token: str) -> Client:
        owners = {"tct_x": APP, "tct_other": OTHER}
        if token not in owners:
            raise InvalidTokenError("the access token is not valid")
        return owners[token]

    def revoke(self, token: str) -> bool:
        self.revoked.append(token)
        return True


APP, OTHER = Client("app-id", "app"), Client("other-id", "other")


@pytest.fixture
def world() -> tuple[CscApi, FakeCredentials, FakeTokens]:
    service, tokens = FakeCredentials(), FakeTokens()
    return CscApi(service, tokens, oauth2_url="https://ca.example/oauth2/token"), service, tokens


def call(api: CscApi, version: str, method: str, body: Any, caller: Any = APP, **kw: Any):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = api.handle(version, method, caller, raw, **kw)
    return answer.status, answer.body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


DIGEST = hashlib.sha256(b"a document").digest()


# --- info, list, credentials/info ----------------------------------------------------------

@pytest.mark.parametrize("version,specs", [("v1", "1.0.4.0"), ("v2", "2.0.0.2")])
def test_info_needs_nothing_and_says_what_is_served(world, version: str, specs: str) -> None:
    api, _, _ = world
    status, body = call(api, version, "info", b"", caller=None)
    assert status == 200
    assert body["specs"] == specs and body["region"] == "VN"
    assert body["authType"] == ["oauth2client", "basic"]
    assert body["oauth2"] == "https://ca.example/oauth2/token"
    assert {"credentials/authorize", "signatures/signHash", "auth/login"} <= set(body["methods"])
    assert "signatures/timestamp" not in body["methods"]  # no stamper given
    assert call(api, version, "info", {"lang": "vi-VN"}, caller=None)[0] == 200


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_list_shows_only_the_callers_credentials(world, version: str) -> None:
    api, _, _ = world
    assert call(api, version, "credentials/list", {})[1] == {
        "credentialIDs": ["cred-ec", "cred-rsa"]}
    assert call(api, version, "credentials/list", {}, caller=OTHER)[1] == {
        "credentialIDs": ["cred-bob"]}
    assert call(api, version, "credentials/list", {"userID": "bob"})[1] == {"credentialIDs": []}
    first = call(api, version, "credentials/list", {"maxResults": 1})[1]
    assert first == {"credentialIDs": ["cred-ec"], "nextPageToken": "1"}
    assert call(api, version, "credentials/list", {"maxResults": 1, "pageToken": "1"})[1] == {
        "credentialIDs": ["cred-rsa"]}
    assert call(api, version, "credentials/list", {"pageToken": "x"})[0] == 400


def test_v2_list_with_credential_infos(world) -> None:
    api, service, _ = world
    service.infos["cred-rsa"] = replace(service.infos["cred-rsa"], certificate_status="revoked")
    status, body = call(api, "v2", "credentials/list",
                        {"credentialInfo": True, "certificates": "chain", "certInfo": True})
    assert status == 200 and body["credentialIDs"] == ["cred-ec", "cred-rsa"]
    [ec_info, rsa_info] = body["credentialInfos"]
    assert ec_info["credentialID"] == "cred-ec" and len(ec_info["cert"]["certificates"]) == 2
    assert rsa_info["cert"]["status"] == "revoked"
    assert call(api, "v2", "credentials/list", {"onlyValid": True})[1]["credentialIDs"] == [
        "cred-ec"]
    assert call(api, "v1", "credentials/list", {"credentialInfo": True})[0] == 400  # v2 only


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_credential_info_in_the_versions_names(world, version: str) -> None:
    api, service, _ = world
    status, body = call(api, version, "credentials/info",
                        {"credentialID": "cred-ec", "certificates": "chain", "certInfo": True,
                         "authInfo": True})
    assert status == 200
    info = service.infos["cred-ec"]
    assert body["cert"]["certificates"] == [b64(d) for d in info.certificates]
    assert body["cert"]["status"] == "valid"
    assert body["cert"]["serialNumber"] == "1234abcd"
    assert body["cert"]["subjectDN"] == "C=VN,CN=Alice" and body["cert"]["issuerDN"] == \
        "CN=Issuing CA"
    assert body["cert"]["validFrom"] == "20261124080000Z"
    assert body["cert"]["validTo"] == "20271124080000Z"
    assert body["key"] == {"status": "enabled", "algo": [ECDSA, ECDSA_SHA256], "len": 256,
                           "curve": "1.2.840.10045.3.1.7"}
    assert body["authMode"] == "explicit" and body["SCAL"] == "2" and body["multisign"] == 10
    if version == "v1":
        assert body["PIN"]["presence"] == "true"
        assert body["OTP"] == {"presence": "true", "type": "offline", "ID": "totp",
                               "provider": "tincay", "format": "N", "label": "OTP",
                               "description": body["OTP"]["description"]}
    else:
        assert body["auth"]["mode"] == "explicit"
        assert [o["id"] for o in body["auth"]["objects"]] == ["PIN", "OTP"]
    single = call(api, version, "credentials/info", {"credentialID": "cred-ec"})[1]
    assert single["cert"] == {"status": "valid", "certificates": [b64(info.certificates[0])]}
    none = call(api, version, "credentials/info",
                {"credentialID": "cred-ec", "certificates": "none"})[1]
    assert none["cert"] == {"status": "valid"}


def test_pyhankos_parser_reads_credential_info(world) -> None:
    """pyHanko's own reading of credentials/info (what its CSCSigner starts from)."""
    from pyhanko.sign.signers.csc_signer import _process_certificate_info_response

    api, _, _ = world
    for credential in ("cred-ec", "cred-rsa"):
        body = call(api, "v1", "credentials/info",
                    {"credentialID": credential, "certificates": "chain", "certInfo": False})[1]
        parsed = _process_certificate_info_response(body)
        assert parsed.hash_pinning_required and parsed.max_batch_size == 10
        assert len(parsed.chain) == 1 and parsed.signing_cert.subject.native["common_name"]
        assert parsed.supported_mechanisms


def test_a_disabled_key_and_a_not_yet_valid_certificate(world) -> None:
    api, service, _ = world
    service.infos["cred-ec"] = replace(service.infos["cred-ec"], status="locked",
                                       certificate_status="not_yet_valid")
    body = call(api, "v2", "credentials/info", {"credentialID": "cred-ec"})[1]
    assert body["key"]["status"] == "disabled" and body["cert"]["status"] == "suspended"


# --- authorize, extend, sign -----------------------------------------------------------------

def _authorize(api: CscApi, version: str, credential: str, hashes_: list[bytes],
               oid: str = SHA256, pin: str = PIN, otp: str = OTP, n: int | None = None):
    if version == "v1":
        body = {"credentialID": credential, "numSignatures": n or len(hashes_),
                "hash": [b64(h) for h in hashes_], "PIN": pin, "OTP": otp,
                "description": "a prescription", "clientData": "tx-1"}
    else:
        body = {"credentialID": credential, "numSignatures": n or len(hashes_),
                "hashes": [b64(h) for h in hashes_], "hashAlgorithmOID": oid,
                "authData": [{"id": "PIN", "value": pin}, {"id": "OTP", "value": otp}]}
    return call(api, version, "credentials/authorize", body)


def _sign(api: CscApi, version: str, credential: str, sad: str, hashes_: list[bytes],
          sign_algo: str, oid: str | None = SHA256, caller: Any = APP):
    names = ("hash", "hashAlgo") if version == "v1" else ("hashes", "hashAlgorithmOID")
    body: dict[str, Any] = {"credentialID": credential, "SAD": sad,
                            names[0]: [b64(h) for h in hashes_], "signAlgo": sign_algo}
    if oid is not None:
        body[names[1]] = oid
    return call(api, version, "signatures/signHash", body, caller=caller)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_authorize_then_sign_ec_and_rsa(world, version: str) -> None:
    api, _, _ = world
    two = [hashlib.sha256(b"one").digest(), hashlib.sha256(b"two").digest()]
    status, body = _authorize(api, version, "cred-ec", two)
    assert status == 200 and body["expiresIn"] == 300 and len(body["SAD"]) >= 43
    status, signed = _sign(api, version, "cred-ec", body["SAD"], two, ECDSA)
    assert status == 200 and len(signed["signatures"]) == 2
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    for digest, signature in zip(two, signed["signatures"]):
        EC_KEY.public_key().verify(base64.b64decode(signature), digest,
                                   ec.ECDSA(Prehashed(hashes.SHA256())))
    # the SAD is used up (numSignatures 2)
    assert _sign(api, version, "cred-ec", body["SAD"], two[:1], ECDSA)[1]["error"] == \
        "invalid_request"

    status, body = _authorize(api, version, "cred-rsa", [DIGEST])
    status, signed = _sign(api, version, "cred-rsa", body["SAD"], [DIGEST], RSA_PKCS1)
    RSA_KEY.public_key().verify(base64.b64decode(signed["signatures"][0]), DIGEST,
                                padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_v1_authorize_takes_the_hash_algorithm_from_the_hash_length(world) -> None:
    api, service, _ = world
    digest = hashlib.sha384(b"x").digest()
    status, body = _authorize(api, "v1", "cred-ec", [digest])
    assert status == 200 and service.sads[body["SAD"]]["oid"] == SHA384
    status, body = call(api, "v1", "credentials/authorize", {
        "credentialID": "cred-ec", "numSignatures": 2, "PIN": PIN, "OTP": OTP,
        "hash": [b64(digest), b64(DIGEST)]})
    assert status == 400 and body["error_description"].startswith("hash:")


def test_a_sign_algorithm_naming_its_hash_needs_no_hash_algorithm(world) -> None:
    api, _, _ = world
    sad = _authorize(api, "v2", "cred-ec", [DIGEST])[1]["SAD"]
    assert _sign(api, "v2", "cred-ec", sad, [DIGEST], ECDSA_SHA256, oid=None)[0] == 200
    status, body = _sign(api, "v2", "cred-ec", sad, [DIGEST], ECDSA, oid=None)
    assert status == 400 and "hashAlgo" in body["error_description"]
    # RSASSA-PSS names its hash in its parameters: the service decides (this one signs no PSS)
    sad = _authorize(api, "v2", "cred-rsa", [DIGEST])[1]["SAD"]
    status, body = _sign(api, "v2", "cred-rsa", sad, [DIGEST], "1.2.840.113549.1.1.10", oid=None)
    assert (status, body["error_description"]) == (400, "sign algorithm not allowed")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_extend_transaction_gives_a_new_sad(world, version: str) -> None:
    api, _, _ = world
    sad = _authorize(api, version, "cred-ec", [DIGEST])[1]["SAD"]
    status, body = call(api, version, "credentials/extendTransaction",
                        {"credentialID": "cred-ec", "SAD": sad})
    assert status == 200 and body["SAD"] != sad and body["expiresIn"] == 300
    assert _sign(api, version, "cred-ec", sad, [DIGEST], ECDSA)[0] == 400
    assert _sign(api, version, "cred-ec", body["SAD"], [DIGEST], ECDSA)[0] == 200


def test_another_clients_sad_and_credentials_are_refused(world) -> None:
    api, _, _ = world
    sad = _authorize(api, "v2", "cred-ec", [DIGEST])[1]["SAD"]
    status, body = _sign(api, "v2", "cred-ec", sad, [DIGEST], ECDSA, caller=OTHER)
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = call(api, "v2", "credentials/info", {"credentialID": "cred-ec"},
                        caller=OTHER)
    assert (status, body["error"]) == (400, "invalid_request")
    assert body == call(api, "v2", "credentials/info", {"credentialID": "nope"})[1]


@pytest.mark.parametrize("wrong,error", [("pin", "invalid_pin"), ("otp", "invalid_otp")])
def test_wrong_factors(world, wrong: str, error: str) -> None:
    api, _, _ = world
    for version in ("v1", "v2"):
        kw = {wrong: "000000"}
        status, body = _authorize(api, version, "cred-ec", [DIGEST], **kw)
        assert (status, body["error"]) == (400, error)


# --- every error mapping ---------------------------------------------------------------------

@pytest.mark.parametrize("exc,status,error", [
    (CredentialNotFoundError("x"), 400, "invalid_request"),
    (InvalidPinError("x"), 400, "invalid_pin"),
    (InvalidOtpError("x"), 400, "invalid_otp"),
    (CredentialLockedError("locked after 5 failures"), 403, "access_denied"),
    (CredentialDisabledError("revoked"), 403, "access_denied"),
    (InvalidSadError("x"), 400, "invalid_request"),
    (UnsupportedAlgorithmError("x"), 400, "invalid_request"),
    (BackendUnavailableError("hsm gone"), 503, "temporarily_unavailable"),
    (DatabaseUnavailableError("db gone"), 503, "temporarily_unavailable"),
    (NotFoundError("a bug's error"), 500, "server_error"),
    (RuntimeError("a bug"), 500, "server_error"),
])
def test_every_service_error_is_an_answer(world, exc: Exception, status: int, error: str,
                                          caplog) -> None:
    api, service, _ = world
    service.raise_next = exc
    got_status, body = _authorize(api, "v2", "cred-ec", [DIGEST])
    assert (got_status, body["error"]) == (status, error)
    if status < 500:
        assert body["error_description"] == str(exc)
    assert "Traceback" not in json.dumps(body) and "a bug" not in body["error_description"]
    assert PIN not in caplog.text and OTP not in caplog.text


# --- malformed bodies ------------------------------------------------------------------------

GOOD_V2 = {"credentialID": "cred-ec", "numSignatures": 1, "hashes": [b64(DIGEST)],
           "hashAlgorithmOID": SHA256, "authData": [{"id": "PIN", "value": PIN}]}


@pytest.mark.parametrize("raw,expected", [
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"x"', "must be a JSON object"),
    (b'{"credentialID": "a", "credentialID": "b"}', "repeated"),
    (b'{"credentialID": NaN}', "not valid JSON"),
    (b"[" * 100000, "not valid JSON"),
    (json.dumps({**GOOD_V2, "hashAlgorithmOid": SHA256}).encode(),
     "unknown key 'hashAlgorithmOid'"),
    (json.dumps({**GOOD_V2, "numSignatures": "1"}).encode(), "numSignatures: expected an integer"),
    (json.dumps({**GOOD_V2, "numSignatures": 0}).encode(), "numSignatures: must be at least 1"),
    (json.dumps({**GOOD_V2, "numSignatures": True}).encode(), "numSignatures"),
    (json.dumps({**GOOD_V2, "hashes": ["%%%"]}).encode(), "hashes[0]: is not valid base64"),
    (json.dumps({**GOOD_V2, "hashes": [7]}).encode(), "hashes[0]: expected a base64 string"),
    (json.dumps({**GOOD_V2, "hashes": []}).encode(), "hashes"),
    (json.dumps({**GOOD_V2, "hashes": [b64(b"short")]}).encode(), "hashes[0]: 5 bytes"),
    (json.dumps({**GOOD_V2, "hashAlgorithmOID": "sha256"}).encode(), "hashAlgorithmOID"),
    (json.dumps({**GOOD_V2, "authData": [{"id": "PIN"}]}).encode(), "missing required key"),
    (json.dumps({**GOOD_V2, "numSignatures": 5, "hashes": [b64(DIGEST)] * 6}).encode(),
     "numSignatures"),
    (json.dumps({k: v for k, v in GOOD_V2.items() if k != "credentialID"}).encode(),
     "missing required key 'credentialID'"),
])
def test_malformed_bodies_are_invalid_request(world, raw: bytes, expected: str) -> None:
    api, _, _ = world
    status, body = call(api, "v2", "credentials/authorize", raw)
    assert status == 400 and body["error"] == "invalid_request", body
    assert expected in body["error_description"], body
    assert PIN not in body["error_description"]


def test_other_refusals(world) -> None:
    api, _, _ = world
    assert call(api, "v2", "no/such", {})[0] == 404
    assert call(api, "v3", "info", {})[0] == 404
    sad = _authorize(api, "v2", "cred-ec", [DIGEST])[1]["SAD"]
    status, body = call(api, "v2", "signatures/signHash", {
        "credentialID": "cred-ec", "SAD": sad, "hashes": [b64(DIGEST)], "signAlgo": ECDSA,
        "hashAlgorithmOID": SHA256, "operationMode": "A"})
    assert status == 400 and "operationMode" in body["error_description"]
    status, body = call(api, "v2", "signatures/signHash", {
        "credentialID": "cred-ec", "SAD": sad, "hashes": [b64(DIGEST)], "signAlgo": ECDSA,
        "hashAlgorithmOID": SHA256, "signAlgoParams": "!!"})
    assert status == 400 and "signAlgoParams" in body["error_description"]
    assert call(CscApi(None), "v2", "credentials/list", {})[0] == 400  # nothing served
    assert call(api, "v2", "signatures/timestamp",
                {"hash": b64(DIGEST), "hashAlgo": SHA256})[0] == 404


# --- auth/login, auth/revoke ------------------------------------------------------------------

def test_login_and_revoke(world) -> None:
    api, _, tokens = world
    status, body = call(api, "v1", "auth/login", {}, caller=None, basic=("app-id", "s3cret"))
    assert (status, body) == (200, {"access_token": "tct_x", "expires_in": 600})
    answer = api.handle("v1", "auth/login", None, b"{}", basic=("app-id", "wrong"))
    assert (answer.status, answer.body["error"]) == (401, "invalid_client")
    assert ("WWW-Authenticate", 'Basic realm="tincay"') in answer.headers
    assert call(api, "v2", "auth/login", {}, caller=None)[0] == 401
    status, body = call(api, "v2", "auth/revoke", {"token": "tct_x",
                                                   "token_type_hint": "access_token"})
    assert (status, body, tokens.revoked) == (204, None, ["tct_x"])
    assert call(api, "v2", "auth/revoke", {"token": "tct_gone"})[0] == 204  # RFC 7009 2.2
    status, body = call(api, "v2", "auth/revoke", {"token": "tct_other"})  # another's token
    assert (status, body["error"], tokens.revoked) == (400, "invalid_request",
                                                       ["tct_x", "tct_gone"])
    assert call(api, "v2", "auth/revoke", {"token": "t", "token_type_hint": "id_token"})[0] == 400


# --- signatures/timestamp through the real TSA core --------------------------------------------

@pytest.fixture(scope="module")
def tsa_core():
    from ca.testing import Hierarchy
    from tsa.core import TimeStampAuthority, TsaPolicy, TsaUnit

    with Hierarchy.from_spec(at=NOW) as pki:
        [unit] = pki.service.authorities.service_units("tsa")
        yield TimeStampAuthority(TsaUnit(unit.name, unit.certificate,
                                         pki.service.authorities.signing_key(unit.key_uri),
                                         unit.chain), TsaPolicy(), pki.clock)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_timestamp_returns_an_rfc3161_token_for_the_hash(tsa_core, version: str) -> None:
    recorded = []

    def stamper(question: bytes, requester: str | None) -> bytes:
        result = tsa_core.respond(question, requester)
        if result.granted is not None:
            recorded.append(result.granted)
        return result.response

    api = CscApi(FakeCredentials(), None, stamper)
    assert "signatures/timestamp" in call(api, version, "info", b"")[1]["methods"]
    digest = hashlib.sha512(b"signed data").digest()
    status, body = call(api, version, "signatures/timestamp",
                        {"hash": b64(digest), "hashAlgo": SHA512, "nonce": "0a1b2c3d4e5f"})
    assert status == 200, body
    token = acms.ContentInfo.load(base64.b64decode(body["timestamp"]))
    info = token["content"]["encap_content_info"]["content"].parsed
    assert isinstance(info, atsp.TSTInfo)
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["nonce"].native == 0x0a1b2c3d4e5f
    assert [t.serial for t in recorded] == [info["serial_number"].native]
    status, body = call(api, version, "signatures/timestamp",
                        {"hash": b64(DIGEST), "hashAlgo": SHA256})
    token = acms.ContentInfo.load(base64.b64decode(body["timestamp"]))
    assert token["content"]["encap_content_info"]["content"].parsed["nonce"].native is None
    for bad, text in [({"hash": b64(digest), "hashAlgo": SHA256}, "hash[0]"),
                      ({"hash": b64(DIGEST), "hashAlgo": "1.3.14.3.2.26"}, "hashAlgo"),
                      ({"hash": b64(DIGEST), "hashAlgo": SHA256, "nonce": "xyz"}, "nonce")]:
        status, body = call(api, version, "signatures/timestamp", bad)
        assert status == 400 and text in body["error_description"], body


def test_a_refused_time_stamp_is_unavailable(tsa_core) -> None:
    from tsa.core import rejection
    api = CscApi(None, None, lambda q, who: rejection("systemFailure", "the log is busy"))
    status, body = call(api, "v2", "signatures/timestamp",
                        {"hash": b64(DIGEST), "hashAlgo": SHA256})
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert "the log is busy" in body["error_description"]


# --- hypothesis: mutated bodies never break the core ----------------------------------------

SEEDS: dict[tuple[str, str], dict[str, Any]] = {
    ("v2", "credentials/authorize"): GOOD_V2,
    ("v1", "credentials/authorize"): {"credentialID": "cred-ec", "numSignatures": 1,
                                      "hash": [b64(DIGEST)], "PIN": PIN, "OTP": OTP},
    ("v2", "signatures/signHash"): {"credentialID": "cred-ec", "SAD": "x",
                                    "hashes": [b64(DIGEST)], "hashAlgorithmOID": SHA256,
                                    "signAlgo": ECDSA, "signAlgoParams": b64(b"\x05\x00")},
    ("v1", "signatures/signHash"): {"credentialID": "cred-rsa", "SAD": "x",
                                    "hash": [b64(DIGEST)], "hashAlgo": SHA256,
                                    "signAlgo": RSA_PKCS1},
    ("v2", "credentials/extendTransaction"): {"credentialID": "cred-ec", "SAD": "x",
                                              "hashes": [b64(DIGEST)],
                                              "hashAlgorithmOID": SHA256},
    ("v1", "credentials/extendTransaction"): {"credentialID": "cred-ec", "SAD": "x"},
    ("v2", "credentials/info"): {"credentialID": "cred-ec", "certificates": "chain",
                                 "certInfo": True, "authInfo": True},
    ("v1", "credentials/info"): {"credentialID": "cred-rsa", "certInfo": True},
    ("v2", "credentials/list"): {"credentialInfo": True, "maxResults": 1, "pageToken": "1",
                                 "certInfo": True, "userID": "alice"},
    ("v1", "credentials/list"): {"maxResults": 2},
    ("v2", "signatures/timestamp"): {"hash": b64(DIGEST), "hashAlgo": SHA256, "nonce": "01"},
    ("v2", "auth/revoke"): {"token": "t", "token_type_hint": "access_token"},
    ("v1", "auth/login"): {"rememberMe": True},
    ("v2", "info"): {"lang": "en"},
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from([b64(DIGEST), PIN, SHA256, ECDSA, "", "=="]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4), max_leaves=10)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, bytes]:
    version, method = draw(st.sampled_from(sorted(SEEDS)))
    body = dict(SEEDS[(version, method)])
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "add", "nest"]))
        if action == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif action == "set" and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(JSON_VALUES)
        elif action == "add":
            body[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        else:
            body = {"x": body} if draw(st.booleans()) else body
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 9)) == 0:  # now and then a byte-level cut or flip
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=3)) + raw[cut + 1:]
    return version, method, raw


@settings(max_examples=400, deadline=None)
@given(case=mutated(), outage=st.sampled_from([None, None, None, BackendUnavailableError,
                                               DatabaseUnavailableError]))
def test_mutated_bodies_never_break_the_core(case: tuple[str, str, bytes],
                                             outage: type[Exception] | None) -> None:
    version, method, raw = case
    service = FakeCredentials()
    service.outage = outage
    api = CscApi(service, FakeTokens(), lambda q, who: rejection("badRequest", "no"))
    answer = api.handle(version, method, APP, raw, basic=("app-id", "s3cret"))
    assert answer.status < 500 or (answer.status == 503 and outage is not None), answer
    assert answer.body is None or set(answer.body) >= {"error"} or answer.status < 300
    json.dumps(answer.body)
