"""The CSC API over HTTP: ``POST /csc/v1/<method>`` and ``POST /csc/v2/<method>``.

A thin Flask blueprint over the pure core (csc/core.py): it checks method (405), content type
(415) and size (413, past 64 KiB), authenticates the caller, and sends the core's answer as
JSON. Every method but ``info`` and ``auth/login`` needs ``Authorization: Bearer <token>``,
checked by ca.services.clients.Clients.verify against the database (so every worker honours
and revokes the same tokens); a missing, unknown or revoked token is 401 invalid_token, an
expired one 401 expired_token, both with ``WWW-Authenticate: Bearer``. ``auth/login`` takes
HTTP Basic (client id and secret) and answers a bearer token.

Nothing here logs a request: bodies carry PINs, OTPs and SADs, and headers tokens and secrets.
``/csc/v2/oauth2/token`` is web/oauth.py's.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ca.errors import ClientAuthError, DatabaseBusyError, DatabaseUnavailableError, \
    InvalidTokenError
from csc.core import PUBLIC, VERSIONS, Answer, CscApi, refusal

MAX_BODY = 64 * 1024
csc = Blueprint("csc", __name__)
_BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *$")
_BASIC = re.compile(r"^[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+=*) *$")


def _send(answer: Answer) -> Response:
    body = "" if answer.body is None else json.dumps(answer.body)
    response = Response(body, status=answer.status,
                        mimetype=None if answer.body is None else "application/json")
    response.headers["Cache-Control"] = "no-store"  # SADs and tokens
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def _bearer(header: str | None) -> str:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 2.1), or InvalidTokenError.
    (web/bearer.py's bearer_client replaces this parse when both branches meet.)"""
    match = _BEARER.match(header or "") if header and len(header) <= 4096 else None
    if match is None:
        raise InvalidTokenError("a bearer access token is required")
    return match.group(1)


def _basic(header: str | None) -> tuple[str, str] | None:
    """HTTP Basic ``client_id:client_secret``, or None when absent or garbled."""
    match = _BASIC.match(header or "") if header and len(header) <= 4096 else None
    if match is None:
        return None
    try:
        pair = base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client_id, colon, secret = pair.partition(":")
    return (client_id, secret) if colon else None


def _body() -> bytes | Answer:
    if (request.content_length or 0) > MAX_BODY:
        return refusal(413, "invalid_request", f"the body is limited to {MAX_BODY} bytes")
    try:
        body = request.stream.read(MAX_BODY + 1)
    except RequestEntityTooLarge:  # a chunked body past the app's limit
        return refusal(413, "invalid_request", f"the body is limited to {MAX_BODY} bytes")
    except Exception:  # noqa: BLE001 - the client broke off or garbled its chunking
        return refusal(400, "invalid_request", "the request body broke off")
    if len(body) > MAX_BODY:
        return refusal(413, "invalid_request", f"the body is limited to {MAX_BODY} bytes")
    return body


@csc.route("/csc/<version>/<path:method>",
           methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def call(version: str, method: str) -> Response:
    """One CSC call: checks, authentication, then the core."""
    if version not in VERSIONS:
        return _send(refusal(404, "invalid_request", "CSC versions served: v1, v2"))
    if request.method != "POST":
        return _send(refusal(405, "invalid_request", "CSC methods are POST",
                             (("Allow", "POST"),)))
    if (request.mimetype or "").lower() != "application/json" and not (
            method == "info" and not request.content_length):
        return _send(refusal(415, "invalid_request", "Content-Type must be application/json"))
    body = _body()
    if isinstance(body, Answer):
        return _send(body)
    api: CscApi = current_app.extensions["tincay.csc"]
    caller: Any = None
    if method not in PUBLIC:
        clients = current_app.extensions["tincay.service"].clients
        try:
            caller = clients.verify(_bearer(request.headers.get("Authorization")))
        except ClientAuthError as exc:
            error = getattr(exc, "error", "invalid_token")
            return _send(refusal(401, error, str(exc), (
                ("WWW-Authenticate", f'Bearer realm="tincay", error="{error}"'),)))
        except (DatabaseUnavailableError, DatabaseBusyError):
            return _send(refusal(503, "temporarily_unavailable",
                                 "the service is unavailable, try later",
                                 (("Retry-After", "30"),)))
    basic = _basic(request.headers.get("Authorization")) if method == "auth/login" else None
    return _send(api.handle(version, method, caller, body, basic=basic))
