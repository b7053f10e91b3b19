"""The token endpoint (web/oauth.py), bearer tokens (web/bearer.py) and the TLS rule for the
APIs that carry secrets (web/tls.py): through Flask's client for the protocol's cases, and
`tincay serve` for real (plain HTTP on loopback; TLS with --certfile/--keyfile and with
--tls-self, judged by Python's ssl and by openssl s_client)."""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote_plus

import pytest
from ca.clock import FrozenClock
from ca.errors import DatabaseUnavailableError, ExpiredTokenError, InvalidTokenError
from ca.keys.memory import MemoryBackend
from ca.profiles import load_profiles
from ca.services import CertificateAuthority
from ca.store.db import create_engine_for, make_session_factory, migrate
from web.app import create_app
from web.bearer import bearer_client, bearer_token, challenge
from web.tls import is_loopback

ROOT = Path(__file__).resolve().parent.parent
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def world(tmp_path: Path, clock: FrozenClock) -> Iterator[tuple[Any, CertificateAuthority]]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    migrate(engine)
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(),
                                   load_profiles(ROOT / "profiles"), clock,
                                   "http://127.0.0.1:8080")
    yield create_app(service).test_client(), service
    service.close()
    engine.dispose()


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def post(http: Any, body: Any, content_type: str = FORM, path: str = "/oauth2/token",
         **kwargs: Any) -> Any:
    data = body if isinstance(body, (bytes, str)) else (
        json.dumps(body) if content_type == "application/json" else
        "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in body.items()))
    return http.post(path, data=data, content_type=content_type, **kwargs)


def assert_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error and body["error_description"], body
    assert response.headers["Cache-Control"] == "no-store"
    assert b"Traceback" not in response.data
    return body


def test_basic_and_form_authentication_grant_tokens_bearer_client_accepts(world) -> None:
    http, service = world
    added = service.clients.add("emr-q11")
    cid, secret = added.client.client_id, added.client_secret
    by_basic = post(http, {"grant_type": "client_credentials"},
                    headers={"Authorization": basic(cid, secret)})
    assert by_basic.status_code == 200, by_basic.data
    assert by_basic.headers["Cache-Control"] == "no-store"
    assert by_basic.headers["Pragma"] == "no-cache"
    grant = by_basic.get_json()
    assert set(grant) == {"access_token", "token_type", "expires_in"}
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 600
    by_form = post(http, {"grant_type": "client_credentials", "client_id": cid,
                          "client_secret": secret, "scope": "service"})
    assert by_form.status_code == 200, by_form.data
    other = by_form.get_json()["access_token"]
    assert other != grant["access_token"]
    for token in (grant["access_token"], other):
        assert bearer_client(service.clients, f"Bearer {token}").name == "emr-q11"
    assert bearer_client(service.clients, f"bearer   {other}").client_id == cid
    # the CSC v2 path, with a JSON body
    csc = post(http, {"grant_type": "client_credentials", "client_id": cid,
                      "client_secret": secret}, "application/json",
               path="/csc/v2/oauth2/token")
    assert csc.status_code == 200 and csc.get_json()["token_type"] == "Bearer"


def test_wrong_secret_unknown_client_and_disabled_client_are_one_invalid_client(world) -> None:
    http, service = world
    added = service.clients.add("school")
    cid, secret = added.client.client_id, added.client_secret
    token = post(http, {"grant_type": "client_credentials"},
                 headers={"Authorization": basic(cid, secret)}).get_json()["access_token"]
    refusals = [
        post(http, {"grant_type": "client_credentials"},
             headers={"Authorization": basic(cid, secret + "x")}),
        post(http, {"grant_type": "client_credentials", "client_id": "0" * 32,
                    "client_secret": secret}),
        post(http, {"grant_type": "client_credentials"}),  # no authentication at all
        post(http, {"grant_type": "client_credentials"},
             headers={"Authorization": "Basic !!!notbase64"}),
        post(http, {"grant_type": "client_credentials"},
             headers={"Authorization": f"Bearer {token}"}),
    ]
    service.clients.disable("school")
    refusals.append(post(http, {"grant_type": "client_credentials"},
                         headers={"Authorization": basic(cid, secret)}))
    for response in refusals:
        assert_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="tincay"'
    with pytest.raises(InvalidTokenError) as refused:  # the disabled client's token died too
        bearer_client(service.clients, f"Bearer {token}")
    assert challenge(refused.value)[0] == 401


@pytest.mark.parametrize("body, content_type, error", [
    ({"grant_type": "authorization_code", "code": "x"}, FORM, "unsupported_grant_type"),
    ({"grant_type": "password", "username": "u", "password": "p"}, "application/json",
     "invalid_request"),  # a JSON member tincay does not define
    ({"grant_type": "password"}, "application/json", "unsupported_grant_type"),
    ({"client_id": "abc", "client_secret": "def"}, FORM, "invalid_request"),  # no grant_type
    ("grant_type=client_credentials&grant_type=client_credentials", FORM, "invalid_request"),
    ('{"grant_type": "client_credentials", "grant_type": "x"}', "application/json",
     "invalid_request"),
    ({"grant_type": "client_credentials"}, "text/plain", "invalid_request"),
    ('["grant_type"]', "application/json", "invalid_request"),
    ('{"grant_type": 5}', "application/json", "invalid_request"),
    ("{not json", "application/json", "invalid_request"),
    (b"grant_type=\xff\xfe", FORM, "invalid_request"),
    ("grant_type=client_credentials&x=" + "a" * 16 * 1024, FORM, "invalid_request"),
])
def test_malformed_requests_are_rfc6749_errors(world, body: Any, content_type: str,
                                               error: str) -> None:
    http, _ = world
    assert_error(post(http, body, content_type), 400, error)


def test_two_authentication_methods_are_refused_and_get_is_405(world) -> None:
    http, service = world
    added = service.clients.add("two")
    cid, secret = added.client.client_id, added.client_secret
    both = post(http, {"grant_type": "client_credentials", "client_secret": secret},
                headers={"Authorization": basic(cid, secret)})
    assert_error(both, 400, "invalid_request")
    assert_error(http.get("/oauth2/token"), 405, "invalid_request")
    # an unknown form parameter is ignored (RFC 6749 3.2), an empty one counts as absent
    fine = post(http, {"grant_type": "client_credentials", "client_id": cid,
                       "client_secret": secret, "resource": "x", "scope": ""})
    assert fine.status_code == 200, fine.data


def test_the_secret_survives_form_encoding_in_basic(world) -> None:
    http, service = world
    added = service.clients.add("enc")
    # token_urlsafe secrets hold '-' and '_'; RFC 6749 2.3.1 form-encodes them anyway
    header = "Basic " + base64.b64encode(
        f"{added.client.client_id}:{added.client_secret}".encode()).decode()
    assert post(http, {"grant_type": "client_credentials"},
                headers={"Authorization": header}).status_code == 200


def test_a_database_outage_is_503_temporarily_unavailable(world, tmp_path: Path) -> None:
    """The SQLite file gone (its pool emptied, so the next connection looks for it): the
    store says unreachable, the endpoint says temporarily_unavailable, not 500."""
    http, service = world
    added = service.clients.add("outage")
    headers = {"Authorization": basic(added.client.client_id, added.client_secret)}
    database, away = tmp_path / "db.sqlite", tmp_path / "db.sqlite.away"
    engine = service.context.sessions.kw["bind"]
    database.rename(away)
    engine.dispose()
    try:
        response = post(http, {"grant_type": "client_credentials"}, headers=headers)
        body = assert_error(response, 503, "temporarily_unavailable")
        assert added.client_secret not in json.dumps(body)
    finally:
        engine.dispose()


def test_bearer_client_refuses_missing_garbled_unknown_and_expired(world, clock) -> None:
    _, service = world
    added = service.clients.add("b")
    grant = service.clients.grant(added.client.client_id, added.client_secret)
    for header in (None, "", "Bearer", "Basic abc", "Bearer a b", "Bearer tct_\u00e9",
                   "Bearer tct_unknown", "Bearer " + "a" * 5000):
        with pytest.raises(InvalidTokenError) as refused:
            bearer_client(service.clients, header)
        assert refused.value.error == "invalid_token"
    assert bearer_token(f"Bearer {grant.access_token}") == grant.access_token
    clock.advance(dt.timedelta(seconds=601))
    with pytest.raises(ExpiredTokenError) as expired:
        bearer_client(service.clients, f"Bearer {grant.access_token}")
    status, body, headers = challenge(expired.value)
    assert status == 401 and body["error"] == "expired_token"
    assert headers["WWW-Authenticate"].startswith("Bearer ")


def test_plain_http_from_elsewhere_is_refused_loopback_and_https_are_served(world) -> None:
    http, service = world
    added = service.clients.add("tls")
    form = {"grant_type": "client_credentials", "client_id": added.client.client_id,
            "client_secret": added.client_secret}
    for path in ("/oauth2/token", "/csc/v2/oauth2/token", "/csc/v2/info"):
        refused = post(http, form, path=path, environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
        body = assert_error(refused, 403, "invalid_request")
        assert "requires TLS" in body["error_description"]
    assert post(http, form, environ_overrides={"REMOTE_ADDR": "127.0.0.5"}).status_code == 200
    assert post(http, form, environ_overrides={"REMOTE_ADDR": "::1"}).status_code == 200
    assert post(http, form, base_url="https://pki.example.vn",
                environ_overrides={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    # the public endpoints stay on plain HTTP
    assert http.get("/healthz", environ_overrides={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.1.2.3", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False), ("", False),
    (None, False), ("localhost", False),
])
def test_loopback_addresses(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


# --- `tincay serve` for real: plain HTTP on loopback, and TLS ---------------------------------

TINCAY = str(Path(sys.executable).parent / "tincay")
TLS_HOST = "tincay.test"  # the tls-server profile certifies fully qualified names only


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """An operator's own certificate for --certfile/--keyfile (any CA's would do)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_HOST)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_HOST)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = folder / "operator.pem", folder / "operator.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


@dataclass
class Served:
    base: str
    port: int
    home: Path
    log: Path
    cafile: Path | None  # what a TLS client trusts; None for plain HTTP
    client_id: str
    client_secret: str
    serve_err: str
    mode: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
        connection = (_Pinned(TLS_HOST, self.port, timeout=10, context=self.context())
                      if self.cafile else
                      http.client.HTTPConnection("127.0.0.1", self.port, timeout=10))
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            connection.close()


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to TLS_HOST on loopback: the certificate checked against the name, as any
    client checks it, with no resolver entry for the name."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


STALL_TIMEOUT = 5  # TINCAY_HTTP_HEADER_TIMEOUT of the served fixture, seconds

@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """`tincay serve` on the demo hierarchy (SoftHSM), with a registered client: ``param`` is
    "<worker class>+<plain | certfile | tls-self | tls-name>"."""
    worker_class, _, mode = request.param.partition("+")
    with ExitStack() as stack:
        port = _free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
        env["TINCAY_HOME"] = str(tmp_path / "home")
        env["HOME"] = str(tmp_path / "user")
        scheme = "http" if mode == "plain" else "https"
        env["TINCAY_PUBLIC_URL"] = (f"http://127.0.0.1:{port}" if mode == "tls-name" else
                                    f"{scheme}://{TLS_HOST}:{port}")
        # bounds a stalled TLS handshake too; long enough that a request served while 8
        # handshakes stall is told from one that waited for them, on a loaded machine too
        env["TINCAY_HTTP_HEADER_TIMEOUT"] = f"{STALL_TIMEOUT}s"
        subprocess.run([TINCAY, "demo"], env=env, check=True, capture_output=True, timeout=120)
        added = json.loads(subprocess.run([TINCAY, "client", "add", "emr-q11", "--json"], env=env,
                                          check=True, capture_output=True, timeout=60).stdout)
        extra: list[str] = []
        cafile = None
        if mode == "certfile":
            certfile, keyfile = _self_signed(tmp_path)
            extra, cafile = ["--certfile", str(certfile), "--keyfile", str(keyfile)], certfile
        elif mode == "tls-self":
            extra, cafile = ["--tls-self"], tmp_path / "home/public/root-ca.pem"
        elif mode == "tls-name":  # the certificates' OCSP and CRL URLs stay http://
            extra = ["--tls-self", "--tls-name", TLS_HOST]
            cafile = tmp_path / "home/public/root-ca.pem"
        log_path = tmp_path / "serve.log"
        log = stack.enter_context(log_path.open("wb"))
        server = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "1",
                                   "--no-maintenance", "--worker-class", worker_class, *extra],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(server.wait, timeout=30)
        stack.callback(server.terminate)
        deadline = time.monotonic() + 60
        while "Worker ready" not in log_path.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(log_path.read_text())
            time.sleep(0.1)
        yield Served(f"{scheme}://{TLS_HOST}:{port}", port, tmp_path / "home", log_path, cafile,
                     added["client_id"], added["client_secret"], log_path.read_text(), mode)


@pytest.mark.softhsm
@pytest.mark.parametrize("served", ["gevent_pywsgi+plain", "gthread+certfile",
                                    "gevent_pywsgi+tls-self", "gthread+tls-name"],
                         indirect=True)
def test_tokens_over_real_http_and_tls(served: Served, tmp_path: Path) -> None:
    """A token by Basic and by form over each worker class, plain on loopback and over TLS
    (Python's ssl verifying the chain and the host name); openssl s_client verifies the
    served chain too; the log never holds the secret or a token."""
    form = {"Content-Type": FORM}
    status, grant = served.post("/oauth2/token", b"grant_type=client_credentials",
                                {**form, "Authorization": basic(served.client_id,
                                                                served.client_secret)})
    assert status == 200 and grant["token_type"] == "Bearer", grant
    body = (f"grant_type=client_credentials&client_id={served.client_id}"
            f"&client_secret={served.client_secret}").encode()
    status, by_form = served.post("/csc/v2/oauth2/token", body, form)
    assert status == 200, by_form
    status, refused = served.post("/oauth2/token", body + b"x", form)
    assert status == 401 and refused["error"] == "invalid_client"
    status, refused = served.post("/oauth2/token", b"x=" + b"a" * 17000, form)
    assert status == 400 and refused["error"] == "invalid_request"
    if served.cafile is not None:
        # clients that stall their handshake hold no thread (gthread has 4) and are closed
        # by the header deadline
        stalled = [socket.create_connection(("127.0.0.1", served.port), timeout=10)
                   for _ in range(8)]
        stalled[0].sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, no more
        started = time.monotonic()
        status, _ = served.post("/oauth2/token", b"grant_type=client_credentials",
                                {**form, "Authorization": basic(served.client_id,
                                                                served.client_secret)})
        assert status == 200 and time.monotonic() - started < STALL_TIMEOUT - 1
        for sock in stalled:
            with sock:
                try:
                    assert sock.recv(100) == b""  # closed by the server
                except ConnectionResetError:
                    pass
        assert time.monotonic() - started < 3 * STALL_TIMEOUT
        with served.context().wrap_socket(socket.create_connection(
                ("127.0.0.1", served.port), timeout=10), server_hostname=TLS_HOST) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            with pytest.raises(ssl.SSLCertVerificationError):  # the name is checked
                ssl.create_default_context(cafile=str(served.cafile)).wrap_socket(
                    socket.create_connection(("127.0.0.1", served.port), timeout=10),
                    server_hostname="other.test")
        judged = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername",
             TLS_HOST, "-verify_hostname", TLS_HOST, "-CAfile", str(served.cafile),
             "-verify_return_error"], input="", capture_output=True, text=True, timeout=30)
        assert "Verify return code: 0 (ok)" in judged.stdout, judged.stdout + judged.stderr
        # plain HTTP to the TLS port: refused by the handshake, no traceback in the log
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as plain:
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                plain.recv(100)
            except ConnectionResetError:
                pass
    if served.mode in ("tls-self", "tls-name"):
        assert "TLS: issued a issuing-ca certificate for tincay.test" in served.serve_err
        key = served.home / "tls/server.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # healthy afterwards, and nothing secret in what the server wrote
    status, again = served.post("/oauth2/token", b"grant_type=client_credentials",
                                {**form, "Authorization": basic(served.client_id,
                                                                served.client_secret)})
    assert status == 200
    time.sleep(0.3)
    log = served.log.read_text()
    for secret in (served.client_secret, grant["access_token"], by_form["access_token"],
                   again["access_token"]):
        assert secret not in log
    assert "Traceback" not in log, log


# --- the pieces of TLS serving, without a server ------------------------------------------------

def test_forwarded_proto_counts_only_from_forwarded_allow_ips() -> None:
    """gevent's handler knows nothing of gunicorn's forwarded_allow_ips; the pywsgi worker
    applies it as gunicorn's own parser (the gthread worker's) does."""
    from gunicorn.config import Config

    from cli.pywsgi_worker import forwarded_scheme

    cfg = Config()
    cfg.set("forwarded_allow_ips", "10.0.0.7,192.168.0.0/16")
    proxied = {"wsgi.url_scheme": "http", "HTTP_X_FORWARDED_PROTO": "https"}
    assert forwarded_scheme(cfg, {**proxied, "REMOTE_ADDR": "10.0.0.7"}) == "https"
    assert forwarded_scheme(cfg, {**proxied, "REMOTE_ADDR": "192.168.4.2"}) == "https"
    assert forwarded_scheme(cfg, {**proxied, "REMOTE_ADDR": "10.1.2.3"}) == "http"
    assert forwarded_scheme(cfg, {**proxied, "REMOTE_ADDR": "10.0.0.7",
                                  "HTTP_X_FORWARDED_SSL": "off"}) == "http"  # they disagree
    assert forwarded_scheme(cfg, {"wsgi.url_scheme": "http", "REMOTE_ADDR": "10.0.0.7"}) == "http"
    assert forwarded_scheme(Config(), {**proxied, "REMOTE_ADDR": "10.0.0.7"}) == "http"


def test_gunicorn_rewrites_the_scheme_only_for_trusted_proxies() -> None:
    """What web/tls.py relies on under the gthread worker: gunicorn's parser."""
    import io

    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    from gunicorn.http.wsgi import create

    raw = b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n"
    for peer, scheme in (("127.0.0.1", "https"), ("10.1.2.3", "http")):
        cfg = Config()
        request = next(iter(RequestParser(cfg, io.BytesIO(raw), (peer, 4000))))
        _, environ = create(request, io.BytesIO(), (peer, 4000), ("127.0.0.1", 8443), cfg)
        assert environ["wsgi.url_scheme"] == scheme


def test_self_issued_certificate_is_reused_and_renewed(tmp_path: Path, clock) -> None:
    from cryptography import x509

    from ca.hierarchy import load_hierarchy
    from cli.tls import issuing_ca, self_issued, tls_hosts
    from ca.errors import ConfigurationError

    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    migrate(engine)
    profiles = load_profiles(ROOT / "profiles")
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(), profiles,
                                   clock, "https://pki.tincay.test")
    service.authorities.init_hierarchy(
        load_hierarchy(ROOT / "profiles/hierarchies/demo.yaml", profiles))
    assert tls_hosts("https://pki.tincay.test:8443", "0.0.0.0") == ["pki.tincay.test"]
    with pytest.raises(ConfigurationError, match="DNS name"):
        tls_hosts("https://127.0.0.1:8443", "localhost")
    ca = issuing_ca(service.listings, None)
    assert ca == "issuing-ca"
    home = tmp_path / "home"
    first = self_issued(service, home, ["pki.tincay.test"], ca)
    assert first.issued and stat.S_IMODE(first.keyfile.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(first.certfile.read_bytes())
    assert [c.subject for c in chain[1:]] == [
        service.authorities.authority_certificate("issuing-ca").subject]
    assert chain[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
        "pki.tincay.test"]
    assert not self_issued(service, home, ["pki.tincay.test"], ca).issued  # reused
    assert self_issued(service, home, ["pki2.tincay.test"], ca).issued  # another name
    clock.advance(dt.timedelta(days=59))
    assert not self_issued(service, home, ["pki2.tincay.test"], ca).issued
    clock.advance(dt.timedelta(days=2))  # under a third of 90 days left
    renewed = self_issued(service, home, ["pki2.tincay.test"], ca)
    assert renewed.issued and renewed.not_after > clock.now() + dt.timedelta(days=89)
    service.close()
    engine.dispose()


@pytest.mark.softhsm
def test_client_commands(softhsm_env: dict[str, str], tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_cli import Cli

    monkeypatch.setenv("TINCAY_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine_for(url, create=True)
    migrate(engine)
    engine.dispose()
    monkeypatch.setenv("TINCAY_DATABASE_URL", url)
    monkeypatch.setenv("TINCAY_PUBLIC_URL", "http://127.0.0.1:8080")
    cli = Cli(capsys)
    added = cli.json("client", "add", "emr-q11", "--role", "ra-officer", "--ca", "issuing-ca",
                     "--profile", "clinician", "--profile", "nurse")
    assert set(added) == {"name", "client_id", "client_secret"}
    assert added["name"] == "emr-q11" and len(added["client_secret"]) >= 40
    text = cli("client", "add", "school")
    assert "client_secret" in text and "only this once" in cli.err
    [emr, school] = cli.json("client", "list")
    assert emr["name"] == "emr-q11" and emr["status"] == "active" and emr["role"] == "ra-officer"
    assert emr["cas"] == ["issuing-ca"] and emr["profiles"] == ["clinician", "nurse"]
    assert "client_secret" not in emr and added["client_secret"] not in json.dumps([emr, school])
    assert cli.json("client", "disable", "emr-q11")["status"] == "disabled"
    assert cli("client", "disable", school["client_id"]).strip() == "client school disabled"
    assert "disabled" in cli("client", "list")
    for args, code, message in (
            (("client", "add", "school"), 1, "already exists"),
            (("client", "add", "bad name"), 1, "client name"),
            (("client", "disable", "nobody"), 1, "no client named nobody")):
        cli(*args, code=code)
        assert message in cli.err and "Traceback" not in cli.err
        assert len(cli.err.strip().splitlines()) == 1, cli.err
    cli("client", "add", "typo", "--role", "ra-oficer", code=2)  # a role no API knows
    assert "ra-officer" in cli.err and "Traceback" not in cli.err
    # TLS options that cannot work are refused before anything is served
    missing = str(tmp_path / "nope.pem")
    cli("serve", "--port", "9150", "--certfile", missing, "--keyfile", missing, code=1)
    assert "cannot serve TLS" in cli.err and len(cli.err.strip().splitlines()) == 1
    cli("serve", "--port", "9150", "--certfile", missing, code=2)
    assert "go together" in cli.err
    cli("serve", "--port", "9150", "--tls-self", "--certfile", missing, "--keyfile", missing,
        code=2)
    cli("serve", "--port", "9150", "--tls-self", code=1)  # TINCAY_PUBLIC_URL is an address
    assert "DNS name" in cli.err and len(cli.err.strip().splitlines()) == 1


def _served_certificate(port: int) -> Any:
    """The certificate a new TLS connection to ``port`` is served (not verified: whichever)."""
    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname=TLS_HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


@pytest.mark.softhsm
@pytest.mark.parametrize("worker_class,maintenance", [
    ("gevent_pywsgi", ["--maintenance-interval", "1s"]), ("gthread", ["--no-maintenance", "--maintenance-interval", "1s"])])
def test_the_tls_self_certificate_is_renewed_while_serving(
        tmp_path: Path, worker_class: str, maintenance: list[str]) -> None:
    """`tincay serve --tls-self` keeps its certificate current without a restart: the
    maintenance process reissues the pair when it is no longer the one to serve (here: the
    files replaced by a stranger's pair), and SIGHUP makes the arbiter's new workers serve
    the new certificate, which a verifying client accepts."""
    from cryptography import x509

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
    env.update(TINCAY_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "user"),
               TINCAY_PUBLIC_URL=f"https://{TLS_HOST}:{port}")
    subprocess.run([TINCAY, "demo"], env=env, check=True, capture_output=True, timeout=120)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "1",
                                   "--worker-class", worker_class, "--tls-self",
                                   *maintenance],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "Worker ready" not in log_path.read_text():
                assert time.monotonic() < deadline and server.poll() is None, \
                    log_path.read_text()
                time.sleep(0.1)
            first = _served_certificate(port)
            certfile, keyfile = tmp_path / "home/tls/server.pem", tmp_path / "home/tls/server.key"
            assert x509.load_pem_x509_certificates(certfile.read_bytes())[0] == first
            stranger_cert, stranger_key = _self_signed(tmp_path)  # not tincay's: not current
            certfile.write_bytes(stranger_cert.read_bytes())
            keyfile.write_bytes(stranger_key.read_bytes())
            deadline = time.monotonic() + 60
            while (served := _served_certificate(port)) in (first,) or \
                    served.serial_number == x509.load_pem_x509_certificate(
                        stranger_cert.read_bytes()).serial_number:
                assert time.monotonic() < deadline and server.poll() is None, \
                    log_path.read_text()
                time.sleep(0.2)
            assert x509.load_pem_x509_certificates(certfile.read_bytes())[0] == served
            verified = ssl.create_default_context(cafile=str(tmp_path / "home/public/root-ca.pem"))
            with verified.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                      server_hostname=TLS_HOST) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert server.poll() is None  # the same server, never restarted
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = log_path.read_text()
    assert "Handling signal: hup" in text.lower() or "hang up" in text.lower(), text
    assert "Traceback" not in text, text
    assert "TLS certificate" in text and "renewed" in text, text  # the pass says what it did
    if "--no-maintenance" in maintenance:  # a TLS-only pass publishes nothing, nor claims to
        assert "CRLs published" not in text, text
