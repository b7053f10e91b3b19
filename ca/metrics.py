"""The process's Prometheus metrics (prometheus_client): what the services count as they work.

The counters live here, in the core, because the events they count happen in the core and
the protocol cores (an HSM session lost, a token-log commit, an OCSP answer signed live)
below the web layer; web/metrics.py serves them at ``/metrics`` with the gauges it computes
from the database at scrape time.

Under ``tincay serve`` every gunicorn worker counts in its own files of one directory
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), which the scraping
worker sums: a scrape lands on one worker, and its own counts alone would be a fraction that
jumps about. prometheus_client picks its value store when a metric is made, so the metrics
are made on first use in a process (:func:`metrics`), after :func:`use_directory` (called by
cli/serve.py in the arbiter, before the fork) had its say; a process that never serves never
makes them.

Counting must cost the hot paths little: each label combination's child is looked up once
and kept (:meth:`Metrics.child`), so a count is a dictionary hit and one locked add.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client import multiprocess

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# HTTP latency: a pre-produced OCSP answer takes ~0.1 ms, a TSA token ~0.5 ms, a commit queued
# behind an fsync some ms; a request past a second is trouble whatever it was
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # GroupCommitter's max_batch is 256
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 5.0)


class Metrics:
    """Every metric tincay counts, registered in one registry of this process."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "tincay_http_requests", "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"], registry=registry)
        self.latency = Histogram(
            "tincay_http_request_duration_seconds", "Time to answer an HTTP request",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.ocsp_answers = Counter(
            "tincay_ocsp_answers", "OCSP answers: pre-produced, signed live, or an error "
            "status (malformed, unauthorized, try_later, internal_error)", ["answer"],
            registry=registry)
        self.tsa_tokens = Counter(
            "tincay_tsa_tokens", "Time-stamp requests granted, and refused by failInfo or "
            "token-log failure", ["outcome", "reason"], registry=registry)
        self.csc_signatures = Counter(
            "tincay_csc_signatures", "CSC signHash calls granted, and refused by error code",
            ["outcome", "reason"], registry=registry)
        self.hsm_errors = Counter(
            "tincay_hsm_errors", "PKCS#11 token failures (lost token, session failure)",
            ["token"], registry=registry)
        self.hsm_reconnects = Counter(
            "tincay_hsm_reconnects", "Sessions re-opened on a PKCS#11 token after it was lost",
            ["token"], registry=registry)
        self.key_unwraps = Counter(
            "tincay_subscriber_key_unwraps", "Wrapped subscriber keys unwrapped into the HSM "
            "to sign: keys not in the process's cache (TINCAY_KEY_CACHE) when they signed",
            registry=registry)
        self.token_log_batch = Histogram(
            "tincay_token_log_batch_size", "Time-stamp tokens committed per token-log "
            "transaction", buckets=BATCH_BUCKETS, registry=registry)
        self.token_log_commit = Histogram(
            "tincay_token_log_commit_seconds", "Time a token-log transaction took",
            buckets=COMMIT_BUCKETS, registry=registry)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: the hot paths count without building it again."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


_current: Metrics | None = None
_made = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, made on first use."""
    global _current
    current = _current
    if current is None:
        with _made:
            if _current is None:
                _current = Metrics()
            current = _current
    return current


def use_directory(directory: str) -> None:
    """Count in prometheus_client's multiprocess files under ``directory`` from now on, in
    this process and the processes it forks or starts (the variable is inherited)."""
    global _current
    os.environ[MULTIPROC_VARIABLE] = directory
    values.ValueClass = values.get_value_class()
    with _made:
        _current = None  # any made before counted in memory: made again, in the files


def multiprocess_directory() -> str | None:
    """The multiprocess directory this process counts in, if any."""
    return os.environ.get(MULTIPROC_VARIABLE) or None


def collected() -> Iterable[Any]:
    """Every metric family: summed over every process's files in multiprocess mode, else
    this process's own."""
    directory = multiprocess_directory()
    if directory is None:
        return metrics().registry.collect()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry.collect()


def process_exited(pid: int) -> None:
    """A worker exited (gunicorn's child_exit): its live gauges' files go; its counters stay
    in the sums, as counters must not go back."""
    directory = multiprocess_directory()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)


# --- what the services count --------------------------------------------------------------

def ocsp_answer(kind: str) -> None:
    """An OCSP answer: "preproduced", "signed", or the error status sent."""
    m = metrics()
    m.child(m.ocsp_answers, kind).inc()


def tsa_token(outcome: str, reason: str = "") -> None:
    """A time-stamp request "granted" or "refused" (``reason``: the failInfo or log failure)."""
    m = metrics()
    m.child(m.tsa_tokens, outcome, reason).inc()


def csc_signature(outcome: str, reason: str = "") -> None:
    """A signHash call "granted" or "refused" (``reason``: the CSC error code)."""
    m = metrics()
    m.child(m.csc_signatures, outcome, reason).inc()


def hsm_error(token: str) -> None:
    m = metrics()
    m.child(m.hsm_errors, token).inc()


def hsm_reconnect(token: str) -> None:
    m = metrics()
    m.child(m.hsm_reconnects, token).inc()


def subscriber_key_unwrap() -> None:
    """A wrapped subscriber key unwrapped into the HSM: ahead of an authorisation's
    signatures (here or named by another worker, ca.services.key_peers), or a cold key at a
    signature (evicted, never used in this process, or its session lost)."""
    metrics().key_unwraps.inc()


def token_log_commit(batch: int, seconds: float) -> None:
    """One token-log transaction of ``batch`` tokens that took ``seconds``."""
    m = metrics()
    m.token_log_batch.observe(batch)
    m.token_log_commit.observe(seconds)


def http_request(endpoint: str, status: str, seconds: float) -> None:
    """One HTTP request answered (web/metrics.py's middleware)."""
    m = metrics()
    m.child(m.requests, endpoint, status).inc()
    m.child(m.latency, endpoint).observe(seconds)
