"""The CA service over a real database (SQLite and PostgreSQL): hierarchies, issuance, the
persist-before-sign order, audit, and bad input that must leave nothing behind.

Certificates are judged by OpenSSL, pkilint and pyhanko-certvalidator (tests/test_issuance.py's
assert_acceptable), not by the code that made them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from ca import issuance
from ca.clock import FrozenClock
from ca.errors import (AlreadyExistsError, BackendUnavailableError, DatabaseUnavailableError,
                       IssuanceError, KeyPolicyError, NotFoundError, StoreError, SubjectError)
from ca.hierarchy import HierarchySpec, load_hierarchy
from ca.keys.base import KeySpec, SigningKey
from ca.keys.memory import MemoryBackend
from ca.profiles import ProfileSet, load_profiles
from ca.services import CertificateAuthority, KeySource
from ca.store import models
from ca.store.db import create_engine_for, make_session_factory, migrate
from ca.subject import format_name, parse_subject
from tests import helpers_x509 as hx
from tests.test_issuance import Chain, assert_acceptable, sample_subject

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "profiles" / "hierarchies" / "demo.yaml"
NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)
PUBLIC_URL = "http://pki.benhvien-q11.example.vn"
DOCTOR = [("C", "VN"), ("O", "Bệnh viện Quận 11"), ("T", "BS CK II"),
          ("CN", "Nguyễn Văn A, A101.0001 - 003848/HCM-CCHN"), ("UID", "CCCD:079073009568"),
          ("UID", "MST:0301824642")]
END_ENTITY_PROFILES = ("clinician", "pharmacist", "teacher", "citizen", "organization-seal",
                       "tls-server", "tls-client", "ocsp-responder", "tsa", "clinician-qualified",
                       "organization-seal-qualified")


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles(ROOT / "profiles")


@pytest.fixture(scope="module")
def demo(profiles: ProfileSet) -> HierarchySpec:
    return load_hierarchy(DEMO, profiles)


@dataclasses.dataclass
class World:
    service: CertificateAuthority
    keys: Any
    engine: Any

    def count(self, model: type) -> int:
        with self.service.context.read() as session:
            return session.scalar(select(func.count()).select_from(model))


def make_world(url: str, keys: Any, profiles: ProfileSet, clock: FrozenClock) -> World:
    engine = create_engine_for(url, create=True)
    migrate(engine)
    service = CertificateAuthority(make_session_factory(engine), keys, profiles, clock,
                                          PUBLIC_URL)
    return World(service, keys, engine)


@pytest.fixture
def world(database_url: str, profiles: ProfileSet, demo: HierarchySpec) -> Iterator[World]:
    """The demo hierarchy with in-memory keys, in a fresh database."""
    w = make_world(database_url, MemoryBackend(), profiles, FrozenClock(NOW))
    w.service.authorities.init_hierarchy(demo)
    yield w
    w.service.close()
    w.engine.dispose()


def chain_of(world: World) -> Chain:
    root = world.service.authorities.authority_certificate("root-ca")
    issuing = world.service.authorities.authority_certificate("issuing-ca")
    return Chain({}, root, None, issuing, None)  # type: ignore[arg-type]


# --- hierarchies ----------------------------------------------------------------------------

def test_demo_hierarchy_is_created_once_and_chains(world: World, demo: HierarchySpec,
                                                   tmp_path: Path) -> None:
    service = world.service
    assert [a["name"] for a in service.listings.list_authorities()] == ["root-ca", "issuing-ca"]
    assert {u["name"]: u["kind"] for u in service.listings.list_service_units()} == \
        {"ocsp-issuing-ca": "ocsp", "tsa": "tsa"}
    assert service.authorities.init_hierarchy(demo) == []  # idempotent: nothing replaced

    issuing, root = service.authorities.chain("issuing-ca")
    assert root.subject == root.issuer and issuing.issuer == root.subject
    root_pem = hx.write_pem(tmp_path / "root.pem", root)
    issuing_pem = hx.write_pem(tmp_path / "issuing.pem", issuing)
    result = hx.openssl_verify(issuing_pem, root_pem, attime=NOW + dt.timedelta(hours=1))
    assert result.returncode == 0, result.stderr
    for unit in service.listings.list_service_units():
        der = service.listings.certificate_der(unit["serial"], "issuing-ca")
        leaf = hx.write_pem(tmp_path / f"{unit['name']}.pem", der)
        result = hx.openssl_verify(leaf, root_pem, issuing_pem,
                                   attime=NOW + dt.timedelta(hours=1))
        assert result.returncode == 0, result.stderr

    shown = service.listings.show_authority("issuing-ca")
    assert shown["status"] == "active" and shown["parent"] == "root-ca"
    assert shown["key_uri"] == "memory:issuing-ca"
    assert shown["not_before"] == NOW and shown["not_before"].tzinfo is not None
    actions = [e["action"] for e in service.listings.list_events(limit=1000)]
    assert actions.count("key.generate") == 4
    assert actions.count("authority.create") == 2 and actions.count("service.create") == 2
    assert actions.count("certificate.prepare") == actions.count("certificate.issue") == 4


def test_a_ca_profile_needs_the_right_parent(world: World, profiles: ProfileSet) -> None:
    from ca.hierarchy import AuthoritySpec

    spec = AuthoritySpec("second-root", "issuing-ca", KeySpec.parse("ec-p256"),
                         (("C", "VN"), ("O", "X"), ("CN", "Second")))
    with pytest.raises(IssuanceError, match="must have a parent"):
        world.service.authorities.create_authority(spec)
    with pytest.raises(AlreadyExistsError):
        world.service.authorities.create_authority(dataclasses.replace(spec, name="issuing-ca",
                                                           parent="root-ca"))
    assert not world.keys.exists("second-root")


# --- issuance -------------------------------------------------------------------------------

@pytest.mark.parametrize("profile_name", END_ENTITY_PROFILES)
def test_every_end_entity_profile_through_the_service(world: World, profiles: ProfileSet,
                                                      profile_name: str, tmp_path: Path) -> None:
    profile = profiles.get(profile_name)
    pairs = parse_subject(format_name(sample_subject(profile)))
    extra: dict[str, Any] = {}
    if profile.dns_san == "required":
        extra["dns_names"] = ("ocsp.benhvien-q11.example.vn",)
    issued = world.service.issuance.issue("issuing-ca", profile_name, pairs,
                                 KeySource(generate=profile.key_algorithms[0]), **extra)
    assert_acceptable(chain_of(world), issued.certificate, profile, tmp_path, lint_level="ERROR")
    row = world.service.listings.show_certificate(issued.serial_hex, "issuing-ca")
    assert row["status"] == "issued" and row["profile"] == profile_name
    assert row["fingerprint_sha256"] == issued.certificate.fingerprint(hashes.SHA256()).hex()
    assert world.service.listings.certificate_der(issued.serial_hex) == \
        issued.certificate.public_bytes(serialization.Encoding.DER)


def test_csr_contributes_only_its_key(world: World, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Evil CA")]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    issued = world.service.issuance.issue("issuing-ca", "clinician", DOCTOR,
                                 KeySource(csr=issuance.load_csr(
                                     csr.public_bytes(serialization.Encoding.PEM))))
    cert = issued.certificate
    assert cert.public_key() == key.public_key() and issued.private_key is None
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "Nguyễn Văn A, A101.0001 - 003848/HCM-CCHN"
    # the CSR's basicConstraints cA=TRUE was not copied: the profile decides extensions
    assert x509.BasicConstraints.oid not in [e.oid for e in cert.extensions]
    raw_cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    assert raw_cn._type.name == "UTF8String"  # noqa: SLF001 - the encoding is the point
    # the Vietnamese subject survives the database byte for byte
    assert world.service.listings.show_certificate(issued.serial_hex)["subject"] == format_name(cert.subject)
    result = hx.openssl_verify(hx.write_pem(tmp_path / "leaf.pem", cert),
                               hx.write_pem(tmp_path / "root.pem", chain_of(world).root),
                               hx.write_pem(tmp_path / "ca.pem", chain_of(world).issuing),
                               attime=NOW + dt.timedelta(hours=1))
    assert result.returncode == 0, result.stderr


def test_serials_are_random_positive_and_within_20_octets(world: World) -> None:
    serials = []
    for _ in range(5):
        issued = world.service.issuance.issue("issuing-ca", "citizen",
                                     [("CN", "Bùi Sĩ Tuấn"), ("UID", "CCCD:038093015572")],
                                     KeySource(generate=KeySpec.parse("ec-p256")))
        serials.append(issued.certificate.serial_number)
    assert len(set(serials)) == 5
    assert all(0 < s < 2 ** 159 and s.bit_length() >= 64 for s in serials)


def test_serial_collision_is_caught_by_the_database_and_redrawn(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    first = world.service.issuance.issue("issuing-ca", "citizen",
                                [("CN", "A"), ("UID", "CCCD:038093015572")],
                                KeySource(generate=KeySpec.parse("ec-p256")))
    draws = iter([first.certificate.serial_number, first.certificate.serial_number,
                  issuance.new_serial()])
    real = issuance.new_serial
    monkeypatch.setattr(issuance, "new_serial", lambda: next(draws, None) or real())
    csr_key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(csr_key, hashes.SHA256()))
    second = world.service.issuance.issue("issuing-ca", "citizen",
                                 [("CN", "B"), ("UID", "CCCD:038093015573")], KeySource(csr=csr))
    assert second.certificate.serial_number != first.certificate.serial_number
    # the duplicate never became a row
    rows = world.service.listings.list_certificates(ca="issuing-ca", limit=1000)
    assert len({r["serial"] for r in rows}) == len(rows)


class _SpyKey(ec.EllipticCurvePrivateKey):
    """An issuer key that, at the moment it is asked to sign, runs ``check`` first."""

    def __init__(self, real: ec.EllipticCurvePrivateKey, check) -> None:
        self._real, self._check = real, check

    def sign(self, data: bytes, signature_algorithm: Any) -> bytes:
        self._check(data)
        return self._real.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._real.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._real.curve

    @property
    def key_size(self) -> int:
        return self._real.key_size

    def exchange(self, *a: Any) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> Any:
        raise NotImplementedError

    def private_bytes(self, *a: Any) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> "_SpyKey":
        return self

    def __deepcopy__(self, memo: dict) -> "_SpyKey":
        return self


def _spy_on_issuer(world: World, check) -> None:
    keys: MemoryBackend = world.keys
    real = keys.load("issuing-ca")
    spy = SigningKey(real.uri, real.spec, _SpyKey(real.private_key, check), real.public_key)
    keys._keys["issuing-ca"] = spy  # noqa: SLF001 - swap the CA key for the spy


def test_the_tbs_is_committed_before_the_key_signs(world: World) -> None:
    """Boulder's order: a crash during signing leaves a row that names the serial and TBS."""
    seen: list[dict[str, Any]] = []

    def check(tbs: bytes) -> None:
        if tbs.startswith(b"\x30"):  # the certificate TBS (CA key signs nothing else here)
            pending = world.service.listings.list_certificates(ca="issuing-ca", status="pending")
            seen.extend(pending)
            with world.service.context.read() as session:  # a separate session: only committed data
                row = session.scalars(select(models.Certificate).where(
                    models.Certificate.status == "pending")).one()
                assert row.tbs_der == tbs

    _spy_on_issuer(world, check)
    issued = world.service.issuance.issue("issuing-ca", "clinician", DOCTOR,
                                 KeySource(generate=KeySpec.parse("ec-p256")))
    assert [r["serial"] for r in seen] == [issued.serial_hex]
    assert world.service.listings.show_certificate(issued.serial_hex)["status"] == "issued"


def test_a_signing_failure_leaves_a_failed_row_and_no_certificate(world: World) -> None:
    def fail(_: bytes) -> None:
        raise BackendUnavailableError("HSM token 'tincay' unavailable: DeviceRemoved")

    _spy_on_issuer(world, fail)
    before = world.count(models.Certificate)
    with pytest.raises(BackendUnavailableError):
        world.service.issuance.issue("issuing-ca", "clinician", DOCTOR,
                            KeySource(generate=KeySpec.parse("ec-p256")))
    assert world.count(models.Certificate) == before + 1
    [row] = world.service.listings.list_certificates(status="failed")
    assert row["issued_at"] is None and "unavailable" in world.service.listings.list_events(
        serial=row["serial"])[0]["details"]["error"]
    with pytest.raises(IssuanceError, match="never signed"):
        world.service.listings.certificate_der(row["serial"])


# --- bad input leaves nothing behind --------------------------------------------------------

def _ed25519_csr() -> x509.CertificateSigningRequest:
    key = ed25519.Ed25519PrivateKey.generate()
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, None)


def _small_rsa_csr() -> x509.CertificateSigningRequest:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(key, hashes.SHA256()))


BAD_REQUESTS = {
    "missing required O": (SubjectError, "O is required",
                           dict(subject=[("CN", "Nguyễn Văn A"), ("UID", "CCCD:079073009568")])),
    "bad CCCD": (SubjectError, "UID", dict(subject=[("O", "X"), ("CN", "A"),
                                                    ("UID", "CCCD:123")])),
    "attribute the profile lacks": (SubjectError, "not allowed",
                                    dict(subject=DOCTOR + [("DC", "example")])),
    "forbidden generated key": (KeyPolicyError, "does not allow ed25519",
                                dict(source=KeySource(generate=KeySpec.parse("ed25519")))),
    "forbidden CSR key": (KeyPolicyError, "does not allow ed25519",
                          dict(source="ed25519-csr")),
    "small RSA CSR": (KeyPolicyError, "too small", dict(source="rsa-1024-csr")),
    "validity beyond profile": (IssuanceError, "exceeds", dict(days=5000)),
    "CA profile": (IssuanceError, "for CAs", dict(profile="issuing-ca")),
    "unknown CA": (NotFoundError, "no CA named", dict(ca="issuing-cA")),
    "email where forbidden": (IssuanceError, "does not allow email",
                              dict(profile="organization-seal", subject=[
                                  ("O", "Sở Y tế"), ("CN", "Sở Y tế"),
                                  ("UID", "MST:0400260612")], emails=("a@b.vn",))),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_are_refused_and_write_nothing(world: World, case: str) -> None:
    error, message, overrides = BAD_REQUESTS[case]
    args: dict[str, Any] = dict(ca="issuing-ca", profile="clinician", subject=DOCTOR,
                                source=KeySource(generate=KeySpec.parse("ec-p256")))
    args.update(overrides)
    if args["source"] == "ed25519-csr":
        args["source"] = KeySource(csr=_ed25519_csr())
    elif args["source"] == "rsa-1024-csr":
        args["source"] = KeySource(csr=_small_rsa_csr())
    counts = (world.count(models.Certificate), world.count(models.AuditEvent))
    keys_before = set(world.keys._keys)  # noqa: SLF001
    with pytest.raises(error, match=message):
        world.service.issuance.issue(args["ca"], args["profile"], args["subject"], args["source"],
                            emails=args.get("emails", ()), days=args.get("days"))
    assert (world.count(models.Certificate), world.count(models.AuditEvent)) == counts
    assert set(world.keys._keys) == keys_before  # noqa: SLF001 - no orphaned subscriber key


@pytest.mark.parametrize("blob, message", [
    (b"", "does not parse"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
     "does not parse"),
    (b"\x30\x03\x02\x01\x00", "does not parse"),
])
def test_malformed_csrs(blob: bytes, message: str) -> None:
    from ca.errors import CSRError

    with pytest.raises(CSRError, match=message):
        issuance.load_csr(blob)


def test_csr_with_a_wrong_signature() -> None:
    from ca.errors import CSRError

    key = ec.generate_private_key(ec.SECP256R1())
    der = bytearray((x509.CertificateSigningRequestBuilder()
                     .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "A")]))
                     .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature's r or s
    with pytest.raises(CSRError, match="signature does not verify"):
        issuance.load_csr(bytes(der))


# --- the store ------------------------------------------------------------------------------

def test_audit_log_is_append_only_in_the_database(world: World) -> None:
    for statement in ("UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with world.engine.begin() as connection:
                connection.execute(text(statement))
    assert world.count(models.AuditEvent) > 0


def test_migrations_match_the_models(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine_for(database_url, create=True)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), models.Base.metadata) == []
    engine.dispose()


def test_the_cheap_revision_check_agrees_with_alembic(database_url: str) -> None:
    """What every CLI command checks instead of starting Alembic: the newest migration by file
    name is Alembic's head, and the version read with one query is Alembic's own."""
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from ca.store.db import (MIGRATIONS, head_revision, holds_tincay, migrate_if_behind,
                             stored_revision)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    engine = create_engine_for(database_url, create=True)
    try:
        assert stored_revision(engine) is None and not holds_tincay(engine)
        migrate(engine, "0002")
        assert stored_revision(engine) == "0002" and holds_tincay(engine)
        migrate_if_behind(engine, stored_revision(engine))  # behind: brought to the head
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == \
                head_revision() == stored_revision(engine)
    finally:
        engine.dispose()


def test_sqlite_commits_survive_a_power_loss(tmp_path: Path) -> None:
    """Every connection (the ORM's and the TSA log's kept DBAPI ones alike) journals to a WAL
    that each commit fsyncs (synchronous=FULL, 2): with NORMAL (1) a commit the TSA answered
    for could vanish with an OS crash or power cut."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA synchronous").scalar() == 2
            assert pragma("PRAGMA foreign_keys").scalar() == 1
        raw = engine.raw_connection()
        try:
            assert raw.dbapi_connection.execute("PRAGMA synchronous").fetchone() == (2,)
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_throwaway_schema_is_the_migrated_schema() -> None:
    """ca/testing.py builds in-memory databases from the models (create_throwaway_schema) instead
    of running the migrations: same tables, columns, keys, indexes and append-only triggers."""
    from sqlalchemy import inspect

    from ca.store.db import create_throwaway_schema

    def shape(build) -> dict:
        engine = create_engine_for("sqlite://")
        build(engine)
        found = inspect(engine)
        tables = sorted(set(found.get_table_names()) - {"alembic_version"})
        shape = {t: (sorted((c["name"], str(c["type"]), c["nullable"])
                            for c in found.get_columns(t)),
                     found.get_pk_constraint(t)["constrained_columns"],
                     sorted((tuple(i["column_names"]), bool(i["unique"]), i["name"])
                            for i in found.get_indexes(t)),
                     sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(t)),
                     sorted((tuple(f["constrained_columns"]), f["referred_table"])
                            for f in found.get_foreign_keys(t)))
                 for t in tables}
        with engine.connect() as connection:
            shape["triggers"] = sorted(connection.exec_driver_sql(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'").all())
        engine.dispose()
        return shape

    migrated, throwaway = shape(migrate), shape(create_throwaway_schema)
    assert migrated["triggers"] == [("audit_events_no_delete", "audit_events"),
                                    ("audit_events_no_update", "audit_events")]
    assert throwaway == migrated


def test_serial_lookup_accepts_what_operators_type(world: World) -> None:
    issued = world.service.issuance.issue("issuing-ca", "citizen",
                                 [("CN", "A"), ("UID", "CCCD:038093015572")],
                                 KeySource(generate=KeySpec.parse("ec-p256")))
    hex_upper = format(issued.certificate.serial_number, "X")
    colons = ":".join(hex_upper.zfill(40)[i:i + 2] for i in range(0, 40, 2))
    for typed in (hex_upper, colons, f"serial={hex_upper}", "0x" + hex_upper.lower()):
        assert world.service.listings.show_certificate(typed)["serial"] == issued.serial_hex
    with pytest.raises(NotFoundError, match="not a hexadecimal"):
        world.service.listings.show_certificate("xyz")


# --- on the HSM -----------------------------------------------------------------------------

@pytest.mark.softhsm
def test_hierarchy_and_subscriber_keys_on_softhsm(hsm_backend, profiles: ProfileSet,
                                                  unique_label: str, tmp_path: Path) -> None:
    spec = load_hierarchy({
        "authorities": [
            {"name": f"{unique_label}-root", "profile": "root-ca", "key": "ec-p256",
             "subject": "C=VN, O=Tincay, CN=HSM Root"},
            {"name": f"{unique_label}-ca", "parent": f"{unique_label}-root",
             "profile": "issuing-ca", "key": "rsa-3072",
             "subject": "C=VN, O=Bệnh viện Quận 11, CN=HSM Issuing CA"}],
        "services": [],
    }, profiles)
    w = make_world(f"sqlite:///{tmp_path / 'hsm.db'}", hsm_backend, profiles, FrozenClock(NOW))
    w.service.authorities.init_hierarchy(spec)
    issued = w.service.issuance.issue(f"{unique_label}-ca", "clinician", DOCTOR,
                             KeySource(generate=KeySpec.parse("rsa-2048")))
    assert issued.key_uri.startswith("tincay:subscriber-key:")  # wrapped under the KEK
    with pytest.raises(Exception, match="non-extractable"):
        issued.private_key.private_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    # the subscriber's HSM key signs, and the certificate's key verifies it
    signature = issued.private_key.sign(b"medical record", padding.PKCS1v15(),  # type: ignore
                                        hashes.SHA256())
    issued.certificate.public_key().verify(signature, b"medical record",  # type: ignore
                                           padding.PKCS1v15(), hashes.SHA256())
    # a subscriber key of its own on the token, for a PKCS#11 signing application
    on_token = w.service.issuance.issue(f"{unique_label}-ca", "clinician", DOCTOR,
                                        KeySource(generate=KeySpec.parse("ec-p256"),
                                                  token_object=True))
    assert on_token.key_uri == \
        f"pkcs11:token=tincay-test;object={unique_label}-ca.{on_token.serial_hex}"
    assert hsm_backend.exists(f"{unique_label}-ca.{on_token.serial_hex}")
    issuing, root = w.service.authorities.chain(f"{unique_label}-ca")
    result = hx.openssl_verify(hx.write_pem(tmp_path / "leaf.pem", issued.certificate),
                               hx.write_pem(tmp_path / "root.pem", root),
                               hx.write_pem(tmp_path / "ca.pem", issuing),
                               attime=NOW + dt.timedelta(hours=1))
    assert result.returncode == 0, result.stderr
    w.engine.dispose()


# --- revocation -----------------------------------------------------------------------------

def _citizen(world: World, cn: str = "Bùi Sĩ Tuấn") -> str:
    return world.service.issuance.issue("issuing-ca", "citizen", [("CN", cn), ("UID", "CCCD:038093015572")],
                               KeySource(generate=KeySpec.parse("ec-p256"))).serial_hex


def test_revocation_hold_release_and_permanent(world: World) -> None:
    service, clock = world.service, world.service.clock
    serial = _citizen(world)
    held = service.revocation.revoke("issuing-ca", serial, "certificate-hold")
    assert (held["status"], held["revocation_reason"], held["revoked_at"]) == \
        ("revoked", "certificateHold", NOW)
    with pytest.raises(AlreadyExistsError, match="already on hold"):
        service.revocation.revoke("issuing-ca", serial, "certificateHold")
    released = service.revocation.release_hold("issuing-ca", serial)
    assert released["status"] == "issued" and released["revoked_at"] is None

    service.revocation.revoke("issuing-ca", serial, "CERTIFICATEHOLD")
    clock.advance(dt.timedelta(hours=2))  # type: ignore[attr-defined]
    compromised = NOW - dt.timedelta(days=3)
    final = service.revocation.revoke("issuing-ca", serial, "keyCompromise", invalidity_date=compromised)
    assert final["revocation_reason"] == "keyCompromise" and final["revoked_at"] == NOW
    row = service.listings.show_certificate(serial)
    assert row["status"] == "revoked" and row["revoked_at"].tzinfo is not None
    with pytest.raises(AlreadyExistsError, match="already revoked"):
        service.revocation.revoke("issuing-ca", serial, "superseded")
    with pytest.raises(IssuanceError, match="not on hold"):
        service.revocation.release_hold("issuing-ca", serial)
    actions = [e["action"] for e in service.listings.list_events(serial=serial)]
    assert actions[:5] == ["certificate.revoke", "certificate.revoke", "certificate.release",
                           "certificate.revoke", "certificate.issue"]


@pytest.mark.parametrize("reason, error, message", [
    ("removeFromCRL", IssuanceError, "not one of"),
    ("compromised", IssuanceError, "not one of"),
])
def test_bad_revocations_change_nothing(world: World, reason: str, error: type,
                                        message: str) -> None:
    serial = _citizen(world)
    events = world.count(models.AuditEvent)
    with pytest.raises(error, match=message):
        world.service.revocation.revoke("issuing-ca", serial, reason)
    with pytest.raises(IssuanceError, match="in the future"):
        world.service.revocation.revoke("issuing-ca", serial, "keyCompromise",
                             invalidity_date=NOW + dt.timedelta(days=1))
    with pytest.raises(NotFoundError, match="no certificate with serial"):
        world.service.revocation.revoke("issuing-ca", "abcdef", "keyCompromise")
    with pytest.raises(NotFoundError, match="has no certificate"):
        world.service.revocation.revoke("root-ca", serial, "keyCompromise")  # another CA's serial
    assert world.service.listings.show_certificate(serial)["status"] == "issued"
    assert world.count(models.AuditEvent) == events


def test_status_lookup_and_service_units_for_the_responders(world: World) -> None:
    service = world.service
    serial = _citizen(world)
    as_int = int(serial, 16)
    assert service.revocation.certificate_status("issuing-ca", as_int).status == "issued"
    assert service.revocation.certificate_status("issuing-ca", as_int + 1) is None
    assert service.revocation.certificate_status("root-ca", as_int) is None  # another CA's serial
    service.revocation.revoke("issuing-ca", serial, "affiliationChanged",
                   invalidity_date=NOW - dt.timedelta(days=1))
    status = service.revocation.certificate_status("issuing-ca", as_int)
    assert (status.status, status.revoked_at, status.reason, status.invalidity_date) == \
        ("revoked", NOW, "affiliationChanged", NOW - dt.timedelta(days=1))

    [ocsp] = service.authorities.service_units("ocsp")
    assert (ocsp.name, ocsp.authority) == ("ocsp-issuing-ca", "issuing-ca")
    assert ocsp.certificate.issuer == ocsp.authority_certificate.subject
    assert [c.subject for c in ocsp.chain] == [ocsp.authority_certificate.subject,
                                               service.authorities.authority_certificate("root-ca").subject]
    key = service.authorities.signing_key(ocsp.key_uri)
    assert key.public_key == ocsp.certificate.public_key()
    [tsa] = service.authorities.service_units("tsa")
    assert x509.ExtendedKeyUsageOID.TIME_STAMPING in \
        tsa.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value


# --- the TSA's token log --------------------------------------------------------------------

def test_hot_statements_see_every_commit_and_survive_a_dropped_connection(
        world: World, database_url: str) -> None:
    """The OCSP hot path reads and the TSA log writes on kept DBAPI connections
    (ca/store/hot.py): reads must see other connections' commits at once, and a connection the
    server dropped costs one StoreError (tryLater, systemFailure), not a broken worker."""
    from ca.timestamps import TimestampRecord

    def token(serial: int) -> TimestampRecord:
        return TimestampRecord("tsa", serial, NOW, "sha256", b"x" * 32, "1.3.6.1.4.1.59999.3.1")

    service = world.service
    service.token_log.record(token(1))
    serial = _citizen(world)
    as_int = int(serial, 16)
    threads = [threading.Thread(target=service.revocation.certificate_status, args=("issuing-ca", as_int))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert service.revocation.certificate_status("issuing-ca", as_int).status == "issued"
    service.revocation.revoke("issuing-ca", serial, "superseded")  # through an ORM session
    assert service.revocation.certificate_status("issuing-ca", as_int).status == "revoked"
    if not database_url.startswith("postgresql"):
        return
    with world.engine.connect() as connection:  # a PostgreSQL restart, as a kept connection sees it
        killed = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    assert killed >= 1
    with pytest.raises(DatabaseUnavailableError, match="is unreachable"):
        service.revocation.certificate_status("issuing-ca", as_int)
    assert service.revocation.certificate_status("issuing-ca", as_int).status == "revoked"
    with pytest.raises(DatabaseUnavailableError, match="is unreachable"):
        service.token_log.record(token(2))
    service.token_log.record(token(2))
    assert [r["serial"] for r in service.token_log.find()] == ["2", "1"]


def test_stream_rows_streams_plain_tuples_in_the_transaction(world: World) -> None:
    """ca.store.hot.stream_rows (a CRL's entries): every row, in order, across many batches,
    inside the caller's transaction (it sees that transaction's own uncommitted rows; on
    PostgreSQL through a server-side cursor); a statement whose types need processing is
    refused rather than read wrong."""
    from sqlalchemy import literal_column, select

    from ca.store.chain_store import append_now
    from ca.store.hot import stream_rows
    from ca.store.models import AuditEvent

    with world.service.context.read() as session, session.begin():
        append_now(session, "audit", [  # chained, as every audit event is
            {"at": NOW, "action": "test.stream", "authority": None, "serial_hex": None,
             "subject": None, "details": f"{i:05d}"} for i in range(257)])
        statement = (select(AuditEvent.details, literal_column("7"))
                     .where(AuditEvent.action == "test.stream").order_by(AuditEvent.details))
        rows = list(stream_rows(session.connection(), statement, batch=10))
        assert rows == [(f"{i:05d}", 7) for i in range(257)]
        assert all(type(row) is tuple for row in rows)  # the driver's own, no Row objects
        with pytest.raises(ValueError, match="without type processing"):
            next(stream_rows(session.connection(), select(AuditEvent.at), batch=10))
        session.rollback()


def test_timestamp_log_group_commits_from_many_threads(world: World) -> None:
    import secrets
    import threading

    from ca.timestamps import TimestampRecord

    service = world.service
    per_thread, threads = 40, 8
    serials = [[issuance.new_serial() for _ in range(per_thread)] for _ in range(threads)]
    errors: list[BaseException] = []

    def grant(mine: list[int]) -> None:
        for serial in mine:
            try:
                service.token_log.record(TimestampRecord(
                    "tsa", serial, NOW, "sha256", secrets.token_bytes(32),
                    "1.3.6.1.4.1.59999.3.1", nonce=serial % 1000, requester="127.0.0.1"))
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    workers = [threading.Thread(target=grant, args=(mine,)) for mine in serials]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    log = service.token_log.find(limit=10_000)
    assert {int(r["serial"], 16) for r in log} == {s for mine in serials for s in mine}
    assert all(r["gen_time"] == NOW and len(r["imprint"]) == 64 for r in log)
    committer = service.token_log._committer  # noqa: SLF001
    assert committer.commits < threads * per_thread  # commits were shared

    # a duplicate serial fails only its own caller; the log keeps one row for it
    duplicate = int(log[0]["serial"], 16)
    with pytest.raises(AlreadyExistsError, match=f"serial {duplicate:x} of TSA unit tsa"):
        service.token_log.record(TimestampRecord("tsa", duplicate, NOW, "sha256", b"x" * 32,
                                                 "1.3.6.1.4.1.59999.3.1"))
    assert len(service.token_log.find(serial=format(duplicate, "x"))) == 1
    assert service.token_log.find(since=NOW + dt.timedelta(seconds=1)) == []
    service.close()
