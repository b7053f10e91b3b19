"""TLS client certificates bound to registered clients (ca/services/client_bindings.py and
Clients.by_certificate) on SQLite and PostgreSQL: a bound certificate names its active client;
an unbound, expired, revoked, held or disabled one is refused; binding refuses what no TLS
client could log in with; and `tincay client add/bind/unbind/list` over the same registry."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from ca.clock import FrozenClock
from ca.errors import (AlreadyExistsError, CertificateBindingError, ClientAuthError,
                       InvalidClientCertificateError, NotFoundError)
from ca.keys.memory import MemoryBackend
from ca.services.results import KeySource
from ca.store.models import AuditEvent, ClientCertificate
from ca.subject import format_name
from tests.test_service import NOW, World, make_world
from tests.test_service import demo, profiles  # noqa: F401 - the module-scoped fixtures

DER = serialization.Encoding.DER
SUBJECT = [("C", "VN"), ("O", "Bệnh viện Quận 11"), ("CN", "hr-system")]


@pytest.fixture
def world(database_url: str, profiles: Any, demo: Any) -> Iterator[World]:  # noqa: F811
    w = make_world(database_url, MemoryBackend(), profiles, FrozenClock(NOW))
    w.service.authorities.init_hierarchy(demo)
    yield w
    w.service.close()
    w.engine.dispose()


def _csr(key: ec.EllipticCurvePrivateKey | None = None) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256()))


def tls_client(world: World, profile: str = "tls-client", days: int | None = None
               ) -> tuple[bytes, str]:
    """A certificate of the demo's issuing-ca from ``profile``: (DER, serial hex)."""
    issued = world.service.issuance.issue("issuing-ca", profile, SUBJECT,
                                          KeySource(csr=_csr()), days=days)
    return issued.certificate.public_bytes(DER), issued.serial_hex


def foreign_certificate(*, ca: bool = False, eku: x509.ObjectIdentifier | None = None,
                        days: int = 30) -> bytes:
    """A self-signed certificate from outside tincay."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other PKI client")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(DER)


# --- Clients.by_certificate --------------------------------------------------------------

def test_a_bound_certificate_names_its_active_client(world: World) -> None:
    clients = world.service.clients
    added = clients.add("hr-system", role="ra-officer", cas=["issuing-ca"],
                        profiles=["clinician"])
    der, serial = tls_client(world)
    binding = clients.bind_certificate("hr-system", der=der)
    assert binding.client == "hr-system" and binding.serial_hex == serial
    assert binding.fingerprint_sha256 == x509.load_der_x509_certificate(der).fingerprint(
        hashes.SHA256()).hex()
    assert binding.issuer == format_name(
        world.service.authorities.authority_certificate("issuing-ca").subject)
    client = clients.by_certificate(der)
    assert client == added.client  # the same ClientInfo a bearer token gives
    assert client.role == "ra-officer" and client.cas == ("issuing-ca",)
    [event] = [e for e in _events(world) if e.action == "client.bind_certificate"]
    assert "hr-system" in event.details and event.serial_hex == serial


@pytest.mark.parametrize("how", ["unbound", "unbound after binding", "disabled", "expired",
                                 "not yet valid", "revoked", "on hold", "garbage"])
def test_a_certificate_that_authenticates_no_one_is_refused(world: World, how: str) -> None:
    clients = world.service.clients
    clients.add("hr-system")
    der, serial = tls_client(world, days=30)
    if how != "unbound":
        clients.bind_certificate("hr-system", der=der)
    if how == "unbound after binding":
        clients.unbind_certificate("hr-system", der=der)
    elif how == "disabled":
        clients.disable("hr-system")
    elif how == "expired":
        world.service.clock.advance(dt.timedelta(days=31))
    elif how == "not yet valid":
        world.service.clock.set(NOW - dt.timedelta(days=1))
    elif how == "revoked":
        world.service.revocation.revoke("issuing-ca", serial, "keyCompromise")
    elif how == "on hold":
        world.service.revocation.revoke("issuing-ca", serial, "certificateHold")
    elif how == "garbage":
        der = b"\x30\x03\x02\x01\x01"
    expected = {"disabled": "disabled", "expired": "expired", "not yet valid": "not yet valid",
                "revoked": "revoked or on hold", "on hold": "revoked or on hold"}
    with pytest.raises(InvalidClientCertificateError,
                       match=expected.get(how, "not bound to a registered client")) as caught:
        clients.by_certificate(der)
    assert isinstance(caught.value, ClientAuthError) and caught.value.error == "invalid_client"


def test_a_hold_released_lets_the_certificate_in_again(world: World) -> None:
    clients = world.service.clients
    clients.add("hr-system")
    der, serial = tls_client(world)
    clients.bind_certificate("hr-system", ca="issuing-ca", serial=serial.upper())
    world.service.revocation.revoke("issuing-ca", serial, "certificateHold")
    with pytest.raises(InvalidClientCertificateError):
        clients.by_certificate(der)
    world.service.revocation.release_hold("issuing-ca", serial)
    assert clients.by_certificate(der).name == "hr-system"


def test_a_certificate_of_another_pki_binds_by_fingerprint(world: World) -> None:
    clients = world.service.clients
    clients.add("partner")
    der = foreign_certificate(eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    clients.bind_certificate("partner", der=der)
    assert clients.by_certificate(der).name == "partner"  # no status known: validity only
    world.service.clock.advance(dt.timedelta(days=31))
    with pytest.raises(InvalidClientCertificateError, match="expired"):
        clients.by_certificate(der)


# --- binding rules -------------------------------------------------------------------------

def test_one_certificate_one_client_and_several_certificates_per_client(world: World) -> None:
    clients = world.service.clients
    clients.add("hr-system")
    clients.add("emr")
    first, _ = tls_client(world)
    second, _ = tls_client(world)
    clients.bind_certificate("hr-system", der=first)
    clients.bind_certificate("hr-system", der=second)  # a renewal overlaps the old one
    with pytest.raises(AlreadyExistsError, match="already bound to client hr-system"):
        clients.bind_certificate("emr", der=first)
    with pytest.raises(AlreadyExistsError):
        clients.bind_certificate("hr-system", der=first)
    assert [b.client for b in clients.certificate_bindings()] == ["hr-system", "hr-system"]
    assert clients.certificate_bindings("emr") == []
    assert clients.by_certificate(first).name == clients.by_certificate(second).name


@pytest.mark.parametrize("how, message", [
    ("server", "lacks clientAuth"), ("ca", "is a CA certificate"),
    ("foreign server", "lacks clientAuth"), ("expired", "not valid now"),
    ("garbage", "not an X.509 certificate"), ("revoked serial", "is revoked"),
    ("unknown serial", "has no certificate with serial"), ("unknown ca", "nope"),
    ("unknown client", "no client named"),
])
def test_binding_refuses_what_no_tls_client_logs_in_with(world: World, how: str,
                                                         message: str) -> None:
    clients = world.service.clients
    clients.add("hr-system")
    name, kwargs = "hr-system", {}
    if how == "server":
        kwargs = {"der": world.service.issuance.issue(
            "issuing-ca", "tls-server", SUBJECT, KeySource(csr=_csr()),
            dns_names=["hr.benhvien-q11.example.vn"]).certificate.public_bytes(DER)}
    elif how == "ca":
        kwargs = {"der": foreign_certificate(ca=True)}
    elif how == "foreign server":
        kwargs = {"der": foreign_certificate(eku=ExtendedKeyUsageOID.SERVER_AUTH)}
    elif how == "expired":
        kwargs = {"der": foreign_certificate(days=1)}
        world.service.clock.advance(dt.timedelta(days=2))
    elif how == "garbage":
        kwargs = {"der": b"not DER"}
    elif how == "revoked serial":
        der, serial = tls_client(world)
        world.service.revocation.revoke("issuing-ca", serial, "superseded")
        kwargs = {"ca": "issuing-ca", "serial": serial}
    elif how == "unknown serial":
        kwargs = {"ca": "issuing-ca", "serial": "0123abcd"}
    elif how == "unknown ca":
        kwargs = {"ca": "nope", "serial": "01"}
    else:
        name, kwargs = "nobody", {"der": tls_client(world)[0]}
    with pytest.raises((CertificateBindingError, NotFoundError), match=message):
        clients.bind_certificate(name, **kwargs)
    assert _rows(world, ClientCertificate) == []


def test_add_with_a_certificate_is_one_transaction(world: World) -> None:
    clients = world.service.clients
    with pytest.raises(CertificateBindingError):
        clients.add("hr-system", certificate=foreign_certificate(ca=True))
    assert clients.list() == []  # the refused certificate left no client behind
    der, _ = tls_client(world)
    clients.add("hr-system", certificate=der)
    assert clients.by_certificate(der).name == "hr-system"


def test_unbind_by_certificate_serial_or_fingerprint(world: World) -> None:
    clients = world.service.clients
    clients.add("hr-system")
    certs = [tls_client(world) for _ in range(3)]
    for der, _ in certs:
        clients.bind_certificate("hr-system", der=der)
    clients.unbind_certificate("hr-system", der=certs[0][0])
    world.service.revocation.revoke("issuing-ca", certs[1][1], "superseded")
    clients.unbind_certificate("hr-system", ca="issuing-ca", serial=certs[1][1])  # revoked too
    fingerprint = x509.load_der_x509_certificate(certs[2][0]).fingerprint(hashes.SHA256())
    pasted = ":".join(f"{b:02X}" for b in fingerprint)  # openssl x509 -fingerprint -sha256
    clients.unbind_certificate("hr-system", fingerprint=f"sha256 Fingerprint={pasted}")
    assert clients.certificate_bindings() == []
    with pytest.raises(NotFoundError, match="has no certificate"):
        clients.unbind_certificate("hr-system", der=certs[0][0])
    with pytest.raises(CertificateBindingError, match="not a SHA-256 fingerprint"):
        clients.unbind_certificate("hr-system", fingerprint="abc")
    actions = [e.action for e in _events(world)]
    assert actions.count("client.unbind_certificate") == 3


# --- the CLI -------------------------------------------------------------------------------

@pytest.mark.softhsm
def test_client_certificate_commands(world: World, database_url: str, softhsm_env: Any,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`tincay client add --cert-file`, `bind`, `unbind` and `list --json` on the world's
    database; every mistake one line naming the file or the field, no traceback."""
    from tests.test_cli import Cli

    monkeypatch.setenv("TINCAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINCAY_DATABASE_URL", database_url)
    monkeypatch.setenv("TINCAY_PUBLIC_URL", "http://127.0.0.1:8080")
    cli = Cli(capsys)
    (first, _), (second, second_serial) = tls_client(world), tls_client(world)
    pem = tmp_path / "client.pem"
    chain = world.service.authorities.chain("issuing-ca")
    pem.write_bytes(x509.load_der_x509_certificate(first).public_bytes(
        serialization.Encoding.PEM) + b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in chain))  # leaf first, then chain
    added = cli.json("client", "add", "hr-system", "--role", "ra-officer", "--cert-file",
                     str(pem))
    assert added["certificate_sha256"] == _sha256(first)
    assert world.service.clients.by_certificate(first).client_id == added["client_id"]
    bound = cli.json("client", "bind", "hr-system", "--ca", "issuing-ca", "--serial",
                     second_serial)
    assert bound["client"] == "hr-system" and bound["serial"] == second_serial
    assert "bound to client emr" in cli("client", "add", "emr") + cli(
        "client", "bind", "emr", "--cert-file", str(_pem(tmp_path, foreign_certificate(
            eku=ExtendedKeyUsageOID.CLIENT_AUTH))))
    [emr, hr] = cli.json("client", "list")
    assert {c["fingerprint_sha256"] for c in hr["certificates"]} == {_sha256(first),
                                                                     _sha256(second)}
    assert {"issuer", "serial", "not_after", "bound_at"} <= set(hr["certificates"][0])
    assert len(emr["certificates"]) == 1
    table = cli("client", "list")
    assert "CERTIFICATES" in table
    unbound = cli.json("client", "unbind", "hr-system", "--fingerprint", _sha256(first))
    assert unbound["fingerprint_sha256"] == _sha256(first)
    assert "unbound from client hr-system" in cli("client", "unbind", "hr-system", "--ca",
                                                  "issuing-ca", "--serial", second_serial)
    assert world.service.clients.certificate_bindings("hr-system") == []

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    for args, code, message in (
            (("client", "bind", "hr-system", "--cert-file", str(garbage)), 1,
             f"{garbage}: no PEM certificate"),
            (("client", "add", "lab", "--cert-file", str(garbage)), 1, f"{garbage}:"),
            (("client", "bind", "hr-system"), 2, "--cert-file PEM, or with --ca"),
            (("client", "bind", "hr-system", "--ca", "issuing-ca"), 2, "--serial HEX"),
            (("client", "bind", "hr-system", "--cert-file", str(pem), "--ca", "issuing-ca",
              "--serial", "01"), 2, "--cert-file PEM"),
            (("client", "bind", "hr-system", "--cert-file", str(tmp_path / "nope.pem")), 2,
             "does not exist"),
            (("client", "bind", "nobody", "--cert-file", str(pem)), 1, "no client named"),
            (("client", "bind", "hr-system", "--ca", "issuing-ca", "--serial", "xyz"), 1,
             "not a hexadecimal serial"),
            (("client", "bind", "hr-system", "--cert-file", str(_pem(tmp_path, foreign_certificate(
                eku=ExtendedKeyUsageOID.SERVER_AUTH)))), 1, "lacks clientAuth"),
            (("client", "unbind", "hr-system", "--fingerprint", "abc"), 1,
             "not a SHA-256 fingerprint"),
            (("client", "unbind", "hr-system", "--fingerprint", _sha256(first), "--ca", "x"), 2,
             "one way"),
            (("client", "unbind", "hr-system", "--cert-file", str(pem)), 1,
             "has no certificate")):
        cli(*args, code=code)
        assert message in cli.err and "Traceback" not in cli.err, cli.err
        if code == 1:
            assert len(cli.err.strip().splitlines()) == 1, cli.err
    assert [c.name for c in world.service.clients.list()] == ["emr", "hr-system"]  # no "lab"

    # `tincay serve --client-ca`: refused before anything is served
    from tests.test_oauth import _self_signed

    certfile, keyfile = _self_signed(tmp_path)
    leaf_only = _pem(tmp_path, foreign_certificate(eku=ExtendedKeyUsageOID.CLIENT_AUTH))
    tls = ("--certfile", str(certfile), "--keyfile", str(keyfile))
    for args, code, message in (
            (("--client-ca", str(pem)), 2, "--client-ca needs TLS"),
            ((*tls, "--client-ca", str(garbage)), 1, f"--client-ca {garbage}: no CA"),
            ((*tls, "--client-ca", str(leaf_only)), 1, "no CA certificate in it")):
        cli("serve", "--port", "9599", *args, code=code)
        assert message in cli.err and "Traceback" not in cli.err, cli.err


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


def _pem(folder: Path, der: bytes) -> Path:
    path = folder / f"{_sha256(der)[:8]}.pem"
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return path


def _events(world: World) -> list[AuditEvent]:
    return _rows(world, AuditEvent)


def _rows(world: World, model: type) -> list:
    with world.service.context.read() as session:
        return list(session.scalars(select(model)))
