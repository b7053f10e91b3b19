"""A host's workers warm each other's subscriber keys (ca.services.key_peers): the Unix
datagram transport, the service's warm-up on the session's SoftHSM token, and `tincay serve`'s
two workers both holding an authorised key before its first signHash."""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import pytest

from ca.keys.base import KeySpec
from ca.services.key_peers import KeyPeers
from tests.test_csc_http import ECDSA, PIN, SHA256, USER, Instance, Otp, post
from tests.test_wrapped_keys import _service, _unwraps, _verify

WRAPPED = "tincay:subscriber-key:7"


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def peers_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "peers"
    directory.mkdir(mode=0o700)
    return directory


def _peer(directory: Path, name: str, heard: list[str] | None = None) -> KeyPeers:
    peer = KeyPeers(directory, name)
    if heard is not None:
        peer.listen(heard.append)
    return peer


def test_a_hint_reaches_the_other_workers_at_most_as_many_as_asked(peers_dir: Path) -> None:
    heard: dict[str, list[str]] = {"b": [], "c": []}
    a = _peer(peers_dir, "a", [])
    b, c = _peer(peers_dir, "b", heard["b"]), _peer(peers_dir, "c", heard["c"])
    try:
        assert (peers_dir / "b.sock").stat().st_mode & 0o777 == 0o600
        assert a.announce(WRAPPED, 5) == 2  # every other worker, never itself
        assert _eventually(lambda: heard["b"] == [WRAPPED] and heard["c"] == [WRAPPED])
        assert a.announce(WRAPPED, 1) == 1  # numSignatures 2: one other worker
        assert _eventually(lambda: len(heard["b"]) + len(heard["c"]) == 3)
        assert a.announce(WRAPPED, 0) == 0  # numSignatures 1: nobody else can sign it
        time.sleep(0.2)
        assert len(heard["b"]) + len(heard["c"]) == 3
    finally:
        for peer in (a, b, c):
            peer.close()
    assert not list(peers_dir.iterdir())  # each removed its socket


def test_anything_but_a_wrapped_keys_uri_is_ignored_and_a_failing_hint_is_only_lost(
        peers_dir: Path) -> None:
    heard: list[str] = []

    def on_hint(key_uri: str) -> None:
        heard.append(key_uri)
        if key_uri.endswith(":1"):
            raise RuntimeError("the HSM went away")

    listener = KeyPeers(peers_dir, "b")
    listener.listen(on_hint)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
            for message in (b"", b"\xff\xfe garbage", b"pkcs11:token=tincay;object=ca",
                            b"tincay:subscriber-key:", b"x" * 5000,
                            b"tincay:subscriber-key:1", WRAPPED.encode()):
                raw.sendto(message, str(listener.path))
        assert _eventually(lambda: WRAPPED in heard)
        assert heard == ["tincay:subscriber-key:1", WRAPPED]  # still listening after the raise
    finally:
        listener.close()


def test_a_dead_workers_socket_is_removed_and_a_full_queue_never_blocks(
        peers_dir: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(peers_dir / "dead.sock"))
    dead.close()  # a worker killed: its socket file stayed
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(peers_dir / "deaf.sock"))  # bound, never read: its queue fills up
    sender = KeyPeers(peers_dir, "a")
    try:
        started = time.monotonic()
        sent = [sender.announce(WRAPPED, 5) for _ in range(2000)]
        assert time.monotonic() - started < 10  # never waited for the deaf one
        assert not (peers_dir / "dead.sock").exists()
        assert sent[0] == 1 and sent[-1] == 0  # the deaf one's queue full: the hint dropped
    finally:
        sender.close()
        deaf.close()


@pytest.mark.softhsm
def test_a_warm_up_unwraps_the_key_in_the_named_peers_too(
        database_url: str, hsm_backend: Any, peers_dir: Path) -> None:
    first, engine = _service(database_url, hsm_backend)
    second, second_engine = _service(database_url, hsm_backend)
    try:
        first.subscriber_keys.join_peers(KeyPeers(peers_dir, "first"))
        second.subscriber_keys.join_peers(KeyPeers(peers_dir, "second"))
        key = first.subscriber_keys.generate(KeySpec.parse("ec-p256"), authority="ca-1")
        before = _unwraps()
        first.subscriber_keys.warm(key.uri, key.public_key, peers=0)
        assert _unwraps() == before + 1  # this worker only
        other = first.subscriber_keys.generate(KeySpec.parse("ec-p256"), authority="ca-1")
        first.subscriber_keys.warm(other.uri, other.public_key, peers=1)
        assert _eventually(lambda: _unwraps() == before + 3)  # here, and in the peer
        time.sleep(0.1)
        assert _unwraps() == before + 3
        signer = second.subscriber_keys.signer(other.uri, other.public_key, unwrap_now=False)
        _verify(other.public_key, signer.private_key)
        assert _unwraps() == before + 3  # the peer signed with the key it warmed
    finally:
        for service in (first, second):
            service.close()
        engine.dispose()
        second_engine.dispose()
    assert not list(peers_dir.iterdir())


def _served_unwraps(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
        found = re.search(r"^tincay_subscriber_key_unwraps_total (\S+)$", reply.read().decode(),
                          re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.softhsm
@pytest.mark.parametrize("worker_class", ["gevent_pywsgi", "gthread"])
def test_both_workers_hold_an_authorised_key_before_its_first_signature(
        tmp_path: Path, worker_class: str) -> None:
    """Under gevent the listener is a greenlet, under gthread a thread beside the request
    threads: both share the worker's one PKCS#11 session and its lock."""
    with ExitStack() as stack:
        tincay = Instance(tmp_path, stack, "--worker-class", worker_class)
        base = tincay.base
        token = tincay.python(do="client", name="emr-q11")["token"]
        cert = tincay.issue("ec-p256")
        cred = tincay.python(do="credential", serial=cert["serial"], user=USER,
                             clients=["emr-q11"], pin=PIN)
        otp = Otp(cred["uri"])

        def authorize(count: int) -> tuple[str, list[str]]:
            hashes = [base64.b64encode(hashlib.sha256(secrets.token_bytes(8)).digest())
                      .decode() for _ in range(count)]
            status, _, auth = post(f"{base}/csc/v2/credentials/authorize", {
                "credentialID": cred["id"], "numSignatures": count, "hashes": hashes,
                "hashAlgorithmOID": SHA256,
                "authData": [{"id": "PIN", "value": PIN}, {"id": "OTP", "value": otp.next()}]},
                token=token)
            assert status == 200, auth
            return auth["SAD"], hashes

        assert _served_unwraps(base) == 0
        sad, hashes = authorize(6)
        assert _eventually(lambda: _served_unwraps(base) == 2)  # both workers unwrapped it
        for one in hashes:  # a connection each: the kernel spreads them over both workers
            status, _, signed = post(f"{base}/csc/v2/signatures/signHash", {
                "credentialID": cred["id"], "SAD": sad, "hashes": [one],
                "hashAlgorithmOID": SHA256, "signAlgo": ECDSA}, token=token)
            assert status == 200, signed
        assert _served_unwraps(base) == 2  # no signature unwrapped it again
        assert "Traceback" not in tincay.log.read_text()


def test_a_worker_restarted_after_the_directory_went_still_joins(tmp_path: Path) -> None:
    """A temporary-files cleaner may remove tincay serve's directory on a server up for
    months: the next worker to start makes it again (0700) instead of failing to boot."""
    directory = tmp_path / "gone"
    heard: list[str] = []
    listener = _peer(directory, "b", heard)
    sender = KeyPeers(directory, "a")
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
        assert sender.announce(WRAPPED, 1) == 1
        assert _eventually(lambda: heard == [WRAPPED])
    finally:
        sender.close()
        listener.close()
