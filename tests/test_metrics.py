"""Metrics and health for real: `tincay serve` with 2 gunicorn workers on loopback (SoftHSM,
SQLite and PostgreSQL), OCSP, TSA and CSC traffic, then ``/metrics`` parsed by
prometheus_client's own parser and ``/readyz`` through a database outage.

Every scrape lands on one worker; only the multiprocess files make each one show the whole
server's counts, so each scrape here must show exactly what the test sent, over both workers.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.test_csc_http import HELPER, PIN, SHA256, USER, Otp, post
from tests.conftest import connections_refused
from tests.test_http import TINCAY, _stamp, _timestamp_query, served_demo  # noqa: F401
from tests.test_outages import _ocsp, _questions
from tsa.core import TimeStampResp

Served = tuple[str, Path, dict[str, str]]
ECDSA = "1.2.840.10045.2.1"
DATES = r"""
import json
from cli.context import AppContext
app = AppContext()
try:
    units = app.service.listings.list_service_units()
    cas = app.service.listings.list_authorities()
    print(json.dumps([["ca", a["name"], a["not_after"].isoformat()] for a in cas] +
                     [[u["kind"], u["name"], u["not_after"].isoformat()] for u in units]))
finally:
    app.close()
"""


def _python(env: dict[str, str], script: str, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _scrape(base: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """/metrics as text and as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return text, samples


def _value(samples: dict, sample: str, **labels: str) -> float:
    return samples.get((sample, tuple(sorted(labels.items()))), 0.0)


def _signatures(base: str, env: dict[str, str], home: Path) -> dict[str, str]:
    """A client, a clinician credential on the HSM and one signHash granted, then two refused
    (the SAD used up; an unknown bearer token): the secrets used, for the grep."""
    token = _python(env, HELPER, json.dumps({"do": "client", "name": "emr-q11"}))["token"]
    issued = subprocess.run(
        [TINCAY, "issue", "--ca", "issuing-ca", "--profile", "clinician", "--subject",
         f"C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID={USER}", "--generate-key",
         "--key-type", "ec-p256", "--out", str(home.parent / "ec.pem"), "--json"],
        env=env, capture_output=True, text=True, timeout=180)
    assert issued.returncode == 0, issued.stderr
    credential = _python(env, HELPER, json.dumps({
        "do": "credential", "serial": json.loads(issued.stdout)["serial"], "user": USER,
        "clients": ["emr-q11"], "pin": PIN}))
    otp = Otp(credential["uri"]).next()
    hashes = [base64.b64encode(bytes(range(32))).decode()]
    status, _, auth = post(f"{base}/csc/v2/credentials/authorize", {
        "credentialID": credential["id"], "numSignatures": 1, "hashes": hashes,
        "hashAlgorithmOID": SHA256,
        "authData": [{"id": "PIN", "value": PIN}, {"id": "OTP", "value": otp}]}, token=token)
    assert status == 200, auth
    sign = {"credentialID": credential["id"], "SAD": auth["SAD"], "hashes": hashes,
            "hashAlgorithmOID": SHA256, "signAlgo": ECDSA}
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token=token)[0] == 200
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token=token)[2]["error"] == \
        "invalid_request"  # the SAD is used up
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token="no-such-token")[2][
        "error"] == "invalid_token"
    return {"PIN": PIN, "OTP": otp, "SAD": auth["SAD"], "token": token}


def _worker_files(tmp: Path) -> set[str]:
    """The pids whose counter files are in the server's metrics directory."""
    [directory] = tmp.glob("tincay-metrics-*")
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}


@pytest.fixture(autouse=True)
def _server_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's temporary files (its metrics directory) under ``tmp_path/tmp``: autouse,
    so set before served_demo copies the environment."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


@pytest.mark.softhsm
@pytest.mark.parametrize("served_demo", [  # both worker classes, each database
    "gevent_pywsgi", "gthread", pytest.param("gevent_pywsgi+postgres", marks=pytest.mark.postgres)],
    indirect=True)
def test_metrics_sum_the_workers_counts_and_read_the_expiry_dates(
        served_demo: Served, tmp_path: Path) -> None:
    base, home, env = served_demo
    live, get = _questions(home, tmp_path)
    deadline = time.monotonic() + 30  # the maintenance process pre-produces within a second
    while True:
        _, before = _scrape(base)
        if _value(before, "tincay_ocsp_answers_total", answer="preproduced"):
            break
        assert time.monotonic() < deadline
        _ocsp(base, None, get)
        time.sleep(0.5)
    _, query = _timestamp_query(tmp_path)
    secrets = _signatures(base, env, home)
    for _ in range(12):  # a new connection each: the kernel spreads them over both workers
        assert _ocsp(base, None, get) == "successful"  # pre-produced
        assert _ocsp(base, live, None) == "successful"  # a nonce: signed live
        assert TimeStampResp.load(_stamp(base, query))["status"]["status"].native == "granted"
    garbled = TimeStampResp.load(_post_tsa(base, b"\x30\x03\x02\x01\x07"))
    assert garbled["status"]["status"].native == "rejection"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/crl/no-such-ca.crl", timeout=10)
    assert missing.value.code == 404

    dates = {(kind, name): dt.datetime.fromisoformat(when)
             for kind, name, when in _python(env, DATES)}
    assert {kind for kind, _ in dates} == {"ca", "ocsp", "tsa"}, dates
    for _ in range(6):  # scrapes over both workers: each shows the whole server's counts
        text, after = _scrape(base)
        now = dt.datetime.now(dt.timezone.utc)

        def grew(sample: str, **labels: str) -> float:
            return _value(after, sample, **labels) - _value(before, sample, **labels)

        assert grew("tincay_ocsp_answers_total", answer="preproduced") == 12
        assert grew("tincay_ocsp_answers_total", answer="signed") == 12
        assert grew("tincay_tsa_tokens_total", outcome="granted", reason="") == 12
        assert grew("tincay_tsa_tokens_total", outcome="refused", reason="badDataFormat") == 1
        assert _value(after, "tincay_csc_signatures_total", outcome="granted", reason="") == 1
        for reason in ("invalid_request", "invalid_token"):
            assert _value(after, "tincay_csc_signatures_total", outcome="refused",
                          reason=reason) == 1
        assert grew("tincay_http_requests_total", endpoint="ocsp", status="200") == 24
        assert grew("tincay_http_requests_total", endpoint="tsa", status="200") == 13
        assert grew("tincay_http_requests_total", endpoint="repository", status="404") == 1
        assert _value(after, "tincay_http_requests_total", endpoint="csc", status="200") >= 2
        assert grew("tincay_http_request_duration_seconds_count", endpoint="tsa") == 13
        assert grew("tincay_token_log_batch_size_sum") == 12  # every granted token, committed
        assert grew("tincay_token_log_commit_seconds_count") >= 1
        assert _value(after, "tincay_database_up") == 1
        for (kind, name), not_after in dates.items():
            days = _value(after, "tincay_certificate_expiry_days", kind=kind, name=name)
            assert abs(days - (not_after - now).total_seconds() / 86400) < 0.01, (kind, name)
        for ca in ("root-ca", "issuing-ca"):
            with urllib.request.urlopen(f"{base}/crl/{ca}.crl", timeout=10) as reply:
                crl = x509.load_der_x509_crl(reply.read())
            age = _value(after, "tincay_crl_age_seconds", ca=ca)
            assert abs(age - (now - crl.last_update_utc).total_seconds()) < 5, (ca, age)
        for name, secret in secrets.items():
            assert secret not in text, name
    assert len(_worker_files(tmp_path / "tmp")) >= 2  # both workers counted, in their files

    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as reply:
        assert reply.status == 200
        assert json.loads(reply.read()) == {"ready": True, "failed": [], "checks": {
            "database": "ok", "hsm": "ok"}}
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as reply:
        assert reply.read() == b"ok\n"


def _post_tsa(base: str, body: bytes) -> bytes:
    request = urllib.request.Request(f"{base}/tsa", data=body, method="POST",
                                     headers={"Content-Type": "application/timestamp-query"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.read()


def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        assert exc.code == 503, body
        return exc.code, json.loads(body)


@pytest.mark.softhsm
@pytest.mark.postgres
@pytest.mark.parametrize("served_demo", ["gevent_pywsgi+postgres"], indirect=True)
def test_readyz_is_503_naming_the_database_while_it_is_unreachable(served_demo: Served) -> None:
    """PostgreSQL refuses the CA database's connections (tests/test_outages.py's outage): every
    worker's /readyz answers 503 naming the database check, /metrics still answers (the
    counters, tincay_database_up 0, no expiry gauges); connections allowed again, 200."""
    from sqlalchemy.engine import make_url

    base, home, env = served_demo
    assert {_readyz(base)[0] for _ in range(6)} == {200}
    password = make_url(env["TINCAY_DATABASE_URL"]).password
    with connections_refused(env["TINCAY_DATABASE_URL"]):
        for _ in range(6):  # new connections each, over both workers
            status, body = _readyz(base)
            assert status == 503 and body["failed"] == ["database"], body
            assert body["checks"] == {"database": "unreachable", "hsm": "ok"}, body
            assert password is None or password not in json.dumps(body)
            _, samples = _scrape(base)
            assert _value(samples, "tincay_database_up") == 0
            assert not any(name == "tincay_certificate_expiry_days" for name, _ in samples)
    deadline = time.monotonic() + 30
    while {_readyz(base)[0] for _ in range(6)} != {200}:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def _summed(samples: dict, sample: str) -> float:
    """A sample summed over its label values (the HSM metrics' token label)."""
    return sum(value for (name, _), value in samples.items() if name == sample)


@pytest.mark.softhsm
def test_readyz_names_the_hsm_while_the_token_is_gone_and_its_errors_are_counted(
        served_demo: Served, tmp_path: Path) -> None:
    """The SoftHSM token's storage moved away under the running server (as a network HSM's
    link goes down): /readyz answers 503 naming the HSM check on every worker, time-stamps are
    refused (systemFailure, counted), HSM errors are counted; the token back, /readyz is 200
    again and the re-opened sessions are counted as reconnects."""
    base, home, env = served_demo
    _, query = _timestamp_query(tmp_path)
    assert TimeStampResp.load(_stamp(base, query))["status"]["status"].native == "granted"
    _, before = _scrape(base)
    tokens = home / "softhsm" / "tokens"
    away = tokens.with_name("tokens.away")
    tokens.rename(away)
    try:
        for _ in range(6):  # new connections each, over both workers
            status, body = _readyz(base)
            assert status == 503 and body == {"ready": False, "failed": ["hsm"], "checks": {
                "database": "ok", "hsm": "unavailable"}}, body
            assert TimeStampResp.load(_stamp(base, query))["status"]["status"].native == \
                "rejection"
    finally:
        away.rename(tokens)
    _, during = _scrape(base)
    # a lost session in each worker that served one of the six (the kernel picks the worker:
    # under load one may take them all)
    assert _summed(during, "tincay_hsm_errors_total") >= 1
    assert _value(during, "tincay_tsa_tokens_total", outcome="refused",
                  reason="systemFailure") - _value(before, "tincay_tsa_tokens_total",
                                                   outcome="refused", reason="systemFailure") \
        == 6
    deadline = time.monotonic() + 30
    while {_readyz(base)[0] for _ in range(6)} != {200}:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    _, after = _scrape(base)
    assert _summed(after, "tincay_hsm_reconnects_total") >= 1  # and signed again
