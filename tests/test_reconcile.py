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


def _interrupted_issuance(ca: str) -> tuple[Any, Any, Any, Any]:
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
    key = service.issuance.obtain_key(f"{ca}.{serial:x}", profile.key_algorithms[0], None, None,
                                      authority=ca)

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
