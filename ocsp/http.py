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
from datetime import datetime
from urllib.parse import unquote

from asn1crypto import ocsp as asn1_ocsp
from flask import Blueprint, Response, current_app

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


def _decode_get(encoded: str) -> bytes | None:
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
    response = Response(der, mimetype=OCSP_RESPONSE)
    times = _single_response_times(der)
    if times is None:
        response.cache_control.no_store = True
        return response
    this_update, next_update = times
    max_age = max(0, int((next_update - now).total_seconds()))
    response.cache_control.max_age = max_age
    response.cache_control.public = True
    response.cache_control.no_transform = True
    response.cache_control.must_revalidate = True
    response.last_modified = this_update
    response.expires = next_update
    response.set_etag(_etag(der))
    response.date = now
    return response


@functools.lru_cache(maxsize=4096)
def _etag(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # noqa: S324 - an identifier, not security


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
