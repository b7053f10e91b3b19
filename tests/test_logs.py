"""Logs as JSON lines and /readyz's clock check (issue 22): cli/logs.py, web/metrics.py.

Under `tincay serve` for real (2 gunicorn workers, SoftHSM, SQLite and PostgreSQL): every
line of the server's output parses as JSON, no secret any service handled (PIN, OTP code and
seed, SAD, bearer token, client secret, HSM PIN) is in any line, a client's mistake leaves no
traceback, and requests are logged one event each only when TINCAY_ACCESS_LOG is on.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from werkzeug.test import Client

from ca.errors import ConfigurationError
from ca.settings import LogSettings, log_settings
from cli.logs import JsonFormatter
from tests.test_csc_http import PIN, SHA256, USER, Otp, post
from tests.test_http import TINCAY, _stamp, _timestamp_query, serve_demo
from tests.test_metrics import _scrape, _value
from tests.test_outages import _ocsp, _questions
from tsa.core import TimeStampResp
from web.metrics import Metered

ECDSA = "1.2.840.10045.2.1"
CLIENT = r"""
import json, sys
from cli.context import AppContext
app = AppContext()
try:
    added = app.service.clients.add(sys.argv[1], role="admin")
    grant = app.service.clients.grant(added.client.client_id, added.client_secret)
    print(json.dumps({"id": added.client.client_id, "secret": added.client_secret,
                      "token": grant.access_token}))
finally:
    app.close()
"""
CREDENTIAL = r"""
import json, sys
from cli.context import AppContext
app = AppContext()
try:
    info, uri = app.service.credentials.create(sys.argv[1], sys.argv[2], [sys.argv[3]],
                                               sys.argv[4])
    print(json.dumps({"id": info.credential_id, "uri": uri}))
finally:
    app.close()
"""


# --- the formatter and the settings -----------------------------------------------------------

def _record(message: str, *args: Any, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("tincay.test", logging.ERROR, __file__, 1, message, args,
                               exc_info)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_line_with_its_fields_and_its_traceback() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        failure = sys.exc_info()
    line = JsonFormatter().format(_record("Bệnh viện %s: %d", "Quận 11", 3, exc_info=failure,
                                          endpoint="tsa", status=503))
    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "Bệnh viện Quận 11: 3" and "Bệnh viện" in line  # not \\u-escaped
    assert (event["level"], event["logger"], event["pid"]) == ("error", "tincay.test",
                                                               os.getpid())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])
    assert (event["endpoint"], event["status"]) == ("tsa", 503)
    assert event["exception"].startswith("Traceback") and "ValueError: bad" in \
        event["exception"]
    assert not {"args", "msg", "exc_info", "levelno", "created"} & set(event)


def test_log_settings_and_their_errors() -> None:
    assert log_settings({}) == LogSettings("json", "info", False)
    assert log_settings({"TINCAY_LOG_FORMAT": "Text", "TINCAY_LOG_LEVEL": "warning",
                         "TINCAY_ACCESS_LOG": "on"}) == LogSettings("text", "warning", True)
    assert log_settings({"TINCAY_ACCESS_LOG": "off", "TINCAY_LOG_FORMAT": ""}).access is False
    for name, value in (("TINCAY_LOG_FORMAT", "xml"), ("TINCAY_LOG_LEVEL", "loud"),
                        ("TINCAY_ACCESS_LOG", "maybe")):
        with pytest.raises(ConfigurationError, match=f"^{name}: '{value}' is not "):
            log_settings({name: value})


def test_tincay_serve_refuses_a_bad_log_setting_with_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINCAY_")}
    env.update(TINCAY_HOME=str(tmp_path), TINCAY_ACCESS_LOG="sometimes")
    done = subprocess.run([TINCAY, "serve", "--port", "9613"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == "tincay: error: TINCAY_ACCESS_LOG: 'sometimes' is not on or off\n"


def _answering(status: str) -> Callable:
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if status == "raise":
            raise RuntimeError("a bug")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body"]
    return app


@pytest.mark.parametrize("status, access_log, logged", [
    ("200 OK", False, None), ("404 Not Found", False, None),
    ("503 Service Unavailable", False, None),  # an outage: its module logs it once
    ("500 Internal Server Error", False, logging.ERROR),
    ("200 OK", True, logging.INFO), ("503 Service Unavailable", True, logging.WARNING),
    ("500 Internal Server Error", True, logging.ERROR)])
def test_a_request_event_when_the_access_log_is_on_and_for_every_server_error(
        status: str, access_log: bool, logged: int | None,
        caplog: pytest.LogCaptureFixture) -> None:
    http = Client(Metered(_answering(status), access_log=access_log))
    with caplog.at_level(logging.INFO, logger="tincay.access"):
        reply = http.post("/csc/v2/credentials/authorize?client_secret=s3cr3t",
                          data=b'{"PIN": "hai"}', headers={"Authorization": "Bearer t0ken"},
                          environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert reply.status == status
    events = [r for r in caplog.records if r.name == "tincay.access"]
    if logged is None:
        assert events == []
        return
    [event] = events
    assert event.levelno == logged
    line = JsonFormatter().format(event)
    fields = json.loads(line)
    assert {k: fields[k] for k in ("event", "method", "path", "status", "endpoint", "remote",
                                   "client")} == {
        "event": "request", "method": "POST", "path": "/csc/v2/credentials/authorize",
        "status": int(status[:3]), "endpoint": "csc", "remote": "192.0.2.7", "client": None}
    assert fields["duration_ms"] >= 0
    assert fields["message"].startswith(f"POST /csc/v2/credentials/authorize {status[:3]} ")
    for secret in ("s3cr3t", "hai", "t0ken"):
        assert secret not in line


# --- under tincay serve -----------------------------------------------------------------------

def _lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the server's output, each of which must be a JSON object."""
    events = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(event, dict) and {"time", "level", "logger", "message",
                                            "pid"} <= set(event), line
        events.append(event)
    return events


def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.softhsm
def test_readyz_is_503_naming_the_clock_while_the_tsa_clock_is_out_of_sync(
        tmp_path: Path) -> None:
    """The TSA's clock check is a checker command (``test -e FLAG``, as tests/test_tsa_clock.py
    drives it): /readyz answers 503 naming the clock on every worker while it says out of
    sync, without its reason, and 200 once it says in sync again. The access log off (the
    default): no request events in the log, every line of which is JSON."""
    flag = tmp_path / "in-sync"
    flag.touch()
    env = {"TINCAY_TSA_CLOCK_CHECK": "command", "TINCAY_TSA_CLOCK_INTERVAL": "0s",
           "TINCAY_TSA_CLOCK_COMMAND": f"sh -c {shlex.quote(f'test -e {flag} || (echo no GPS fix >&2; exit 1)')}"}
    with serve_demo(tmp_path, env=env, maintenance=None) as (base, home, _):
        for _ in range(6):  # new connections each: over both workers
            assert _readyz(base) == (200, {"ready": True, "failed": [], "checks": {
                "database": "ok", "hsm": "ok", "clock": "ok"}})
        flag.unlink()
        for _ in range(6):
            status, body = _readyz(base)
            assert (status, body) == (503, {"ready": False, "failed": ["clock"], "checks": {
                "database": "ok", "hsm": "ok", "clock": "unsynchronised"}})
            assert _value(_scrape(base)[1], "tincay_ready", check="clock") == 0
        _, query = _timestamp_query(tmp_path)
        refused = TimeStampResp.load(_stamp(base, query))["status"]
        assert refused["fail_info"].native == {"time_not_available"}
        flag.touch()
        assert {_readyz(base)[0] for _ in range(6)} == {200}
        assert _value(_scrape(base)[1], "tincay_ready", check="clock") == 1
    events = _lines(tmp_path / "serve.log")
    assert not [e for e in events if e.get("event") == "request"]  # the access log is off
    out_of_sync = [e for e in events if "TSA clock out of sync" in e["message"]]
    assert out_of_sync and all(e["level"] == "error" and "no GPS fix" in e["message"]
                               for e in out_of_sync)  # the reason: in the log, not /readyz


def _python(env: dict[str, str], script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _form(url: str, fields: dict[str, str], basic: tuple[str, str] | None = None
          ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(),
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"})
    if basic is not None:
        pair = f"{basic[0]}:{basic[1]}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _every_service(base: str, env: dict[str, str], home: Path, tmp_path: Path
                   ) -> dict[str, str]:
    """Each service that handles a secret, with good and bad secrets: the token endpoint
    (Basic and form, a wrong secret), the CSC API (a wrong PIN, a wrong OTP, authorize,
    signHash, the SAD used up, an unknown token), the registration API (a good and a bad
    token), the TSA and OCSP (GET and POST). The secrets used, for the grep."""
    client = _python(env, CLIENT, "emr-q11")
    status, granted = _form(f"{base}/oauth2/token", {"grant_type": "client_credentials"},
                            basic=(client["id"], client["secret"]))
    assert status == 200, granted
    status, by_form = _form(f"{base}/csc/v2/oauth2/token", {
        "grant_type": "client_credentials", "client_id": client["id"],
        "client_secret": client["secret"]})
    assert status == 200, by_form
    wrong_secret = client["secret"][::-1]
    assert _form(f"{base}/oauth2/token", {"grant_type": "client_credentials"},
                 basic=(client["id"], wrong_secret))[0] == 401
    token = granted["access_token"]

    issued = subprocess.run(
        [TINCAY, "issue", "--ca", "issuing-ca", "--profile", "clinician", "--subject",
         f"C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID={USER}", "--generate-key",
         "--key-type", "ec-p256", "--out", str(tmp_path / "ec.pem"), "--json"],
        env=env, capture_output=True, text=True, timeout=180)
    assert issued.returncode == 0, issued.stderr
    credential = _python(env, CREDENTIAL, json.loads(issued.stdout)["serial"], USER,
                         "emr-q11", PIN)
    otp = Otp(credential["uri"])
    hashes = [base64.b64encode(bytes(range(32))).decode()]
    authorize = f"{base}/csc/v2/credentials/authorize"

    def asked(pin: str, code: str) -> tuple[int, Any]:
        status, _, body = post(authorize, {
            "credentialID": credential["id"], "numSignatures": 1, "hashes": hashes,
            "hashAlgorithmOID": SHA256,
            "authData": [{"id": "PIN", "value": pin}, {"id": "OTP", "value": code}]},
            token=token)
        return status, body

    wrong_pin, wrong_otp = PIN + "-sai", otp.next()
    assert asked(wrong_pin, wrong_otp)[0] == 400  # a wrong PIN
    wrong_code = f"{(int(otp.next()) + 500_000) % 1_000_000:06d}"
    assert asked(PIN, wrong_code)[0] == 400  # a wrong OTP
    good_otp = otp.next()
    status, auth = asked(PIN, good_otp)
    assert status == 200, auth
    sign = {"credentialID": credential["id"], "SAD": auth["SAD"], "hashes": hashes,
            "hashAlgorithmOID": SHA256, "signAlgo": ECDSA}
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token=token)[0] == 200
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token=token)[0] == 400
    assert post(f"{base}/csc/v2/signatures/signHash", sign, token=token[::-1])[0] == 401
    assert post(f"{base}/csc/v2/credentials/list", {}, token="garbled token")[0] == 401

    assert post(f"{base}/api/v1/cas", method="GET", token=token)[0] == 200
    assert post(f"{base}/api/v1/certificates?ca=issuing-ca", method="GET",
                token=by_form["access_token"])[0] == 200
    assert post(f"{base}/api/v1/cas", method="GET", token=token[:-4])[0] == 401

    _, query = _timestamp_query(tmp_path)
    assert TimeStampResp.load(_stamp(base, query))["status"]["status"].native == "granted"
    live, get = _questions(home, tmp_path)
    assert _ocsp(base, live, None) == _ocsp(base, None, get) == "successful"
    port = int(base.rsplit(":", 1)[1])
    for garbled in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                    b"Content-Length: 2\r\n\r\nab",  # two lengths: refused, logged
                    b"\x16\x03\x01 not HTTP at all\r\n\r\n"):  # a TLS hello on plain HTTP
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(garbled)
            assert sock.recv(4096).startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), garbled
    seed = urllib.parse.parse_qs(urllib.parse.urlparse(credential["uri"]).query)["secret"][0]
    hsm_pin = (home / "pkcs11-pin").read_text().splitlines()[0].strip()
    return {"PIN": PIN, "wrong PIN": wrong_pin, "OTP": good_otp, "wrong OTP": wrong_otp,
            "another wrong OTP": wrong_code, "OTP seed": seed, "SAD": auth["SAD"],
            "access token": token, "token by form": by_form["access_token"],
            "reversed token": token[::-1], "client secret": client["secret"],
            "wrong secret": wrong_secret, "HSM PIN": hsm_pin,
            "Basic credentials": base64.b64encode(
                f"{client['id']}:{client['secret']}".encode()).decode()}


@pytest.mark.softhsm
@pytest.mark.parametrize("worker_class, postgres", [
    ("gevent_pywsgi", False), pytest.param("gthread", True, marks=pytest.mark.postgres)])
def test_no_secret_in_any_log_line_and_one_event_per_request(
        worker_class: str, postgres: bool, tmp_path: Path) -> None:
    """`tincay serve` with JSON logs and the access log on, its maintenance process too,
    driven through every service that handles a secret, good and bad: the whole output is
    JSON lines, none holds a secret, none a traceback; each request is one event naming
    its endpoint, status and duration, and the client once it authenticated."""
    with serve_demo(tmp_path, worker_class, postgres=postgres,
                    env={"TINCAY_ACCESS_LOG": "on"}) as (base, home, env):
        secrets = _every_service(base, env, home, tmp_path)
    log = (tmp_path / "serve.log").read_text()
    events = _lines(tmp_path / "serve.log")
    for name, secret in secrets.items():
        if secret.isdigit():  # an OTP code: six digits, as a number of its own
            found = [e for e in events
                     if re.search(rf"(?<![\d.]){secret}(?!\d)",
                                  json.dumps({k: v for k, v in e.items() if k != "pid"},
                                             ensure_ascii=False))]
            assert not found, (name, found)
        else:
            assert secret not in log, name
    assert "Traceback" not in log and "Bearer" not in log and "authData" not in log
    requests = [e for e in events if e.get("event") == "request"]
    assert all(e["level"] == "info" and e["logger"] == "tincay.access" for e in requests)
    seen = {(e["method"], e["path"], e["status"]) for e in requests}
    for expected in [("POST", "/oauth2/token", 200), ("POST", "/oauth2/token", 401),
                     ("POST", "/csc/v2/oauth2/token", 200),
                     ("POST", "/csc/v2/credentials/authorize", 200),
                     ("POST", "/csc/v2/credentials/authorize", 400),
                     ("POST", "/csc/v2/signatures/signHash", 200),
                     ("POST", "/csc/v2/signatures/signHash", 401),
                     ("GET", "/api/v1/cas", 200), ("GET", "/api/v1/cas", 401),
                     ("GET", "/api/v1/certificates", 200),  # no query string
                     ("POST", "/tsa", 200), ("POST", "/ocsp", 200), ("GET", "/healthz", 200)]:
        assert expected in seen, (expected, sorted(seen))
    assert any(path.startswith("/ocsp/M") for _, path, _ in seen)  # the GET's base64 request
    endpoints = {e["endpoint"] for e in requests}
    assert {"oauth", "csc", "api", "tsa", "ocsp", "other"} <= endpoints
    for event in requests:
        assert isinstance(event["duration_ms"], float) and event["duration_ms"] >= 0
        assert event["remote"] == "127.0.0.1"
    authorized = {e["client"] for e in requests
                  if e["path"] in ("/api/v1/cas", "/csc/v2/credentials/authorize",
                                   "/oauth2/token") and e["status"] == 200}
    assert len(authorized) == 1 and None not in authorized  # one client, named by its id
    assert all(e["client"] is None for e in requests if e["status"] == 401)
    assert {e["pid"] for e in requests} - {e["pid"] for e in events
                                           if "Booting worker" in e["message"]} == set()
    assert any("maintenance every" in e["message"] for e in events)  # its process too
    if worker_class == "gevent_pywsgi":  # gevent's error stream, a line of the log too
        assert any(e["logger"] == "tincay.http" and e["level"] == "warning" and
                   e["message"].startswith("(from ") and "refused" in e["message"]
                   for e in events), log
