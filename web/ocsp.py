"""The OCSP endpoint: RFC 6960 POST and RFC 5019 GET at ``/ocsp``, in front of the Flask app.

A thin adapter after Boulder's ocsp/responder: the HTTP layer only decodes the transport, checks
size and content type, and copies cache headers from the signed response; every protocol failure
is already an OCSP status from :meth:`ocsp.responder.Responder.respond`.

It is WSGI middleware in front of Flask (web.protocol.ProtocolEndpoint) rather than a blueprint
because it is the hottest path of the service: a validator's repeated question costs the
responder a dictionary lookup and one indexed query, less than Flask's request handling.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
from datetime import datetime
from typing import Callable
from urllib.parse import unquote

from asn1crypto import ocsp as asn1_ocsp
from werkzeug.http import http_date, quote_etag

from ocsp.responder import Responder
from web.protocol import Answer, ProtocolEndpoint, plain, read_protocol_body

__all__ = ["OcspEndpoint"]

log = logging.getLogger("tincay.ocsp")
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
MAX_REQUEST_BYTES = 8 * 1024  # a request for 10 CertIDs with a nonce is well under 1 kB
_POST_HEADERS = (("Content-Type", OCSP_RESPONSE),)


class OcspEndpoint(ProtocolEndpoint):
    """``/ocsp`` answered here, anything else passed to ``app`` (web.protocol.ProtocolEndpoint).

    POST ``/ocsp`` (or ``/ocsp/``) with Content-Type application/ocsp-request: 415 for another
    type, 413 past MAX_REQUEST_BYTES (by the header, or by what a chunked upload sent).
    GET and HEAD ``/ocsp/<base64, URL-encoded>``: with RFC 5019 cache headers. Other methods 405.
    """

    log = log

    def __init__(self, app: Callable, responder: Responder) -> None:
        super().__init__(app)
        self.responder = responder

    def serves(self, path: str) -> bool:
        return path == "/ocsp" or path.startswith("/ocsp/")

    def answer(self, environ: dict, path: str) -> Answer:
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD") and path.startswith("/ocsp/"):
            # RFC 5019 section 5: the DER request, base64-encoded, then URL-encoded
            der = _decode_get(path[len("/ocsp/"):])
            answer = self.responder.respond(der or b"")
            return "200 OK", _cache_headers(answer, int(self.responder.clock.now().timestamp())), \
                answer
        if method == "POST" and path in ("/ocsp", "/ocsp/"):
            body = read_protocol_body(environ, OCSP_REQUEST, MAX_REQUEST_BYTES, "OCSP requests")
            if isinstance(body, tuple):
                return plain(*body)
            return "200 OK", _POST_HEADERS, self.responder.respond(body)
        return plain(405, "Method Not Allowed",
                     ("Allow", "POST" if path in ("/ocsp", "/ocsp/") else "GET, HEAD"))


@functools.lru_cache(maxsize=4096)  # validators repeat their questions
def _decode_get(encoded: str) -> bytes | None:
    """The DER request of an RFC 5019 GET, from the path after ``/ocsp/``; None if it is not
    base64 (the responder answers malformedRequest)."""
    text = unquote(encoded)  # the server decoded %XX once; clients sometimes encode twice
    if len(text) > MAX_REQUEST_BYTES * 2:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=4096)  # pre-produced answers repeat; the clock moves by seconds
def _cache_headers(der: bytes, now: int) -> tuple[tuple[str, str], ...]:
    """RFC 5019 section 6.2: max-age up to nextUpdate, Last-Modified thisUpdate, ETag, Expires.
    Only successful responses are cacheable; errors (malformedRequest, tryLater, ...) say so."""
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
