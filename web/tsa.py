"""The TSA endpoint: RFC 3161 over HTTP (section 3.4), ``POST /tsa``.

A thin adapter like web/ocsp.py, and like it WSGI middleware in front of Flask (a token costs
the core about as much as Flask's request handling would add): it checks content type and
size, hands the body to the pure core, and records every granted token durably *before* the
reply leaves (the store batches concurrent records into shared commits). A token that could
not be recorded is never sent: the client gets a systemFailure rejection instead, so no client
holds a token the operator cannot account for.

A worker started while the database is away does not know its unit yet: it answers
systemFailure ("the database is unreachable") and asks again every second until it does. The
token log waits a bounded time for a lock another process holds (ca.services.token_log), then
the client gets systemFailure "the token log is busy, try later".
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from sqlalchemy.exc import SQLAlchemyError

from ca import metrics
from ca.errors import DatabaseBusyError, DatabaseUnavailableError, TincayError
from ca.services import TokenLog
from tsa.core import TimeStampAuthority, rejection
from web.protocol import Answer, ProtocolEndpoint, plain, read_protocol_body

TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"
_REPLY_HEADERS = (("Content-Type", TIMESTAMP_REPLY),)
MAX_REQUEST_BYTES = 8 * 1024  # a TimeStampReq with a SHA-512 imprint is about 100 bytes
log = logging.getLogger("tincay.tsa")


class TsaEndpoint(ProtocolEndpoint):
    """POST ``/tsa`` (or ``/tsa/``) answered here, in front of the Flask app
    (web.protocol.ProtocolEndpoint): 415 for another Content-Type, 413 past MAX_REQUEST_BYTES, 405
    for other methods, 404 when no TSA unit is configured. ``known=False``: the unit could not
    be read yet (the database was unreachable), so ``refresh`` is asked every second."""

    log = log

    def __init__(self, app: Callable, authority: TimeStampAuthority | None,
                 token_log: TokenLog, *,
                 refresh: Callable[[TimeStampAuthority | None], TimeStampAuthority | None]
                 | None = None, refresh_every: float = 30.0, known: bool = True) -> None:
        super().__init__(app)
        self.authority = authority
        self.known = known
        self.token_log = token_log
        # A renewed TSA unit (ca.services.renewal) is taken up without a restart: every
        # ``refresh_every`` seconds ``refresh`` gets the current authority and returns it, or
        # the authority of the unit's new certificate and key.
        self.refresh = refresh
        self.refresh_every = refresh_every
        self._refreshed_at = time.monotonic()

    def _refresh(self) -> None:
        every = self.refresh_every if self.known else min(self.refresh_every, 1.0)
        if self.refresh is None or time.monotonic() - self._refreshed_at < every:
            return
        self._refreshed_at = time.monotonic()
        try:
            self.authority = self.refresh(self.authority)
            self.known = True
        except DatabaseUnavailableError:  # logged once by the store; keep the unit we have
            pass
        except (TincayError, SQLAlchemyError) as exc:  # keep the unit we have
            log.warning("TSA unit not refreshed: %s", exc)

    def serves(self, path: str) -> bool:
        return path in ("/tsa", "/tsa/")

    def answer(self, environ: dict, path: str) -> Answer:
        if environ.get("REQUEST_METHOD") != "POST":
            return plain(405, "Method Not Allowed", ("Allow", "POST"))
        self._refresh()
        if self.authority is None and self.known:
            return plain(404, "no time-stamp unit is configured here")
        body = read_protocol_body(environ, TIMESTAMP_QUERY, MAX_REQUEST_BYTES,
                                  "time-stamp requests")
        if isinstance(body, tuple):
            return plain(*body)
        return "200 OK", _REPLY_HEADERS, self.stamp(body, environ.get("REMOTE_ADDR"))

    def stamp(self, request_der: bytes, requester: str | None = None) -> bytes:
        """TimeStampReq DER -> TimeStampResp DER, a granted token recorded durably first (a
        token that could not be recorded becomes a systemFailure rejection), each outcome counted
        (ca.metrics: granted, or refused by failInfo or by the log's failure). Shared by
        ``/tsa`` and the CSC API's signatures/timestamp (web/csc.py)."""
        self._refresh()
        if self.authority is None:
            metrics.tsa_token("refused", "database_unreachable" if not self.known
                              else "no_unit")
            return rejection("systemFailure", "the database is unreachable, try later"
                             if not self.known else "no time-stamp unit is configured here")
        result = self.authority.respond(request_der, requester)
        if result.granted is None:
            metrics.tsa_token("refused", result.fail_info or "rejected")
            return result.response
        token = result.granted
        try:
            self.token_log.record(token)
        except DatabaseBusyError as exc:
            log.warning("time-stamp token %x not recorded, not sent: %s", token.serial, exc)
            metrics.tsa_token("refused", "token_log_busy")
            return rejection("systemFailure", "the token log is busy, try later")
        except DatabaseUnavailableError:  # logged once by the store, not per request
            metrics.tsa_token("refused", "token_log_unreachable")
            return rejection("systemFailure",
                             "the token log's database is unreachable, try later")
        except (TincayError, SQLAlchemyError) as exc:
            log.error("time-stamp token %x not recorded, not sent: %s", token.serial, exc)
            metrics.tsa_token("refused", "token_log_failed")
            return rejection("systemFailure", "the token could not be recorded")
        metrics.tsa_token("granted")
        return result.response
