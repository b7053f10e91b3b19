"""The TSA blueprint: RFC 3161 over HTTP (section 3.4), ``POST /tsa``.

A thin adapter like ocsp/http.py: it checks content type and size, hands the body to the pure
core, and records every granted token durably *before* the reply leaves (the store batches
concurrent records into shared commits). A token that could not be recorded is never sent:
the client gets a systemFailure rejection instead, so no client holds a token the operator
cannot account for.
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from ca.errors import TincayError
from ca.http import protocol_body
from ca.service import CertificateAuthorityService
from tsa.core import TimeStampAuthority, TsaPolicy, TsaUnit, rejection

blueprint = Blueprint("tsa", __name__)
TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"
MAX_REQUEST_BYTES = 8 * 1024  # a TimeStampReq with a SHA-512 imprint is about 100 bytes
log = logging.getLogger("tincay.tsa")


def timestamp_authority(service: CertificateAuthorityService, unit: str | None = None,
                        policy: TsaPolicy | None = None) -> TimeStampAuthority | None:
    """The TSA for the unit named ``unit`` (default: the first TSA unit), None if none."""
    units = [u for u in service.service_units("tsa") if unit is None or u.name == unit]
    if not units:
        return None
    chosen = units[0]
    return TimeStampAuthority(
        TsaUnit(chosen.name, chosen.certificate, service.signing_key(chosen.key_uri),
                tuple(chosen.chain)),
        policy or TsaPolicy(), service.clock)


@blueprint.post("/tsa")
@blueprint.post("/tsa/")
def post() -> Response:
    authority: TimeStampAuthority | None = current_app.extensions.get("tincay.tsa")
    if authority is None:
        return Response("404 no time-stamp unit is configured here\n", status=404,
                        mimetype="text/plain")
    body = protocol_body(TIMESTAMP_QUERY, MAX_REQUEST_BYTES, "time-stamp requests")
    if isinstance(body, Response):
        return body
    result = authority.respond(body)
    if result.granted is not None:
        token = result.granted
        try:
            current_app.extensions["tincay.service"].record_timestamp(
                dataclasses.replace(token, requester=request.remote_addr))
        except (TincayError, SQLAlchemyError) as exc:
            log.error("time-stamp token %x not recorded, not sent: %s", token.serial, exc)
            return Response(rejection("systemFailure", "the token could not be recorded"),
                            mimetype=TIMESTAMP_REPLY)
    return Response(result.response, mimetype=TIMESTAMP_REPLY)

