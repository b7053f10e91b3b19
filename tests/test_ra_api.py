"""The registration API (issue 21) over real HTTP on loopback: the app ca.testing serves, the
real Clients registry and bearer tokens, in-memory CA keys, SQLite and PostgreSQL.

Two issuing CAs under one root (a hospital's and a school's), so that scope and "a serial of
another CA" mean something. Every refusal is checked as a client sees it: the status, an
``application/problem+json`` body naming the member at fault, and, where the request would
have changed something, the database and the audit log unchanged afterwards.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import openapi_spec_validator
import pytest
import yaml
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca.errors import KeyBackendError
from ca.store.models import AuditEvent, Certificate, IdempotencyKey
from ca.testing import Hierarchy
from ca.testing.hierarchy import DEMO_SPEC
from tests.conftest import connections_refused, postgres_database
from tests.test_csc_http import _port as csc_port
from tests.test_csc_http import post

PORTS = range(9400, 9500)  # this suite's loopback ports
API = "/api/v1"
HOSPITAL, SCHOOL = "issuing-ca", "school-ca"
DOCTOR = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"
TEACHER = "C=VN, O=Trường THPT Lê Quý Đôn, CN=Trần Thị B, UID=CCCD:048190000123"
PROBLEM = "application/problem+json"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def spec() -> dict[str, Any]:
    """The demo hierarchy with a second issuing CA, a school's, under the same root."""
    data = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    data["authorities"].append({
        "name": SCHOOL, "parent": "root-ca", "profile": "issuing-ca", "key": "ec-p256",
        "subject": [{"C": "VN"}, {"O": "Sở Giáo dục và Đào tạo"}, {"CN": "Tincay School CA"}]})
    return data


def _port() -> int:
    return csc_port(PORTS)


def csr_pem(subject: str = "CN=ignored", *, break_signature: bool = False) -> str:
    """A P-256 CSR (its subject is not used: the request's is); with ``break_signature`` the
    last octet of its signature flipped, so the proof of possession fails."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])).sign(key, hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    if break_signature:
        der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode("ascii")
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def fields(self) -> set[str]:
        """The members a problem names."""
        return {e["field"] for e in (self.body or {}).get("errors") or ()}


class Api:
    """The served app, its clients and the database behind it."""

    def __init__(self, pki: Hierarchy, url: str) -> None:
        self.pki, self.url, self.service = pki, url, pki.service

    def token(self, name: str, role: str | None, cas: tuple[str, ...] = (),
              profiles: tuple[str, ...] = ()) -> str:
        added = self.service.clients.add(name, role=role, cas=cas, profiles=profiles)
        return self.service.clients.grant(added.client.client_id,
                                          added.client_secret).access_token

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             raw: bytes | None = None, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> Reply:
        status, head, payload = post(self.url + API + path, body, token=token, raw=raw,
                                     content_type=content_type, method=method,
                                     headers=headers)
        reply = Reply(status, head, payload)
        expected = PROBLEM if status >= 400 else "application/json"
        assert head["Content-Type"] == expected, (status, head, payload)
        if status >= 400:
            assert reply.body["status"] == status and reply.body["detail"], reply.body
        return reply

    def counts(self) -> tuple[int, int, int]:
        """Certificates, audit events and Idempotency-Key claims in the database."""
        with self.service.context.read() as session:
            return tuple(session.scalar(select(func.count()).select_from(table))  # type: ignore
                         for table in (Certificate, AuditEvent, IdempotencyKey))


def _api(database_url: str) -> Iterator[Api]:
    with Hierarchy.from_spec(spec(), database_url=database_url, port=_port()) as pki, \
            pki.serve() as url:
        yield Api(pki, url)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """A fresh hierarchy on SQLite and on PostgreSQL, served."""
    yield from _api(database_url)


@pytest.fixture(scope="module")
def shared() -> Iterator[Api]:
    """One hierarchy for the checks where the database does not matter."""
    yield from _api("sqlite://")


@pytest.fixture
def admin(api: Api) -> str:
    return api.token("hr-admin", "admin")


def issue_body(ca: str = HOSPITAL, profile: str = "clinician", subject: str = DOCTOR,
               **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ca": ca, "profile": profile, "subject": subject}
    if "csr" not in extra:
        body["generate_key"] = True
    body.update(extra)
    return body


# --- issuance ------------------------------------------------------------------------------

def _check_issued(api: Api, reply: Reply, ca: str, subject_cn: str) -> x509.Certificate:
    assert reply.status == 201, reply.body
    record = reply.body
    assert record["status"] == "issued" and record["ca"] == ca
    cert = x509.load_pem_x509_certificate(record["certificate"].encode())
    assert format(cert.serial_number, "x") == record["serial"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == subject_cn
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in record["chain"]]
    assert [c.subject for c in chain] == [api.pki.ca(ca).subject, api.pki.root.subject]
    cert.verify_directly_issued_by(chain[0])
    assert reply.headers["Location"] == f"{API}/certificates/{ca}/{record['serial']}"
    return cert


def test_issue_from_a_csr_and_with_a_generated_key(api: Api, admin: str) -> None:
    pem = csr_pem("not this name")
    reply = api.call("POST", "/certificates", issue_body(csr=pem), token=admin)
    cert = _check_issued(api, reply, HOSPITAL, "Nguyễn Văn A")
    requested = x509.load_pem_x509_csr(pem.encode())
    assert cert.public_key() == requested.public_key()  # the CSR's key, the request's subject
    assert reply.body["key_uri"] is None

    reply = api.call("POST", "/certificates", issue_body(SCHOOL, "teacher", TEACHER,
                                                         key_type="ec-p384"), token=admin)
    cert = _check_issued(api, reply, SCHOOL, "Trần Thị B")
    assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert reply.body["key_uri"]  # the CA keeps the key it made

    shown = api.call("GET", f"/certificates/{SCHOOL}/{reply.body['serial']}", token=admin)
    assert shown.status == 200 and shown.body == reply.body

    # the subject as JSON attributes, one {NAME: value} each, is the same certificate subject
    attributes = [{"UID": "CCCD:079073009568"}, {"CN": "Nguyễn Văn A"}, {"C": "VN"},
                  {"O": "Bệnh viện Quận 11"}]
    reply = api.call("POST", "/certificates", issue_body(subject=attributes), token=admin)
    cert = _check_issued(api, reply, HOSPITAL, "Nguyễn Văn A")
    assert reply.body["subject"] == shown_subject(api, admin, DOCTOR)


def shown_subject(api: Api, token: str, subject: str) -> str:
    """The subject string the API shows for a certificate issued with ``subject``."""
    return api.call("POST", "/certificates", issue_body(subject=subject),
                    token=token).body["subject"]


def test_the_same_idempotency_key_answers_the_same_certificate(api: Api, admin: str) -> None:
    key = {"Idempotency-Key": "hr-batch-7/row-12"}
    first = api.call("POST", "/certificates", issue_body(), token=admin, headers=key)
    assert first.status == 201
    before = api.counts()
    again = api.call("POST", "/certificates", issue_body(), token=admin, headers=key)
    assert again.status == 200 and again.body == first.body
    assert api.counts() == before  # no second certificate, no second event

    other = api.call("POST", "/certificates", issue_body(subject=DOCTOR.replace("A,", "C,")),
                     token=admin, headers=key)
    assert other.status == 422 and other.fields == {"Idempotency-Key"}
    assert api.counts() == before
    # another client's key of the same name is its own
    officer = api.token("emr", "ra-officer", (HOSPITAL,), ("clinician",))
    third = api.call("POST", "/certificates", issue_body(), token=officer, headers=key)
    assert third.status == 201 and third.body["serial"] != first.body["serial"]
    # a refused request lets its key go: corrected, it is served under the same key
    bad = api.call("POST", "/certificates", issue_body(subject="C=VN, CN=No Uid, O=X"),
                   token=admin, headers={"Idempotency-Key": "retry-me"})
    assert bad.status == 422 and bad.fields == {"subject"}
    fixed = api.call("POST", "/certificates", issue_body(), token=admin,
                     headers={"Idempotency-Key": "retry-me"})
    assert fixed.status == 201
    bad_key = api.call("POST", "/certificates", issue_body(), token=admin,
                       headers={"Idempotency-Key": "é" * 3})
    assert bad_key.status == 400 and bad_key.fields == {"Idempotency-Key"}


def test_a_generated_key_is_enrolled_for_remote_signing_in_the_same_request(
        api: Api, admin: str) -> None:
    """``credential`` beside ``generate_key``: the certificate comes back with a CSC
    credential whose otpauth URI is in that answer only; the holder's PIN and a TOTP code
    from it authorise a signature through the CSC API that the certificate's key verifies. A
    retry under the same Idempotency-Key (even with another PIN: the PIN is in no stored hash)
    answers the same credential, without the URI; the PIN is in no audit event."""
    from tests.test_csc_http import Otp, sign_v2

    pin, holder = "975310", "CCCD:079073009568"
    signer = api.service.clients.add("emr-sign")
    officer = api.token("hr-officer", "ra-officer", (HOSPITAL,), ("clinician",))
    key = {"Idempotency-Key": "onboarding/bs-a"}
    body = issue_body(key_type="ec-p256", credential={
        "user_id": holder, "pin": pin, "clients": ["emr-sign"], "multisign": 5})
    first = api.call("POST", "/certificates", body, token=officer, headers=key)
    cert = _check_issued(api, first, HOSPITAL, "Nguyễn Văn A")
    made = first.body["credential"]
    assert made["user_id"] == holder and made["otpauth_uri"].startswith("otpauth://totp/")
    again = api.call("POST", "/certificates", issue_body(key_type="ec-p256", credential={
        "user_id": holder, "pin": "another-pin", "clients": ["emr-sign"], "multisign": 5}),
        token=officer, headers=key)
    assert again.status == 200 and again.body["serial"] == first.body["serial"]
    assert again.body["credential"] == {**made, "otpauth_uri": None}
    with api.service.context.read() as session:
        details = " ".join(e.details or "" for e in session.scalars(select(AuditEvent)))
    assert pin not in details and "another-pin" not in details
    assert made["credential_id"] in details

    token = api.service.clients.grant(signer.client.client_id,
                                      signer.client_secret).access_token
    digest = hashlib.sha256("đơn thuốc số 12".encode()).digest()
    signature, _ = sign_v2(api.url, token, made["credential_id"], pin,
                           Otp(made["otpauth_uri"]).next(), digest, ECDSA_SHA256)
    cert.public_key().verify(signature, digest,  # type: ignore[call-arg]
                             ec.ECDSA(Prehashed(hashes.SHA256())))
    # the officer named no clients: the credential is its own to drive
    alone = api.call("POST", "/certificates", issue_body(credential={
        "user_id": holder, "pin": pin}), token=officer)
    assert alone.status == 201
    listed = api.service.credentials.list_for(
        api.service.clients.verify(officer), holder)
    assert [c.credential_id for c in listed] == [alone.body["credential"]["credential_id"]]


def test_concurrent_retries_under_one_key_issue_one_certificate(api: Api, admin: str) -> None:
    """Six clients' threads send the same request under the same key at once (an HR system
    retrying on a timeout): one certificate, every answer it or "still in progress"."""
    key = {"Idempotency-Key": "burst-1"}
    before = api.counts()
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: api.call("POST", "/certificates", issue_body(),
                                                   token=admin, headers=key), range(6)))
    statuses = sorted(r.status for r in replies)
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, statuses
    assert all(r.headers["Retry-After"] for r in replies if r.status == 409)
    serials = {r.body["serial"] for r in replies if r.status in (200, 201)}
    assert len(serials) == 1
    assert api.counts()[0] == before[0] + 1 and api.counts()[2] == before[2] + 1
    again = api.call("POST", "/certificates", issue_body(), token=admin, headers=key)
    assert again.status == 200 and again.body["serial"] in serials


class WorkerKilled(BaseException):
    """A worker that dies mid-request (gunicorn's timeout, kill -9): nothing after it runs."""


def test_a_request_that_died_mid_way_is_taken_over_after_a_while(
        api: Api, admin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request dies after its pending certificate was committed and before its signature:
    its claim says which serial. Retries are 409 while it could still be alive; past
    STALE_CLAIM the next one revokes that serial as never issued and issues anew, once."""
    from ra.core import RegistrationApi
    from ca.services.registration import STALE_CLAIM

    key, body = {"Idempotency-Key": "died-1"}, issue_body(csr=csr_pem())
    registration = api.service.registration
    issuance = registration.issuance

    def die(*args: Any, **kwargs: Any) -> Any:
        raise WorkerKilled

    with monkeypatch.context() as patched:
        patched.setattr(issuance, "complete", die)  # after the pending row's commit
        patched.setattr(registration, "_forget", lambda claim: None)  # no cleanup either
        with pytest.raises(WorkerKilled):
            RegistrationApi(registration).handle(
                "POST", "/api/v1/certificates", api.service.clients.verify(admin),
                json.dumps(body).encode(), headers=key)
    with api.service.context.read() as session:
        (claim,) = session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == "died-1"))
        dead = session.get(Certificate, claim.certificate_id)
        assert dead is not None and dead.status == "pending" and dead.der is None
        dead_serial = dead.serial_hex
    busy = api.call("POST", "/certificates", body, token=admin, headers=key)
    assert busy.status == 409 and busy.headers["Retry-After"]
    with api.pki.at(api.pki.clock.now() + STALE_CLAIM + dt.timedelta(seconds=1)):
        taken = api.call("POST", "/certificates", body, token=admin, headers=key)
        assert taken.status == 201 and taken.body["serial"] != dead_serial, taken.body
        again = api.call("POST", "/certificates", body, token=admin, headers=key)
    assert again.status == 200 and again.body["serial"] == taken.body["serial"]
    with api.service.context.read() as session:
        rows = {c.serial_hex: c for c in session.scalars(select(Certificate).where(
            Certificate.serial_hex.in_([dead_serial, taken.body["serial"]])))}
        assert rows[dead_serial].status == "revoked" and rows[dead_serial].der is None
        assert rows[taken.body["serial"]].status == "issued"


# --- reading -------------------------------------------------------------------------------

def test_listing_with_filters_and_cursor_pages(api: Api, admin: str) -> None:
    serials = []
    for n in range(5):
        body = issue_body(subject=DOCTOR.replace("079073009568", f"07907300956{n}"))
        serials.append(api.call("POST", "/certificates", body, token=admin).body["serial"])
    school = api.call("POST", "/certificates", issue_body(SCHOOL, "teacher", TEACHER),
                      token=admin).body["serial"]
    seen, cursor, pages = [], None, 0
    while True:
        query = f"?ca={HOSPITAL}&profile=clinician&limit=2" + (f"&cursor={cursor}"
                                                              if cursor else "")
        page = api.call("GET", "/certificates" + query, token=admin)
        assert page.status == 200 and len(page.body["items"]) <= 2
        seen += [item["serial"] for item in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == serials and pages == 3  # oldest first, none twice, none skipped
    everything = api.call("GET", "/certificates?limit=500", token=admin).body["items"]
    assert school in {i["serial"] for i in everything} and len(everything) >= 6
    api.call("POST", f"/certificates/{HOSPITAL}/{serials[0]}/revoke", {}, token=admin)
    revoked = api.call("GET", "/certificates?status=revoked", token=admin).body["items"]
    assert [i["serial"] for i in revoked] == [serials[0]]

    for query, name in (("?status=lost", "status"), ("?ca=nowhere-ca", "ca"),
                        ("?limit=0", "limit"), ("?limit=x", "limit"), ("?cursor=bm9wZQ", "cursor"),
                        ("?ca=a&ca=b", "ca"), ("?colour=red", "colour")):
        reply = api.call("GET", "/certificates" + query, token=admin)
        assert reply.status == 400 and reply.fields == {name}, (query, reply.body)
    audit_cursor = api.call("GET", "/audit?limit=1", token=admin).body["next_cursor"]
    reply = api.call("GET", f"/certificates?cursor={audit_cursor}", token=admin)
    assert reply.status == 400 and reply.fields == {"cursor"}  # another listing's cursor


def test_cas_profiles_and_the_audit_log(api: Api, admin: str) -> None:
    cas = api.call("GET", "/cas", token=admin)
    assert cas.status == 200
    assert {"root-ca", HOSPITAL, SCHOOL} <= {c["name"] for c in cas.body["items"]}
    profiles = {p["name"] for p in api.call("GET", "/profiles", token=admin).body["items"]}
    assert {"clinician", "teacher", "citizen"} <= profiles
    # not the API's to issue: CAs', abstract ones, and the service units' (a delegated OCSP
    # signer or a TSA unit certified for a client's key would speak for the CA)
    assert not profiles & {"root-ca", "issuing-ca", "person-base", "ocsp-responder", "tsa"}
    assert api.call("GET", "/cas?x=1", token=admin).status == 400

    key = {"Idempotency-Key": "onboarding-2026-12/17"}
    serial = api.call("POST", "/certificates", issue_body(), token=admin,
                      headers=key).body["serial"]
    api.call("POST", f"/certificates/{HOSPITAL}/{serial}/revoke",
             {"reason": "keyCompromise"}, token=admin)
    events, cursor = [], None
    while True:
        page = api.call("GET", "/audit?limit=3" + (f"&cursor={cursor}" if cursor else ""),
                        token=admin)
        assert page.status == 200 and len(page.body["items"]) <= 3
        events += page.body["items"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    issued = [e for e in events if e["action"] == "certificate.issue" and e["serial"] == serial]
    revoked = [e for e in events if e["action"] == "certificate.revoke"]
    assert len(issued) == 1 and len(revoked) == 1
    assert issued[0]["details"]["client"] == "hr-admin"
    assert issued[0]["details"]["idempotency_key"] == key["Idempotency-Key"]
    assert revoked[0]["details"]["client"] == "hr-admin" and revoked[0]["serial"] == serial


# --- revocation, hold, release ---------------------------------------------------------------

def test_revoke_hold_and_release(api: Api, admin: str) -> None:
    one = api.call("POST", "/certificates", issue_body(), token=admin).body["serial"]
    two = api.call("POST", "/certificates", issue_body(), token=admin).body["serial"]
    path = f"/certificates/{HOSPITAL}"
    since = (api.pki.clock.now() - dt.timedelta(days=2)).isoformat()
    reply = api.call("POST", f"{path}/{one}/revoke",
                     {"reason": "key-compromise", "invalidity_date": since}, token=admin)
    assert reply.status == 200 and reply.body["status"] == "revoked"
    assert reply.body["revocation_reason"] == "keyCompromise" and reply.body["revoked_at"]
    before = api.counts()
    again = api.call("POST", f"{path}/{one}/revoke", {}, token=admin)
    assert again.status == 409
    assert api.call("POST", f"{path}/{one}/release", token=admin).status == 409
    assert api.counts() == before

    held = api.call("POST", f"{path}/{two}/hold", token=admin, raw=b"", content_type="")
    assert held.status == 200 and held.body["revocation_reason"] == "certificateHold"
    released = api.call("POST", f"{path}/{two}/release", {}, token=admin)
    assert released.status == 200 and released.body["status"] == "issued"
    assert released.body["revoked_at"] is None
    assert api.call("POST", f"{path}/{two}/release", token=admin).status == 409

    future = (api.pki.clock.now() + dt.timedelta(days=1)).isoformat()
    for body, name in (({"reason": "because"}, "reason"),
                       ({"invalidity_date": "2026-12-01T08:00:00"}, "invalidity_date"),
                       ({"invalidity_date": future}, "invalidity_date"),
                       ({"reason": "unspecified", "when": "now"}, "when")):
        before = api.counts()
        reply = api.call("POST", f"{path}/{two}/revoke", body, token=admin)
        assert reply.status == 422 and reply.fields == {name}, (body, reply.body)
        assert api.counts() == before
    assert api.call("POST", f"{path}/{two}/hold", {"x": 1}, token=admin).fields == {"x"}


def test_a_serial_of_another_ca_is_not_found(api: Api, admin: str) -> None:
    serial = api.call("POST", "/certificates", issue_body(), token=admin).body["serial"]
    before = api.counts()
    for method, suffix in (("GET", ""), ("POST", "/revoke"), ("POST", "/hold")):
        reply = api.call(method, f"/certificates/{SCHOOL}/{serial}{suffix}", token=admin,
                         body={} if method == "POST" else None)
        assert reply.status == 404, reply.body
    assert api.call("GET", f"/certificates/nowhere-ca/{serial}", token=admin).status == 404
    assert api.call("GET", f"/certificates/{HOSPITAL}/zz", token=admin).status == 404
    assert api.counts() == before


# --- bad input: a 4xx problem naming the field, nothing written -------------------------------

BAD_ISSUES = [
    (b'{"ca": "issuing-ca", "profile": ', 400, "body"),
    (b'["not", "an", "object"]', 400, "body"),
    (b'{"ca": "issuing-ca", "ca": "school-ca"}', 400, "ca"),
    (issue_body(colour="blue"), 422, "colour"),
    (issue_body(subject="C=VN, O=Bệnh viện, CN=Không có UID"), 422, "subject"),
    (issue_body(subject="C=VN, O=X, CN=Y, UID=CCCD:123"), 422, "subject"),
    (issue_body(subject="C=VN, CN=Y, UID=CCCD:079073009568"), 422, "subject"),
    (issue_body(subject="not a DN"), 422, "subject"),
    (issue_body(subject=[{"C": "VN", "CN": "Hai thuộc tính"}]), 422, "subject[0]"),
    (issue_body(subject=[{"C": "VN"}, {"CN": 7}]), 422, "subject[1]"),
    (issue_body(subject=[{"C": "VN"}, {"CN": "Y"}, {"O": "X"}]), 422, "subject"),
    (issue_body(subject=7), 422, "subject"),
    (issue_body(csr=csr_pem(break_signature=True)), 422, "csr"),
    (issue_body(csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                    "-----END CERTIFICATE REQUEST-----\n"), 422, "csr"),
    (issue_body(csr="hello"), 422, "csr"),
    (issue_body(ca="nowhere-ca"), 422, "ca"),
    (issue_body(profile="astronaut"), 422, "profile"),
    (issue_body(profile="root-ca"), 422, "profile"),
    (issue_body(profile="ocsp-responder", subject="C=VN, O=X, CN=OCSP"), 422, "profile"),
    (issue_body(profile="tsa", subject="C=VN, O=X, CN=TSA", csr=csr_pem()), 422, "profile"),
    (issue_body(key_type="dsa-1024"), 422, "key_type"),
    (issue_body(days=100000), 422, "days"),
    (issue_body(days=5000), 422, "days"),
    (issue_body(emails=["a@b.vn"], dns_names=["x.vn"]), 422, "dns_names"),
    ({"ca": HOSPITAL, "profile": "clinician", "subject": DOCTOR}, 422, "csr"),
    ({"profile": "clinician", "subject": DOCTOR, "generate_key": True}, 422, "ca"),
    (issue_body(csr=csr_pem(), credential={"user_id": "u", "pin": "246810"}), 422,
     "credential"),
    (issue_body(credential={"user_id": "u", "pin": "12345"}), 422, "credential.pin"),
    (issue_body(credential={"user_id": " u", "pin": "246810"}), 422, "credential.user_id"),
    (issue_body(credential={"user_id": "u", "pin": "246810", "clients": ["nobody"]}), 422,
     "credential.clients"),
    (issue_body(credential={"user_id": "u", "pin": "246810", "multisign": 0}), 422,
     "credential.multisign"),
    (issue_body(credential={"user_id": "u"}), 422, "credential.pin"),
]


@pytest.mark.parametrize("body,status,name", BAD_ISSUES,
                         ids=[f"{n}-{i}" for i, (_, _, n) in enumerate(BAD_ISSUES)])
def test_bad_issuance_is_a_problem_naming_the_field(api: Api, admin: str, body: Any,
                                                   status: int, name: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = api.counts()
    reply = api.call("POST", "/certificates", raw=raw, token=admin,
                     headers={"Idempotency-Key": "one-try"})
    assert reply.status == status and name in reply.fields, reply.body
    assert api.counts() == before


def test_http_refusals_of_the_adapter(shared: Api) -> None:
    api = shared
    token = api.token("http-checks", "admin")
    before = api.counts()
    big = json.dumps(issue_body(subject="C=VN, CN=" + "x" * 70000)).encode()
    reply = api.call("POST", "/certificates", raw=big, token=token)
    assert reply.status == 413
    reply = api.call("POST", "/certificates", raw=json.dumps(issue_body()).encode(),
                     token=token, content_type="text/plain")
    assert reply.status == 415
    reply = api.call("POST", "/certificates", raw=b"", token=token, content_type="")
    assert reply.status == 400 and reply.fields == {"body"}
    reply = api.call("DELETE", "/certificates", token=token)
    assert reply.status == 405 and reply.headers["Allow"] == "GET, POST"
    assert api.call("GET", "/nothing-here", token=token).status == 404
    assert api.call("GET", "/certificates?ca=%ff", token=token).status == 400
    reply = api.call("POST", "/certificates?ca=issuing-ca", issue_body(), token=token)
    assert reply.status == 400 and reply.fields == {"ca"}  # misplaced, not ignored
    reply = api.call("GET", "/certificates/issuing-ca/01?verbose=1", token=token)
    assert reply.status == 400 and reply.fields == {"verbose"}
    assert api.counts() == before


def test_the_openapi_document_is_valid_and_needs_no_token(shared: Api) -> None:
    reply = shared.call("GET", "/openapi.json")
    assert reply.status == 200 and reply.body["openapi"].startswith("3.1")
    openapi_spec_validator.validate(reply.body)
    paths = reply.body["paths"]
    assert {"/api/v1/certificates", "/api/v1/certificates/{ca}/{serial}/revoke",
            "/api/v1/audit"} <= set(paths)


# --- authentication and roles --------------------------------------------------------------

def test_no_bad_or_expired_token_is_401(shared: Api) -> None:
    api = shared
    token = api.token("expiring", "admin")
    cases = [None, "tct_not-a-token", "not a b64token!"]
    for case in cases:
        reply = api.call("GET", "/cas", token=case)
        assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer ")
    reply = api.call("GET", "/cas", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert reply.status == 401
    with api.pki.at(api.pki.clock.now() + dt.timedelta(minutes=11)):
        reply = api.call("GET", "/cas", token=token)
    assert reply.status == 401 and 'error="expired_token"' in reply.headers["WWW-Authenticate"]
    before = api.counts()
    reply = api.call("POST", "/certificates", issue_body(), token="tct_nope")
    assert reply.status == 401 and api.counts() == before
    api.service.clients.disable("expiring")
    assert api.call("GET", "/cas", token=token).status == 401


def test_roles_and_scopes(api: Api, admin: str) -> None:
    officer = api.token("emr-q11", "ra-officer", (HOSPITAL,), ("clinician",))
    auditor = api.token("inspector", "auditor")
    nobody = api.token("csc-only", None)
    doctor = api.call("POST", "/certificates", issue_body(), token=officer)
    assert doctor.status == 201
    teacher = api.call("POST", "/certificates", issue_body(SCHOOL, "teacher", TEACHER),
                       token=admin)
    assert teacher.status == 201
    d, t = doctor.body["serial"], teacher.body["serial"]
    before = api.counts()
    refused = [
        api.call("POST", "/certificates", issue_body(profile="teacher", subject=TEACHER),
                 token=officer),
        api.call("POST", "/certificates", issue_body(SCHOOL, "clinician"), token=officer),
        api.call("POST", f"/certificates/{SCHOOL}/{t}/revoke", {}, token=officer),
        api.call("POST", f"/certificates/{SCHOOL}/{t}/hold", {}, token=officer),
        api.call("GET", f"/certificates/{SCHOOL}/{t}", token=officer),
        api.call("GET", f"/certificates?ca={SCHOOL}", token=officer),
        api.call("GET", "/audit", token=officer),
        api.call("POST", "/certificates", issue_body(), token=auditor),
        api.call("POST", f"/certificates/{HOSPITAL}/{d}/revoke", {}, token=auditor),
        api.call("POST", f"/certificates/{HOSPITAL}/{d}/hold", {}, token=auditor),
        api.call("POST", f"/certificates/{HOSPITAL}/{d}/release", {}, token=auditor),
        api.call("GET", "/cas", token=nobody),
        api.call("POST", "/certificates", issue_body(), token=nobody),
    ]
    assert [r.status for r in refused] == [403] * len(refused), [r.body for r in refused]
    assert all(r.body["type"].endswith(":forbidden") for r in refused)
    assert api.counts() == before
    # the officer sees its own scope only
    listed = api.call("GET", "/certificates", token=officer).body["items"]
    assert {(i["ca"], i["profile"]) for i in listed} == {(HOSPITAL, "clinician")}
    assert [c["name"] for c in api.call("GET", "/cas", token=officer).body["items"]] == [HOSPITAL]
    assert [p["name"] for p in api.call("GET", "/profiles", token=officer).body["items"]] \
        == ["clinician"]
    assert api.call("POST", f"/certificates/{HOSPITAL}/{d}/hold", token=officer).status == 200
    assert api.call("POST", f"/certificates/{HOSPITAL}/{d}/release", token=officer).status == 200
    # the auditor reads everything
    for path in ("/cas", "/profiles", "/audit", "/certificates", f"/certificates/{SCHOOL}/{t}"):
        assert api.call("GET", path, token=auditor).status == 200, path
    everything = api.call("GET", "/certificates", token=auditor).body["items"]
    assert {d, t} <= {i["serial"] for i in everything}
    # a CA's or a service unit's certificate is the operator's, even for an admin
    before = api.counts()
    for ca, profile in ((("root-ca", "issuing-ca"), ("issuing-ca", "ocsp-responder"))):
        items = api.call("GET", f"/certificates?ca={ca}&profile={profile}",
                         token=admin).body["items"]
        assert items, (ca, profile)
        for action in ("revoke", "hold"):
            reply = api.call("POST", f"/certificates/{ca}/{items[0]['serial']}/{action}", {},
                             token=admin)
            assert reply.status == 403 and "tincay revoke" in reply.body["detail"]
    assert api.counts() == before
    # the admin does all
    assert api.call("POST", f"/certificates/{SCHOOL}/{t}/revoke", {}, token=admin).status == 200
    assert api.call("POST", f"/certificates/{HOSPITAL}/{d}/revoke", {},
                    token=officer).status == 200


def test_nothing_logs_tokens_or_bodies(shared: Api, caplog: pytest.LogCaptureFixture) -> None:
    api = shared
    token = api.token("quiet", "admin")
    caplog.set_level("DEBUG")
    api.call("POST", "/certificates", issue_body(), token=token)
    api.call("POST", "/certificates", issue_body(colour="x"), token=token)
    api.call("GET", "/cas", token=token + "x")
    assert token not in caplog.text and "079073009568" not in caplog.text


@pytest.mark.postgres
def test_a_database_that_refuses_connections_is_503() -> None:
    """PostgreSQL drops the CA database's connections and refuses new ones: the token check
    answers 503 with Retry-After, a problem body, not a 401 or a 500; then it recovers."""
    with postgres_database() as database_url:
        for api in _api(database_url):
            token = api.token("outage", "admin")
            assert api.call("GET", "/cas", token=token).status == 200
            with connections_refused(database_url):
                for path in ("/cas", "/certificates"):
                    reply = api.call("GET", path, token=token)
                    assert reply.status == 503 and reply.headers["Retry-After"], reply.body
            assert api.call("GET", "/cas", token=token).status == 200


def test_plain_http_from_elsewhere_is_refused_with_a_problem(shared: Api) -> None:
    """Off loopback, /api/ needs https (bearer tokens and identity numbers travel in it): the
    real app, through werkzeug's test client, since a peer address other than loopback
    cannot be had on loopback."""
    from web.app import create_app

    http = create_app(shared.service).test_client()
    token = shared.token("tls-check", "auditor")
    auth = {"Authorization": f"Bearer {token}"}
    refused = http.get(f"{API}/cas", headers=auth, environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
    assert refused.status_code == 403 and refused.content_type == PROBLEM
    assert "requires TLS" in refused.get_json()["detail"]
    assert http.get(f"{API}/cas", headers=auth, base_url="https://pki.example.vn",
                    environ_overrides={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert http.get(f"{API}/cas", headers=auth,
                    environ_overrides={"REMOTE_ADDR": "::1"}).status_code == 200


def _stored_status(api: Api, serial: str) -> Any:
    """The status the stored (pre-produced) OCSP answer of ``serial`` gives, or None."""
    der = api.service.ocsp_answers.preproduced_response(HOSPITAL, int(serial, 16))
    return None if der is None else ocsp.load_der_ocsp_response(der).certificate_status


def test_each_status_change_pre_produces_the_ocsp_answer(api: Api, admin: str) -> None:
    """As `tincay issue` and `tincay revoke` do: a validator asking right after an API call
    gets the new status from a stored answer, not only after the next maintenance pass."""
    serial = api.call("POST", "/certificates", issue_body(), token=admin).body["serial"]
    assert _stored_status(api, serial) == ocsp.OCSPCertStatus.GOOD
    path = f"/certificates/{HOSPITAL}/{serial}"
    assert api.call("POST", f"{path}/hold", token=admin).status == 200
    assert _stored_status(api, serial) == ocsp.OCSPCertStatus.REVOKED
    assert api.call("POST", f"{path}/release", token=admin).status == 200
    assert _stored_status(api, serial) == ocsp.OCSPCertStatus.GOOD
    assert api.call("POST", f"{path}/revoke", {"reason": "superseded"}, token=admin).status == 200
    assert _stored_status(api, serial) == ocsp.OCSPCertStatus.REVOKED


def test_an_answer_that_cannot_be_pre_produced_leaves_the_call_done(
        shared: Api, caplog: pytest.LogCaptureFixture) -> None:
    """The HSM refusing the OCSP signature after the change committed: the client still gets
    its 201 and its certificate (the answer is signed live meanwhile), and the log one
    warning line, no traceback."""
    from ra.core import RegistrationApi

    def refused(ca: str, serial: str) -> None:
        raise KeyBackendError("the token is away")

    token = shared.token("ocsp-away-admin", "admin")
    api = RegistrationApi(shared.service.registration, status_changed=refused)
    with caplog.at_level("WARNING", logger="tincay.ra"):
        answer = api.handle("POST", "/api/v1/certificates", shared.service.clients.verify(token),
                            json.dumps(issue_body()).encode())
    assert answer.status == 201 and answer.body["status"] == "issued"
    [line] = [r for r in caplog.records if r.name == "tincay.ra"]
    assert "not pre-produced" in line.getMessage() and answer.body["serial"] in line.getMessage()
    assert line.exc_info is None
