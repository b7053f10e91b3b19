"""`tincay reconcile` over the states a crash during issuance leaves: made here with the
issuance service's own steps (persist without the signature, a key generated and audited with
no row) on real SoftHSM and the real store, and once by a real SIGKILL of `tincay issue`."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.test_cli import DOCTOR, Cli, cli, write_spec  # noqa: F401 - cli is a fixture

pytestmark = pytest.mark.softhsm
TINCAY = str(Path(sys.executable).parent / "tincay")


def _interrupted_issuance(ca: str, wrapped: bool = False) -> tuple[Any, Any, Any, Any]:
    """What `tincay issue --generate-key` leaves when killed after its pending row was
    committed and before the signature was: the key (with its key.generate event) and the
    pending row naming it. Returns the app, the prepared TBS, the issuer and the row."""
    from ca import issuance as core
    from ca.services.context import not_after
    from ca.store import queries
    from ca.subject import build_name, parse_subject
    from cli.context import AppContext

    app = AppContext()
    service, context = app.service, app.service.context
    profile = app.profiles.get("clinician")
    subject = build_name(profile, parse_subject(DOCTOR))
    with context.read() as session:
        issuer = context.issuer_info(queries.get_authority(session, ca))
    serial = core.new_serial()
    if wrapped:  # what `tincay issue --generate-key` makes: a wrapped key's row
        key = service.subscriber_keys.generate(profile.key_algorithms[0], authority=ca)
    else:  # --key-storage token: a token object
        key = service.issuance.obtain_key(f"{ca}.{serial:x}", profile.key_algorithms[0], None,
                                          None, authority=ca)

    def record(session: Any, prepared: Any) -> Any:
        return service.issuance.record_pending(session, queries.get_authority(session, ca),
                                               prepared, subject, (), key.uri)

    now = context.clock.now()
    prepared, row = service.issuance.persist(profile, subject, key.public_key, issuer,
                                             context.urls(issuer), now, not_after(now, 30), (),
                                             (), record, serial=serial)
    return app, prepared, issuer, row


def _ocsp_status(app: Any, ca: str, serial: int) -> ocsp.OCSPResponse:
    """Ask the real WSGI app (the store, the HSM-held responder key) about ``serial``."""
    from web.app import create_app

    issuer = app.service.authorities.authority_certificate(ca)
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(issuer.subject.public_bytes())
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash.finalize(), key_hash, serial, hashes.SHA1()).build()
    client = create_app(app.service).test_client()
    reply = client.post("/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                        headers={"Content-Type": "application/ocsp-request"})
    assert reply.status_code == 200
    return ocsp.load_der_ocsp_response(reply.data)


def _mine(findings: Any, *keys: str) -> list[dict[str, Any]]:
    """The findings about this test's rows and keys (the session's token is shared)."""
    return [f for f in findings if f["key"] in keys or any(k in (f["key"] or "") for k in keys)]


def test_reconcile_lists_then_resolves_a_pending_row_and_an_orphaned_key(
        cli: Cli, tmp_path: Path, unique_label: str) -> None:
    from ca.errors import IssuanceError

    ca = f"{unique_label}-ca"
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    app, prepared, issuer, row = _interrupted_issuance(ca)
    pending_label = f"{ca}.{row.serial_hex}"
    orphan = app.service.issuance.obtain_key(f"{ca}.orphan", prepared_spec(app), None, None,
                                             authority=ca)
    stranger = app.keys.generate(f"{unique_label}-stranger", prepared_spec(app))  # no event
    assert {"pending"} == {r["status"] for r in cli.json("cert", "list", "--status", "pending")}

    # fresh: another process could be issuing them right now, so they are only listed
    fresh = _mine(cli.json("reconcile"), pending_label, f"{ca}.orphan", stranger.uri,
                  f"{unique_label}-stranger")
    assert sorted((f["kind"], f["action"]) for f in fresh) == [
        ("orphaned-key", "wait"), ("pending-certificate", "wait"), ("unknown-key", "none")]
    assert "--apply" not in cli.err
    cli("reconcile", "--apply")  # exit 0: nothing is past the grace period
    assert app.keys.exists(pending_label) and app.keys.exists(f"{ca}.orphan")

    # past the grace period: listed with what --apply will do, exit 3
    out = cli("reconcile", "--grace", "0s", "--json", code=3)
    listed = {f["kind"]: f for f in _mine(json.loads(out), pending_label, f"{ca}.orphan",
                                           f"{unique_label}-stranger")}
    assert listed["pending-certificate"]["serial"] == row.serial_hex
    assert listed["pending-certificate"]["action"] == "revoke + destroy key"
    assert listed["pending-certificate"]["ca"] == ca
    assert listed["orphaned-key"]["action"] == "destroy"
    assert listed["orphaned-key"]["key"] == orphan.uri
    assert listed["unknown-key"]["action"] == "none"
    assert row.serial_hex in cli("reconcile", "--grace", "0s", code=3)  # the human table
    assert "tincay reconcile --apply resolves" in cli.err

    applied = {f["kind"]: f for f in _mine(cli.json("reconcile", "--grace", "0s", "--apply"),
                                           pending_label, f"{ca}.orphan",
                                           f"{unique_label}-stranger")}
    assert applied["pending-certificate"]["done"] == "revoked, key destroyed"
    assert applied["orphaned-key"]["done"] == "destroyed"
    assert applied["unknown-key"]["done"] is None
    assert not app.keys.exists(pending_label) and not app.keys.exists(f"{ca}.orphan")
    assert app.keys.exists(f"{unique_label}-stranger")  # never destroyed by reconcile
    assert _mine(cli.json("reconcile", "--grace", "0s"), pending_label, f"{ca}.orphan") == []

    shown = cli.json("cert", "show", row.serial_hex, "--ca", ca)
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "cessationOfOperation")
    answer = _ocsp_status(app, ca, int(row.serial_hex, 16))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.cessation_of_operation
    cli("crl", "--ca", ca, "--out", str(tmp_path / "ca.crl"))
    crl = x509.load_der_x509_crl((tmp_path / "ca.crl").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(int(row.serial_hex, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.cessation_of_operation

    events = cli.json("audit", "--ca", ca)
    revoke = [e for e in events if e["action"] == "certificate.revoke"]
    assert [(e["serial"], e["details"]["never_issued"], e["details"]["via"]) for e in revoke] \
        == [(row.serial_hex, True, "reconcile")]
    destroyed = sorted((e["details"]["key_uri"], e["details"]["reason"]) for e in events
                       if e["action"] == "key.destroy")
    assert destroyed == sorted([(row.key_uri, "never issued"), (orphan.uri, "orphaned")])

    # the interrupted process, had it survived, may not record its signature now
    with pytest.raises(IssuanceError, match="no longer pending"):
        app.service.issuance.complete(prepared, issuer, row)
    assert cli.json("cert", "show", row.serial_hex, "--ca", ca)["status"] == "revoked"
    app.keys.destroy(stranger.uri)
    app.close()


def test_reconcile_deletes_the_wrapped_key_of_a_pending_row(cli: Cli, tmp_path: Path,
                                                             unique_label: str) -> None:
    """A crash between the pending row and the signature with a wrapped key: the serial is
    revoked as never issued and the key's row deleted (nothing else names it), audited."""
    ca = f"{unique_label}-ca"
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    app, _, _, row = _interrupted_issuance(ca, wrapped=True)
    assert row.key_uri.startswith("tincay:subscriber-key:")
    (fresh,) = _mine(cli.json("reconcile"), row.key_uri)
    assert (fresh["kind"], fresh["action"]) == ("pending-certificate", "wait")
    (listed,) = _mine(json.loads(cli("reconcile", "--grace", "0s", "--json", code=3)),
                      row.key_uri)
    assert listed["action"] == "revoke + destroy key"
    (applied,) = _mine(cli.json("reconcile", "--grace", "0s", "--apply"), row.key_uri)
    assert applied["done"] == "revoked, key destroyed"
    assert not app.service.subscriber_keys.exists(row.key_uri)
    destroyed = [e["details"] for e in cli.json("audit", "--ca", ca)
                 if e["action"] == "key.destroy"]
    assert [(d["key_uri"], d["reason"]) for d in destroyed] == [(row.key_uri, "never issued")]
    app.close()


def prepared_spec(app: Any) -> Any:
    return app.profiles.get("clinician").key_algorithms[0]


def test_tincay_revoke_takes_a_pending_serial(cli: Cli, tmp_path: Path,
                                              unique_label: str) -> None:
    """A pending serial is revoked as never issued (it was refused before, although the
    issuance service promised it could be), not on hold; a signature arriving after that is
    refused, so the revocation stands."""
    from ca.errors import IssuanceError

    ca = f"{unique_label}-ca"
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    app, prepared, issuer, row = _interrupted_issuance(ca)
    cli("revoke", row.serial_hex, "--ca", ca, "--reason", "certificateHold", code=1)
    assert "never issued" in cli.err
    assert "revoked" in cli("revoke", row.serial_hex, "--ca", ca, "--reason", "unspecified")
    shown = cli.json("cert", "show", row.serial_hex, "--ca", ca)
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "unspecified")
    answer = _ocsp_status(app, ca, int(row.serial_hex, 16))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    events = [e for e in cli.json("audit", "--ca", ca) if e["action"] == "certificate.revoke"]
    assert [(e["details"]["never_issued"], e["details"]["via"]) for e in events] == \
        [(True, "revoke")]
    with pytest.raises(IssuanceError, match="no longer pending"):  # the process, had it lived
        app.service.issuance.complete(prepared, issuer, row)
    assert cli.json("cert", "show", row.serial_hex, "--ca", ca)["status"] == "revoked"
    app.close()


def test_reconcile_after_a_real_sigkill_during_issuance(
        softhsm_env: dict[str, str], tmp_path: Path, unique_label: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`tincay issue --generate-key` killed with SIGKILL the moment its pending row is in
    the database (watched from here through SQLite's WAL, which never blocks the writer),
    retried a bounded number of times, then reconciled."""
    from cli.main import main

    database = tmp_path / "tincay.db"
    env = {**os.environ, **softhsm_env, "TINCAY_HOME": str(tmp_path / "home"),
           "TINCAY_DATABASE_URL": f"sqlite:///{database}"}
    for name in ("TINCAY_HOME", "TINCAY_DATABASE_URL"):
        monkeypatch.setenv(name, env[name])
    ca = f"{unique_label}-ca"
    assert main(["init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label))]) \
        == 0
    watcher = sqlite3.connect(database, timeout=30)
    pending: list[tuple[str, str]] = []
    for attempt in range(25):
        process = subprocess.Popen(
            [TINCAY, "issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
             "--generate-key", "--out", str(tmp_path / f"x{attempt}.pem")], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.nice(19))  # slower steps: a wider window to be killed in
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            rows = watcher.execute("SELECT serial_hex, key_uri FROM certificates "
                                   "WHERE status = 'pending'").fetchall()
            if rows:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=30)
        pending = watcher.execute("SELECT serial_hex, key_uri FROM certificates "
                                  "WHERE status = 'pending'").fetchall()
        if pending:
            break
    watcher.close()
    if not pending:
        pytest.skip("no SIGKILL landed between the pending row and the signature in 25 tries")
    (serial, key_uri), = pending
    assert process.returncode == -signal.SIGKILL
    killed = subprocess.run([TINCAY, "reconcile", "--grace", "0s", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 3, killed.stderr
    assert serial in killed.stdout and key_uri in killed.stdout
    applied = subprocess.run([TINCAY, "reconcile", "--grace", "0s", "--apply"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    shown = subprocess.run([TINCAY, "cert", "show", serial, "--ca", ca, "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert '"status": "revoked"' in shown.stdout
    assert key_uri.startswith("tincay:subscriber-key:")  # wrapped under the KEK, in a row
    from cli.context import AppContext

    app = AppContext()
    assert not app.service.subscriber_keys.exists(key_uri)  # its row deleted with the serial
    app.close()
