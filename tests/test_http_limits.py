"""`tincay serve` against hostile HTTP clients, on loopback: thousands of slow connections must
not stop other clients (deadlines on the request line and headers, the body, idle keep-alive;
a connection cap above what they hold), and an ambiguous message framing is refused with one
400 and a closed connection, never read as a second request (request smuggling)."""
from __future__ import annotations

import base64
import http.client
import os
import resource
import selectors
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca.errors import ConfigurationError
from cli.http_limits import HttpLimits, framing_refusal
from tests.test_http import TINCAY, served_demo  # noqa: F401 - the fixture

SLOW_CLIENTS = 2100  # gunicorn's default cap was 1,000 connections per worker, for 2 workers
HEADER_TIMEOUT = HttpLimits().header_timeout
SLACK = 3.0  # seconds beside a deadline: a loaded 2-core machine, a 1-s arbiter tick


@pytest.mark.parametrize("version, headers, refusal", [
    ("HTTP/1.1", [("Content-Length", "12")], None),
    ("HTTP/1.1", [("Transfer-Encoding", "chunked")], None),
    ("HTTP/1.1", [("transfer-encoding", " Chunked ")], None),
    ("HTTP/1.0", [("Content-Length", "0")], None),
    ("HTTP/1.1", [("Content-Length", "4"), ("Content-Length", "38")], 400),
    ("HTTP/1.1", [("Content-Length", "4"), ("content-length", "4")], 400),
    ("HTTP/1.1", [("Content-Length", "4, 4")], 400),
    ("HTTP/1.1", [("Content-Length", "+4")], 400),
    ("HTTP/1.1", [("Content-Length", "4_0")], 400),  # int() would read 40
    ("HTTP/1.1", [("Content-Length", "٤")], 400),  # an Arabic-Indic 4: isdigit() says yes
    ("HTTP/1.1", [("Content-Length", "4"), ("Transfer-Encoding", "chunked")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "chunked"), ("Content-Length", "4")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "chunked, gzip")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "xchunked")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "gzip, chunked")], 501),
    ("HTTP/1.0", [("Transfer-Encoding", "chunked")], 400),
    ("HTTP/1.1", [("Transfer-Encoding", "\r\n chunked")], 400),  # folded over two lines
])
def test_framing_refusals(version: str, headers: list[tuple[str, str]],
                          refusal: int | None) -> None:
    def values(name: str) -> list[str] | None:  # as email.message's get_all gives them
        return [value for key, value in headers if key.lower() == name] or None

    found = framing_refusal(version, values("content-length"), values("transfer-encoding"))
    assert (found and found[0]) == refusal, found


def test_limits_from_the_environment() -> None:
    assert HttpLimits.from_env({}) == HttpLimits(10.0, 10.0, 5.0, 4096)
    assert HttpLimits.from_env({"TINCAY_HTTP_HEADER_TIMEOUT": "3s", "TINCAY_HTTP_KEEPALIVE": "",
                                "TINCAY_HTTP_BODY_TIMEOUT": "1m",
                                "TINCAY_HTTP_CONNECTIONS": "9000"}) == HttpLimits(3, 60, 5, 9000)
    for name, value in (("TINCAY_HTTP_HEADER_TIMEOUT", "10"), ("TINCAY_HTTP_KEEPALIVE", "0s"),
                        ("TINCAY_HTTP_CONNECTIONS", "lots"), ("TINCAY_HTTP_CONNECTIONS", "0")):
        with pytest.raises(ConfigurationError, match=name):
            HttpLimits.from_env({name: value})
    with pytest.raises(ConfigurationError, match="^TINCAY_HTTP_BODY_TIMEOUT: must be longer than 0s$"):
        HttpLimits.from_env({"TINCAY_HTTP_BODY_TIMEOUT": "0s"})


def _raise_own_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"this test holds {needed} sockets; ulimit -n is lower")


def _ocsp_request(tmp_path: Path, home: Path, env: dict[str, str]) -> bytes:
    """An OCSP request for a leaf `tincay issue` made, which stored its pre-produced answer."""
    leaf = tmp_path / "leaf.pem"
    subprocess.run([TINCAY, "issue", "--ca", "issuing-ca", "--profile", "clinician",
                    "--subject", "C=VN, O=BV Q11, CN=Nguyễn Văn A, UID=CCCD:079073009568",
                    "--generate-key", "--key-type", "ec-p256", "--out", str(leaf)],
                   env=env, check=True, capture_output=True, timeout=120)
    issuer = x509.load_pem_x509_certificate((home / "public/issuing-ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build() \
        .public_bytes(serialization.Encoding.DER)


class SlowClients(threading.Thread):
    """``count`` connections, half sending a header byte every ~3 s and half nothing; each
    one the server closes is opened again (as an attacker would), and how long the server
    kept it is recorded."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.selector = selectors.DefaultSelector()
        self.lifetimes: list[tuple[bool, float]] = []  # (trickling, seconds held)
        self.stop = threading.Event()
        self.errors: list[str] = []

    def open(self, trickling: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        state = {"trickling": trickling, "opened": time.monotonic(), "sent": 0,
                 "next": time.monotonic() + (hash(sock) % 3000) / 1000}
        self.selector.register(sock, selectors.EVENT_READ, state)

    def run(self) -> None:
        try:
            for index in range(self.count):
                self.open(index % 2 == 0)
            header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
            while not self.stop.is_set():
                for key, _ in self.selector.select(timeout=0.2):
                    try:
                        data = key.fileobj.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # closed by the server (after a 408, or silently)
                        self.selector.unregister(key.fileobj)
                        key.fileobj.close()
                        state = key.data
                        self.lifetimes.append((state["trickling"],
                                               time.monotonic() - state["opened"]))
                        self.open(state["trickling"])
                now = time.monotonic()
                for key in list(self.selector.get_map().values()):
                    state = key.data
                    if state["trickling"] and now >= state["next"]:
                        try:
                            key.fileobj.send(header[state["sent"]:state["sent"] + 1])
                            state["sent"] += 1
                        except OSError:
                            pass  # closed: the selector reports it
                        state["next"] = now + 3
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))
        finally:
            for key in list(self.selector.get_map().values()):
                key.fileobj.close()


BOTH_WORKERS = pytest.mark.parametrize("served_demo", ["gevent_pywsgi", "gthread"], indirect=True)


@pytest.mark.softhsm
@BOTH_WORKERS
def test_slow_clients_do_not_stop_other_clients(
        served_demo: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    """2,100 connections against 2 workers, half trickling a header byte every 3 s and half
    silent, held for 18 s (reopened when closed): a probe client meanwhile gets every OCSP
    answer, the pre-produced GET and a POST, within 2 s on a new connection each; every slow
    connection is closed by the header deadline, trickling or not. Before, with no deadline
    and 1,000 connections per worker, the probe's connections were not even accepted (gevent),
    or waited behind slow clients holding every thread (gthread)."""
    base, home, env = served_demo
    port = int(base.rsplit(":", 1)[1])
    _raise_own_files_limit(SLOW_CLIENTS + 512)
    der = _ocsp_request(tmp_path, home, env)
    get_path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
    slow = SlowClients(port, SLOW_CLIENTS)
    slow.start()
    try:
        time.sleep(2)  # all connected (kernel backlog or accepted)
        asked, deadline = 0, time.monotonic() + 18
        while time.monotonic() < deadline:
            for method, path, body in (("GET", get_path, None), ("POST", "/ocsp", der)):
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    probe.request(method, path, body=body,
                                  headers={"Content-Type": "application/ocsp-request"})
                    reply = probe.getresponse()
                    answer = ocsp.load_der_ocsp_response(reply.read())
                finally:
                    probe.close()
                assert reply.status == 200
                assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
                assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
                asked += 1
            time.sleep(0.2)
    finally:
        slow.stop.set()
        slow.join(timeout=30)
    assert not slow.errors, slow.errors
    assert asked >= 20
    trickled = [held for trickling, held in slow.lifetimes if trickling]
    silent = [held for trickling, held in slow.lifetimes if not trickling]
    # every slow connection was opened in the first 2 s, so each was closed at least once
    assert len(trickled) >= SLOW_CLIENTS // 2 and len(silent) >= SLOW_CLIENTS // 2
    assert max(trickled + silent) < HEADER_TIMEOUT + SLACK, max(trickled + silent)
    log = (home.parent / "serve.log").read_text()
    assert "Traceback" not in log and "4096 connections per worker" in log


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``limit`` seconds pass), and when."""
    sock.settimeout(limit)
    started, received = time.monotonic(), b""
    try:
        while data := sock.recv(65536):
            received += data
    except (TimeoutError, ConnectionResetError):
        pass
    return received, time.monotonic() - started


@pytest.mark.softhsm
@BOTH_WORKERS
def test_idle_keepalive_and_slow_bodies_are_closed(
        served_demo: tuple[str, Path, dict[str, str]], request: pytest.FixtureRequest) -> None:
    """A kept-alive connection left idle after its answers (two pipelined requests) is closed
    by the keep-alive bound (5 s), and a POST whose body stops coming is closed by the body
    bound (10 s), after a 400 from gevent's workers: checked on both at once."""
    base, _, _ = served_demo
    limits = HttpLimits()
    idle = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    slow_body = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
    slow_body.sendall(b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      b"application/ocsp-request\r\nContent-Length: 100\r\n\r\n0\x62")
    results: dict[str, tuple[bytes, float]] = {}
    waiting = [threading.Thread(target=lambda name=name, sock=sock: results.__setitem__(
        name, _read_until_closed(sock, 30))) for name, sock in (("idle", idle),
                                                               ("body", slow_body))]
    for thread in waiting:
        thread.start()
    for thread in waiting:
        thread.join()
    idle.close()
    slow_body.close()
    answered, held = results["idle"]
    assert answered.count(b"HTTP/1.1 200 OK") == 2 and answered.endswith(b"ok\n"), answered
    assert limits.keepalive - 0.5 < held < limits.keepalive + SLACK, held
    answered, held = results["body"]
    if request.node.callspec.params["served_demo"] == "gevent_pywsgi":
        assert answered.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answered
    else:  # gathered in the worker's main loop: no thread ever saw it
        assert answered == b""
    assert limits.body_timeout - 0.5 < held < limits.body_timeout + SLACK, held


@pytest.mark.softhsm
def test_every_wait_between_requests_gets_the_whole_keepalive_bound(
        served_demo: tuple[str, Path, dict[str, str]]) -> None:
    """A kept-alive connection pausing 0.4x the keep-alive bound before each of its requests
    stays open past the bound's total: each wait is bounded, not their sum. (gevent resumes a
    cancelled timer with the time it had left; one Timeout re-started per request closed busy
    connections after 5 s of waits in all: wrk -c32 saw each dropped once per 5-6 s.)"""
    base, _, _ = served_demo
    pause = HttpLimits().keepalive * 0.4
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as conn:
        conn.settimeout(10)
        for number in range(5):  # 1.6x the bound of waits in all, before the last request
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok\n"):
                data = conn.recv(65536)
                assert data, f"closed before answer {number + 1} ({len(answer)} bytes read)"
                answer += data
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer
            time.sleep(pause)


CHUNK = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # the smuggled second request
SMUGGLED = {
    # a proxy that frames by Content-Length forwards one request; chunked, the GET is a second
    "length and chunked": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/ocsp-request\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n" % (5 + len(CHUNK)) + CHUNK,
    "chunked and length": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: "
    b"chunked\r\nContent-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n"
    b"0\r\n\r\n" % (5 + len(CHUNK)) + CHUNK,
    # the first length frames an empty body here, the second one a body holding the GET
    "two lengths": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/ocsp-request\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
    % len(CHUNK) + CHUNK,
    "two equal lengths": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/ocsp-request\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" + CHUNK,
    "chunked, gzip": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/ocsp-request\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + CHUNK,
    "xchunked": b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/ocsp-request\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + CHUNK,
}


@pytest.mark.softhsm
@BOTH_WORKERS
def test_ambiguous_framing_is_refused_and_the_connection_closed(
        served_demo: tuple[str, Path, dict[str, str]]) -> None:
    """Each smuggling primitive, on a raw connection: exactly one response, a 400 (or 501),
    then the server closes; the GET hidden behind it is never answered."""
    base, home, _ = served_demo
    for name, request in SMUGGLED.items():
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
            sock.sendall(request)
            received, _ = _read_until_closed(sock, 10)
        assert received.count(b"HTTP/1.1 ") == 1, (name, received)
        assert received.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 501 ")), (name, received)
        assert b"ok\n" not in received, (name, received)
    assert "Traceback" not in (home.parent / "serve.log").read_text()


def test_a_bad_limit_stops_serve_before_it_starts(tmp_path: Path) -> None:
    """A mistyped TINCAY_HTTP_* variable is one error line naming it, before anything runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINCAY_")}
    env.update(TINCAY_HOME=str(tmp_path / "home"), TINCAY_HTTP_HEADER_TIMEOUT="soon")
    served = subprocess.run([TINCAY, "serve", "--port", "1"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert served.returncode == 1, served.stdout + served.stderr
    assert "TINCAY_HTTP_HEADER_TIMEOUT: 'soon' is not a duration" in served.stderr
    assert "serving on" not in served.stdout + served.stderr
    assert not (tmp_path / "home").exists()  # no database created either
