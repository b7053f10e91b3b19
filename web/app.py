"""The WSGI app factory: the OCSP, TSA, CSC and registration API endpoints in front of one
Flask app (the repository, the token endpoint, /healthz), over the CA services of one process.

The caller composes the services (cli.serve for gunicorn workers, after the fork, so each
worker opens its own database pool and its own PKCS#11 session: DESIGN.md section 5;
ca.testing for throwaway hierarchies); this module only wires the HTTP adapters to them.

The app is built without the database if need be: a worker that gunicorn restarts while the
database is away must boot (a worker that fails to boot makes gunicorn stop the whole server,
the healthy workers too). It then serves what it holds and refuses the rest in-protocol
(OCSP tryLater, TSA systemFailure, HTTP 503) until the database answers, and reads the OCSP
keys and the TSA unit it could not read as soon as it does.
"""
from __future__ import annotations

import logging
import os

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ca.errors import DatabaseBusyError, DatabaseUnavailableError
from ca.services import CertificateAuthority
from ca.settings import log_settings
from csc.core import CscApi
from ocsp.preproduce import PreProducer
from ocsp.responder import Responder
from ocsp.sources import StoreSource, responder_keys
from ra.core import RegistrationApi
from tsa.config import refreshed_authority, timestamp_authority, tsa_settings
from web.csc import CscEndpoint
from web.metrics import Metered, monitoring
from web.oauth import oauth
from web.ocsp import OcspEndpoint
from web.ra import RaEndpoint
from web.repository import repository
from web.tls import RequireTls
from web.tsa import TsaEndpoint

MAX_REQUEST_BYTES = 64 * 1024


def create_app(service: CertificateAuthority) -> Flask:
    """The app over ``service``: /ocsp, /tsa, /csc/ and /api/ answered before Flask, the rest
    by Flask."""
    app = Flask("tincay")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["tincay.service"] = service

    source = StoreSource(service.revocation, service.ocsp_answers)
    try:
        keys = responder_keys(service)
    except DatabaseUnavailableError:  # read once the database answers
        keys = None
    app.extensions["tincay.ocsp"] = Responder(
        keys, source, service.clock, cache=source,
        reload_keys=lambda: responder_keys(service))  # a CA created while serving
    app.register_blueprint(repository)
    app.register_blueprint(oauth)  # /oauth2/token, /csc/v2/oauth2/token
    app.wsgi_app = OcspEndpoint(app.wsgi_app,  # type: ignore[method-assign]
                                app.extensions["tincay.ocsp"])  # /ocsp, before Flask

    unit, policy = tsa_settings(os.environ)
    try:
        authority, known = timestamp_authority(service.authorities, unit, policy), True
    except DatabaseUnavailableError:  # read once the database answers
        authority, known = None, False
    app.extensions["tincay.tsa"] = authority
    tsa = TsaEndpoint(
        app.wsgi_app, authority, service.token_log, known=known,  # /tsa
        refresh=lambda current: refreshed_authority(service.authorities, current, unit, policy))
    app.wsgi_app = tsa  # type: ignore[method-assign]

    # the CSC API (/csc/v1/, /csc/v2/): remote signing over ca.services.credentials; its
    # signatures/timestamp goes through this worker's TSA unit and token log, as /tsa does
    app.extensions["tincay.csc"] = CscApi(
        service.credentials, service.clients, tsa.stamp,
        oauth2_url=f"{service.context.public_url.rstrip('/')}/oauth2/token"
        if getattr(service.context, "public_url", None) else "")
    app.wsgi_app = CscEndpoint(app.wsgi_app,  # type: ignore[method-assign]
                               app.extensions["tincay.csc"], service.clients)  # before Flask

    # the registration API (/api/v1/): enrolment and lifecycle over ca.services.registration,
    # for the same registered clients and bearer tokens as the CSC API
    # each certificate it issues, revokes, holds or releases gets its OCSP answer pre-produced
    # at once by this worker's responder, as `tincay issue` and `tincay revoke` do
    preproducer = PreProducer(service.ocsp_answers, app.extensions["tincay.ocsp"])
    app.extensions["tincay.ra"] = RegistrationApi(service.registration,
                                                  status_changed=preproducer.refresh)
    app.wsgi_app = RaEndpoint(app.wsgi_app,  # type: ignore[method-assign]
                              app.extensions["tincay.ra"], service.clients)  # before Flask

    # outermost: /oauth2/, /csc/ and /api/ need https (or loopback) before anything reads them
    app.wsgi_app = RequireTls(app.wsgi_app)  # type: ignore[method-assign]
    # around it all: every request counted, timed and logged (web/metrics.py)
    app.wsgi_app = Metered(app.wsgi_app,  # type: ignore[method-assign]
                           access_log=log_settings(os.environ).access)  # TINCAY_ACCESS_LOG
    app.register_blueprint(monitoring)  # /metrics, /readyz

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")

    @app.errorhandler(DatabaseUnavailableError)
    @app.errorhandler(DatabaseBusyError)
    def database_away(exc: Exception) -> Response:  # an outage is logged once, by the store
        what = "busy" if isinstance(exc, DatabaseBusyError) else "unreachable"
        return Response(f"503 the database is {what}, try later\n", status=503,
                        mimetype="text/plain", headers={"Retry-After": "30"})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # a bug: logged, never a traceback to clients
        logging.getLogger("tincay").exception("unhandled error")
        return Response("500 Internal Server Error\n", status=500, mimetype="text/plain")

    return app
