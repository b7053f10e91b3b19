"""The WSGI app factory: the OCSP and TSA endpoints in front of one Flask app (the
repository, /healthz), over one AppContext per worker process.

gunicorn calls :func:`create_app` in every worker after the fork, so each worker opens its own
database pool and its own PKCS#11 session (one per process, DESIGN.md section 5).
"""
from __future__ import annotations

import logging
import os

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ca.services import CertificateAuthority
from cli.context import AppContext

MAX_REQUEST_BYTES = 64 * 1024


def create_app(service: CertificateAuthority | None = None) -> Flask:
    """The app over ``service``, or over one built from the environment (gunicorn workers)."""
    app = Flask("tincay")
    if service is None:
        service = AppContext(migrate=False).service
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["tincay.service"] = service

    from ca.http import repository
    from ocsp.http import OcspEndpoint
    from ocsp.responder import Responder
    from ocsp.sources import StoreSource, responder_keys

    source = StoreSource(service.revocation, service.ocsp_answers)
    app.extensions["tincay.ocsp"] = Responder(responder_keys(service), source, service.clock,
                                              cache=source)
    app.register_blueprint(repository)
    app.wsgi_app = OcspEndpoint(app.wsgi_app,  # type: ignore[method-assign]
                                app.extensions["tincay.ocsp"])  # /ocsp, before Flask

    from tsa.http import TsaEndpoint, timestamp_authority, tsa_settings

    app.extensions["tincay.tsa"] = timestamp_authority(service.authorities,
                                                       *tsa_settings(os.environ))
    app.wsgi_app = TsaEndpoint(app.wsgi_app,  # type: ignore[method-assign]
                               app.extensions["tincay.tsa"], service.token_log)  # /tsa

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # a bug: logged, never a traceback to clients
        logging.getLogger("tincay").exception("unhandled error")
        return Response("500 Internal Server Error\n", status=500, mimetype="text/plain")

    return app
