"""signHash's hot path (ca.services.sign_path over ca.store.hot_tx): concurrent requests share
one transaction, each in its own savepoint; a refused one undoes only itself; a signature's
record is committed before sign_hashes returns; a race for one hash has one winner."""
from __future__ import annotations

import threading
import time
from typing import Any

import pyotp
import pytest
import sqlalchemy
from sqlalchemy import select

from ca.errors import (CredentialDisabledError, DatabaseBusyError, ExpiredTokenError,
                       InvalidSadError, InvalidTokenError)
from ca.store.models import ActivationHash, SignatureRecord
from ca.services.sign_path import Job, SignPath
from tests.test_credentials import RSA, SHA256, Setup, _digest, mem  # noqa: F401 - fixture
from tests.test_service import profiles  # noqa: F401 - the module-scoped fixture


def _path(mem: Setup) -> Any:  # noqa: F811
    return mem.creds.remote.sign_path


def test_the_record_is_committed_when_sign_hashes_returns(mem: Setup,  # noqa: F811
                                                          database_url: str) -> None:
    info, totp = mem.enrol()
    digest = _digest("committed")
    sad = mem.authorize(info, totp, [digest])
    [signature] = mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest],
                                        SHA256, RSA)
    assert signature
    other = sqlalchemy.create_engine(database_url)  # another connection: sees commits only
    try:
        with other.connect() as connection:
            hashes = connection.execute(select(SignatureRecord.hash_hex)).scalars().all()
            used = connection.execute(select(ActivationHash.used_at)).scalars().all()
    finally:
        other.dispose()
    assert hashes == [digest.hex()] and used[0] is not None


def test_a_batch_commits_its_winners_and_undoes_each_refusal(mem: Setup) -> None:  # noqa: F811
    """Three requests in one transaction: the second wants a hash the first took, after
    marking one of its own; its savepoint undoes that mark, the others commit."""
    info, totp = mem.enrol()
    h1, h2, h3, h4 = (_digest(t) for t in "abcd")
    sad = mem.authorize(info, totp, [h1, h2, h3, h4])
    path, now = _path(mem), mem.clock.now()

    def job(hashes: list[bytes]) -> Job:
        return Job(path.work(mem.client, info.credential_id, sad, hashes, SHA256, RSA, None,
                             now))

    jobs = [job([h1, h2]), job([h3, h1]), job([h4])]
    path.commit_batch(jobs, time.monotonic() + 5)
    assert jobs[0].error is None and jobs[0].result is not None
    assert isinstance(jobs[1].error, InvalidSadError) and jobs[1].result is None
    assert jobs[2].error is None and len(jobs[2].result.record_ids) == 1
    assert sorted(r.hash_hex for r in mem.rows(SignatureRecord)) == sorted(
        h.hex() for h in (h1, h2, h4))
    used = {r.hash_hex: r.used_at for r in mem.rows(ActivationHash)}
    assert used[h3.hex()] is None  # the refused request's mark was rolled back
    [late] = mem.creds.sign_hashes(mem.client, info.credential_id, sad, [h3], SHA256, RSA)
    assert late and len(mem.rows(SignatureRecord)) == 4


def test_eight_threads_racing_for_one_hash_one_signature(mem: Setup) -> None:  # noqa: F811
    info, totp = mem.enrol()
    digest, others = _digest("x"), [_digest(f"o{n}") for n in range(4)]
    sad = mem.authorize(info, totp, [digest, *others])
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def sign(hashes: list[bytes]) -> None:
        barrier.wait()
        try:
            results.append((hashes, mem.creds.sign_hashes(
                mem.client, info.credential_id, sad, hashes, SHA256, RSA)))
        except Exception as exc:  # noqa: BLE001 - the losers' refusals are the point
            results.append((hashes, exc))

    jobs = [[digest]] * 4 + [[h] for h in others]
    threads = [threading.Thread(target=sign, args=(hashes,)) for hashes in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    on_digest = [r for hashes, r in results if hashes == [digest]]
    assert sum(isinstance(r, list) for r in on_digest) == 1, results
    assert all(isinstance(r, InvalidSadError) for r in on_digest if not isinstance(r, list))
    assert all(isinstance(r, list) for hashes, r in results if hashes != [digest]), results
    assert sorted(r.hash_hex for r in mem.rows(SignatureRecord)) == sorted(
        h.hex() for h in [digest, *others])


def test_a_disabled_credential_is_refused_at_once_after_signing(mem: Setup) -> None:  # noqa: F811
    """The hot path caches only certificates' public keys: a credential disabled between
    two signatures is refused at the second."""
    info, totp = mem.enrol()
    h1, h2 = _digest("1"), _digest("2")
    sad = mem.authorize(info, totp, [h1, h2])
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [h1], SHA256, RSA)
    mem.creds.disable(info.credential_id)
    with pytest.raises(CredentialDisabledError):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [h2], SHA256, RSA)
    assert len(mem.rows(SignatureRecord)) == 1


def test_a_revoked_token_is_refused_at_once(mem: Setup) -> None:  # noqa: F811
    clients = mem.world.service.clients
    registered = clients.add("short-lived")
    grant = clients.grant(registered.client.client_id, registered.client_secret)
    assert clients.verify(grant.access_token).name == "short-lived"
    assert clients.revoke(grant.access_token)
    with pytest.raises(Exception) as refused:
        clients.verify(grant.access_token)
    assert getattr(refused.value, "error", None) == "invalid_token"
    other = clients.grant(registered.client.client_id, registered.client_secret)
    clients.verify(other.access_token)
    clients.disable("short-lived")
    with pytest.raises(Exception) as refused:
        clients.verify(other.access_token)
    assert getattr(refused.value, "error", None) == "invalid_token"


def test_a_pending_token_is_checked_in_the_signing_transaction(mem: Setup) -> None:  # noqa: F811
    """signHash hands its bearer token on unchecked (Clients.pending): the hot path's query
    checks it; a revoked or expired token or a disabled client gets Clients.verify's own
    refusal, another client's token the refusal that client gets, and nothing is signed."""
    clients = mem.world.service.clients
    registered = clients.add("emr-token")
    client = registered.client
    info, uri = mem.creds.create(mem.issue(), "CCCD:001", [client.name], "1357-pin")
    totp = pyotp.parse_uri(uri)
    hashes = [_digest(f"h{n}") for n in range(4)]
    sad = mem.creds.authorize(client, info.credential_id, pin="1357-pin", otp=mem.otp(totp),
                              hashes=hashes, hash_algorithm_oid=SHA256,
                              num_signatures=len(hashes)).sad

    def token() -> str:
        return clients.grant(client.client_id, registered.client_secret).access_token

    def sign(pending: Any, digest: bytes) -> list[bytes]:
        return mem.creds.sign_hashes(pending, info.credential_id, sad, [digest], SHA256, RSA)

    good = token()
    assert len(sign(clients.pending(good), hashes[0])) == 1
    revoked = token()
    clients.revoke(revoked)
    with pytest.raises(InvalidTokenError) as refused:
        sign(clients.pending(revoked), hashes[1])
    assert not isinstance(refused.value, ExpiredTokenError)
    other = clients.add("emr-stranger")
    stranger = clients.grant(other.client.client_id, other.client_secret).access_token
    with pytest.raises(Exception) as by_token:
        sign(clients.pending(stranger), hashes[1])
    with pytest.raises(Exception) as by_client:
        sign(other.client, hashes[1])
    assert type(by_token.value) is type(by_client.value)
    assert not isinstance(by_token.value, InvalidTokenError)
    mem.clock.advance(clients.token_lifetime)
    with pytest.raises(ExpiredTokenError):
        sign(clients.pending(good), hashes[1])
    late = token()
    clients.disable("emr-token")
    with pytest.raises(InvalidTokenError):
        sign(clients.pending(late), hashes[1])
    assert [r.hash_hex for r in mem.rows(SignatureRecord)] == [hashes[0].hex()]
    used = {r.hash_hex: r.used_at for r in mem.rows(ActivationHash)}
    assert [h for h in hashes if used[h.hex()] is not None] == [hashes[0]]


def test_a_batch_that_waited_for_the_chains_lock_stays_within_its_bound(  # noqa: F811
        mem: Setup, database_url: str) -> None:
    """PostgreSQL bounds each statement's lock wait (5 s). A table lock on the signature log
    (a migration, an operator's bulk change): the first process's batch holds the chain's
    advisory lock while its insert waits the whole 5 s; a second process's batch waits for
    that advisory lock, then for the table. Each is refused busy within its 5-s bound for
    the whole transaction, not 5 s per statement (10 s, past a client's patience)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite takes its one write lock at BEGIN IMMEDIATE: nothing waits twice")
    (first_info, first_totp), (second_info, second_totp) = mem.enrol(), mem.enrol()
    h1, h2 = _digest("first"), _digest("second")
    first_sad = mem.authorize(first_info, first_totp, [h1])
    second_sad = mem.authorize(second_info, second_totp, [h2])
    now = mem.clock.now()
    first, second = _path(mem), SignPath(mem.world.service.context)  # two processes' paths
    holder = sqlalchemy.create_engine(database_url)
    took: dict[str, tuple[float, Any]] = {}

    def commit(name: str, path: Any, info: Any, sad: str, digest: bytes) -> None:
        job = Job(path.work(mem.client, info.credential_id, sad, [digest], SHA256, RSA, None,
                            now))
        started = time.monotonic()
        try:
            path.commit_batch([job], started + 5)
            outcome: Any = job.error or job.result
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcome = exc
        took[name] = (time.monotonic() - started, outcome)

    try:
        with holder.connect() as connection:
            connection.execute(sqlalchemy.text(
                "LOCK TABLE signature_records IN EXCLUSIVE MODE"))
            batches = [threading.Thread(target=commit, args=("first", first, first_info,
                                                             first_sad, h1))]
            batches[0].start()
            time.sleep(1)  # the first holds the chain's lock and waits for the table
            batches.append(threading.Thread(target=commit, args=(
                "second", second, second_info, second_sad, h2)))
            batches[1].start()
            for batch in batches:
                batch.join(30)
            connection.rollback()
    finally:
        holder.dispose()
    for name in ("first", "second"):
        seconds, outcome = took[name]
        assert isinstance(outcome, DatabaseBusyError), (name, outcome)
        assert 3.5 <= seconds < 6.5, (name, seconds)  # one bound, not one per statement
    assert mem.rows(SignatureRecord) == []
    [signature] = mem.creds.sign_hashes(mem.client, second_info.credential_id, second_sad,
                                        [h2], SHA256, RSA)  # the hash was not used up
    assert signature
