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

import json
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ca.errors import ClientAuthError, StoreError
from csc.core import PUBLIC, VERSIONS, Answer, CscApi, refusal
from web.bearer import bearer_client
from web.oauth import OAuthError, basic_credentials

MAX_BODY = 64 * 1024
csc = Blueprint("csc", __name__)


def _send(answer: Answer) -> Response:
    body = "" if answer.body is None else json.dumps(answer.body)
    response = Response(body, status=answer.status,
                        mimetype=None if answer.body is None else "application/json")
    response.headers["Cache-Control"] = "no-store"  # SADs and tokens
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def _basic(header: str | None) -> tuple[str, str] | None:
    """HTTP Basic ``client_id:client_secret`` (auth/login), or None when absent or garbled:
    the same reading as the token endpoint's."""
    try:
        return basic_credentials(header)
    except OAuthError:
        return None


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
            caller = bearer_client(clients, request.headers.get("Authorization"))
        except ClientAuthError as exc:
            error = getattr(exc, "error", "invalid_token")
            return _send(refusal(401, error, str(exc), (
                ("WWW-Authenticate", f'Bearer realm="tincay", error="{error}"'),)))
        except StoreError:  # unreachable, a lock held elsewhere, a failed read: retry later
            return _send(refusal(503, "temporarily_unavailable",
                                 "the service is unavailable, try later",
                                 (("Retry-After", "30"),)))
    basic = _basic(request.headers.get("Authorization")) if method == "auth/login" else None
    return _send(api.handle(version, method, caller, body, basic=basic))
