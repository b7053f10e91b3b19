"""The logs' hash chains (issue 22): real records through the services (certificates issued,
time-stamps granted over HTTP, signHash signatures), a checkpoint signed by the audit key,
then tampering as a database administrator would (the append-only trigger dropped and made
again, rows edited, deleted, forged, swapped, a rewrite with every later hash and the head
recomputed, a checkpoint's signature corrupted): ``verify`` names the first bad record and
its kind; a clean chain verifies. On SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import text

from ca import chain
from ca.keys.memory import MemoryBackend
from ca.store.db import append_only_ddl
from ca.testing import Hierarchy
from tests.test_credentials import RSA, SHA256, Setup, _digest
from tests.test_service import World as ServiceWorld
from tests.test_tsa import World as TsaWorld, status

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
TABLE = {"audit": "audit_events", "tsa": "timestamp_tokens", "signatures": "signature_records"}


class Logs:
    """The demo hierarchy with records in all three logs, and a DBA's tools."""

    def __init__(self, pki: Hierarchy, tmp_path: Path) -> None:
        self.pki, self.service, self.engine = pki, pki.service, pki._engine
        self.tsa = TsaWorld(pki, tmp_path)
        for _ in range(4):
            assert status(self.tsa.stamp(self.tsa.query("-sha256")))[0] == "granted"
        clients = self.service.clients
        setup = Setup(ServiceWorld(self.service, None, self.engine), "issuing-ca",
                      clients.add("emr-q11").client, clients.add("school").client)
        info, totp = setup.enrol()
        digests = [_digest(f"record {n}") for n in range(4)]
        sad = setup.authorize(info, totp, digests)
        for digest in digests:
            assert self.service.credentials.sign_hashes(setup.client, info.credential_id, sad,
                                                        [digest], SHA256, RSA)

    def verify(self, **kw: Any) -> Any:
        return self.service.audit_chain.verify(**kw)

    def problem(self, name: str) -> chain.Problem | None:
        [report] = [r for r in self.verify().chains if r.chain == name]
        return report.problem

    def sql(self, statement: str, **params: Any) -> Any:
        with self.engine.begin() as connection:
            return connection.execute(text(statement), params)

    def rows(self, name: str) -> list[Any]:
        return self.sql(f"SELECT * FROM {TABLE[name]} ORDER BY chain_seq").mappings().all()

    def as_dba(self, name: str, *statements: str) -> None:
        """``statements`` on chain ``name``'s table with the audit log's append-only trigger
        dropped first and made again after, as a database administrator can."""
        dialect = self.engine.dialect.name
        with self.engine.begin() as connection:
            if name == "audit":
                if dialect == "sqlite":
                    connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
                    connection.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
                else:
                    connection.exec_driver_sql(
                        "DROP TRIGGER audit_events_append_only ON audit_events")
            for statement in statements:
                connection.exec_driver_sql(statement)
            if name == "audit":
                ddl = append_only_ddl("audit_events", dialect)
                for statement in (ddl if dialect == "sqlite" else ddl[1:]):
                    connection.exec_driver_sql(statement)


@pytest.fixture
def logs(database_url: str, tmp_path: Path) -> Iterator[Logs]:
    with Hierarchy.from_spec(at=NOW, database_url=database_url) as pki:
        made = Logs(pki, tmp_path)
        assert made.service.audit_chain.checkpoint() == [
            f"{name}@{len(made.rows(name))}" for name in sorted(chain.CHAINS)]
        yield made


def test_clean_chains_verify_and_every_append_moved_the_head(logs: Logs) -> None:
    result = logs.verify()
    assert result.ok, [r.summary() for r in result.chains]
    counts = {r.chain: (r.records, r.checkpoints) for r in result.chains}
    assert counts["tsa"] == (4, 1) and counts["signatures"] == (4, 1)
    assert counts["audit"][0] >= 5  # keys, certificates, the credential, the clients
    for name in chain.CHAINS:  # seq contiguous from 1, each hash after the one before
        rows = logs.rows(name)
        assert [r["chain_seq"] for r in rows] == list(range(1, len(rows) + 1))
        previous = chain.GENESIS
        for row in rows:
            previous = chain.record_hash(previous, name, row["chain_seq"], _fields(name, row))
            assert row["chain_hash"] == previous
    assert logs.service.audit_chain.checkpoint() == []  # no head moved since


def _fields(name: str, row: Any) -> dict[str, Any]:
    fields = {f: row[f] for f in chain.FIELDS[name]}
    for key in ("at", "gen_time"):  # SQLite hands raw text back outside the ORM
        if isinstance(fields.get(key), str):
            fields[key] = dt.datetime.fromisoformat(fields[key])
    return fields


EDIT = {"audit": "action = 'forged'", "tsa": "imprint_hex = '00'",
        "signatures": "hash_hex = '00'"}


@pytest.mark.parametrize("name", chain.CHAINS)
def test_an_edited_row_is_named_changed(logs: Logs, name: str) -> None:
    target = logs.rows(name)[1]
    logs.as_dba(name, f"UPDATE {TABLE[name]} SET {EDIT[name]} WHERE id = {target['id']}")
    problem = logs.problem(name)
    assert problem is not None and (problem.kind, problem.seq, problem.row_id) == (
        chain.CHANGED, 2, target["id"])
    assert not logs.verify().ok


@pytest.mark.parametrize("name", chain.CHAINS)
def test_a_deleted_row_is_named_deleted(logs: Logs, name: str) -> None:
    target = logs.rows(name)[1]
    logs.as_dba(name, f"DELETE FROM {TABLE[name]} WHERE id = {target['id']}")
    problem = logs.problem(name)
    assert problem is not None and (problem.kind, problem.seq) == (chain.DELETED, 2)


@pytest.mark.parametrize("name", chain.CHAINS)
def test_a_deleted_tail_is_named_deleted(logs: Logs, name: str) -> None:
    last = logs.rows(name)[-1]
    logs.as_dba(name, f"DELETE FROM {TABLE[name]} WHERE id = {last['id']}")
    problem = logs.problem(name)
    assert problem is not None and (problem.kind, problem.seq) == (
        chain.DELETED, last["chain_seq"])


def test_a_deleted_tail_past_the_last_checkpoint_goes_unseen_as_documented(logs: Logs) -> None:
    """The chain's head is its last row (no head stored to write on every append): a record
    appended after the last checkpoint can be deleted unseen, as it can be rewritten unseen;
    once a checkpoint covers it, deleting it is caught."""
    assert status(logs.tsa.stamp(logs.tsa.query("-sha384")))[0] == "granted"
    last = logs.rows("tsa")[-1]
    assert last["chain_seq"] == 5
    logs.as_dba("tsa", f"DELETE FROM timestamp_tokens WHERE id = {last['id']}")
    assert logs.problem("tsa") is None  # past the checkpoint at seq 4: undetectable
    assert status(logs.tsa.stamp(logs.tsa.query("-sha384")))[0] == "granted"
    assert logs.rows("tsa")[-1]["chain_seq"] == 5  # the next append takes the last row's place
    assert logs.service.audit_chain.checkpoint() == ["tsa@5"]
    last = logs.rows("tsa")[-1]
    logs.as_dba("tsa", f"DELETE FROM timestamp_tokens WHERE id = {last['id']}")
    problem = logs.problem("tsa")
    assert problem is not None and (problem.kind, problem.seq) == (chain.DELETED, 5)
    assert "checkpoint" in problem.detail


@pytest.mark.parametrize("name", chain.CHAINS)
def test_a_forged_row_is_named(logs: Logs, name: str) -> None:
    """A row copied to the chain's next seq, its hash not recomputed: the head is the last row,
    so it is not "beyond the head" but a record whose content does not match its hash."""
    rows = logs.rows(name)
    source = dict(rows[0])
    columns = [c for c in source if c != "id"]
    source["chain_seq"] = len(rows) + 1  # after the last row: the next seq, a plausible hash
    if "serial_hex" in source and name == "tsa":
        source["serial_hex"] = "f0f0"
    values = ", ".join(_literal(source[c]) for c in columns)
    logs.as_dba(name, f"INSERT INTO {TABLE[name]} ({', '.join(columns)}) VALUES ({values})")
    problem = logs.problem(name)
    assert problem is not None and (problem.kind, problem.seq) == (
        chain.CHANGED, len(rows) + 1)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@pytest.mark.parametrize("name", chain.CHAINS)
def test_two_rows_swapped_are_named(logs: Logs, name: str) -> None:
    """Swapping every column but the ids: the seqs then run against the row ids
    (reordered); swapping the content but not the chain columns: changed."""
    first, second = logs.rows(name)[1:3]
    columns = [c for c in first if c != "id"]

    def set_to(row: Any, keep_chain: bool) -> str:
        return ", ".join(f"{c} = {_literal(row[c])}" for c in columns
                         if not (keep_chain and c.startswith("chain_")))

    table = TABLE[name]
    unique = {"audit": [], "tsa": ["serial_hex"], "signatures": []}[name]
    park = [f"UPDATE {table} SET chain_seq = -1" + "".join(f", {c} = 'x'" for c in unique)
            + f" WHERE id = {first['id']}"]
    logs.as_dba(name, *park, f"UPDATE {table} SET {set_to(first, False)} "
                             f"WHERE id = {second['id']}",
                f"UPDATE {table} SET {set_to(second, False)} WHERE id = {first['id']}")
    problem = logs.problem(name)
    assert problem is not None and problem.kind == chain.REORDERED and problem.seq == 3


@pytest.mark.parametrize("name", chain.CHAINS)
def test_a_rewrite_with_every_later_hash_recomputed_is_caught_by_the_checkpoint(
        logs: Logs, name: str) -> None:
    rows = [dict(r) for r in logs.rows(name)]
    field = {"audit": "action", "tsa": "imprint_hex", "signatures": "hash_hex"}[name]
    rows[1][field] = "00" if name != "audit" else "forged"
    previous, updates = chain.GENESIS, []
    for row in rows:  # the DBA recomputes the whole chain from the edit on, and the head
        previous = chain.record_hash(previous, name, row["chain_seq"], _fields(name, row))
        updates.append(f"UPDATE {TABLE[name]} SET {field} = {_literal(row[field])}, "
                       f"chain_hash = '{previous}' WHERE id = {row['id']}")
    logs.as_dba(name, *updates)
    problem = logs.problem(name)
    assert problem is not None and problem.kind == chain.CHANGED
    assert problem.seq == len(rows) and "checkpoint" in problem.detail


@pytest.mark.parametrize("name", chain.CHAINS)
def test_a_corrupted_checkpoint_signature_is_caught(logs: Logs, name: str) -> None:
    [(checkpoint_id, signature)] = logs.sql(
        "SELECT id, signature FROM log_checkpoints WHERE chain = :c", c=name).all()
    signature = bytes(signature)  # psycopg2 hands bytea back as a memoryview
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    logs.sql("UPDATE log_checkpoints SET signature = :s WHERE id = :i", s=flipped,
             i=checkpoint_id)
    problem = logs.problem(name)
    assert problem is not None and problem.kind == chain.CHECKPOINT
    # and a checkpoint whose head was moved along with the chain's fails its signature too
    logs.sql("UPDATE log_checkpoints SET signature = :s, head_hex = :h WHERE id = :i",
             s=signature, h="11" * 32, i=checkpoint_id)
    assert logs.problem(name).kind == chain.CHECKPOINT


def test_an_offline_public_key_checks_the_checkpoints(logs: Logs) -> None:
    pem = logs.service.audit_chain.public_key_pem()
    assert logs.verify(public_key_pem=pem).ok
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    result = logs.verify(public_key_pem=other)
    assert not result.ok and all(r.problem.kind == chain.CHECKPOINT for r in result.chains)
    from ca.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a PEM public key"):
        logs.verify(public_key_pem=b"not a key")


def test_appends_after_the_checkpoint_verify_and_are_checkpointed_next(logs: Logs) -> None:
    logs.tsa.stamp(logs.tsa.query("-sha384"))
    assert logs.verify().ok
    assert logs.service.audit_chain.checkpoint() == ["tsa@5"]
    assert logs.verify().ok


# --- the encoding -----------------------------------------------------------------------------

def test_the_encoding_is_unambiguous() -> None:
    row = dict.fromkeys(chain.FIELDS["audit"])
    row["at"] = dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc)
    variants = [dict(row, action="ab", authority="c"), dict(row, action="a", authority="bc"),
                dict(row, action="a", authority=""), dict(row, action="a", authority=None)]
    hashes = {chain.record_hash(chain.GENESIS, "audit", 1, v) for v in variants}
    assert len(hashes) == len(variants)
    later = dict(row, action="a", at=row["at"] + dt.timedelta(microseconds=1))
    assert chain.record_hash(chain.GENESIS, "audit", 1, later) != \
        chain.record_hash(chain.GENESIS, "audit", 1, dict(row, action="a"))
    assert chain.record_hash(chain.GENESIS, "audit", 1, dict(row, action="a")) != \
        chain.record_hash(chain.GENESIS, "audit", 2, dict(row, action="a"))
    local = dt.timezone(dt.timedelta(hours=7))  # the same instant in Hanoi: the same hash
    assert chain.record_hash(chain.GENESIS, "audit", 1, dict(row, at=row["at"].astimezone(local))) \
        == chain.record_hash(chain.GENESIS, "audit", 1, row)


def test_the_encoding_is_the_documented_one() -> None:
    """Each value a tag, a 4-byte big-endian length and its bytes; built here by hand from
    that description, not by the module, so a change of encoding (which would fail every
    stored chain) cannot pass unnoticed."""
    def item(tag: bytes, data: bytes) -> bytes:
        return tag + len(data).to_bytes(4, "big") + data

    at = dt.datetime(2026, 12, 3, 15, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    row = {"at": at, "action": "certificate.issue", "authority": "issuing-ca",
           "serial_hex": None, "subject": "CN=Bùi Sĩ Tuấn", "details": ""}
    expected = b"".join([item(b"D", b"tincay-chain-v1"), item(b"S", b"audit"), item(b"I", b"42"),
                         item(b"T", b"2026-12-03T08:00:00.000007Z"),
                         item(b"S", b"certificate.issue"), item(b"S", b"issuing-ca"),
                         item(b"N", b""), item(b"S", "CN=Bùi Sĩ Tuấn".encode()),
                         item(b"S", b"")])
    assert chain.canonical("audit", 42, row) == expected
    previous = "ab" * 32
    assert chain.record_hash(previous, "audit", 42, row) == hashlib.sha256(
        bytes.fromhex(previous) + expected).hexdigest()
    with pytest.raises(TypeError):
        chain.encode_value(1.5)


# --- the CLI, on SoftHSM: init makes the audit key, maintain checkpoints, verify exits 4 --------

@pytest.mark.softhsm
def test_the_cli_checkpoints_verifies_and_names_a_tampered_record(
        softhsm_env: dict[str, str], database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        unique_label: str) -> None:
    from tests.test_cli import Cli, write_spec

    monkeypatch.setenv("TINCAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINCAY_DATABASE_URL", database_url)
    monkeypatch.setenv("TINCAY_PUBLIC_URL", "http://127.0.0.1:8080")
    cli = Cli(capsys)
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    pem = cli("audit", "key")
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "audit.pem").write_text(pem)
    report = cli.json("maintain", "--once")
    assert "audit@" in " ".join(report["checkpoints"])
    out = cli("audit", "verify")
    assert "audit: ok" in out and "1 checkpoints" in out
    assert cli.json("audit", "--ca", f"{unique_label}-ca")  # the listing still lists
    verified = json.loads(cli("audit", "verify", "--json", "--public-key",
                              str(tmp_path / "audit.pem")))
    assert verified["ok"] and [c["chain"] for c in verified["chains"]] == list(chain.CHAINS)
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            target = connection.execute(text(
                "SELECT id FROM audit_events WHERE chain_seq = 2")).scalar()
            dialect = engine.dialect.name
            if dialect == "sqlite":
                connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            else:
                connection.exec_driver_sql("DROP TRIGGER audit_events_append_only ON audit_events")
            connection.exec_driver_sql(
                f"UPDATE audit_events SET subject = 'CN=forged' WHERE id = {target}")
            ddl = append_only_ddl("audit_events", dialect)
            connection.exec_driver_sql(ddl[0] if dialect == "sqlite" else ddl[1])
    finally:
        engine.dispose()
    cli("audit", "verify", code=4)
    assert f"audit: changed at seq 2, row id {target}" in cli.err
    cli("audit", "verify", "--public-key", str(tmp_path / "missing.pem"), code=1)
    assert "missing.pem" in cli.err and "Traceback" not in cli.err


# --- the migration: a database at 0009 with rows, upgraded, verifies ---------------------------

def test_a_database_upgraded_from_0009_verifies(database_url: str) -> None:
    from ca.clock import FrozenClock
    from ca.services import CertificateAuthority
    from ca.store.db import create_engine_for, make_session_factory, migrate

    engine = create_engine_for(database_url, create=True)
    migrate(engine, "0009")
    at = dt.datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=dt.timezone.utc)
    with engine.begin() as connection:
        for n in range(3):
            connection.execute(text(
                "INSERT INTO audit_events (at, action, authority, subject, details) "
                "VALUES (:at, :action, NULL, :subject, :details)"),
                {"at": at if engine.dialect.name != "sqlite" else at.replace(tzinfo=None),
                 "action": f"test.{n}", "subject": "CN=Bùi Sĩ Tuấn", "details": ""})
            connection.execute(text(
                "INSERT INTO timestamp_tokens (unit, serial_hex, gen_time, imprint_algorithm, "
                "imprint_hex, policy, nonce_hex, requester) VALUES ('tsa', :s, :at, 'sha256', "
                ":i, '1.2.3', NULL, NULL)"),
                {"s": f"{n + 1:x}", "i": hashlib.sha256(bytes([n])).hexdigest(),
                 "at": at if engine.dialect.name != "sqlite" else at.replace(tzinfo=None)})
    migrate(engine)
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(), {},
                                   FrozenClock(at), "http://127.0.0.1")  # type: ignore[arg-type]
    try:
        result = service.audit_chain.verify()
        assert result.ok, [r.summary() for r in result.chains]
        assert {r.chain: r.records for r in result.chains} == {
            "audit": 3, "tsa": 3, "signatures": 0}
        with service.context.transaction() as session:  # appends go on after the backfill
            from ca.store import queries
            queries.record_event(session, at=at, action="test.after")
        # the audit key is made at the first checkpoint: its key.generate event is seq 5
        assert service.audit_chain.checkpoint() == ["audit@5", "tsa@3"]
        assert service.audit_chain.verify().ok
    finally:
        service.close()
        engine.dispose()


# --- concurrency on PostgreSQL: many processes append, the chains never fork -------------------

def _append(url: str, worker: int, count: int) -> None:
    from ca.clock import FrozenClock
    from ca.services import CertificateAuthority
    from ca.store import queries
    from ca.store.db import create_engine_for, make_session_factory
    from ca.timestamps import TimestampRecord

    engine = create_engine_for(url)
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(), {},
                                   FrozenClock(NOW), "http://127.0.0.1")  # type: ignore[arg-type]
    import threading

    def tokens(thread: int) -> None:
        for n in range(count):
            service.token_log.record(TimestampRecord(
                unit="tsa", serial=(worker << 32) | (thread << 16) | n, gen_time=NOW,
                imprint_algorithm="sha256", imprint=bytes(32), policy="1.2.3", nonce=None,
                requester=None))

    threads = [threading.Thread(target=tokens, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for n in range(count):
        with service.context.transaction() as session:
            queries.record_event(session, at=NOW, action="test.concurrent",
                                 details=f"{worker}:{n}")
    for thread in threads:
        thread.join()
    service.close()
    engine.dispose()


@pytest.mark.postgres
def test_processes_appending_concurrently_never_fork_a_chain() -> None:
    from tests.conftest import postgres_database

    with postgres_database() as url:
        _concurrent(url)


def _concurrent(postgres_database: str) -> None:
    from ca.store.db import create_engine_for, migrate

    engine = create_engine_for(postgres_database, create=True)
    migrate(engine)
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(postgres_database, w, 40))
               for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    from ca.clock import FrozenClock
    from ca.services import CertificateAuthority
    from ca.store.db import make_session_factory

    engine = create_engine_for(postgres_database)
    service = CertificateAuthority(make_session_factory(engine), MemoryBackend(), {},
                                   FrozenClock(NOW), "http://127.0.0.1")  # type: ignore[arg-type]
    try:
        service.audit_chain.checkpoint()
        result = service.audit_chain.verify()
        assert result.ok, [r.summary() for r in result.chains]
        counts = {r.chain: (r.records, r.head_seq) for r in result.chains}
        assert counts["tsa"] == (4 * 4 * 40, 4 * 4 * 40)
        assert counts["audit"][0] == counts["audit"][1] >= 4 * 40
    finally:
        service.close()
        engine.dispose()


def test_events_deferred_in_a_rolled_back_transaction_are_never_chained(logs: Logs) -> None:
    """An audit event recorded in a transaction that rolls back goes with it, even when the
    same session commits another transaction afterwards."""
    from ca.store import queries

    before = len(logs.rows("audit"))
    context = logs.service.context
    with context.sessions() as session:
        with pytest.raises(RuntimeError):
            with session.begin():
                queries.record_event(session, at=NOW, action="test.rolled_back")
                raise RuntimeError("refused")
        with session.begin():
            queries.record_event(session, at=NOW, action="test.committed")
    actions = [r["action"] for r in logs.rows("audit")[before:]]
    assert actions == ["test.committed"]
    assert logs.verify().ok
