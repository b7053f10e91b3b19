"""TLS client certificates as API client credentials (RFC 8705 tls_client_auth) over real TLS:
`tincay demo`, `tincay issue --profile tls-client`, `tincay client add --cert-file` / `bind`,
and `tincay serve` under gunicorn (both worker classes, --tls-self and --certfile with
--client-ca) on loopback.

A client holding a bound certificate gets a bearer token with its client_id alone, from
Python's ssl and from curl, and uses it on the CSC API; refused with 401 invalid_client: a
certificate bound to another client, an unbound one, one revoked by `tincay revoke` while the
server runs, one whose client `tincay client disable` ended, and no certificate at all. A
certificate from a CA outside the bundle does not get through the handshake. Secrets keep
working beside all this. And web/client_cert.py's two readers, over a real registry.
"""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.errors import InvalidClientCertificateError
from tests.test_csc_http import _port as csc_port
from tests.test_oauth import FORM, TINCAY, TLS_HOST, _Pinned, _self_signed, basic
from tests.test_service import demo, profiles  # noqa: F401 - the module-scoped fixtures

PORTS = range(9500, 9600)  # this suite's loopback ports
PEM = serialization.Encoding.PEM
# what each certificate is for: bound to hr-system (2), to emr, to nobody, to be revoked,
# to a client to be disabled
HOLDERS = {"hr": "hr-system", "hr2": "hr-system", "emr": "emr", "unbound": None,
           "revoked": "lab", "disabled": "school"}


def _port() -> int:
    return csc_port(PORTS)


@dataclass
class Pair:
    """A TLS client's certificate and key files."""

    cert: Path
    key: Path
    serial: str = ""


@dataclass
class Served:
    port: int
    env: dict[str, str]
    home: Path
    log: Path
    cafile: Path  # the root a client trusts for the server
    mode: str
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> client add JSON
    pairs: dict[str, Pair] = field(default_factory=dict)

    def tincay(self, *args: str) -> Any:
        done = subprocess.run([TINCAY, *args, "--json"], env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def context(self, pair: Pair | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile))
        if pair is not None:
            context.load_cert_chain(pair.cert, pair.key)
        return context

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
             pair: Pair | None = None) -> tuple[int, dict[str, str], dict]:
        connection = _Pinned(TLS_HOST, self.port, timeout=10, context=self.context(pair))
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            return reply.status, dict(reply.getheaders()), json.loads(reply.read())
        finally:
            connection.close()

    def post(self, path: str, body: bytes, headers: dict[str, str],
             pair: Pair | None = None) -> tuple[int, dict]:
        status, _, answer = self.call("POST", path, body, headers, pair)
        return status, answer

    def token(self, client: str, pair: Pair | None) -> tuple[int, dict]:
        """A tls_client_auth token request: client_id in the body, no secret."""
        body = urlencode({"grant_type": "client_credentials",
                          "client_id": self.clients[client]["client_id"]}).encode()
        return self.post("/oauth2/token", body, {"Content-Type": FORM}, pair)


def _client_pair(folder: Path, name: str, env: dict[str, str]) -> Pair:
    """A key and a tls-client certificate of the demo's issuing-ca, by `tincay issue`."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    (folder / f"{name}.csr").write_bytes(csr.public_bytes(PEM))
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    pair.key.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    done = subprocess.run([TINCAY, "issue", "--ca", "issuing-ca", "--profile", "tls-client",
                           "--subject", f"C=VN, O=Bệnh viện Quận 11, CN={name}", "--csr",
                           str(folder / f"{name}.csr"), "--out", str(pair.cert), "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pair.serial = json.loads(done.stdout)["serial"]
    return pair


def _foreign_pair(folder: Path) -> Pair:
    """A tls-client-like certificate from a CA outside every bundle tincay trusts."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other PKI Root")])
    base = (x509.CertificateBuilder().issuer_name(ca_name).serial_number(
        x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1)))
    cert = (base.subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hr-system")]))
            .public_key(key.public_key())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    pair = Pair(folder / "foreign.pem", folder / "foreign.key")
    pair.cert.write_bytes(cert.public_bytes(PEM))
    pair.key.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


@pytest.fixture(scope="module", params=["gevent_pywsgi+tls-self", "gthread+certfile"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    """`tincay serve` asking for client certificates: --tls-self (tincay's own CAs, the
    default bundle) under gevent, or an operator's --certfile with --client-ca under gthread;
    clients registered and certificates bound through the CLI before it starts."""
    worker_class, _, mode = request.param.partition("+")
    tmp_path = tmp_path_factory.mktemp(mode)
    with ExitStack() as stack:
        port = _port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
        env.update(TINCAY_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "user"),
                   TINCAY_PUBLIC_URL=f"https://{TLS_HOST}:{port}",
                   TINCAY_HTTP_HEADER_TIMEOUT="2s")
        subprocess.run([TINCAY, "demo"], env=env, check=True, capture_output=True, timeout=120)
        home = tmp_path / "home"
        server = Served(port, env, home, tmp_path / "serve.log", home / "public/root-ca.pem",
                        mode)
        server.pairs = {label: _client_pair(tmp_path, label, env) for label in HOLDERS}
        server.pairs["foreign"] = _foreign_pair(tmp_path)
        for label, holder in HOLDERS.items():
            if holder is None:
                continue
            if holder not in server.clients:  # the first certificate comes with client add
                server.clients[holder] = server.tincay(
                    "client", "add", holder, "--cert-file", str(server.pairs[label].cert))
            else:  # a second by tincay's serial
                server.tincay("client", "bind", holder, "--ca", "issuing-ca", "--serial",
                              server.pairs[label].serial)
        server.clients["nocert"] = server.tincay("client", "add", "nocert")
        extra = ["--tls-self"]
        if mode == "certfile":
            certfile, keyfile = _self_signed(tmp_path)
            server.cafile = certfile
            bundle = tmp_path / "client-ca.pem"
            bundle.write_bytes((home / "public/root-ca.pem").read_bytes()
                               + (home / "public/issuing-ca.pem").read_bytes())
            extra = ["--certfile", str(certfile), "--keyfile", str(keyfile),
                     "--client-ca", str(bundle)]
        log = stack.enter_context(server.log.open("wb"))
        process = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "1",
                                    "--no-maintenance", "--worker-class", worker_class, *extra],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(process.wait, timeout=30)
        stack.callback(process.terminate)
        deadline = time.monotonic() + 60
        while "Worker ready" not in server.log.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(server.log.read_text())
            time.sleep(0.1)
        yield server


@pytest.mark.softhsm
def test_a_bound_certificate_gets_a_token_that_works_on_the_csc_api(served: Served) -> None:
    status, grant = served.token("hr-system", served.pairs["hr"])
    assert status == 200 and grant["token_type"] == "Bearer", grant
    assert grant["access_token"].startswith("tct_") and grant["expires_in"] > 0
    status, listed = served.post("/csc/v2/credentials/list", b"{}", {
        "Content-Type": "application/json", "Authorization": f"Bearer {grant['access_token']}"})
    assert status == 200 and listed["credentialIDs"] == [], listed
    status, again = served.token("hr-system", served.pairs["hr2"])  # bound by --ca --serial
    assert status == 200, again
    # on the CSC v2 path too
    body = urlencode({"grant_type": "client_credentials",
                      "client_id": served.clients["hr-system"]["client_id"]}).encode()
    status, csc = served.post("/csc/v2/oauth2/token", body, {"Content-Type": FORM},
                              served.pairs["hr"])
    assert status == 200, csc
    if served.mode == "tls-self":
        assert "TLS: asking clients for a certificate under" in served.log.read_text()
        assert (served.home / "tls/client-ca.pem").exists()


@pytest.mark.softhsm
def test_curl_gets_a_token_with_the_certificate(served: Served) -> None:
    """An independent client: curl's own TLS stack presents the certificate."""
    pair = served.pairs["hr"]
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--resolve", f"{TLS_HOST}:{served.port}:127.0.0.1",
         "--cacert", str(served.cafile), "--cert", str(pair.cert), "--key", str(pair.key),
         "-d", "grant_type=client_credentials", "-d",
         f"client_id={served.clients['hr-system']['client_id']}", "-w", "\n%{http_code}",
         f"https://{TLS_HOST}:{served.port}/oauth2/token"],
        capture_output=True, text=True, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    assert done.returncode == 0 and code == "200", done.stdout + done.stderr
    assert json.loads(body)["token_type"] == "Bearer"
    # the same curl without its certificate: asked for one, sent none, refused in-protocol
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--resolve", f"{TLS_HOST}:{served.port}:127.0.0.1",
         "--cacert", str(served.cafile), "-d", "grant_type=client_credentials", "-d",
         f"client_id={served.clients['hr-system']['client_id']}", "-w", "\n%{http_code}",
         f"https://{TLS_HOST}:{served.port}/oauth2/token"],
        capture_output=True, text=True, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    assert code == "401" and json.loads(body)["error"] == "invalid_client", done.stdout


@pytest.mark.softhsm
@pytest.mark.parametrize("case", ["another client's", "unbound", "none", "none, no client id"])
def test_a_certificate_that_names_no_such_client_is_invalid_client(served: Served,
                                                                   case: str) -> None:
    pair = {"another client's": served.pairs["emr"], "unbound": served.pairs["unbound"]}.get(case)
    if case == "none, no client id":
        status, body = served.post("/oauth2/token", b"grant_type=client_credentials",
                                   {"Content-Type": FORM}, served.pairs["hr"])
    else:
        status, body = served.token("hr-system", pair)
    assert status == 401 and body["error"] == "invalid_client", body
    assert "access_token" not in body
    if case.startswith("none"):  # no certificate seen: told how to authenticate
        assert body["error_description"].startswith("client authentication is required")
    else:  # a certificate seen and refused: one answer, whatever the reason
        assert body["error_description"] == "client authentication failed"


@pytest.mark.softhsm
def test_revocation_and_a_disabled_client_end_certificate_logins_at_once(served: Served
                                                                         ) -> None:
    revoked, disabled = served.pairs["revoked"], served.pairs["disabled"]
    assert served.token("lab", revoked)[0] == 200
    assert served.token("school", disabled)[0] == 200
    served.tincay("revoke", revoked.serial, "--ca", "issuing-ca", "--reason", "keyCompromise")
    served.tincay("client", "disable", "school")
    for client, pair in (("lab", revoked), ("school", disabled)):
        status, body = served.token(client, pair)
        assert status == 401 and body["error"] == "invalid_client", body
    assert served.token("hr-system", served.pairs["hr"])[0] == 200  # the others still work


@pytest.mark.softhsm
def test_a_certificate_from_outside_the_bundle_does_not_get_through(served: Served) -> None:
    foreign = served.pairs["foreign"]
    with pytest.raises((ssl.SSLError, ConnectionError)):  # alert unknown CA, then closed
        served.token("hr-system", foreign)
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername",
         TLS_HOST, "-CAfile", str(served.cafile), "-cert", str(foreign.cert), "-key",
         str(foreign.key), "-ign_eof"],
        input="POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        capture_output=True, text=True, timeout=30)
    assert "HTTP/1.1" not in done.stdout  # no answer at all
    assert "alert" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    # and the server is none the worse for it
    assert served.token("hr-system", served.pairs["hr"])[0] == 200


@pytest.mark.softhsm
def test_secrets_keep_working_beside_certificates(served: Served) -> None:
    for name, pair in (("nocert", None), ("hr-system", None), ("hr-system", served.pairs["emr"])):
        client = served.clients[name]
        status, grant = served.post(
            "/oauth2/token", b"grant_type=client_credentials",
            {"Content-Type": FORM,
             "Authorization": basic(client["client_id"], client["client_secret"])}, pair)
        assert status == 200, grant  # a secret authenticates whatever certificate is sent
    client = served.clients["hr-system"]
    status, body = served.post("/oauth2/token", b"grant_type=client_credentials", {
        "Content-Type": FORM, "Authorization": basic(client["client_id"], "wrong")},
        served.pairs["hr"])
    assert status == 401  # a wrong secret is not rescued by a good certificate
    time.sleep(0.3)
    log = served.log.read_text()
    assert "Traceback" not in log, log
    for client in served.clients.values():
        assert client["client_secret"] not in log


# --- web/client_cert.py over a real registry ------------------------------------------------

def test_certificate_client_reads_the_environ(database_url: str, profiles: Any,  # noqa: F811
                                              demo: Any) -> None:
    from ca.clock import FrozenClock
    from ca.keys.memory import MemoryBackend
    from tests.test_client_bindings import tls_client
    from tests.test_service import NOW, make_world
    from web.client_cert import (ENVIRON_KEY, certificate_client, client_certificate,
                                 peer_certificate)

    world = make_world(database_url, MemoryBackend(), profiles, FrozenClock(NOW))
    try:
        world.service.authorities.init_hierarchy(demo)
        clients = world.service.clients
        bound, _ = tls_client(world)
        unbound, _ = tls_client(world)
        added = clients.add("hr-system", certificate=bound)
        assert client_certificate({}) is None and certificate_client({}, clients) is None
        assert client_certificate({ENVIRON_KEY: b""}) is None
        assert client_certificate({ENVIRON_KEY: "not bytes"}) is None
        assert client_certificate({ENVIRON_KEY: bound}) == bound
        assert certificate_client({ENVIRON_KEY: bound}, clients) == added.client
        with pytest.raises(InvalidClientCertificateError) as refused:
            certificate_client({ENVIRON_KEY: unbound}, clients)
        assert refused.value.error == "invalid_client"
        clients.disable("hr-system")
        with pytest.raises(InvalidClientCertificateError, match="disabled"):
            certificate_client({ENVIRON_KEY: bound}, clients)
        assert peer_certificate(None) is None
        with socket.socket() as plain:
            assert peer_certificate(plain) is None
    finally:
        world.service.close()
        world.engine.dispose()



@pytest.mark.softhsm
def test_the_registration_api_takes_the_certificate_per_request(served: Served,
                                                                tmp_path: Path) -> None:
    """No token at all: the registration API authenticates each request by the connection's
    bound client certificate (bound after the server started: read at every call); an unbound
    one is a 401 problem, and a bearer token sent beside a certificate is the one that counts."""
    pair = _client_pair(tmp_path, "hr-auditor", served.env)
    served.tincay("client", "add", "hr-auditor", "--role", "auditor", "--cert-file",
                  str(pair.cert))

    def get(path: str, pair: Pair | None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], dict]:
        return served.call("GET", path, None, headers or {}, pair)

    status, _, cas = get("/api/v1/cas", pair)
    assert status == 200 and "issuing-ca" in [ca["name"] for ca in cas["items"]], cas
    status, _, audit = get("/api/v1/audit", pair)
    assert status == 200, audit
    for refused in (served.pairs["unbound"], None):
        status, head, problem = get("/api/v1/cas", refused)
        assert status == 401 and head["Content-Type"] == "application/problem+json", problem
        assert head["WWW-Authenticate"].startswith("Bearer ")
    status, _, problem = get("/api/v1/cas", pair, {"Authorization": "Bearer tct_nonsense"})
    assert status == 401, problem  # the token sent is judged, not the certificate
