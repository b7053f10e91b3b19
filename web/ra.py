"""The registration API over HTTP: ``/api/v1/...`` (issue 21).

A thin adapter over the pure core (ra/core.py), served like the CSC API as WSGI middleware
in front of Flask (web.protocol.ProtocolEndpoint) rather than as a Flask blueprint: the core
already routes, validates and answers every path under ``/api/v1/`` (RFC 9457 problems
included), so a blueprint would add a second router and a second error path (Flask's
text/plain HTTPException pages) that must then be kept from ever answering here; an HR
system enrolling 30,000 teachers also pays Flask's request and response objects on every
call for nothing.

What is left to this layer is HTTP itself, each refusal an ``application/problem+json``
body like the core's: 413 past 64 KiB (on the header, then on what was read for chunked
uploads), 415 for a body that is not ``application/json`` (a POST with no body at all is let
through: ``.../hold`` and ``.../release`` need none, and the core answers 400 to an issuance
without one), 400 for a query string that does not parse; the bearer token (web/bearer.py,
checked against the database by ca.services.clients.Clients.verify, so every worker honours
and revokes the same tokens): a refused one is 401 with ``WWW-Authenticate: Bearer``, a
database that cannot answer is 503 with ``Retry-After``. A request without an
``Authorization`` header over a TLS connection that presented a client certificate
(web/client_cert.py: `tincay serve --client-ca`, or --tls-self) is the client that certificate
is bound to (`tincay client bind`), checked at every call; a bound certificate never
overrides a bearer token that is sent. ``/api/v1/openapi.json`` needs no token.

Nothing here logs a request: bodies carry subjects' identity numbers, headers tokens.
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs

from ca.errors import ClientAuthError, StoreError
from ra.core import PREFIX, Answer, RegistrationApi, problem
from web.bearer import CLIENT_KEY, TokenVerifier, bearer_client, challenge
from web.client_cert import CertificateAuthenticator, certificate_client, client_certificate
from web.protocol import ProtocolEndpoint, media_type, read_body
from web.protocol import Answer as WsgiAnswer

MAX_BODY = 64 * 1024
MAX_QUERY_FIELDS = 32
SERVED = "/api/"
OPENAPI = PREFIX + "openapi.json"
_JSON = "application/json"
log = logging.getLogger("tincay.ra")


def wsgi_answer(answer: Answer) -> WsgiAnswer:
    """The core's answer as a WSGI triple: JSON (problem+json for a refusal), never cached
    (certificates are public, but listings and the audit log are not)."""
    headers: dict[str, str] = {"Content-Type": answer.content_type,
                               "Cache-Control": "no-store"}
    headers.update(answer.headers)
    body = json.dumps(answer.body, ensure_ascii=False).encode("utf-8")
    return f"{answer.status} {HTTPStatus(answer.status).phrase}", tuple(headers.items()), body


def _refusal(status: int, detail: str, *headers: tuple[str, str]) -> Answer:
    """One of this layer's own refusals, as the core words them."""
    slug = {400: "invalid-request", 413: "body-too-large", 415: "unsupported-media-type",
            503: "unavailable"}.get(status, "invalid-request")
    return problem(status, slug, HTTPStatus(status).phrase, detail, None, tuple(headers))


def query_parameters(environ: dict) -> dict[str, list[str]] | Answer:
    """The query string as name -> every value given (the core refuses a repeated one,
    naming it), or a 400 problem for one that does not parse."""
    text = environ.get("QUERY_STRING", "")
    try:
        return parse_qs(text, keep_blank_values=True, strict_parsing=False,
                        max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return _refusal(400, f"the query string is not valid (at most {MAX_QUERY_FIELDS} "
                             "parameters, UTF-8, percent-encoded)")


class Authenticator(TokenVerifier, CertificateAuthenticator, Protocol):
    """What the endpoint needs of ca.services.clients.Clients."""


class RaEndpoint(ProtocolEndpoint):
    """``/api/...`` answered here, the rest passed to ``app``. ``clients`` checks bearer
    tokens and TLS client certificates (ca.services.clients.Clients)."""

    log = log

    def __init__(self, app: Callable, api: RegistrationApi, clients: Authenticator) -> None:
        super().__init__(app)
        self.api = api
        self.clients = clients

    def serves(self, path: str) -> bool:
        return path.startswith(SERVED)

    def answer(self, environ: dict, path: str) -> WsgiAnswer:
        return wsgi_answer(self.call(environ, path))

    def call(self, environ: dict, path: str) -> Answer:
        """One call: HTTP checks, authentication, then the core."""
        method = environ.get("REQUEST_METHOD", "GET")
        body = b""
        if method == "POST":
            read = read_body(environ, MAX_BODY, "request bodies")
            if isinstance(read, tuple):
                status, text, *headers = read
                return _refusal(status, text, *headers)
            body = read
            if body and media_type(environ) != _JSON:
                return _refusal(415, "Content-Type must be application/json")
        query = query_parameters(environ)
        if isinstance(query, Answer):
            return query
        caller: Any = None
        if path != OPENAPI:
            authorization = environ.get("HTTP_AUTHORIZATION")
            try:
                if authorization is None and client_certificate(environ) is not None:
                    caller = certificate_client(environ, self.clients)
                else:
                    caller = bearer_client(self.clients, authorization)
                environ[CLIENT_KEY] = caller.client_id  # for the request's log event
            except ClientAuthError as exc:
                status, error, headers = challenge(exc)
                return problem(status, "unauthorized", "Unauthorized",
                               error["error_description"], None, tuple(headers.items()))
            except StoreError:  # unreachable, a lock held elsewhere, a failed read: retry
                return _refusal(503, "the service is unavailable, try later",
                                ("Retry-After", "30"))
        headers = {}
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.api.handle(method, path, caller, body, query, headers)
