"""The CSC API over HTTP: ``POST /csc/v1/<method>`` and ``POST /csc/v2/<method>``.

A thin adapter over the pure core (csc/core.py), served like OCSP and the TSA as WSGI
middleware in front of Flask (web.protocol.ProtocolEndpoint): signHash is remote signing's hot
path, and Flask's request context, routing and response object cost more than the core's
parse and answer (through a Flask blueprint Flask and werkzeug took about 29% of a signHash's
time under py-spy). It checks method (405), content type (415) and size (413, past 64 KiB),
authenticates the caller, and sends the core's answer as JSON. Every method but ``info`` and
``auth/login`` needs ``Authorization: Bearer <token>``, checked by
ca.services.clients.Clients.verify against the database (so every worker honours and revokes
the same tokens); a missing, unknown or revoked token is 401 invalid_token, an expired one 401
expired_token, both with ``WWW-Authenticate: Bearer``. signHash, the hot path, hands the token
on unchecked (Clients.pending): its own transaction checks it in the query that reads the
credential and the SAD, one database round trip fewer per signature (about 5% of its time). ``auth/login`` takes HTTP Basic (client
id and secret) and answers a bearer token.

Nothing here logs a request: bodies carry PINs, OTPs and SADs, and headers tokens and secrets.
``/csc/v2/oauth2/token`` is web/oauth.py's (Flask), passed on.
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Callable

from ca import metrics
from ca.errors import ClientAuthError, StoreError
from csc.core import PUBLIC, VERSIONS, Answer, CscApi, refusal
from web.bearer import CLIENT_KEY, TokenVerifier, bearer_client, bearer_token, challenge
from web.oauth import PATHS as OAUTH_PATHS
from web.oauth import OAuthError, basic_credentials
from web.protocol import ProtocolEndpoint, media_type, read_body
from web.protocol import Answer as WsgiAnswer

MAX_BODY = 64 * 1024
PREFIX = "/csc/"
SIGN_HASH = "signatures/signHash"
_JSON = "application/json"
log = logging.getLogger("tincay.csc")


def _basic(header: str | None) -> tuple[str, str] | None:
    """HTTP Basic ``client_id:client_secret`` (auth/login), or None when absent or garbled:
    the same reading as the token endpoint's."""
    try:
        return basic_credentials(header)
    except OAuthError:
        return None


def wsgi_answer(answer: Answer) -> WsgiAnswer:
    """The core's answer as a WSGI triple: JSON (none for 204), never cached (SADs and
    tokens travel in it)."""
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    body = b""
    if answer.body is not None:
        headers["Content-Type"] = _JSON
        body = json.dumps(answer.body).encode()
    headers.update(answer.headers)
    return f"{answer.status} {HTTPStatus(answer.status).phrase}", tuple(headers.items()), body


class CscEndpoint(ProtocolEndpoint):
    """``/csc/...`` answered here (but the token endpoint, web/oauth.py's), the rest passed to
    ``app``. ``clients`` checks bearer tokens (ca.services.clients.Clients)."""

    log = log

    def __init__(self, app: Callable, api: CscApi, clients: TokenVerifier) -> None:
        super().__init__(app)
        self.api = api
        self.clients = clients

    def serves(self, path: str) -> bool:
        return path.startswith(PREFIX) and path not in OAUTH_PATHS

    def answer(self, environ: dict, path: str) -> WsgiAnswer:
        answer = self.call(environ, path)
        if path.endswith(SIGN_HASH):  # remote signing's outcomes, counted (ca.metrics)
            if answer.status == 200:
                metrics.csc_signature("granted")
            else:
                metrics.csc_signature("refused", str((answer.body or {}).get("error", "")))
        return wsgi_answer(answer)

    def call(self, environ: dict, path: str) -> Answer:
        """One CSC call: checks, authentication, then the core."""
        version, _, method = path[len(PREFIX):].partition("/")
        if version not in VERSIONS:
            return refusal(404, "invalid_request", "CSC versions served: v1, v2")
        if environ.get("REQUEST_METHOD") != "POST":
            return refusal(405, "invalid_request", "CSC methods are POST", (("Allow", "POST"),))
        if media_type(environ) != _JSON and not (
                method == "info" and environ.get("CONTENT_LENGTH") in (None, "", "0")):
            return refusal(415, "invalid_request", "Content-Type must be application/json")
        body = read_body(environ, MAX_BODY, "bodies")
        if isinstance(body, tuple):
            status, text, *headers = body
            return refusal(status, "invalid_request", text, tuple(headers))
        authorization = environ.get("HTTP_AUTHORIZATION")
        caller: Any = None
        if method not in PUBLIC:
            try:
                if method == SIGN_HASH:  # the token is checked in signHash's own query
                    caller = self.clients.pending(bearer_token(authorization))
                else:
                    caller = bearer_client(self.clients, authorization)
                    environ[CLIENT_KEY] = caller.client_id  # for the request's log event
            except ClientAuthError as exc:
                status, error, headers = challenge(exc)
                return refusal(status, error["error"], error["error_description"],
                               tuple(headers.items()))
            except StoreError:  # unreachable, a lock held elsewhere, a failed read: retry
                return refusal(503, "temporarily_unavailable",
                               "the service is unavailable, try later", (("Retry-After", "30"),))
        basic = _basic(authorization) if method == "auth/login" else None
        return self.api.handle(version, method, caller, body, basic=basic,
                               requester=environ.get("REMOTE_ADDR"))
