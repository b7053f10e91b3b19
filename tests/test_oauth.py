"""The token endpoint (web/oauth.py), bearer tokens (web/bearer.py) and the TLS rule for the
APIs that carry secrets (web/tls.py): through Flask's client for the protocol's cases, and
`tincay serve` for real (plain HTTP on loopback; TLS with --certfile/--keyfile and with
--tls-self, judged by Python's ssl and by openssl s_client)."""
from __future__ import annotations

import base64
import datetime as dt
import json
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


def test_a_database_outage_is_503_temporarily_unavailable(world, monkeypatch) -> None:
    http, service = world
    added = service.clients.add("outage")

    def away(*args: Any) -> Any:
        raise DatabaseUnavailableError("database unreachable")

    monkeypatch.setattr(service.clients, "grant", away)
    response = post(http, {"grant_type": "client_credentials"},
                    headers={"Authorization": basic(added.client.client_id,
                                                    added.client_secret)})
    assert_error(response, 503, "temporarily_unavailable")


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
