"""The OCSP blueprint: RFC 6960 POST and RFC 5019 GET over the pure responder.

A thin adapter after Boulder's ocsp/responder: the HTTP layer only decodes the transport, checks
size and content type, and copies cache headers from the signed response; every protocol failure
is already an OCSP status from :meth:`ocsp.responder.Responder.respond`.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
from datetime import datetime
from typing import Callable, Iterable
from urllib.parse import unquote

from asn1crypto import ocsp as asn1_ocsp
from flask import Blueprint, Response, current_app
from werkzeug.http import http_date, quote_etag

from ca.http import protocol_body
from ocsp.responder import Responder

blueprint = Blueprint("ocsp", __name__)
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
MAX_REQUEST_BYTES = 8 * 1024  # a request for 10 CertIDs with a nonce is well under 1 kB


def responder() -> Responder:
    return current_app.extensions["tincay.ocsp"]


@blueprint.post("/ocsp")
@blueprint.post("/ocsp/")
def post() -> Response:
    body = protocol_body(OCSP_REQUEST, MAX_REQUEST_BYTES, "OCSP requests")
    if isinstance(body, Response):
        return body
    return Response(responder().respond(body), mimetype=OCSP_RESPONSE)


@blueprint.get("/ocsp/<path:encoded>")
def get(encoded: str) -> Response:
    """RFC 5019 section 5: the DER request, base64-encoded, then URL-encoded, after the path."""
    der = _decode_get(encoded)
    answer = responder().respond(der if der is not None else b"")
    return _with_cache_headers(answer, responder().clock.now())


@functools.lru_cache(maxsize=4096)  # validators repeat their questions
def _decode_get(encoded: str) -> bytes | None:
    """The DER request of an RFC 5019 GET, from the path after ``/ocsp/``; None if it is not
    base64 (the responder answers malformedRequest)."""
    text = unquote(encoded)  # werkzeug decoded %XX once; clients sometimes encode twice
    if len(text) > MAX_REQUEST_BYTES * 2:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _with_cache_headers(der: bytes, now: datetime) -> Response:
    """RFC 5019 section 6.2: max-age up to nextUpdate, Last-Modified thisUpdate, ETag, Expires.

    Only successful responses are cacheable; errors (malformedRequest, tryLater, ...) say so.
    """
    return Response(der, headers=_cache_headers(der, int(now.timestamp())))


@functools.lru_cache(maxsize=4096)  # pre-produced answers repeat; the clock moves by seconds
def _cache_headers(der: bytes, now: int) -> tuple[tuple[str, str], ...]:
    headers = (("Content-Type", OCSP_RESPONSE),)
    times = _single_response_times(der)
    if times is None:
        return (*headers, ("Cache-Control", "no-store"))
    this_update, next_update = times
    max_age = max(0, int(next_update.timestamp()) - now)
    return (*headers,
            ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
            ("Last-Modified", http_date(this_update)), ("Expires", http_date(next_update)),
            ("ETag", quote_etag(hashlib.sha1(der).hexdigest())),  # noqa: S324 - an identifier
            ("Date", http_date(now)))


class RepeatQuestions:
    """WSGI middleware answering repeat nonce-less questions before Flask dispatches.

    Most OCSP traffic is the same few questions asked again and again (RFC 5019), answered by
    a stored response: for those the responder's own work is a dictionary lookup and one
    indexed query, and Flask's request context, routing and response object would be most of
    the cost. A request whose exact bytes the responder has seen and routed
    (:meth:`Responder.answer_repeat`) and whose stored answer is current is answered here,
    byte for byte and header for header what the blueprint would send; everything else (new
    questions, nonces, odd content types, chunked bodies, errors) goes on to Flask untouched,
    its body restored.
    """

    def __init__(self, app: Callable, responder: Responder) -> None:
        self.app = app
        self.responder = responder

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        answer = headers = None
        if method == "GET" and path.startswith("/ocsp/"):
            der = _decode_get(path[len("/ocsp/"):])
            answer = self._answer(der)
            if answer is not None:
                headers = _cache_headers(answer, int(self.responder.clock.now().timestamp()))
        elif method == "POST" and path in ("/ocsp", "/ocsp/") and \
                environ.get("CONTENT_TYPE") == OCSP_REQUEST:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if 0 < length <= MAX_REQUEST_BYTES:
                body = environ["wsgi.input"].read(length)
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
                answer = self._answer(body)
                headers = _POST_HEADERS
        if answer is None:
            return self.app(environ, start_response)
        start_response("200 OK", [*headers, ("Content-Length", str(len(answer)))])
        return [answer]

    def _answer(self, der: bytes | None) -> bytes | None:
        if not der:
            return None
        try:
            return self.responder.answer_repeat(der)
        except Exception:  # noqa: BLE001 - the full path answers it (tryLater, ...) and logs
            return None


_POST_HEADERS = (("Content-Type", OCSP_RESPONSE),)


@functools.lru_cache(maxsize=4096)  # pure in the bytes; pre-produced answers repeat
def _single_response_times(der: bytes) -> tuple[datetime, datetime] | None:
    try:
        parsed = asn1_ocsp.OCSPResponse.load(der)
        if parsed["response_status"].native != "successful":
            return None
        single = parsed.basic_ocsp_response["tbs_response_data"]["responses"][0]
        return single["this_update"].native, single["next_update"].native
    except (ValueError, KeyError, IndexError, TypeError):
        return None
