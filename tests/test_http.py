"""The HTTP app: the repository endpoints through Flask's client, and `tincay serve` for real
under gunicorn on loopback (the demo hierarchy `make run` serves)."""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from ca.clock import FrozenClock
from ca.keys.memory import MemoryBackend
from ca.profiles import load_profiles
from ca.hierarchy import load_hierarchy
from ca.services import CertificateAuthority
from ca.store.db import create_engine_for, make_session_factory, migrate
from web.app import create_app
from tests.conftest import postgres_database
from ca.der import tlv
from tsa.core import TimeStampResp

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)
TINCAY = str(Path(sys.executable).parent / "tincay")


@pytest.fixture
def client(tmp_path: Path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    migrate(engine)
    profiles = load_profiles(ROOT / "profiles")
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(), profiles,
                                          FrozenClock(NOW), "http://127.0.0.1:8080")
    service.authorities.init_hierarchy(load_hierarchy(ROOT / "profiles/hierarchies/demo.yaml", profiles))
    app = create_app(service)
    yield app.test_client(), service
    engine.dispose()


def test_ca_certificates_with_cache_headers(client) -> None:
    http, service = client
    response = http.get("/certs/issuing-ca.cer")
    assert response.status_code == 200 and response.mimetype == "application/pkix-cert"
    cert = x509.load_der_x509_certificate(response.data)
    assert cert == service.authorities.authority_certificate("issuing-ca")
    assert response.cache_control.max_age == 3600 and response.headers["ETag"]
    assert response.expires == NOW + dt.timedelta(hours=1)
    assert response.last_modified == cert.not_valid_before_utc
    again = http.get("/certs/issuing-ca.cer", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize("path, status", [
    ("/certs/nope.cer", 404), ("/certs/..%2Fetc.cer", 404), ("/certs/issuing-ca.pem", 404),
    ("/nowhere", 404),
])
def test_unknown_paths_are_plain_404s(client, path: str, status: int) -> None:
    http, _ = client
    response = http.get(path)
    assert response.status_code == status and b"Traceback" not in response.data


def test_wrong_method_is_405(client) -> None:
    http, _ = client
    assert http.post("/certs/issuing-ca.cer", data=b"x").status_code == 405


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_demo(request: pytest.FixtureRequest, tmp_path: Path
                ) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """The demo hierarchy under ``tincay serve``: gevent workers and SQLite, the defaults,
    unless the test asks (``indirect`` parametrization) for "gthread" workers or for
    "gevent_pywsgi+postgres", a database on the test PostgreSQL server."""
    worker_class, _, database = getattr(request, "param", "gevent_pywsgi").partition("+")
    with serve_demo(tmp_path, worker_class, postgres=database == "postgres") as served:
        yield served


@contextlib.contextmanager
def serve_demo(tmp_path: Path, worker_class: str = "gevent_pywsgi", *, postgres: bool = False,
               env: dict[str, str] | None = None, maintenance: str | None = "1s",
               ) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`tincay demo` then `tincay serve --workers 2` on a free port, its stdout and stderr in
    ``tmp_path/serve.log``; ``env`` adds variables (TINCAY_TSA_CLOCK_*, TINCAY_LOG_*)."""
    with ExitStack() as stack:
        port = _free_port()
        served_env = {k: v for k, v in os.environ.items()
                      if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
        served_env["TINCAY_HOME"] = str(tmp_path / "home")
        served_env["HOME"] = str(tmp_path / "user")  # where gunicorn would put its control socket
        served_env["TINCAY_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        if postgres:
            served_env["TINCAY_DATABASE_URL"] = stack.enter_context(postgres_database())
        served_env.update(env or {})
        subprocess.run([TINCAY, "demo"], env=served_env, check=True, capture_output=True,
                       timeout=120)
        log = stack.enter_context((tmp_path / "serve.log").open("wb"))
        server = subprocess.Popen(
            [TINCAY, "serve", "--port", str(port), "--workers", "2", "--worker-class",
             worker_class, *(["--maintenance-interval", maintenance] if maintenance
                             else ["--no-maintenance"])],
            env=served_env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(server.wait, timeout=30)
        stack.callback(server.terminate)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # both workers loaded, and one of them answering
            try:
                if (tmp_path / "serve.log").read_text().count("Worker ready") >= 2:
                    urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text())
            time.sleep(0.1)
        yield base, tmp_path / "home", served_env


@pytest.mark.softhsm
def test_tincay_serve_under_gunicorn(served_demo: tuple[str, Path, dict[str, str]]) -> None:
    base, home, env = served_demo
    for name in ("root-ca", "issuing-ca"):
        with urllib.request.urlopen(f"{base}/crl/{name}.crl", timeout=5) as response:
            assert response.headers["Content-Type"] == "application/pkix-crl"
            crl = x509.load_der_x509_crl(response.read())  # the demo published one
        with urllib.request.urlopen(f"{base}/certs/{name}.cer", timeout=5) as response:
            assert response.headers["Content-Type"] == "application/pkix-cert"
            assert "max-age=3600" in response.headers["Cache-Control"]
            served = x509.load_der_x509_certificate(response.read())
        assert served == x509.load_pem_x509_certificate((home / f"public/{name}.pem").read_bytes())
        assert crl.is_signature_valid(served.public_key())
    # no control socket shared by every gunicorn of the user (~/.gunicorn/gunicorn.ctl)
    assert not (Path(env["HOME"]) / ".gunicorn").exists()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/certs/none.cer", timeout=5)
    assert missing.value.code == 404

    # each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    port = base.rsplit(":", 1)[1]
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]  # local address, state 0A: LISTEN
    listening = [row for row in table
                 if row.split()[1].endswith(f":{int(port):04X}") and row.split()[3] == "0A"]
    assert len(listening) == 2, listening  # --workers 2
    # and a second server on the same port is refused rather than let in beside it
    second = subprocess.run([TINCAY, "serve", "--port", port, "--no-maintenance"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and f"cannot serve on 127.0.0.1:{port}" in second.stderr
    urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
    log = (home.parent / "serve.log").read_text()
    assert "Using worker: cli.pywsgi_worker.TincayPyWSGIWorker" in log  # the default
    assert f"Listening at: http://127.0.0.1:{port} (a SO_REUSEPORT socket in each worker)" in log
    # Ctrl-C reaches the whole process group: a worker leaves SIGINT to the arbiter (which
    # sends it SIGQUIT), so it neither quits twice (a SystemExit traceback) nor alone
    worker = int(log.split("Booting worker with pid: ")[1].split('"')[0])  # a JSON line
    os.kill(worker, signal.SIGINT)
    time.sleep(1)
    os.kill(worker, 0)  # still there
    assert f"Worker exiting (pid: {worker})" not in (home.parent / "serve.log").read_text()
    urllib.request.urlopen(f"{base}/healthz", timeout=5).read()


@pytest.mark.softhsm
def test_serve_runs_the_maintenance_process(served_demo: tuple[str, Path, dict[str, str]]
                                            ) -> None:
    """Turning delta CRLs on is all an operator does: the maintenance process beside the
    workers (every second here) publishes the first delta, served at once."""
    base, home, env = served_demo
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/crl/issuing-ca-delta.crl", timeout=5)
    subprocess.run([TINCAY, "ca", "configure", "issuing-ca", "--delta-crl-validity", "1h"],
                   env=env, check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/crl/issuing-ca-delta.crl", timeout=5) as reply:
                delta = x509.load_der_x509_crl(reply.read())
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, (home.parent / "serve.log").read_text()
            time.sleep(0.5)
    assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number >= 1
    # logged once the pass is over (its OCSP answers too): a moment after the delta is served
    while "maintenance: CRLs published: issuing-ca delta" not in \
            (home.parent / "serve.log").read_text():
        assert time.monotonic() < deadline, (home.parent / "serve.log").read_text()
        time.sleep(0.2)


def test_latest_crl_is_served_until_its_next_update(client) -> None:
    http, service = client
    assert http.get("/crl/issuing-ca.crl").status_code == 404  # none published yet
    service.publication.publish_crl("issuing-ca")
    latest = service.publication.publish_crl("issuing-ca")
    response = http.get("/crl/issuing-ca.crl")
    assert response.status_code == 200 and response.mimetype == "application/pkix-crl"
    assert response.data == latest.der
    crl = x509.load_der_x509_crl(response.data)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert response.last_modified == latest.this_update
    assert response.expires == latest.next_update
    assert response.cache_control.max_age == int((latest.next_update - NOW).total_seconds())
    assert http.get("/crl/nope.crl").status_code == 404
    assert http.get("/crl/issuing-ca-delta.crl").status_code == 404  # no deltas configured
    service.publication.configure("issuing-ca", delta_crl_validity=dt.timedelta(hours=6))
    delta = service.publication.publish_crl("issuing-ca", delta=True)
    response = http.get("/crl/issuing-ca-delta.crl")
    assert response.status_code == 200 and response.data == delta.der
    assert response.cache_control.max_age == 6 * 3600
    assert http.get("/crl/issuing-ca.crl").data == latest.der  # the complete one unchanged


@pytest.mark.softhsm
@pytest.mark.parametrize("served_demo", [
    "gevent_pywsgi", "gthread", pytest.param("gevent_pywsgi+postgres", marks=pytest.mark.postgres)],
    indirect=True)
def test_openssl_ocsp_against_the_served_demo(served_demo: tuple[str, Path, dict[str, str]],
                                              tmp_path: Path) -> None:
    """OpenSSL as the client of the real server: the HSM-held responder key signs in the
    gunicorn workers, and a revocation made by the CLI shows in the very next answer."""
    base, home, env = served_demo
    leaf = tmp_path / "doctor.pem"
    subprocess.run([TINCAY, "issue", "--ca", "issuing-ca", "--profile", "clinician",
                    "--subject", "C=VN, O=BV Q11, CN=Nguyễn Văn A, UID=CCCD:079073009568",
                    "--generate-key", "--key-type", "ec-p256", "--out", str(leaf)],
                   env=env, check=True, capture_output=True, timeout=120)
    chain = tmp_path / "chain.pem"
    chain.write_bytes((home / "public/root-ca.pem").read_bytes()
                      + (home / "public/issuing-ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    url = next(d.access_location.value for d in aia
               if d.access_method == x509.AuthorityInformationAccessOID.OCSP)
    assert url == f"{base}/ocsp"

    def ask(*extra: str) -> str:
        result = subprocess.run(["openssl", "ocsp", "-issuer", str(home / "public/issuing-ca.pem"),
                                 "-cert", str(leaf), "-url", url, "-CAfile", str(chain), *extra],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "Response verify OK" in result.stderr, \
            result.stdout + result.stderr
        return result.stdout

    assert f"{leaf}: good" in ask()
    assert f"{leaf}: good" in ask("-no_nonce")  # the pre-produced answer tincay issue stored
    for nonce in ("--nonce", "--no-nonce"):  # GnuTLS as a second client of the live server
        asked = subprocess.run(["ocsptool", f"--ask={url}", nonce, "--load-issuer",
                                str(home / "public/issuing-ca.pem"), "--load-cert", str(leaf)],
                               capture_output=True, text=True, timeout=30)
        assert "Certificate Status: good" in asked.stdout, asked.stdout + asked.stderr
        assert "Verifying OCSP Response: Success." in asked.stdout, asked.stdout
    serial = format(cert.serial_number, "x")
    subprocess.run([TINCAY, "revoke", serial, "--ca", "issuing-ca", "--reason", "keyCompromise"],
                   env=env, check=True, capture_output=True, timeout=60)
    for extra in ((), ("-no_nonce",)):
        answer = ask(*extra)
        assert f"{leaf}: revoked" in answer and "Reason: keyCompromise" in answer


@pytest.mark.softhsm
@pytest.mark.parametrize("served_demo", [
    "gevent_pywsgi", "gthread", pytest.param("gevent_pywsgi+postgres", marks=pytest.mark.postgres)],
    indirect=True)
def test_tsa_serials_unique_across_two_workers(served_demo: tuple[str, Path, dict[str, str]],
                                               tmp_path: Path) -> None:
    """200 time-stamp requests from 8 threads against 2 gunicorn workers (each its own HSM
    session): every one granted, OpenSSL verifies one, and the log holds 200 distinct serials
    from both workers."""
    import concurrent.futures

    base, home, env = served_demo
    data, query = _timestamp_query(tmp_path)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: _stamp(base, query), range(200)))
    serials = {_granted_serial(reply) for reply in replies}
    assert len(serials) == 200
    (tmp_path / "r.tsr").write_bytes(replies[-1])
    verified = subprocess.run(["openssl", "ts", "-verify", "-data", str(data), "-in",
                               str(tmp_path / "r.tsr"), "-CAfile",
                               str(home / "public/root-ca.pem"), "-untrusted",
                               str(home / "public/issuing-ca.pem")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert _logged_serials(env) == serials


SERVED_ON_SQLITE_AND_POSTGRES = pytest.mark.parametrize("served_demo", [
    "gevent_pywsgi", pytest.param("gevent_pywsgi+postgres", marks=pytest.mark.postgres)],
    indirect=True)  # the default server, on each database


@pytest.mark.softhsm
@SERVED_ON_SQLITE_AND_POSTGRES
def test_a_killed_server_lost_no_token_a_client_holds(
        served_demo: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    """kill -9 of the whole server (arbiter, both workers, maintenance process) while 8
    clients ask for time-stamps: every token a client received whole is in the log that a
    fresh process reads afterwards (SQLite recovers from its WAL, PostgreSQL from its own), so
    a crash leaves no token the operator cannot account for."""
    import threading

    base, _, env = served_demo
    _, query = _timestamp_query(tmp_path)
    received: list[int] = []
    unexpected: list[BaseException] = []  # a refusal or a wrong reply: the test fails
    in_flight, failures = [0], [0]
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            with lock:
                in_flight[0] += 1
            try:
                serial = _granted_serial(_stamp(base, query))
            except (OSError, http.client.HTTPException):  # the server died under us
                with lock:
                    failures[0] += 1
                stop.wait(0.05)
                continue
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                unexpected.append(exc)
                return
            finally:
                with lock:
                    in_flight[0] -= 1
            with lock:
                received.append(serial)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(received) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        server = _server_processes(int(base.rsplit(":", 1)[1]))
        assert len(server) >= 3, server  # the arbiter and its two workers at least
        with lock:
            busy = in_flight[0]
            for pid in server:
                os.kill(pid, signal.SIGKILL)
            granted_before_the_kill = len(received)
        time.sleep(0.5)  # every client now meets the dead server at least once
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert not unexpected, unexpected
    assert granted_before_the_kill >= 300 and busy > 0 and failures[0] >= len(clients)
    assert set(received) <= _logged_serials(env)


@pytest.mark.softhsm
@SERVED_ON_SQLITE_AND_POSTGRES
def test_a_database_refusing_the_log_gets_system_failure_not_a_token(
        served_demo: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    """While the database refuses every insert into the token log (a trigger another
    connection adds under the running server, as a full disk or a revoked grant would), each
    time-stamp request gets a systemFailure rejection, never a token nobody recorded and never
    an HTTP 500; once the database takes writes again the same workers grant and log again."""
    from sqlalchemy import text

    base, home, env = served_demo
    _, query = _timestamp_query(tmp_path)
    first = _granted_serial(_stamp(base, query))
    engine = create_engine_for(env.get("TINCAY_DATABASE_URL", f"sqlite:///{home / 'tincay.db'}"))
    refuse = ([
        "CREATE FUNCTION tincay_test_refuse() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'no space left on device'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER tincay_test_refuse BEFORE INSERT ON timestamp_tokens "
        "FOR EACH ROW EXECUTE FUNCTION tincay_test_refuse()"]
        if engine.dialect.name == "postgresql" else [
        "CREATE TRIGGER tincay_test_refuse BEFORE INSERT ON timestamp_tokens "
        "BEGIN SELECT RAISE(ABORT, 'no space left on device'); END"])
    try:
        with engine.begin() as connection:
            for statement in refuse:
                connection.execute(text(statement))
        for _ in range(6):  # new connections each, which the kernel spreads over the workers
            refused = TimeStampResp.load(_stamp(base, query))["status"]
            assert refused["status"].native == "rejection"
            assert refused["fail_info"].native == {"system_failure"}
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER tincay_test_refuse" + (
                " ON timestamp_tokens" if engine.dialect.name == "postgresql" else "")))
    finally:
        engine.dispose()
    again = [_granted_serial(_stamp(base, query)) for _ in range(6)]
    assert _logged_serials(env) == {first, *again}
    log = (home.parent / "serve.log").read_text()
    assert "not recorded, not sent" in log
    assert "Traceback" not in log and "Internal Server Error" not in log, log


@pytest.mark.softhsm
def test_the_served_tsa_refuses_while_the_hsm_is_gone_and_grants_once_it_is_back(
        served_demo: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    """The demo token's storage moved away under the running server (as a network HSM's link
    goes down), and a worker killed meanwhile: its replacement boots all the same (a worker
    that fails to boot makes gunicorn stop the whole server), every time-stamp request gets a
    systemFailure rejection, no 500 and no traceback; once the token is back all workers grant
    and log again, without a restart."""
    base, home, env = served_demo
    _, query = _timestamp_query(tmp_path)
    first = _granted_serial(_stamp(base, query))
    tokens = home / "softhsm" / "tokens"
    away = tokens.with_name("tokens.away")
    log = home.parent / "serve.log"
    subprocess.run(["openssl", "ocsp", "-issuer", str(home / "public/root-ca.pem"), "-cert",
                    str(home / "public/issuing-ca.pem"), "-reqout", str(tmp_path / "q.ocsp")],
                   check=True, capture_output=True)  # with a nonce: answered by the root's key
    ocsp_query = (tmp_path / "q.ocsp").read_bytes()
    assert _ocsp_status(base, ocsp_query) == "successful"
    tokens.rename(away)
    try:
        arbiter, *descendants = _server_processes(int(base.rsplit(":", 1)[1]))
        [worker, *_] = [pid for pid in descendants if _is_worker(pid, arbiter)]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while log.read_text().count("Worker ready") < 3:  # the replacement, during the outage
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for _ in range(6):  # new connections each, which the kernel spreads over the workers
            refused = TimeStampResp.load(_stamp(base, query))["status"]
            assert refused["status"].native == "rejection"
            assert refused["fail_info"].native == {"system_failure"}
            assert _ocsp_status(base, ocsp_query) == "try_later"  # signed live: no key either
    finally:
        away.rename(tokens)
    again = [_granted_serial(_stamp(base, query)) for _ in range(8)]
    assert {_ocsp_status(base, ocsp_query) for _ in range(4)} == {"successful"}
    assert _logged_serials(env) == {first, *again}
    text = log.read_text()
    assert "Traceback" not in text and "Internal Server Error" not in text, text


def _timestamp_query(tmp_path: Path) -> tuple[Path, bytes]:
    """A file to stamp and OpenSSL's SHA-256 TimeStampReq for it (certReq set)."""
    data = tmp_path / "record.txt"
    data.write_bytes(b"transcript 2026")
    query = tmp_path / "q.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert",
                    "-out", str(query)], check=True, capture_output=True)
    return data, query.read_bytes()


def _post(url: str, body: bytes, content_type: str, reply_type: str) -> bytes:
    """A DER protocol POST; the reply's body, which must come as ``reply_type``."""
    post = urllib.request.Request(url, data=body, method="POST",
                                  headers={"Content-Type": content_type})
    with urllib.request.urlopen(post, timeout=30) as reply:
        assert reply.headers["Content-Type"] == reply_type
        return reply.read()


def _stamp(base: str, query: bytes) -> bytes:
    return _post(f"{base}/tsa", query, "application/timestamp-query",
                 "application/timestamp-reply")


def _granted_serial(reply: bytes) -> int:
    parsed = TimeStampResp.load(reply)
    assert parsed["status"]["status"].native == "granted"
    return parsed["time_stamp_token"]["content"]["encap_content_info"]["content"] \
        .parsed["serial_number"].native


def _logged_serials(env: dict[str, str]) -> set[int]:
    """The serials in the token log, as a fresh ``tincay tsa log`` process reads them."""
    logged = json.loads(subprocess.run([TINCAY, "tsa", "log", "--json", "--limit", "1000000"],
                                       env=env, check=True, capture_output=True,
                                       timeout=60).stdout)
    return {int(row["serial"], 16) for row in logged}


def _ocsp_status(base: str, query: bytes) -> str:
    from asn1crypto import ocsp

    reply = _post(f"{base}/ocsp", query, "application/ocsp-request", "application/ocsp-response")
    return ocsp.OCSPResponse.load(reply)["response_status"].native


def _is_worker(pid: int, arbiter: int) -> bool:
    """A gunicorn worker of ``arbiter`` (forked, so the same command line), not the
    maintenance process beside them."""
    return _parent(pid) == arbiter and b"serve" in _argv(pid)


def _server_processes(port: int) -> list[int]:
    """The ``tincay serve --port port`` this test process started, and every descendant."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = _parent(int(entry.name))
            except OSError:  # exited meanwhile
                continue
    found = []
    for pid, parent in parents.items():
        try:
            if parent == os.getpid() and {b"serve", str(port).encode()} <= set(_argv(pid)):
                found.append(pid)
        except OSError:
            continue
    for pid in found:  # breadth-first: the list grows as it is walked
        found.extend(child for child, parent in parents.items() if parent == pid)
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _argv(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def _raw_http(base: str, message: bytes, half_close: bool = False) -> bytes:
    """What the server answers to ``message`` sent as is on a fresh connection (with
    ``half_close``, the client then shuts its side, as one that gave up mid-upload)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(message)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


@pytest.mark.softhsm
@pytest.mark.parametrize("served_demo", ["gevent_pywsgi", "gthread"], indirect=True)
def test_bad_input_over_real_http(served_demo: tuple[str, Path, dict[str, str]],
                                  request: pytest.FixtureRequest) -> None:
    """The refusals tests/test_ocsp.py and tests/test_tsa.py check through Flask's client, here
    through each gunicorn worker class: HTTP errors where the message is not a request of the
    protocol, protocol errors where it is; no 500, no traceback in the log, and the server
    answers on."""
    from web.ocsp import MAX_REQUEST_BYTES

    base, home, _ = served_demo
    malformed = bytes.fromhex("3003 0a01 01")  # OCSPResponse, status malformedRequest

    def post(path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read()

    ocsp_type, tsa_type = "application/ocsp-request", "application/timestamp-query"
    assert post("/ocsp", b"", ocsp_type) == (200, malformed)
    assert post("/ocsp", bytes(range(7, 250)), ocsp_type) == (200, malformed)
    assert post("/ocsp", b"0", "text/plain")[0] == 415
    assert post("/ocsp", b"0" * (MAX_REQUEST_BYTES + 1), ocsp_type)[0] == 413
    with urllib.request.urlopen(f"{base}/ocsp/%21%21%21%21", timeout=10) as reply:
        assert reply.read() == malformed
    status, body = post("/tsa", b"\x30\x03\x02\x01\x01", tsa_type)
    rejected = TimeStampResp.load(body)["status"]
    assert status == 200 and rejected["status"].native == "rejection"
    assert rejected["fail_info"].native == {"bad_data_format"}

    # Nested 1,000 deep in an AlgorithmIdentifier's parameters (optionalSignature's, a TSA
    # request's imprint's): asn1crypto raised RecursionError, answered 500 with a traceback.
    deep = b"\x05\x00"
    for _ in range(1000):
        deep = tlv(0x30, deep)
    algorithm = tlv(0x30, b"\x06\x03\x2a\x03\x04", deep)  # 1.2.3.4, parameters ANY
    cert_id = tlv(0x30, tlv(0x30, b"\x06\x05\x2b\x0e\x03\x02\x1a"), tlv(0x04, b"\x01" * 20),
                  tlv(0x04, b"\x02" * 20), tlv(0x02, b"\x01"))
    ocsp_deep = tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, cert_id))),
                    tlv(0xA0, tlv(0x30, algorithm, tlv(0x03, b"\x00"))))
    assert post("/ocsp", ocsp_deep, ocsp_type) == (200, malformed)
    encoded = urllib.parse.quote(base64.b64encode(ocsp_deep).decode(), safe="")
    try:
        with urllib.request.urlopen(f"{base}/ocsp/{encoded}", timeout=10) as reply:
            assert reply.read() == malformed
    except urllib.error.HTTPError as refused:  # gthread: gunicorn's 4,094-octet request line
        assert refused.code in (400, 414) and "gthread" in request.node.name
    status, body = post("/tsa", tlv(0x30, b"\x02\x01\x01", tlv(0x30, algorithm, tlv(
        0x04, b"\x00" * 32))), tsa_type)
    rejected = TimeStampResp.load(body)["status"]
    assert status == 200 and rejected["fail_info"].native == {"bad_data_format"}

    for path, content_type in (("/ocsp", ocsp_type), ("/tsa", tsa_type)):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n".encode()
        truncated = _raw_http(base, head + b"Content-Length: 100\r\n\r\n0\x81", half_close=True)
        assert truncated.startswith(b"HTTP/1.1 400"), truncated
        bad_chunk = _raw_http(base, head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n0\r\n\r\n")
        assert bad_chunk.startswith(b"HTTP/1.1 400"), bad_chunk
    assert _raw_http(base, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")

    urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
    log = (home.parent / "serve.log").read_text()
    assert "Traceback" not in log and "Internal Server Error" not in log, log
