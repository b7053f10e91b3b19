"""`tincay serve` through database outages and write locks held elsewhere, for real: gunicorn
workers on loopback, SoftHSM, SQLite and PostgreSQL.

A worker gunicorn restarts while the database is away must boot (one that fails to boot makes
gunicorn stop the whole server), refuse what needs the database in-protocol and recover by
itself; a lock another process holds must not freeze a gevent worker, and the TSA's wait for
it is bounded well below a client's timeout.
"""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from asn1crypto import ocsp

from tests.conftest import connections_refused
from tests.test_http import (SERVED_ON_SQLITE_AND_POSTGRES, _is_worker, _post,  # noqa: F401
                             _server_processes, _stamp, _timestamp_query, served_demo)
from tsa.core import TimeStampResp

Served = tuple[str, Path, dict[str, str]]


def test_no_engine_creates_a_missing_sqlite_database(tmp_path: Path) -> None:
    """Only tincay init and demo (``create=True``) make a SQLite database: any other engine on
    a missing file fails to connect, leaving neither the file nor its directory behind (a
    worker whose database was moved away would otherwise write into a new, empty one)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from ca.store.db import create_engine_for

    missing = tmp_path / "moved" / "tincay.db"
    engine = create_engine_for(f"sqlite:///{missing}")
    with pytest.raises(OperationalError, match="unable to open database file"):
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    engine.dispose()
    assert not missing.parent.exists()
    created = create_engine_for(f"sqlite:///{missing}", create=True)
    with created.connect() as connection:
        connection.execute(text("SELECT 1"))
    created.dispose()
    assert missing.exists()


def test_a_postgres_server_that_never_answers_is_given_up_on_in_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL address that accepts the TCP connection and then says nothing (a stalled
    server, a firewall half-open): the engine gives up after its connect timeout instead of
    holding the command or worker for the kernel's minutes; a URL's own connect_timeout wins."""
    import socket

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from ca.store import db

    pytest.importorskip("psycopg2")
    monkeypatch.setattr(db, "POSTGRES_CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for url, bound in ((f"postgresql+psycopg2://tincay@127.0.0.1:{port}/ca", 2),
                           (f"postgresql+psycopg2://tincay@127.0.0.1:{port}/ca?connect_timeout=3",
                            3)):
            engine = db.create_engine_for(url)
            started = time.monotonic()
            with pytest.raises(OperationalError, match="timeout"):
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            waited = time.monotonic() - started
            engine.dispose()
            assert bound - 0.5 <= waited < bound + 3, waited


def _questions(home: Path, tmp_path: Path) -> tuple[bytes, str]:
    """A nonce OCSP request (signed live) and the RFC 5019 GET path of a nonce-less one (the
    pre-produced answer), both for the issuing CA's certificate under the root."""
    def request(name: str, *nonce: str) -> bytes:
        out = tmp_path / name
        subprocess.run(["openssl", "ocsp", "-issuer", str(home / "public/root-ca.pem"), "-cert",
                        str(home / "public/issuing-ca.pem"), *nonce, "-reqout", str(out)],
                       check=True, capture_output=True)
        return out.read_bytes()
    live = request("nonce.ocsp")
    get = "/ocsp/" + quote(base64.b64encode(request("plain.ocsp", "-no_nonce")).decode(), safe="")
    return live, get


def _ocsp(base: str, live: bytes | None, get: str | None, timeout: float = 10) -> str:
    """The response status of one OCSP question on a new connection (the kernel spreads new
    connections over the workers)."""
    if live is not None:
        request = urllib.request.Request(f"{base}/ocsp", data=live, method="POST",
                                         headers={"Content-Type": "application/ocsp-request"})
    else:
        request = urllib.request.Request(f"{base}{get}")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return ocsp.OCSPResponse.load(reply.read())["response_status"].native


def _tsa(base: str, query: bytes, timeout: float = 30) -> tuple[str, str]:
    """(status, statusString) of one time-stamp request."""
    reply = TimeStampResp.load(_post(f"{base}/tsa", query, "application/timestamp-query",
                                     "application/timestamp-reply"))
    status = reply["status"]
    text = " ".join(status["status_string"].native or ()) if status["status_string"] else ""
    return status["status"].native, text


def _crl_status(base: str, name: str = "root-ca") -> int:
    try:
        with urllib.request.urlopen(f"{base}/crl/{name}.crl", timeout=10) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _restart_a_worker(base: str, log: Path) -> int:
    """kill -9 one gunicorn worker and wait until its replacement is ready; its pid."""
    arbiter, *descendants = _server_processes(int(base.rsplit(":", 1)[1]))
    [worker, *_] = [pid for pid in descendants if _is_worker(pid, arbiter)]
    ready = log.read_text().count("Worker ready")
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while log.read_text().count("Worker ready") <= ready:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return int(re.findall(r"Worker ready \(pid: (\d+)\)", log.read_text())[-1])


def _until_all_good(base: str, live: bytes, get: str, query: bytes, log: Path) -> None:
    """Within 30 s, and without a restart, every question is answered again: 12 rounds in a
    row on new connections, over both workers."""
    deadline, streak = time.monotonic() + 30, 0
    while streak < 12:
        assert time.monotonic() < deadline, log.read_text()
        good = (_ocsp(base, live, None) == "successful" and _ocsp(base, None, get) ==
                "successful" and _tsa(base, query)[0] == "granted" and _crl_status(base) == 200)
        streak = streak + 1 if good else 0
        if not good:
            time.sleep(0.2)


def _check_log(log: Path, new_worker: int) -> str:
    text = log.read_text()
    assert "Worker failed to boot" not in text and "Shutting down: Master" not in text, text
    assert "Traceback" not in text and "Internal Server Error" not in text, text
    said = [line for line in text.splitlines() if "is unreachable" in line]
    assert any(f"(pid {new_worker})" in line for line in said), text
    for pid in {re.search(r"\(pid (\d+)\)", line).group(1) for line in said}:  # type: ignore[union-attr]
        assert sum(f"(pid {pid})" in line for line in said) == 1, said  # once per outage
    return text


@pytest.mark.softhsm
def test_a_worker_restarted_while_the_sqlite_file_is_away_boots_and_recovers(
        served_demo: Served, tmp_path: Path) -> None:
    """The database file moved away and a worker killed: gunicorn's replacement boots all the
    same, the server stays up, the new worker answers tryLater, systemFailure and 503 (the
    old one still holds its open file), no empty tincay.db appears in the old one's place;
    the file moved back, every answer is good again without a restart."""
    base, home, env = served_demo
    log = home.parent / "serve.log"
    live, get = _questions(home, tmp_path)
    _, query = _timestamp_query(tmp_path)
    assert _tsa(base, query)[0] == "granted" and _ocsp(base, None, get) == "successful"
    assert {_crl_status(base) for _ in range(12)} == {200}  # read, so held, by both workers
    database, away = home / "tincay.db", home / "tincay.db.away"
    database.rename(away)
    try:
        new_worker = _restart_a_worker(base, log)
        ocsp_seen, tsa_seen, crl_seen = set(), set(), set()
        for _ in range(24):  # new connections each, over both workers
            ocsp_seen |= {_ocsp(base, live, None), _ocsp(base, None, get)}
            tsa_seen.add(_tsa(base, query))
            crl_seen.add(_crl_status(base))
        assert ocsp_seen == {"successful", "try_later"}, ocsp_seen
        assert ("rejection", "the database is unreachable, try later") in tsa_seen
        assert tsa_seen <= {("granted", ""),  # the old worker's open file, or not open yet:
                            ("rejection", "the database is unreachable, try later"),
                            ("rejection", "the token log's database is unreachable, try later")
                            }, tsa_seen
        assert crl_seen == {200, 503}, crl_seen
        assert not database.exists(), "a worker created an empty database in the CA's place"
        assert len(_server_processes(int(base.rsplit(":", 1)[1]))) >= 4  # arbiter, 2+1
    finally:
        away.rename(database)
    _until_all_good(base, live, get, query, log)
    _check_log(log, new_worker)


def _hold_write_lock(env: dict[str, str], home: Path, seconds: float) -> subprocess.Popen:
    """Another process in a long write transaction: on SQLite BEGIN IMMEDIATE (the database's
    one write lock), on PostgreSQL an EXCLUSIVE lock on the token table (what a migration or
    an operator's bulk change would take)."""
    if "TINCAY_DATABASE_URL" in env:
        from sqlalchemy.engine import make_url

        where = make_url(env["TINCAY_DATABASE_URL"]).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        hold = ("import psycopg2, sys, time\n"
                "c = psycopg2.connect(sys.argv[1])\n"
                "c.cursor().execute('LOCK TABLE timestamp_tokens IN EXCLUSIVE MODE')\n")
    else:
        where = str(home / "tincay.db")
        hold = ("import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE')\n")
    holder = subprocess.Popen([sys.executable, "-c", hold + (
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.rollback()\n"), where, str(seconds)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.softhsm
@SERVED_ON_SQLITE_AND_POSTGRES
def test_a_write_lock_held_elsewhere_neither_freezes_a_worker_nor_holds_the_tsa_30_s(
        served_demo: Served, tmp_path: Path) -> None:
    """Another process holds a write lock for 12 s: time-stamp requests (two clients, one
    waiting for the log in at least one worker) get systemFailure "busy" after a bounded wait
    (5 s, well under a client's timeout and SQLite's 30 s busy timeout), nonce OCSP and
    pre-produced GETs keep being answered within 2 s each meanwhile by both workers (SQLite's
    busy handler sleeping in C would freeze the whole gevent worker), and once the lock is
    released tokens are granted again."""
    base, home, env = served_demo
    log = home.parent / "serve.log"
    live, get = _questions(home, tmp_path)
    _, query = _timestamp_query(tmp_path)
    assert _tsa(base, query)[0] == "granted"
    holder = _hold_write_lock(env, home, 12)
    stamped: list[tuple[float, tuple[str, str]]] = []

    def stamp() -> None:
        start = time.monotonic()
        reply = _tsa(base, query, timeout=30)
        stamped.append((time.monotonic() - start, reply))

    try:
        clients = [threading.Thread(target=stamp) for _ in range(2)]
        for client in clients:
            client.start()
        asked = 0
        while any(client.is_alive() for client in clients):  # the TSA clients are waiting
            assert _ocsp(base, live, None, timeout=2) == "successful"
            assert _ocsp(base, None, get, timeout=2) == "successful"
            asked += 2
        for client in clients:
            client.join()
        assert asked >= 8
        for took, (status, text) in stamped:
            assert (status, text) == ("rejection", "the token log is busy, try later")
            assert 4 <= took < 9, took  # the log's bound, not SQLite's 30 s busy timeout
    finally:
        holder.wait(30)
    assert [_tsa(base, query)[0] for _ in range(6)] == ["granted"] * 6
    text = log.read_text()
    assert "Traceback" not in text and "Internal Server Error" not in text, text


@pytest.mark.softhsm
@pytest.mark.postgres
@pytest.mark.parametrize("served_demo", ["gevent_pywsgi+postgres"], indirect=True)
def test_a_worker_restarted_while_postgres_refuses_connections_boots_and_recovers(
        served_demo: Served, tmp_path: Path) -> None:
    """PostgreSQL drops every connection to the CA's database and refuses new ones (as a
    server restart or a network cut would), and a worker is killed meanwhile: the replacement
    boots, the workers serve the pre-produced answers and CRLs they hold and refuse the rest
    (tryLater, systemFailure, 503), each says so once in the log; once the database takes
    connections again every answer is good without a restart."""
    base, home, env = served_demo
    log = home.parent / "serve.log"
    live, get = _questions(home, tmp_path)
    _, query = _timestamp_query(tmp_path)
    assert _tsa(base, query)[0] == "granted"
    deadline = time.monotonic() + 30  # the maintenance process pre-produces it within a second
    while len({_ocsp_answer(base, get) for _ in range(3)}) != 1:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    assert {_ocsp(base, None, get) for _ in range(12)} == {"successful"}  # held by both workers
    assert {_crl_status(base) for _ in range(12)} == {200}
    with connections_refused(env["TINCAY_DATABASE_URL"]):
        new_worker = _restart_a_worker(base, log)
        ocsp_seen, tsa_seen, crl_seen = set(), set(), set()
        for _ in range(24):  # new connections each, over both workers
            assert _ocsp(base, live, None) == "try_later"  # signed live: needs the status
            ocsp_seen.add(_ocsp(base, None, get))
            tsa_seen.add(_tsa(base, query))
            crl_seen.add(_crl_status(base))
        assert ocsp_seen == {"successful", "try_later"}, ocsp_seen  # held by the old worker
        assert tsa_seen == {("rejection", "the database is unreachable, try later"),
                            ("rejection", "the token log's database is unreachable, try later")
                            }, tsa_seen
        assert crl_seen == {200, 503}, crl_seen
        assert len(_server_processes(int(base.rsplit(":", 1)[1]))) >= 4
    _until_all_good(base, live, get, query, log)
    text_ = _check_log(log, new_worker)
    assert len(re.findall(r"is unreachable \(pid \d+\)", text_)) >= 2, text_  # both workers


def _ocsp_answer(base: str, get: str) -> bytes:
    with urllib.request.urlopen(f"{base}{get}", timeout=10) as reply:
        return reply.read()
