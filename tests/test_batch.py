"""``tincay issue --batch`` and ``tincay revoke --batch`` (issue 21): real SoftHSM, SQLite and
PostgreSQL, the CLI in-process and, for the crash, a console-script process killed mid-run.

What is pinned: CSV and JSON lines, CSR rows (inline PEM and a path) and HSM-key rows; every
bad row reported with the field at fault while the good rows are issued; a rerun issues
nothing new; a run killed with SIGKILL and rerun ends with every row issued exactly once; a
revocation batch, its rerun and its bad rows alike.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca.services.batch_files import as_text
from tests.test_cli import DOCTOR, TINCAY, Cli, write_spec

pytestmark = pytest.mark.softhsm
_KEY = ec.generate_private_key(ec.SECP256R1())


def csr_pem(cn: str = "whatever") -> str:
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(_KEY, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode("ascii")


def tampered_csr_pem() -> str:
    """A CSR whose self-signature does not verify (the last signature byte flipped)."""
    csr = x509.load_pem_x509_csr(csr_pem().encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(
        serialization.Encoding.PEM).decode("ascii")


def subject(n: int) -> str:
    return f"C=VN, O=Bệnh viện Quận 11, CN=Bác sĩ {n}, UID=CCCD:0790730{n:05d}"


@pytest.fixture
def env(softhsm_env: dict[str, str], database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"TINCAY_HOME": str(tmp_path / "home"), "TINCAY_DATABASE_URL": database_url,
              "TINCAY_PUBLIC_URL": "http://127.0.0.1:8080"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **softhsm_env, **values}


@pytest.fixture
def ca(env: dict[str, str], tmp_path: Path, unique_label: str,
       capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Cli, str]]:
    cli = Cli(capsys)
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    yield cli, f"{unique_label}-ca"


def results(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [{k: v or None for k, v in r.items()} for r in csv.DictReader(text.splitlines())]
    return [json.loads(line) for line in text.splitlines()]


def issued_count(database_url: str, where: Any = None) -> int:
    from ca.store.db import create_engine_for
    from ca.store.models import Certificate

    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(Certificate).where(
                Certificate.status == "issued", Certificate.profile == "clinician")
            return connection.execute(query if where is None else query.where(where)).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_batch_issues_the_good_rows_names_the_bad_ones_and_resumes(
        ca: tuple[Cli, str], tmp_path: Path, database_url: str, fmt: str) -> None:
    cli, name = ca
    (tmp_path / "csrs").mkdir()
    (tmp_path / "csrs" / "two.csr").write_text(csr_pem("two"), encoding="ascii")
    rows = [
        {"profile": "clinician", "subject": subject(1), "csr": csr_pem(),
         "email": "bs1@benhvien-q11.example.vn", "days": 90},
        {"profile": "clinician", "subject": subject(2), "csr": "csrs/two.csr"},
        {"profile": "clinician", "subject": subject(3), "key_type": "ec-p256"},
        {"profile": "clinician", "subject": "C=VN, CN=Bác sĩ, =broken", "key_type": "ec-p256"},
        {"profile": "clinician", "subject": subject(5), "csr": tampered_csr_pem()},
        {"profile": "clinican", "subject": subject(6), "key_type": "ec-p256"},
        {"profile": "clinician", "subject": subject(7), "key_type": "ec-p999"},
        {"profile": "clinician", "subject": subject(8), "csr": "csrs/missing.csr"},
        {"profile": "clinician", "subject": subject(9), "key_type": "ec-p256", "days": 99999},
        {"profile": "clinician", "subject": subject(10), "key_type": "ec-p256",
         "email": "not an e-mail"},
        {"profile": "clinician", "subject": subject(11), "key_type": "ec-p256",
         "colour": "blue"},
        {"profile": "clinician", "key_type": "ec-p256"},  # no subject column
    ]
    batch = tmp_path / f"doctors.{fmt}"
    batch.write_text(as_text(fmt, rows), encoding="utf-8")  # type: ignore[arg-type]
    out = tmp_path / f"results.{fmt}"
    keys_before = len([e for e in cli.json("audit", "--ca", name)
                       if e["action"] == "key.generate"])

    summary = cli("issue", "--ca", name, "--batch", str(batch), "--results", str(out), code=1)
    assert summary.strip() == f"3 issued, 0 already issued, 9 failed (see {out})"
    first = results(out)
    assert [r["row"] for r in first] == [str(i) if fmt == "csv" else i for i in range(1, 13)]
    by_row = {int(r["row"]): r for r in first}
    assert {n for n, r in by_row.items() if r["status"] in ("issued", "already-issued")} == \
        {1, 2, 3}
    expected_fields = {4: "subject", 5: "csr", 6: "profile", 7: "key_type", 8: "csr",
                       9: "days", 10: "email", 11: "colour", 12: "subject"}
    assert {n: by_row[n]["field"] for n in expected_fields} == expected_fields
    assert all(by_row[n]["status"] == "error" and by_row[n]["error"] for n in expected_fields)
    assert "does not verify" in by_row[5]["error"] and "clinician" in by_row[6]["error"]
    # one HSM key for the one good key_type row, none for the refused ones
    keys_after = [e for e in cli.json("audit", "--ca", name) if e["action"] == "key.generate"]
    assert len(keys_after) == keys_before + 1
    assert issued_count(database_url) == 3

    listed = {c["serial"]: c for c in cli.json("cert", "list", "--ca", name)}
    for n in (1, 2, 3):
        assert listed[by_row[n]["serial"]]["status"] == "issued"
    shown = cli.json("cert", "show", by_row[1]["serial"], "--ca", name)
    assert "Bác sĩ 1" in shown["subject"]
    pem = cli("cert", "export", by_row[3]["serial"], "--ca", name)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Bác sĩ 3"

    # the rerun: nothing new, the same serials
    summary = cli("issue", "--ca", name, "--batch", str(batch), "--results", str(out), code=1)
    assert summary.strip() == f"0 issued, 3 already issued, 9 failed (see {out})"
    again = {int(r["row"]): r for r in results(out)}
    assert all(again[n]["status"] == "already-issued" and again[n]["serial"] ==
               by_row[n]["serial"] for n in (1, 2, 3))
    assert issued_count(database_url) == 3
    assert len([e for e in cli.json("audit", "--ca", name)
                if e["action"] == "key.generate"]) == keys_before + 1
    assert "Traceback" not in cli.err


def test_a_clean_batch_exits_zero_and_refuses_mixed_options(
        ca: tuple[Cli, str], tmp_path: Path) -> None:
    cli, name = ca
    batch = tmp_path / "rows.txt"  # no extension: JSON lines by its first character
    batch.write_text(as_text("jsonl", [{"profile": "clinician", "subject": DOCTOR,
                                         "csr": csr_pem()}]), encoding="utf-8")
    assert cli("issue", "--ca", name, "--batch", str(batch)).strip() == \
        "1 issued, 0 already issued, 0 failed"
    assert "issuing rows.txt" in cli.err  # the progress bar, on stderr
    cli("issue", "--ca", name, "--batch", str(batch), "--profile", "clinician", code=2)
    assert "--batch takes" in cli.err
    cli("issue", "--ca", name, "--batch", str(batch), "--results", str(batch), code=2)
    assert "overwrite the batch file" in cli.err and batch.read_text(encoding="utf-8")
    cli("issue", "--ca", "nope", "--batch", str(batch), code=1)
    assert "no CA named 'nope'" in cli.err and "Traceback" not in cli.err
    # a CSV without a subject column, a line that is not JSON: each row names its fault
    headless = tmp_path / "no-subject.csv"
    headless.write_text("profile,key_type\nclinician,ec-p256\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    cli("issue", "--ca", name, "--batch", str(headless), "--results", str(out), code=1)
    assert [(r["status"], r["field"]) for r in results(out)] == [("error", "subject")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"profile": "clinician", "subject": "CN=x"\n["a list"]\n',
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cli("issue", "--ca", name, "--batch", str(broken), "--results", str(out), code=1)
    assert [(r["row"], r["field"]) for r in results(out)] == [(1, "row"), (2, "row")]
    assert "not JSON" in results(out)[0]["error"]
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    cli("issue", "--ca", name, "--batch", str(empty), code=1)
    assert str(empty) in cli.err


def test_a_run_killed_mid_batch_then_rerun_issues_every_row_exactly_once(
        ca: tuple[Cli, str], env: dict[str, str], tmp_path: Path, database_url: str) -> None:
    _, name = ca
    total = 300
    batch = tmp_path / "many.csv"
    batch.write_text(as_text("csv", [{"profile": "clinician", "subject": subject(n),
                                      "csr": csr_pem()} for n in range(total)]),
                     encoding="utf-8")
    out = tmp_path / "results.csv"
    args = [TINCAY, "issue", "--ca", name, "--batch", str(batch), "--results", str(out),
            "--batch-size", "4"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") > 20:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the batch finished before it was killed"
    done_before = issued_count(database_url)
    assert 0 < done_before < total

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = results(out)
    assert len(rows) == total and len({r["serial"] for r in rows}) == total
    statuses = [r["status"] for r in rows]
    assert statuses.count("already-issued") >= done_before
    assert set(statuses) <= {"issued", "already-issued"}
    from ca.store.models import Certificate
    assert issued_count(database_url) == total
    for n in (0, total // 2, total - 1):  # each row's subject certified once
        assert issued_count(database_url, Certificate.subject.contains(f"Bác sĩ {n},")) == 1


def test_a_chunk_persisted_but_never_signed_is_revoked_as_never_issued_and_reissued(
        ca: tuple[Cli, str], tmp_path: Path, database_url: str) -> None:
    """The state ``kill -9`` leaves between the two transactions, made on purpose: the
    claim and the pending row committed, no signature."""
    from cli.shell import app_context  # noqa: F401 - the CLI's composition root, below
    from ca.services.batch_files import read_rows
    from ca.services.batch_rows import check_row
    from cli.context import AppContext

    cli, name = ca
    batch = tmp_path / "one.jsonl"
    batch.write_text(as_text("jsonl", [{"profile": "clinician", "subject": subject(1),
                                         "csr": csr_pem()}]), encoding="utf-8")
    app = AppContext()
    try:
        service = app.service.batch.rows
        with service.context.read() as session:
            from ca.store import queries
            authority = queries.get_authority(session, name)
            issuer = service.context.issuer_info(authority)
        request = check_row(service.context.profiles, name, next(read_rows(batch, "jsonl")),
                            tmp_path)
        todo, stale = service._claimed(name, [request], {})
        assert service._prepare(request, issuer, service.context.urls(issuer), {})
        service._persist(name, authority.id, todo, stale, "one.jsonl")
        abandoned = request.prepared.serial_hex
    finally:
        app.close()
    assert cli.json("cert", "show", abandoned, "--ca", name)["status"] == "pending"

    out = tmp_path / "results.jsonl"
    assert cli("issue", "--ca", name, "--batch", str(batch), "--results", str(out)).strip() \
        == "1 issued, 0 already issued, 0 failed"
    [row] = results(out)
    assert row["status"] == "issued" and row["serial"] != abandoned
    old = cli.json("cert", "show", abandoned, "--ca", name)
    assert old["status"] == "revoked" and old["revocation_reason"] == "cessationOfOperation"
    assert issued_count(database_url) == 1
    assert cli("issue", "--ca", name, "--batch", str(batch)).strip() == \
        "0 issued, 1 already issued, 0 failed"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_revocation_batch_reports_each_row_and_resumes(
        ca: tuple[Cli, str], tmp_path: Path, fmt: str) -> None:
    cli, name = ca
    issue = tmp_path / "issue.jsonl"
    issue.write_text(as_text("jsonl", [{"profile": "clinician", "subject": subject(n),
                                         "csr": csr_pem()} for n in range(4)]),
                     encoding="utf-8")
    issued = tmp_path / "issued.jsonl"
    cli("issue", "--ca", name, "--batch", str(issue), "--results", str(issued))
    serials = [r["serial"] for r in results(issued)]
    cli("revoke", serials[1], "--ca", name, "--reason", "superseded")
    root = name.replace("-ca", "-root")
    rows = [
        {"serial": serials[0], "reason": "keyCompromise", "invalidity_date": "2026-01-02"},
        {"serial": serials[1], "reason": "superseded"},  # revoked before, same reason
        {"serial": serials[2], "reason": "no-such-reason"},
        {"serial": "zz", "reason": "superseded"},
        {"serial": "abc123", "reason": "superseded"},  # no such certificate
        {"serial": serials[3], "reason": "keyCompromise", "invalidity_date": "2999-01-01"},
        {"serial": serials[1], "reason": "keyCompromise"},  # revoked before, another reason
        {"reason": "superseded"},
    ]
    batch = tmp_path / f"revoke.{fmt}"
    batch.write_text(as_text(fmt, rows), encoding="utf-8")  # type: ignore[arg-type]
    out = tmp_path / f"revoked.{fmt}"
    summary = cli("revoke", "--ca", name, "--batch", str(batch), "--results", str(out), code=1)
    assert summary.startswith("1 revoked, 1 already revoked, 6 failed")
    by_row = {int(r["row"]): r for r in results(out)}
    assert by_row[1]["status"] == "revoked" and by_row[2]["status"] == "already-revoked"
    assert {n: by_row[n]["field"] for n in range(3, 9)} == {
        3: "reason", 4: "serial", 5: "serial", 6: "invalidity_date", 7: "reason", 8: "serial"}
    shown = cli.json("cert", "show", serials[0], "--ca", name)
    assert shown["status"] == "revoked" and shown["revocation_reason"] == "keyCompromise"
    assert cli.json("cert", "show", serials[2], "--ca", name)["status"] == "issued"
    assert cli.json("cert", "show", serials[3], "--ca", name)["status"] == "issued"
    # the rerun: the revoked rows are already revoked, nothing else changes
    summary = cli("revoke", "--ca", name, "--batch", str(batch), "--results", str(out), code=1)
    assert summary.startswith("0 revoked, 2 already revoked, 6 failed")
    # a serial of another CA is not this CA's
    other = tmp_path / f"other.{fmt}"
    other.write_text(as_text(fmt, [{"serial": serials[2], "reason": "superseded"}]),  # type: ignore[arg-type]
                     encoding="utf-8")
    cli("revoke", "--ca", root, "--batch", str(other), "--results", str(out), code=1)
    assert results(out)[0]["field"] == "serial"
    assert cli.json("cert", "show", serials[2], "--ca", name)["status"] == "issued"


def test_rows_checked_in_worker_processes_end_as_in_one_process(
        ca: tuple[Cli, str], tmp_path: Path) -> None:
    """From the second chunk on, CSR rows are checked and prepared in worker processes:
    every refusal names the same field with the same words as in the main process, the key
    rows they hand back are issued, and a rerun in one process finds every row issued."""
    from cli.context import AppContext

    _, name = ca
    weak = rsa.generate_private_key(65537, 1024)
    weak_csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "weak")])).sign(weak, hashes.SHA256())
    rows = [{"profile": "clinician", "subject": subject(n), "csr": csr_pem()} for n in range(3)]
    rows += [
        {"profile": "clinician", "subject": subject(3), "csr": csr_pem(), "days": 99999},
        {"profile": "clinician", "subject": subject(4), "csr": tampered_csr_pem()},
        {"profile": "clinician", "subject": "C=VN, CN=x, =broken", "csr": csr_pem()},
        {"profile": "clinician", "subject": subject(6), "key_type": "ec-p256"},
        {"profile": "clinician", "subject": subject(7), "csr": weak_csr.public_bytes(
            serialization.Encoding.PEM).decode("ascii")},
        {"profile": "clinician", "subject": subject(8), "csr": csr_pem(), "email": "nope"},
        {"profile": "clinician", "subject": subject(9), "csr": csr_pem(),
         "email": "bs9@benhvien-q11.example.vn"},
        {"profile": "teacher-x", "subject": subject(10), "csr": csr_pem()},
    ]
    batch = tmp_path / "mixed.jsonl"
    batch.write_text(as_text("jsonl", rows), encoding="utf-8")

    def run(workers: int) -> tuple[list[dict[str, Any]], int]:
        app = AppContext()
        try:
            service = app.service.batch
            service.rows.workers = workers
            service.rows.wait_for_workers = True  # else the first chunks may not wait for them
            service.rows.workers_after = 3  # from the second chunk on (default: row 2,000)
            out = tmp_path / f"out-{workers}.jsonl"
            service.issue_file(name, batch, out, chunk=3)
            return results(out), service.rows.rows_in_workers
        finally:
            app.close()

    first, in_workers = run(2)
    assert in_workers == len(rows) - 3  # all but the first chunk's
    again, none = run(0)
    assert none == 0
    by_row = {r["row"]: r for r in first}
    issued = {n for n, r in by_row.items() if r["status"] == "issued"}
    assert issued == {1, 2, 3, 7, 10}
    assert {n: r["field"] for n, r in by_row.items() if n not in issued} == {
        4: "days", 5: "csr", 6: "subject", 8: "csr", 9: "email", 11: "profile"}
    for one, other in zip(first, again):
        if one["row"] in issued:
            assert other["status"] == "already-issued" and other["serial"] == one["serial"]
        else:
            assert (other["status"], other["field"], other["error"]) == \
                (one["status"], one["field"], one["error"])
    third, _ = run(1)
    assert [r["status"] for r in third if r["row"] in issued] == ["already-issued"] * 5


_HOLDS_WORKERS = """
import multiprocessing, sys, time
from pathlib import Path
from ca.services.batch_files import read_rows
from cli.context import AppContext

rows = AppContext().service.batch.rows
rows.workers, rows.workers_after, rows.wait_for_workers = 1, 0, True
path = Path(sys.argv[2])
chunks = rows.issue_rows(sys.argv[1], read_rows(path, "jsonl"), path.parent, chunk=5)
next(chunks), next(chunks)  # the second chunk came back from the worker
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_batch_killed_with_its_workers_running_leaves_no_process_behind(
        ca: tuple[Cli, str], env: dict[str, str], tmp_path: Path) -> None:
    _, name = ca
    batch = tmp_path / "rows.jsonl"
    batch.write_text(as_text("jsonl", [{"profile": "clinician", "subject": subject(n),
                                        "csr": csr_pem()} for n in range(30)]),
                     encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", _HOLDS_WORKERS, name, str(batch)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        workers = [int(pid) for pid in line.split()]
        assert workers and all(_alive(pid) for pid in workers), process.stderr.read()  # type: ignore[union-attr]
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its batch"
