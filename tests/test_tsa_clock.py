"""TSA clock control (issue 22): no token while the clock is out of sync, an audit event per
transition, and genTime never earlier than one already logged (tsa/clock_sync.py,
tsa/gen_time.py)."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from asn1crypto import tsp as atsp

from ca.clock import FrozenClock
from ca.errors import ConfigurationError
from ca.testing import Hierarchy
from tsa.clock_sync import (STA_UNSYNC, TIME_ERROR, ClockCheck, ClockGuard, ClockReading,
                            CommandClockSource, KernelClockSource, KernelTime,
                            read_kernel_time)
from tsa.config import refreshed_authority, timestamp_authority, tsa_settings
from tsa.core import TimeStampAuthority, TimeStampResp, TsaPolicy
from tsa.gen_time import HostMark

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
TINCAY = str(Path(sys.executable).parent / "tincay")
EVENTS = ("tsa.clock_unsynchronised", "tsa.clock_synchronised")


def request() -> bytes:
    return atsp.TimeStampReq({
        "version": "v1", "cert_req": True, "nonce": 42,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(b"clock").digest()}}).dump()


def status(reply: bytes) -> tuple[str, set[str] | None]:
    parsed = TimeStampResp.load(reply)["status"]
    return parsed["status"].native, parsed["fail_info"].native


def gen_time(reply: bytes) -> dt.datetime:
    token = TimeStampResp.load(reply)["time_stamp_token"]
    return token["content"]["encap_content_info"]["content"].parsed["gen_time"].native


def openssl_text(reply: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"reply-{time.monotonic_ns()}.tsr"
    path.write_bytes(reply)
    return subprocess.run(["openssl", "ts", "-reply", "-in", str(path), "-text"], check=True,
                          capture_output=True, text=True).stdout


def clock_events(pki: Hierarchy) -> list[tuple[str, dict]]:
    """The clock transitions in the audit log, oldest first."""
    return [(e["action"], e["details"]) for e in
            reversed(pki.service.listings.list_events(limit=1000)) if e["action"] in EVENTS]


class Switch:
    """An injected clock-sync source: in sync while ``synced``; counts its readings."""

    def __init__(self) -> None:
        self.synced = True
        self.reads = 0

    def read(self) -> ClockReading:
        self.reads += 1
        return ClockReading(True, "test: in sync") if self.synced else \
            ClockReading(False, "test: lost the reference", dt.timedelta(seconds=3))


# --- the kernel's view ----------------------------------------------------------------------

def test_adjtimex_reads_this_machines_clock_state() -> None:
    """A real adjtimex(2) call (modes 0: reads only): a sane state whatever this host's NTP."""
    kernel = read_kernel_time()
    assert 0 <= kernel.state <= TIME_ERROR
    assert 0 <= kernel.max_error_us <= 16_000_000  # the kernel caps maxerror at 16 s
    assert 0 <= kernel.estimated_error_us <= 16_000_000
    reading = KernelClockSource(dt.timedelta(seconds=1)).read()  # a second call, a moment on
    assert dt.timedelta(0) <= reading.max_error <= dt.timedelta(seconds=16)
    if kernel.unsynchronised:  # as this build machine's: no NTP, maxerror 16 s
        assert not reading.synchronised and "unsynchronised" in reading.reason
    assert "maximum error" in reading.reason


@pytest.mark.parametrize("kernel,synchronised,says", [
    (KernelTime(0, 0, 20_000, 5_000), True, "synchronised (maximum error 20 ms"),
    (KernelTime(TIME_ERROR, 0, 20_000, 5_000), False, "unsynchronised"),
    (KernelTime(0, STA_UNSYNC, 20_000, 5_000), False, "unsynchronised"),
    (KernelTime(0, 0, 995_000, 5_000), False, "beyond the accuracy of 1000 ms"),  # margin
])
def test_kernel_state_against_accuracy_and_margin(kernel: KernelTime, synchronised: bool,
                                                  says: str) -> None:
    reading = KernelClockSource(dt.timedelta(seconds=1), dt.timedelta(milliseconds=10),
                                read=lambda: kernel).read()
    assert reading.synchronised is synchronised and says in reading.reason


def test_an_unreadable_kernel_state_is_out_of_sync() -> None:
    def refused() -> KernelTime:
        raise OSError(1, "adjtimex: Operation not permitted")

    reading = KernelClockSource(dt.timedelta(seconds=1), read=refused).read()
    assert not reading.synchronised and "unreadable" in reading.reason


def test_checker_command_exit_status_decides(tmp_path: Path) -> None:
    assert CommandClockSource(("true",)).read().synchronised
    script = tmp_path / "check"
    script.write_text("#!/bin/sh\necho 'chrony: not synchronised' >&2\nexit 3\n")
    script.chmod(0o700)
    refused = CommandClockSource((str(script),)).read()
    assert not refused.synchronised
    assert refused.reason.endswith("exited with status 3: chrony: not synchronised")
    missing = CommandClockSource((str(tmp_path / "absent"),)).read()
    assert not missing.synchronised and "cannot run" in missing.reason
    slow = CommandClockSource(("sleep", "5"), timeout=0.2).read()
    assert not slow.synchronised and "no answer within 0.2 s" in slow.reason


def test_the_answer_is_cached_and_a_lost_transition_is_retried() -> None:
    """One source reading per interval however many tokens ask; an audit event that could
    not be written is asked for again at the next reading, never dropped or repeated."""
    switch, now, seen = Switch(), [0.0], []
    fail = [True]

    def on_change(reading: ClockReading) -> None:
        if fail[0]:
            raise OSError("database away")
        seen.append(reading.synchronised)

    guard = ClockGuard(switch, every=1.0, on_change=on_change, monotonic=lambda: now[0])
    assert all(guard.reading().synchronised for _ in range(1000)) and switch.reads == 1
    switch.synced, now[0] = False, 1.5
    assert not guard.reading().synchronised and seen == []  # refused at once, not recorded
    fail[0], now[0] = False, 3.0
    assert not guard.reading().synchronised and seen == [False]  # recorded now, once
    now[0] = 4.5
    assert not guard.reading().synchronised and seen == [False]
    switch.synced, now[0] = True, 6.0
    assert guard.reading().synchronised and seen == [False, True]
    started = time.perf_counter()
    for _ in range(10_000):
        guard.reading()
    assert (time.perf_counter() - started) / 10_000 < 20e-6  # measured: about 0.3 us


# --- no token while out of sync, an audit event per transition --------------------------------

def _authority(pki: Hierarchy, **check) -> TimeStampAuthority:
    policy = TsaPolicy(clock=ClockCheck(mode="command", command=("true",), **check))
    authority = timestamp_authority(pki.service.authorities, policy=policy)
    assert authority is not None and authority.clock_guard is not None
    return authority


def test_transitions_refuse_then_resume_with_one_event_each(database_url: str,
                                                            tmp_path: Path) -> None:
    with Hierarchy.from_spec(at=NOW, database_url=database_url) as pki:
        authority = _authority(pki, every=dt.timedelta(0))  # every request asks the source
        switch = authority.clock_guard.source = Switch()
        assert status(authority.respond(request()).response) == ("granted", None)
        switch.synced = False
        for der in (request(), b"not DER at all", request()):  # every request, even bad ones
            result = authority.respond(der)
            assert result.granted is None and result.fail_info == "timeNotAvailable"
            assert status(result.response) == ("rejection", {"time_not_available"})
        text = openssl_text(result.response, tmp_path)
        assert "Status: Rejected." in text
        assert "Failure info: the TSA's time source is not available" in text
        assert "Status description: the TSA clock is not synchronised within its accuracy" \
            in text and "TST info:\nNot included." in text
        assert "lost the reference" not in text  # the reason is the audit log's, not clients'
        switch.synced = True
        assert all(status(authority.respond(request()).response) == ("granted", None)
                   for _ in range(3))
        assert clock_events(pki) == [
            ("tsa.clock_unsynchronised", {"unit": authority.unit.name,
                                          "reason": "test: lost the reference",
                                          "max_error_us": 3_000_000}),
            ("tsa.clock_synchronised", {"unit": authority.unit.name, "reason": "test: in sync"})]


def test_served_tsa_follows_a_checker_command_over_http(database_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own TSA under TINCAY_TSA_CLOCK_CHECK=command, over real HTTP on loopback:
    the checker (``test -e FLAG``) says out of sync, then in sync again."""
    flag = tmp_path / "in-sync"
    flag.touch()
    monkeypatch.setenv("TINCAY_TSA_CLOCK_CHECK", "command")
    monkeypatch.setenv("TINCAY_TSA_CLOCK_COMMAND", f"test -e {shlex.quote(str(flag))}")
    monkeypatch.setenv("TINCAY_TSA_CLOCK_INTERVAL", "0s")
    with Hierarchy.from_spec(at=NOW, database_url=database_url) as pki, pki.serve() as url:
        def post() -> bytes:
            asked = urllib.request.Request(f"{url}/tsa", data=request(), method="POST", headers={
                "Content-Type": "application/timestamp-query"})
            with urllib.request.urlopen(asked, timeout=10) as reply:
                assert reply.status == 200
                return reply.read()

        assert status(post()) == ("granted", None)
        flag.unlink()
        refused = [post() for _ in range(3)]
        assert all(status(r) == ("rejection", {"time_not_available"}) for r in refused)
        text = openssl_text(refused[0], tmp_path)
        assert "Status: Rejected." in text and "time source is not available" in text
        flag.touch()
        assert status(post()) == ("granted", None)
        events = clock_events(pki)
        assert [action for action, _ in events] == list(EVENTS)
        assert events[0][1]["reason"] == "the clock check test exited with status 1"
        assert len(pki.service.token_log.find(limit=10)) == 2  # no token logged while refused


# --- genTime never goes backwards ------------------------------------------------------------

def test_gen_time_never_before_a_logged_one_across_restarts(database_url: str) -> None:
    """A clock stepped back: within the accuracy (1 s) the token gets the last genTime,
    further back no token; and a new TSA over the same log (a restart) starts from the
    latest logged genTime, not from its clock."""
    with Hierarchy.from_spec(at=NOW, database_url=database_url) as pki:
        clock = FrozenClock(NOW + dt.timedelta(seconds=10))

        def issue(authority: TimeStampAuthority) -> dt.datetime | None:
            result = authority.respond(request())
            if result.granted is None:
                assert result.fail_info == "timeNotAvailable"
                return None
            pki.service.token_log.record(result.granted)
            return gen_time(result.response)

        def restarted() -> TimeStampAuthority:
            authority = timestamp_authority(pki.service.authorities)
            authority.clock = clock
            return authority

        first = restarted()
        last = issue(first)
        assert last == NOW + dt.timedelta(seconds=10)
        clock.set(NOW + dt.timedelta(seconds=9, milliseconds=500))  # 0.5 s back
        assert issue(first) == last
        clock.set(NOW + dt.timedelta(seconds=5))  # 5 s back: refused, not back-dated
        assert issue(first) is None
        clock.set(last - dt.timedelta(milliseconds=700))
        again = restarted()  # a new process over the same database
        assert again.gen_times.mark == last
        assert issue(again) == last
        clock.set(last - dt.timedelta(seconds=5))
        assert issue(restarted()) is None
        clock.set(last + dt.timedelta(seconds=1))
        assert issue(restarted()) == last + dt.timedelta(seconds=1)
        logged = [t["gen_time"] for t in reversed(pki.service.token_log.find(limit=100))]
        assert logged == sorted(logged) and len(logged) == 4


def test_workers_of_one_host_share_the_mark(tmp_path: Path) -> None:
    """Two workers (two TSAs, their own mark files open) on one clock stepped back: with the
    mark file the second never issues earlier than the first did; without it, it would."""
    mark_file = tmp_path / "tsa-gen-time.mark"
    with Hierarchy.from_spec(at=NOW) as pki:
        clock = FrozenClock(NOW + dt.timedelta(seconds=10))

        def worker(mark: Path | None) -> TimeStampAuthority:
            policy = TsaPolicy(clock=ClockCheck(mark_file=str(mark) if mark else None))
            authority = timestamp_authority(pki.service.authorities, policy=policy)
            authority.clock = clock
            return authority

        alone, shared_a, shared_b = worker(None), worker(mark_file), worker(mark_file)
        worker(None).respond(request())  # a token no mark file saw
        assert gen_time(shared_a.respond(request()).response) == NOW + dt.timedelta(seconds=10)
        clock.set(NOW + dt.timedelta(seconds=9))
        assert gen_time(shared_b.respond(request()).response) == NOW + dt.timedelta(seconds=10)
        assert gen_time(alone.respond(request()).response) == NOW + dt.timedelta(seconds=9)
    # another process reads and raises the same mark
    script = ("import datetime as dt, sys; from tsa.gen_time import HostMark\n"
              "with HostMark(sys.argv[1]).locked() as mark:\n"
              "    print(mark[0].isoformat()); mark[0] += dt.timedelta(hours=1)\n")
    done = subprocess.run([sys.executable, "-c", script, str(mark_file)], check=True,
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": os.getcwd()})
    assert dt.datetime.fromisoformat(done.stdout.strip()) == NOW + dt.timedelta(seconds=10)
    with HostMark(mark_file).locked() as mark:
        assert mark[0] == NOW + dt.timedelta(hours=1, seconds=10)


def test_a_renewed_unit_keeps_the_clock_state_and_the_mark() -> None:
    """The TSA over a renewed unit certificate (what a worker's refresh builds) takes over
    the clock guard (no second transition event) and the genTime mark, even of a token not
    yet in the log (and the mark file, when there is one)."""
    with Hierarchy.from_spec(at=NOW) as pki:
        authority = _authority(pki)
        pki.clock.set(NOW + dt.timedelta(seconds=30))
        authority.respond(request())  # granted, not logged
        pki.clock.set(NOW + dt.timedelta(seconds=29))
        pki.service.renewal.renew(authority.unit.name)
        fresh = refreshed_authority(pki.service.authorities, authority)
        assert fresh is not None and fresh.unit.certificate != authority.unit.certificate
        assert fresh.clock_guard is authority.clock_guard
        assert gen_time(fresh.respond(request()).response) == NOW + dt.timedelta(seconds=30)


# --- settings ----------------------------------------------------------------------------------

def test_settings_default_off_and_name_the_variable(tmp_path: Path) -> None:
    assert tsa_settings({})[1].clock == ClockCheck()  # off: make run and the suite stamp
    _, policy = tsa_settings({"TINCAY_TSA_CLOCK_CHECK": "Kernel",
                              "TINCAY_TSA_CLOCK_MARGIN": "100ms",
                              "TINCAY_TSA_CLOCK_INTERVAL": "250ms"})
    assert policy.clock == ClockCheck(mode="kernel", margin=dt.timedelta(milliseconds=100),
                                      every=dt.timedelta(milliseconds=250))
    _, policy = tsa_settings({"TINCAY_TSA_CLOCK_CHECK": "command",
                              "TINCAY_TSA_CLOCK_COMMAND": "chronyc waitsync 1 '0.01'"})
    assert policy.clock.command == ("chronyc", "waitsync", "1", "0.01")
    for env, names in [
        ({"TINCAY_TSA_CLOCK_CHECK": "maybe"}, "TINCAY_TSA_CLOCK_CHECK"),
        ({"TINCAY_TSA_CLOCK_CHECK": "command"}, "TINCAY_TSA_CLOCK_COMMAND"),
        ({"TINCAY_TSA_CLOCK_CHECK": "command", "TINCAY_TSA_CLOCK_COMMAND": "check 'open"},
         "TINCAY_TSA_CLOCK_COMMAND"),
        ({"TINCAY_TSA_CLOCK_CHECK": "kernel", "TINCAY_TSA_CLOCK_MARGIN": "1s"},
         "TINCAY_TSA_CLOCK_MARGIN"),
        ({"TINCAY_TSA_CLOCK_MARGIN": "soon"}, "TINCAY_TSA_CLOCK_MARGIN"),
        ({"TINCAY_TSA_CLOCK_INTERVAL": "-1s"}, "TINCAY_TSA_CLOCK_INTERVAL"),
    ]:
        with pytest.raises(ConfigurationError, match=names):
            tsa_settings(env)
    target = tmp_path / "elsewhere"
    target.touch()
    (tmp_path / "link").symlink_to(target)
    with Hierarchy.from_spec(at=NOW) as pki, \
            pytest.raises(ConfigurationError, match="TINCAY_TSA_MARK_FILE: cannot open"):
        timestamp_authority(pki.service.authorities, policy=TsaPolicy(
            clock=ClockCheck(mark_file=str(tmp_path / "link"))))


def test_tincay_serve_refuses_a_bad_clock_setting_with_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINCAY_")}
    env.update(TINCAY_HOME=str(tmp_path), TINCAY_TSA_CLOCK_CHECK="sometimes")
    done = subprocess.run([TINCAY, "serve", "--port", "9611"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "TINCAY_TSA_CLOCK_CHECK" in done.stderr


# --- under tincay serve: two gunicorn workers ------------------------------------------------

@pytest.mark.softhsm
def test_two_workers_stop_and_resume_together_and_share_the_mark(tmp_path: Path) -> None:
    """``tincay serve --workers 2`` with a checker command: every request refused while it
    says out of sync, whichever worker answers; each transition at most once per worker in
    the audit log; and the mark file tincay serve put in TINCAY_HOME holds the latest genTime."""
    import json

    port, flag = 9612, tmp_path / "in-sync"
    flag.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
    env.update(TINCAY_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "user"),
               TINCAY_PUBLIC_URL=f"http://127.0.0.1:{port}", TINCAY_TSA_CLOCK_CHECK="command",
               TINCAY_TSA_CLOCK_COMMAND=f"test -e {shlex.quote(str(flag))}",
               TINCAY_TSA_CLOCK_INTERVAL="0s")
    subprocess.run([TINCAY, "demo"], env=env, check=True, capture_output=True, timeout=120)
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "2",
                                   "--no-maintenance"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while (tmp_path / "serve.log").read_text().count("Worker ready") < 2:
            assert time.monotonic() < deadline and server.poll() is None, \
                (tmp_path / "serve.log").read_text()
            time.sleep(0.1)

        def post() -> bytes:
            asked = urllib.request.Request(f"http://127.0.0.1:{port}/tsa", data=request(),
                                           headers={"Content-Type":
                                                    "application/timestamp-query"})
            with urllib.request.urlopen(asked, timeout=10) as reply:
                return reply.read()

        assert all(status(post()) == ("granted", None) for _ in range(10))
        flag.unlink()
        assert all(status(post()) == ("rejection", {"time_not_available"}) for _ in range(20))
        flag.touch()
        granted = [post() for _ in range(20)]
        assert all(status(r) == ("granted", None) for r in granted)
    finally:
        server.terminate()
        server.wait(timeout=30)
    events = json.loads(subprocess.run([TINCAY, "audit", "--json", "--limit", "1000"], env=env,
                                       check=True, capture_output=True, timeout=60).stdout)
    actions = [e["action"] for e in events if e["action"] in EVENTS]
    assert 1 <= actions.count("tsa.clock_unsynchronised") <= 2
    assert 1 <= actions.count("tsa.clock_synchronised") <= 2
    with HostMark(tmp_path / "home" / "tsa-gen-time.mark").locked() as mark:
        assert mark[0] == max(gen_time(r) for r in granted)
