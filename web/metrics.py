"""Monitoring over HTTP: every request counted and timed, ``GET /metrics`` (Prometheus text
format), ``GET /readyz`` (can this worker serve: the database and the HSM key answer).

:class:`Metered` is the outermost WSGI middleware: it sees every request, the hot protocols'
too, and costs each one a path classification, a clock read and two counter updates
(ca.metrics keeps the counters' children, so no label lookup is rebuilt).

``/metrics`` and ``/readyz`` are Flask routes, not ProtocolEndpoints: a Prometheus server
scrapes every 15-60 s and a load balancer probes every few seconds, so Flask's request
handling (tens of microseconds) is nothing beside what a scrape reads, and the routes get
Flask's error handling for free. A scrape sums every worker's counters (ca.metrics'
multiprocess files) and adds gauges read from the database by the scraping worker at that
moment: days until each CA, OCSP and TSA certificate expires, the age of each CA's newest CRL.
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

log = logging.getLogger("tincay")
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
    """WSGI middleware counting each request by endpoint and status and timing it."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        seen = ["500"]  # a response that never started is a failure

        def counted_start(status: str, headers: list, *exc_info: Any) -> Callable:
            seen[0] = status[:3]
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, counted_start)
        finally:
            metrics.http_request(endpoint_of(environ.get("PATH_INFO", "")), seen[0],
                                 time.perf_counter() - started)


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
    """One scrape's collectors: every worker's counters and this worker's database gauges."""

    def __init__(self, service: Any) -> None:
        self.gauges = _DatabaseGauges(service)

    def collect(self) -> Iterator[Any]:
        yield from metrics.collected()
        yield from self.gauges.collect()


@monitoring.get("/metrics")
def metrics_page() -> Response:
    service = current_app.extensions["tincay.service"]
    return Response(generate_latest(_Scrape(service)),  # type: ignore[arg-type]
                    mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Cache-Control": "no-store"})


@monitoring.get("/readyz")
def readyz() -> Response:
    """200 if this worker can serve (the database answers, the HSM signs with a service key),
    else 503; the JSON body names each check's outcome and which failed."""
    checks = {"database": _database_check(current_app.extensions["tincay.service"]),
              "hsm": _hsm_check(current_app.extensions)}
    failed = [name for name, outcome in checks.items() if outcome not in ("ok", "none")]
    return Response(json.dumps({"ready": not failed, "checks": checks, "failed": failed}) + "\n",
                    status=503 if failed else 200, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


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
