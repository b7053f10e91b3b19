"""The repository: CA certificates (the caIssuers target of AIA) and CRLs over HTTP, with
cache headers so relying parties and caches need not ask again soon.

A thin blueprint: it reads through the CA services the app factory put in
``current_app.extensions`` and answers with RFC 5019 section 6 style headers. What it served
last is held in memory (CRLs up to HELD_CRL_BYTES), so while the database cannot be reached a
CRL is still served until its nextUpdate, and a CA certificate as long as the worker runs;
anything else is a 503 (web/app.py).
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, abort, current_app, request

from ca.errors import DatabaseUnavailableError, NotFoundError
from ca.services import CertificateAuthority

repository = Blueprint("repository", __name__)
CA_CERT_MAX_AGE = timedelta(hours=1)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
HELD_CRL_BYTES = 16 * 1024 * 1024  # larger CRLs are read from the database each time


def service() -> CertificateAuthority:
    return current_app.extensions["tincay.service"]


def _held() -> dict:
    """What this worker served last, by path: for a database outage."""
    return current_app.extensions.setdefault("tincay.repository.held", {})


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


@repository.get("/certs/<name>.cer")
def ca_certificate(name: str) -> Response:
    """The CA certificate in DER (RFC 5280 4.2.2.1: application/pkix-cert)."""
    if not _NAME.fullmatch(name):
        abort(404)
    try:
        cert = service().authorities.authority_certificate(name)
    except NotFoundError:
        abort(404)
    except DatabaseUnavailableError:
        cert = _held().get(request.path)
        if cert is None:
            raise
    _held()[request.path] = cert
    return cacheable(cert.public_bytes(serialization.Encoding.DER), "application/pkix-cert",
                     cert.not_valid_before_utc, CA_CERT_MAX_AGE, service().clock.now())


@repository.get("/crl/<name>.crl")
def latest_crl(name: str) -> Response:
    """The CA's latest complete CRL in DER (RFC 5280 4.2.1.13: application/pkix-crl), or at
    ``<ca>-delta.crl`` its latest delta CRL, cacheable until its nextUpdate."""
    if not _NAME.fullmatch(name):
        abort(404)
    now = service().clock.now()
    try:
        crl = service().publication.latest_crl(name)
        if crl is None and name.endswith("-delta"):
            crl = service().publication.latest_crl(name.removesuffix("-delta"), delta=True)
    except DatabaseUnavailableError:
        crl = _held().get(request.path)
        if crl is None or crl.next_update <= now:
            raise
    if crl is None:
        abort(404)
    if len(crl.der) <= HELD_CRL_BYTES:
        _held()[request.path] = crl
    return cacheable(crl.der, "application/pkix-crl", crl.this_update,
                     max(crl.next_update - now, timedelta(0)), now)
