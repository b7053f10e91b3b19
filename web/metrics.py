"""Monitoring over HTTP: every request counted and timed, ``GET /metrics`` (Prometheus text
format), ``GET /readyz`` (can this worker serve: the database and the HSM key answer, the TSA's
clock is in sync when its check is on), and each request's log event (:class:`Metered`).

:class:`Metered` is the outermost WSGI middleware: it sees every request, the hot protocols'
too, and costs each one a path classification, a clock read and two counter updates
(ca.metrics keeps the counters' children, so no label lookup is rebuilt).

``/metrics`` and ``/readyz`` are Flask routes, not ProtocolEndpoints: a Prometheus server
scrapes every 15-60 s and a load balancer probes every few seconds, so Flask's request
handling (tens of microseconds) is nothing beside what a scrape reads, and the routes get
Flask's error handling for free. A scrape sums every worker's counters (ca.metrics'
multiprocess files) and adds gauges read from the database by the scraping worker at that
moment: days until each CA, OCSP and TSA certificate expires, the age of each CA's newest CRL;
and the scraping worker's readiness checks as ``tincay_ready{check}``.
The database unreachable, the counters are still served, without those gauges and with
``tincay_database_up 0``.

Neither route exposes a secret: the metrics carry endpoint names, status codes, refusal
reasons (CSC error codes, RFC 3161 failInfo names), token labels and CA/unit names; /readyz
names the failed check, never an error message (a database URL can carry a password).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable, Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ca import metrics, signing
from ca.errors import DatabaseBusyError, StoreError, TincayError
from web.bearer import CLIENT_KEY

log = logging.getLogger("tincay")
access = logging.getLogger("tincay.access")
MAX_LOGGED_PATH = 256  # an OCSP GET's base64 request is some 100 characters; longer is noise
monitoring = Blueprint("monitoring", __name__)
_PREFIXES = (("/ocsp", "ocsp"), ("/tsa", "tsa"), ("/oauth2/", "oauth"),
             ("/csc/v2/oauth2/", "oauth"), ("/csc/", "csc"), ("/api/", "api"),
             ("/certs/", "repository"), ("/crl/", "repository"))
_PROBE = b"tincay readiness probe"


def endpoint_of(path: str) -> str:
    """The endpoint label of a request path (a fixed set: no path ever becomes a label)."""
    for prefix, name in _PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


class Metered:
    """WSGI middleware counting each request by endpoint and status and timing it, and
    logging it: every request when ``access_log`` (TINCAY_ACCESS_LOG; INFO, a 503 WARNING),
    and whatever the setting a server error (5xx but 503) at ERROR. A 503 is an outage (the
    database, the HSM) that its own module logs once, not once per refused request.

    A request event names the method, the path (no query string: the registration API's
    filters and cursors are the client's business; an OCSP GET's path is its base64
    request, public), the status, the time taken, the endpoint, the peer's address and the
    authenticated client's id (web.bearer.CLIENT_KEY), never a header or a body: the
    Authorization header, the PIN, OTP and SAD of the CSC API, the client secret of the
    token endpoint all travel there."""

    def __init__(self, app: Callable, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        seen = ["500"]  # a response that never started is a failure

        def counted_start(status: str, headers: list, *exc_info: Any) -> Callable:
            seen[0] = status[:3]
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, counted_start)
        finally:
            path = environ.get("PATH_INFO", "")
            took = time.perf_counter() - started
            endpoint = endpoint_of(path)
            metrics.http_request(endpoint, seen[0], took)
            if self.access_log or (seen[0] >= "500" and seen[0] != "503"):
                _request_event(environ, path, endpoint, seen[0], took)


def _request_event(environ: dict, path: str, endpoint: str, status: str, took: float) -> None:
    method = str(environ.get("REQUEST_METHOD", ""))[:16]
    shown = path if len(path) <= MAX_LOGGED_PATH else path[:MAX_LOGGED_PATH] + "..."
    level = logging.INFO if status < "500" else logging.WARNING if status == "503" \
        else logging.ERROR
    access.log(level, "%s %s %s %.1f ms", method, shown, status, took * 1000, extra={
        "event": "request", "method": method, "path": shown, "status": int(status),
        "duration_ms": round(took * 1000, 3), "endpoint": endpoint,
        "remote": environ.get("REMOTE_ADDR"), "client": environ.get(CLIENT_KEY)})


class _DatabaseGauges:
    """The gauges computed at scrape time from the database (a prometheus_client collector)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("tincay_database_up",
                               "1 if the scraping worker read the database for this scrape")
        try:
            expiries = self.service.listings.certificate_expiries()
            crls = self.service.listings.latest_crl_times()
        except (StoreError, SQLAlchemyError):  # an outage: counters still served
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self.service.context.clock.now()
        expiry = GaugeMetricFamily(
            "tincay_certificate_expiry_days", "Days until the certificate expires (negative: "
            "expired), by kind (ca, ocsp, tsa) and CA or unit name", labels=["kind", "name"])
        for kind, name, not_after in expiries:
            expiry.add_metric([kind, name], (not_after - now).total_seconds() / 86400)
        yield expiry
        age = GaugeMetricFamily("tincay_crl_age_seconds",
                                "Seconds since the thisUpdate of the CA's newest complete CRL",
                                labels=["ca"])
        for ca, this_update in crls:
            age.add_metric([ca], (now - this_update).total_seconds())
        yield age


class _Scrape:
    """One scrape's collectors: every worker's counters, this worker's database gauges and
    its readiness (``tincay_ready``: /readyz's checks, so an alert needs no prober)."""

    def __init__(self, extensions: dict) -> None:
        self.extensions = extensions
        self.gauges = _DatabaseGauges(extensions["tincay.service"])

    def collect(self) -> Iterator[Any]:
        yield from metrics.collected()
        yield from self.gauges.collect()
        ready = GaugeMetricFamily("tincay_ready", "1 if the scraping worker passes the "
                                  "readiness check (database, hsm, clock: those of /readyz; "
                                  "a check that is off passes), else 0", labels=["check"])
        for name, outcome in _checks(self.extensions).items():
            ready.add_metric([name], 1 if outcome in _PASSED else 0)
        yield ready


@monitoring.get("/metrics")
def metrics_page() -> Response:
    return Response(generate_latest(_Scrape(current_app.extensions)),  # type: ignore[arg-type]
                    mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Cache-Control": "no-store"})


@monitoring.get("/readyz")
def readyz() -> Response:
    """200 if this worker can serve (the database answers, the HSM signs with a service key,
    the TSA's clock is in sync), else 503; the JSON body names each check's outcome and which
    failed."""
    checks = _checks(current_app.extensions)
    failed = _failed(checks)
    return Response(json.dumps({"ready": not failed, "checks": checks, "failed": failed}) + "\n",
                    status=503 if failed else 200, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


def _checks(extensions: dict) -> dict[str, str]:
    """Each readiness check's outcome: "ok", "none"/"off" (nothing to check), or why not."""
    return {"database": _database_check(extensions["tincay.service"]),
            "hsm": _hsm_check(extensions), "clock": _clock_check(extensions)}


_PASSED = ("ok", "none", "off")  # a check's outcomes that are no reason to refuse traffic


def _failed(checks: dict[str, str]) -> list[str]:
    return [name for name, outcome in checks.items() if outcome not in _PASSED]


def _database_check(service: Any) -> str:
    try:
        with service.context.read() as session:
            session.execute(text("SELECT 1"))
    except DatabaseBusyError:
        return "busy"
    except (StoreError, SQLAlchemyError):
        return "unreachable"
    return "ok"


def _hsm_check(extensions: dict) -> str:
    """A signature by the TSA unit's key, else by the first OCSP responder's: the one check
    that the token, the session and the key all answer (a SoftHSM P-256 signature is well
    under a millisecond, cheap at a probe's rate). "none" when this worker holds no key."""
    authority = extensions.get("tincay.tsa")
    keys = [authority.unit.key] if authority is not None else []
    keys += [key.key for key in extensions["tincay.ocsp"].keys]
    if not keys:
        return "none"
    try:
        signing.sign(keys[0], _PROBE, "sha256")
    except TincayError:  # the token gone, the session lost, the key missing
        return "unavailable"
    except Exception:  # noqa: BLE001 - not ready either way; a probe never answers 500
        log.exception("readiness: the HSM probe failed")
        return "unavailable"
    return "ok"


def _clock_check(extensions: dict) -> str:
    """The TSA's clock guard (tsa/clock_sync.py, TINCAY_TSA_CLOCK_CHECK): "ok" in sync,
    "unsynchronised" while the TSA refuses tokens (timeNotAvailable), "off" when no check is
    configured or this worker has no TSA. The guard's cached answer (1 s by default): a
    probe costs what a token's check costs. Its reason stays in the log and the audit event:
    a checker command's standard error is the operator's, not a load balancer's."""
    authority = extensions.get("tincay.tsa")
    guard = getattr(authority, "clock_guard", None)
    if guard is None:
        return "off"
    return "ok" if guard.reading().synchronised else "unsynchronised"
