"""HTTP pieces shared by the services: the repository blueprint (CA certificates, the
caIssuers target of AIA, and CRLs), and the WSGI endpoint the DER protocols are served by.

Thin adapters: the repository reads through the service the app factory put in
``current_app.extensions`` and answers with cache headers, so relying parties and caches need
not ask again soon.
"""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Callable, Iterable

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, abort, current_app, request
from werkzeug.wsgi import get_input_stream

from ca.errors import NotFoundError
from ca.services import CertificateAuthority

repository = Blueprint("repository", __name__)
CA_CERT_MAX_AGE = timedelta(hours=1)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CLOSE = ("Connection", "close")


def service() -> CertificateAuthority:
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


Refusal = tuple  # (status, text, *headers): the arguments of plain()


def read_protocol_body(environ: dict, content_type: str, limit: int, what: str
                       ) -> bytes | Refusal:
    """The body of a DER protocol POST (OCSP, RFC 3161) from the WSGI ``environ``, or the
    HTTP refusal a client gets before the protocol layer sees anything, as the arguments of
    :func:`plain`: 415 for another Content-Type (parameters and case ignored), 413 past
    ``limit`` (checked on the header first, then on what was read, for chunked uploads), 400
    for a body that broke off (the client closed early or garbled the chunking: no protocol
    answer, and ``Connection: close``, since the rest of the stream cannot be framed)."""
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
    try:  # exactly Content-Length octets, as PEP 3333 allows; werkzeug's guard for chunked
        body = environ["wsgi.input"].read(length) if length >= 0 else \
            get_input_stream(environ, max_content_length=None).read(limit + 1)
    except Exception:  # noqa: BLE001 - each server has its own (OSError, werkzeug's
        # ClientDisconnected, gunicorn's ParseException): all say the upload broke off
        return 400, "the body broke off before its end", _CLOSE
    if len(body) < length:
        return 400, f"the body ended after {len(body)} of its {length} bytes", _CLOSE
    return too_large if len(body) > limit else body


Answer = tuple[str, Iterable[tuple[str, str]], bytes]  # WSGI status line, headers, body


class ProtocolEndpoint:
    """WSGI middleware serving one DER protocol (OCSP, RFC 3161) in front of the Flask app.

    The protocols' paths are the services' hot paths: a validator's OCSP question or a
    signer's time-stamp costs the core a fraction of a millisecond, and Flask's request
    context, routing and response object cost about as much again (OCSP's pre-produced
    answers reached 51% of the constant-body ceiling through Flask, 100% without). Subclasses
    say which paths are theirs (:meth:`serves`) and answer them (:meth:`answer`); every other
    path goes on to ``app`` unchanged. A bug is logged and answered 500 without a traceback.
    """

    log = logging.getLogger("tincay")

    def __init__(self, app: Callable) -> None:
        self.app = app

    def serves(self, path: str) -> bool:
        raise NotImplementedError

    def answer(self, environ: dict, path: str) -> Answer:
        raise NotImplementedError

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not self.serves(path):
            return self.app(environ, start_response)
        try:
            status, headers, body = self.answer(environ, path)
        except Exception:  # noqa: BLE001 - a bug: logged, never a traceback to clients
            self.log.exception("%s endpoint failed", type(self).__name__)
            status, headers, body = plain(500, "Internal Server Error")
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


def plain(code: int, text: str, *headers: tuple[str, str]) -> Answer:
    """A text/plain answer ``<code> <text>``, with any extra headers."""
    return f"{code} {HTTPStatus(code).phrase}", \
        (("Content-Type", "text/plain; charset=utf-8"), *headers), f"{code} {text}\n".encode()


@repository.get("/certs/<name>.cer")
def ca_certificate(name: str) -> Response:
    """The CA certificate in DER (RFC 5280 4.2.2.1: application/pkix-cert)."""
    if not _NAME.fullmatch(name):
        abort(404)
    try:
        cert = service().authorities.authority_certificate(name)
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
    crl = service().publication.latest_crl(name)
    if crl is None and name.endswith("-delta"):
        crl = service().publication.latest_crl(name.removesuffix("-delta"), delta=True)
    if crl is None:
        abort(404)
    now = service().clock.now()
    return cacheable(crl.der, "application/pkix-crl", crl.this_update,
                     max(crl.next_update - now, timedelta(0)), now)
