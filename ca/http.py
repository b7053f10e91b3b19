"""The repository blueprint: CA certificates (the caIssuers target of AIA) over HTTP.

A thin adapter: it reads through the service the app factory put in ``current_app.extensions``
and answers with cache headers, so relying parties and caches need not ask again soon.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, abort, current_app, request
from werkzeug.wsgi import get_input_stream

from ca.errors import NotFoundError
from ca.service import CertificateAuthorityService

repository = Blueprint("repository", __name__)
CA_CERT_MAX_AGE = timedelta(hours=1)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def service() -> CertificateAuthorityService:
    return current_app.extensions["tincay.service"]


def cacheable(body: bytes, mimetype: str, last_modified: datetime, max_age: timedelta,
              now: datetime) -> Response:
    """A response with RFC 5019 section 6 style headers; answers 304 to a matching ETag."""
    etag = hashlib.sha256(body).hexdigest()[:32]
    response = Response(body, mimetype=mimetype)
    response.set_etag(etag)
    response.last_modified = last_modified
    response.expires = now + max_age
    response.cache_control.max_age = int(max_age.total_seconds())
    response.cache_control.public = True
    if request.if_none_match.contains(etag):
        response.status_code = 304
        response.set_data(b"")
    return response


def read_protocol_body(environ: dict, content_type: str, limit: int, what: str
                       ) -> bytes | tuple[int, str]:
    """The body of a DER protocol POST (OCSP, RFC 3161) from the WSGI ``environ``, or the
    HTTP refusal a client gets before the protocol layer sees anything, as (status, text):
    415 for another Content-Type (parameters and case ignored), 413 past ``limit`` (checked
    on the header first, then on what was read, for chunked uploads). Plain WSGI, so the
    OCSP endpoint in front of Flask and the Flask views share it."""
    media_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if media_type != content_type:
        return 415, f"Content-Type must be {content_type}"
    too_large = 413, f"{what} are limited to {limit} bytes"
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return too_large
    body = get_input_stream(environ, max_content_length=None).read(
        length if length >= 0 else limit + 1)
    return too_large if len(body) > limit else body


def protocol_body(content_type: str, limit: int, what: str) -> bytes | Response:
    """:func:`read_protocol_body` for a Flask view: the body, or the refusal as a Response."""
    body = read_protocol_body(request.environ, content_type, limit, what)
    if isinstance(body, tuple):
        code, text = body
        return Response(f"{code} {text}\n", status=code, mimetype="text/plain")
    return body


@repository.get("/certs/<name>.cer")
def ca_certificate(name: str) -> Response:
    """The CA certificate in DER (RFC 5280 4.2.2.1: application/pkix-cert)."""
    if not _NAME.fullmatch(name):
        abort(404)
    try:
        cert = service().authority_certificate(name)
    except NotFoundError:
        abort(404)
    return cacheable(cert.public_bytes(serialization.Encoding.DER), "application/pkix-cert",
                     cert.not_valid_before_utc, CA_CERT_MAX_AGE, service().clock.now())


@repository.get("/crl/<name>.crl")
def latest_crl(name: str) -> Response:
    """The CA's latest complete CRL in DER (RFC 5280 4.2.1.13: application/pkix-crl), or at
    ``<ca>-delta.crl`` its latest delta CRL, cacheable until its nextUpdate."""
    if not _NAME.fullmatch(name):
        abort(404)
    crl = service().latest_crl(name)
    if crl is None and name.endswith("-delta"):
        crl = service().latest_crl(name.removesuffix("-delta"), delta=True)
    if crl is None:
        abort(404)
    now = service().clock.now()
    return cacheable(crl.der, "application/pkix-crl", crl.this_update,
                     max(crl.next_update - now, timedelta(0)), now)
