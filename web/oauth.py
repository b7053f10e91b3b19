"""The platform's token endpoint: OAuth 2.0 client credentials (RFC 6749 4.4) at
``POST /oauth2/token``, and at ``/csc/v2/oauth2/token``, where CSC v2 clients look for it.

A registered client (``tincay client add``) trades its id and secret for a short-lived bearer
token (ca.services.clients.Clients.grant), which the APIs check with web.bearer. The client
authenticates with HTTP Basic (RFC 6749 2.3.1: id and secret each form-urlencoded, then
base64) or with ``client_id``/``client_secret`` in the body, never both; or (RFC 8705 2.1,
tls_client_auth) with ``client_id`` alone in the body over a TLS connection whose client
certificate is bound to that client (`tincay client bind`, web/client_cert.py). The body is a form
(application/x-www-form-urlencoded, as RFC 6749 says), or a JSON object, as CSC v2's
oauth2/token also accepts.

Every mistake is an RFC 6749 5.2 error body, never a traceback: invalid_request (400) for a
missing or repeated parameter, another content type or a body past 16 KiB;
unsupported_grant_type (400); invalid_client (401, with a Basic challenge) for credentials that
do not authenticate, one answer whether the id is unknown, the secret wrong, the client
disabled, or the certificate unbound, bound to another client, expired or revoked. A database outage is 503 temporarily_unavailable. Nothing here logs a request:
bodies and Authorization headers carry secrets.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, ValidationError

from ca.errors import (BackendUnavailableError, ClientAuthError, DatabaseBusyError,
                       DatabaseUnavailableError)
from web.bearer import CLIENT_KEY
from web.client_cert import client_certificate

MAX_BODY = 16 * 1024
GRANT_TYPE = "client_credentials"
REALM = "tincay"
PATHS = ("/oauth2/token", "/csc/v2/oauth2/token")
AUTHENTICATION_REQUIRED = ("client authentication is required: HTTP Basic, client_id and "
                           "client_secret, or client_id over TLS with a client certificate "
                           "bound to it")

oauth = Blueprint("oauth", __name__)


class TokenRequest(BaseModel):
    """A form-encoded token request. RFC 6749 3.2: the server MUST ignore parameters it
    does not know (a client library may send ``audience`` or ``resource``), so extras are
    dropped here; ``scope`` is accepted and not used (a client's rights are its
    registration's)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    grant_type: str
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None


class JsonTokenRequest(TokenRequest):
    """A JSON token request (CSC v2 oauth2/token): a JSON body is ours alone to define, so an
    unknown member is refused like any JSON body tincay reads."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class OAuthError(Exception):
    """An RFC 6749 5.2 refusal: ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _answer(body: dict[str, Any], status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1
    response.headers["Pragma"] = "no-cache"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def refusal(exc: OAuthError) -> Response:
    headers = {"WWW-Authenticate": f'Basic realm="{REALM}"'} if exc.status == 401 else {}
    return _answer({"error": exc.error, "error_description": exc.description}, exc.status,
                   headers)


def _body() -> bytes:
    """At most MAX_BODY octets of the request body, or invalid_request."""
    too_large = OAuthError("invalid_request", f"the request body is limited to {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    try:
        body = request.stream.read(MAX_BODY + 1)
    except Exception:  # noqa: BLE001 - the client broke off or garbled its chunking
        raise OAuthError("invalid_request", "the request body broke off") from None
    if len(body) > MAX_BODY:
        raise too_large
    return body


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body is not valid "
                         "application/x-www-form-urlencoded UTF-8") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:  # RFC 6749 3.2: no parameter more than once
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        params[name] = value
    # RFC 6749 3.2: a parameter without a value is treated as omitted
    return {name: value for name, value in params.items() if value != ""}


def _json(body: bytes) -> dict[str, Any]:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name, value in pairs:
            if name in seen:
                raise OAuthError("invalid_request", f"member {name} is repeated")
            seen[name] = value
        return seen

    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=no_repeats)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OAuthError("invalid_request", "the body is not a JSON object") from None
    if not isinstance(document, dict):
        raise OAuthError("invalid_request", "the body is not a JSON object")
    return {name: value for name, value in document.items() if value not in ("", None)}


def parse_request() -> TokenRequest:
    """The token request of the current Flask request, validated, or OAuthError."""
    media_type = (request.mimetype or "").lower()
    if media_type not in ("application/x-www-form-urlencoded", "application/json"):
        raise OAuthError("invalid_request", "Content-Type must be "
                         "application/x-www-form-urlencoded (or application/json)")
    body = _body()
    json_body = media_type == "application/json"
    params = _json(body) if json_body else _form(body)
    model = JsonTokenRequest if json_body else TokenRequest
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise OAuthError("invalid_request", _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line naming the first bad parameter; never the value (it may be a secret)."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"parameter {name} is required"
    if error["type"] == "extra_forbidden":
        return f"member {name} is not a token request parameter"
    return f"parameter {name} must be a string"


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(client_id, client_secret) of an ``Authorization: Basic`` header (RFC 6749 2.3.1:
    each form-urlencoded before base64), None without one, OAuthError invalid_client for a
    garbled one or another scheme."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "client authentication must use HTTP Basic", 401)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise OAuthError("invalid_client", "the Basic credentials are not base64 of "
                         "client_id:client_secret", 401) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "the Basic credentials are not base64 of "
                         "client_id:client_secret", 401)
    return unquote_plus(client_id), unquote_plus(secret)


def client_credentials(token_request: TokenRequest, header: str | None) -> tuple[str, str]:
    """The client's id and secret, from exactly one authentication method (RFC 6749 2.3)."""
    basic = basic_credentials(header)
    if basic is not None:
        if token_request.client_secret is not None:
            raise OAuthError("invalid_request", "use one client authentication method: "
                             "HTTP Basic or client_secret in the body, not both")
        if token_request.client_id not in (None, basic[0]):
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
        return basic
    if token_request.client_id is None or token_request.client_secret is None:
        raise OAuthError("invalid_client", AUTHENTICATION_REQUIRED, 401)
    return token_request.client_id, token_request.client_secret


def certificate_authentication(token_request: TokenRequest, header: str | None) -> bool:
    """Whether the request asks for tls_client_auth (RFC 8705 2.1): ``client_id`` in the body,
    no secret anywhere (a secret, when sent, authenticates as before)."""
    return (header is None and token_request.client_secret is None
            and token_request.client_id is not None)


def certificate_required() -> bytes:
    """The request's verified TLS client certificate, or invalid_client (401) without one."""
    der = client_certificate(request.environ)
    if der is None:
        raise OAuthError("invalid_client", AUTHENTICATION_REQUIRED, 401)
    return der


def token_answer() -> Response:
    """The token endpoint over the current request (both paths)."""
    try:
        token_request = parse_request()
        if token_request.grant_type != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type",
                             f"only the {GRANT_TYPE} grant is supported")
        header = request.headers.get("Authorization")
        clients = current_app.extensions["tincay.service"].clients
        try:
            if certificate_authentication(token_request, header):
                grant_to = token_request.client_id or ""
                grant = clients.grant_by_certificate(grant_to, certificate_required())
            else:
                grant_to, secret = client_credentials(token_request, header)
                grant = clients.grant(grant_to, secret)
        except ClientAuthError:
            raise OAuthError("invalid_client", "client authentication failed", 401) from None
    except OAuthError as exc:
        return refusal(exc)
    except (DatabaseUnavailableError, DatabaseBusyError, BackendUnavailableError):
        # an outage is logged once, by the store; the client tries again later
        return _answer({"error": "temporarily_unavailable",
                        "error_description": "the service is unavailable, try later"}, 503,
                       {"Retry-After": "30"})
    request.environ[CLIENT_KEY] = grant_to  # the request's log event names the client
    return _answer({"access_token": grant.access_token, "token_type": grant.token_type,
                    "expires_in": grant.expires_in})


def other_method() -> Response:
    return _answer({"error": "invalid_request",
                    "error_description": "the token endpoint takes POST only"}, 405,
                   {"Allow": "POST"})


for _path in PATHS:
    oauth.add_url_rule(_path, f"token{_path.replace('/', '_')}", token_answer, methods=["POST"])
    oauth.add_url_rule(_path, f"other{_path.replace('/', '_')}", other_method,
                       methods=["GET", "PUT", "DELETE", "PATCH"])
