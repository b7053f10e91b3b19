"""Subscriber keys wrapped under the HSM's key-encryption key (ca.keys.wrapping,
ca.services.subscriber_keys): on the session's real SoftHSM token and in memory, through the
real store and `tincay issue`."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from ca import metrics
from ca.clock import FrozenClock
from ca.errors import KeyBackendError, KeyNotFoundError, UnsupportedKeyError
from ca.keys.base import KeySpec
from ca.keys.memory import MemoryBackend
from ca.keys.pkcs11_session import public_key_der
from ca.keys.wrapping import KEK_LABEL, HsmKeyWrapping, key_wrapping
from ca.services import CertificateAuthority
from ca.store.db import create_engine_for, make_session_factory, migrate
from ca.store.models import AuditEvent, SubscriberKey
from tests.test_cli import DOCTOR, Cli, cli, write_spec  # noqa: F401 - cli is a fixture

NOW = dt.datetime(2026, 12, 2, 8, 0, 0, tzinfo=dt.timezone.utc)
SPECS = ["rsa-2048", "ec-p256", "ec-p384"]


def _signatures(key: Any) -> list[tuple[bytes, Any]]:
    """Sign one message every way the key's type allows; verified by the caller."""
    message = b"wrapped keys sign like token keys"
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return [(key.sign(message, padding.PKCS1v15(), hashes.SHA256()),
                 (message, padding.PKCS1v15(), hashes.SHA256())),
                (key.sign(message, pss, hashes.SHA256()), (message, pss, hashes.SHA256()))]
    return [(key.sign(message, ec.ECDSA(hashes.SHA384())), (message, ec.ECDSA(hashes.SHA384())))]


def _verify(public: Any, key: Any) -> None:
    for signature, args in _signatures(key):
        public.verify(signature, *args)  # raises InvalidSignature


def _session_private_keys(backend: Any) -> list[Any]:
    return backend.session.run(lambda s: list(s.get_objects(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.TOKEN: False})))


def _token_objects(backend: Any) -> int:
    return backend.session.run(lambda s: len(list(s.get_objects({Attribute.TOKEN: True}))),
                               reads_token=True)


@pytest.fixture
def hsm_wrapping(hsm_backend: Any) -> Iterator[HsmKeyWrapping]:
    wrapping = key_wrapping(hsm_backend, cache_size=10)
    assert isinstance(wrapping, HsmKeyWrapping)
    yield wrapping
    wrapping.close()


# --- the HSM: wrap, unwrap, sign ------------------------------------------------------------

@pytest.mark.softhsm
@pytest.mark.parametrize("spec", SPECS)
def test_a_wrapped_key_unwraps_into_a_sensitive_session_object_that_signs(
        hsm_backend: Any, hsm_wrapping: HsmKeyWrapping, spec: str) -> None:
    before = len(_session_private_keys(hsm_backend))
    public, blob = hsm_wrapping.generate(KeySpec.parse(spec))
    assert len(_session_private_keys(hsm_backend)) == before  # the ephemeral pair is gone
    signer = hsm_wrapping.unwrap(blob, KeySpec.parse(spec), public)
    _verify(public, signer)
    objects = _session_private_keys(hsm_backend)
    assert len(objects) == before + 1  # the unwrapped key, cached
    for obj in objects:  # every session private key here is an unwrapped subscriber key
        assert obj[Attribute.TOKEN] is False
        assert obj[Attribute.SENSITIVE] is True
        assert obj[Attribute.EXTRACTABLE] is False
        assert obj[Attribute.SIGN] is True
        assert obj[Attribute.DECRYPT] is False
    with pytest.raises(KeyBackendError):
        signer.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.softhsm
def test_the_kek_is_a_sensitive_non_extractable_token_key_that_only_wraps(
        hsm_backend: Any, hsm_wrapping: HsmKeyWrapping) -> None:
    hsm_wrapping.generate(KeySpec.parse("ec-p256"))  # made on first use

    def read(s: Any) -> dict[str, Any]:
        kek = s.get_key(object_class=ObjectClass.SECRET_KEY, label=KEK_LABEL)
        return {a: kek[a] for a in (Attribute.TOKEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE,
                                    Attribute.NEVER_EXTRACTABLE, Attribute.WRAP,
                                    Attribute.UNWRAP, Attribute.ENCRYPT, Attribute.DECRYPT)}
    attrs = hsm_backend.session.run(read, reads_token=True)
    assert attrs == {Attribute.TOKEN: True, Attribute.SENSITIVE: True,
                     Attribute.EXTRACTABLE: False, Attribute.NEVER_EXTRACTABLE: True,
                     Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.ENCRYPT: False,
                     Attribute.DECRYPT: False}


@pytest.mark.softhsm
def test_the_token_does_not_grow_with_the_subscriber_keys(
        hsm_backend: Any, hsm_wrapping: HsmKeyWrapping) -> None:
    hsm_wrapping.generate(KeySpec.parse("ec-p256"))  # the KEK exists from here on
    before, sessions = _token_objects(hsm_backend), len(_session_private_keys(hsm_backend))
    keys = [hsm_wrapping.generate(KeySpec.parse("ec-p256")) for _ in range(50)]
    assert _token_objects(hsm_backend) == before
    assert len(_session_private_keys(hsm_backend)) == sessions
    assert len({blob for _, blob in keys}) == 50


@pytest.mark.softhsm
def test_the_blob_is_not_a_key_and_a_tampered_one_fails_cleanly(
        hsm_backend: Any, hsm_wrapping: HsmKeyWrapping) -> None:
    spec = KeySpec.parse("ec-p256")
    public, blob = hsm_wrapping.generate(spec)
    with pytest.raises(ValueError):
        serialization.load_der_private_key(blob, None)
    for damaged in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:8], b"\x00" * 24 + blob[24:]):
        with pytest.raises(KeyBackendError, match="does not unwrap"):
            hsm_wrapping.unwrap(damaged, spec, public)
    _, other = hsm_wrapping.generate(spec)
    with pytest.raises(KeyBackendError, match="not the key of its public key"):
        hsm_wrapping.unwrap(other, spec, public)  # another row's blob under this public key
    _verify(public, hsm_wrapping.unwrap(blob, spec, public))  # the session still works


@pytest.mark.softhsm
@pytest.mark.parametrize("spec_text", ["ec-p256", "ec-p384"])
def test_a_key_unwrapped_at_its_first_signature_is_checked_by_that_signature(
        hsm_backend: Any, hsm_wrapping: HsmKeyWrapping, spec_text: str) -> None:
    """now=False (signHash's cold keys): no test signature; the first real signature is
    verified against the public key before it is returned, and a swapped blob is refused
    then, its session object destroyed."""
    spec = KeySpec.parse(spec_text)
    public, blob = hsm_wrapping.generate(spec)
    _, other = hsm_wrapping.generate(spec)
    sessions = len(_session_private_keys(hsm_backend))
    stranger = hsm_wrapping.unwrap(other, spec, public, now=False)
    assert len(_session_private_keys(hsm_backend)) == sessions  # nothing unwrapped yet
    for _ in range(2):  # refused every time, never a signature by another key
        with pytest.raises(KeyBackendError, match="not the key of its public key"):
            _signatures(stranger)
        assert len(_session_private_keys(hsm_backend)) == sessions  # destroyed again
    lazy = hsm_wrapping.unwrap(blob, spec, public, now=False)
    _verify(public, lazy)  # the first signature (the check) and the ones after it
    assert len(_session_private_keys(hsm_backend)) == sessions + 1


@pytest.mark.softhsm
def test_the_cache_bound_evicts_and_destroys_session_objects(hsm_backend: Any) -> None:
    wrapping = key_wrapping(hsm_backend, cache_size=2)
    spec = KeySpec.parse("ec-p256")
    base = len(_session_private_keys(hsm_backend))
    keys = [wrapping.generate(spec) for _ in range(3)]
    signers = [wrapping.unwrap(blob, spec, public) for public, blob in keys]
    assert wrapping.cached() == 2  # type: ignore[attr-defined]
    assert len(_session_private_keys(hsm_backend)) == base + 2  # the first one destroyed
    unwraps = _unwraps()
    _verify(keys[2][0], signers[2])  # cached: no unwrap
    assert _unwraps() == unwraps
    _verify(keys[0][0], signers[0])  # an evicted key unwraps again when it signs
    assert _unwraps() == unwraps + 1  # counted: the cache's misses (/metrics)
    assert len(_session_private_keys(hsm_backend)) == base + 2
    wrapping.close()
    assert len(_session_private_keys(hsm_backend)) == base


def _unwraps() -> float:
    return metrics.metrics().registry.get_sample_value(
        "tincay_subscriber_key_unwraps_total") or 0.0


# --- the in-memory backend: the same capability -------------------------------------------

@pytest.mark.parametrize("spec", SPECS + ["ed25519"])
def test_memory_wraps_alike(memory_backend: MemoryBackend, spec: str) -> None:
    wrapping = key_wrapping(memory_backend)
    public, blob = wrapping.generate(KeySpec.parse(spec))
    with pytest.raises(ValueError):
        serialization.load_der_private_key(blob, None)
    signer = wrapping.unwrap(blob, KeySpec.parse(spec), public)
    if spec == "ed25519":
        public.verify(signer.sign(b"m"), b"m")  # type: ignore[call-arg, union-attr]
    else:
        _verify(public, signer)
    with pytest.raises(KeyBackendError, match="does not unwrap"):
        wrapping.unwrap(blob[:-1] + bytes([blob[-1] ^ 1]), KeySpec.parse(spec), public)
    with pytest.raises(KeyBackendError, match="does not unwrap"):
        key_wrapping(MemoryBackend()).unwrap(blob, KeySpec.parse(spec), public)  # other KEK


@pytest.mark.softhsm
def test_the_hsm_refuses_to_wrap_ed25519_cleanly(hsm_wrapping: HsmKeyWrapping) -> None:
    """SoftHSM 2.6 wraps RSA and EC private keys, not EdDSA ones."""
    with pytest.raises(UnsupportedKeyError, match="cannot wrap a ed25519 key"):
        hsm_wrapping.generate(KeySpec.parse("ed25519"))


# --- the service: rows, URIs, the signer cache --------------------------------------------

def _service(url: str, keys: Any) -> tuple[CertificateAuthority, Any]:
    engine = create_engine_for(url, create=True)
    migrate(engine)
    return CertificateAuthority(make_session_factory(engine), keys, {},  # type: ignore[arg-type]
                                FrozenClock(NOW), "http://pki.example.vn"), engine


@pytest.mark.parametrize("backend", ["memory", pytest.param("hsm", marks=pytest.mark.softhsm)])
def test_the_service_stores_wrapped_keys_and_signs_with_them(
        database_url: str, backend: str, request: pytest.FixtureRequest) -> None:
    keys = MemoryBackend() if backend == "memory" else request.getfixturevalue("hsm_backend")
    service, engine = _service(database_url, keys)
    try:
        subscriber_keys = service.subscriber_keys
        key = subscriber_keys.generate(KeySpec.parse("ec-p256"), authority="ca-1")
        assert key.uri.startswith("tincay:subscriber-key:")
        _verify(key.public_key, key.private_key)
        with service.context.read() as session:
            (row,) = session.query(SubscriberKey).all()
            assert row.spec == "ec-p256" and row.public_key_der == public_key_der(key.public_key)
            assert row.wrapped and row.kek_label in (KEK_LABEL, "memory-kek")
        with service.context.read() as session:
            details = [e.details for e in session.query(AuditEvent).filter_by(
                action="key.generate", authority="ca-1")]
            assert len(details) == 1 and key.uri in details[0]
        again = subscriber_keys.signer(key.uri, key.public_key)
        assert subscriber_keys.signer(key.uri) is again  # cached per process
        _verify(key.public_key, again.private_key)
        other = subscriber_keys.generate(KeySpec.parse("rsa-2048"), authority="ca-1")
        with pytest.raises(KeyBackendError, match="not the key of the certificate"):
            subscriber_keys.signer(key.uri, other.public_key)
        with pytest.raises(KeyNotFoundError):
            subscriber_keys.signer("tincay:subscriber-key:999999")
        assert subscriber_keys.destroy(other.uri) and not subscriber_keys.exists(other.uri)
    finally:
        service.close()
        engine.dispose()


@pytest.mark.softhsm
def test_a_token_object_key_still_signs_through_signer(
        database_url: str, hsm_backend: Any, unique_label: str) -> None:
    service, engine = _service(database_url, hsm_backend)
    try:
        old = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))  # made before
        key = service.subscriber_keys.signer(old.uri, old.public_key)
        _verify(old.public_key, key.private_key)
    finally:
        service.close()
        engine.dispose()


# --- `tincay issue --generate-key` ----------------------------------------------------------

@pytest.mark.softhsm
def test_tincay_issue_generate_key_stores_a_wrapped_key(cli: Cli, tmp_path: Path,  # noqa: F811
                                                        unique_label: str) -> None:
    from cli.context import AppContext

    ca = f"{unique_label}-ca"
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    record = cli.json("issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
                      "--generate-key", "--out", str(tmp_path / "doctor.pem"))
    assert record["key_uri"].startswith("tincay:subscriber-key:")
    certificate = x509.load_pem_x509_certificate((tmp_path / "doctor.pem").read_bytes())
    app = AppContext()
    try:
        key = app.service.subscriber_keys.signer(record["key_uri"], certificate.public_key())
        assert public_key_der(key.public_key) == public_key_der(certificate.public_key())
        _verify(certificate.public_key(), key.private_key)
        assert not app.keys.exists(f"{ca}.{record['serial'].lower()}")  # no token object
    finally:
        app.close()
    # --key-storage token: a token object of its own, which signer() loads as before
    token = cli.json("issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
                     "--generate-key", "--key-storage", "token", "--out",
                     str(tmp_path / "token.pem"))
    assert token["key_uri"].startswith("pkcs11:token=tincay-test;object=")
    on_token = x509.load_pem_x509_certificate((tmp_path / "token.pem").read_bytes())
    app = AppContext()
    try:
        key = app.service.subscriber_keys.signer(token["key_uri"], on_token.public_key())
        _verify(on_token.public_key(), key.private_key)
    finally:
        app.close()
    assert "--key-storage goes with --generate-key" in cli(
        "issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR, "--csr",
        str(tmp_path / "token.pem"), "--key-storage", "token", "--out", "-", code=2) + cli.err
    (generated,) = [e["details"] for e in cli.json("audit", "--ca", ca)
                    if e["action"] == "key.generate"
                    and (e["details"] or {}).get("key_uri") == record["key_uri"]]
    assert generated["wrapped"] is True and generated["spec"] == str(KeySpec.of_public_key(certificate.public_key()))


# --- after a crash: a wrapped key no certificate names ------------------------------------

def test_reconcile_deletes_an_orphaned_wrapped_key_past_the_grace_period(
        database_url: str) -> None:
    """A crash between the key's row and the pending certificate leaves a wrapped key that no
    certificate names: listed while young (an issuance may be in progress), then its row
    deleted (audited): with no certificate, nothing can ever use it."""
    service, engine = _service(database_url, MemoryBackend())
    try:
        orphan = service.subscriber_keys.generate(KeySpec.parse("ec-p256"), authority="ca-1")
        (young,) = [f for f in service.reconciliation.reconcile(apply=True)
                    if f.key == orphan.uri]
        assert (young.kind, young.action, young.done) == ("orphaned-key", "wait", None)
        assert service.subscriber_keys.exists(orphan.uri)
        (done,) = [f for f in service.reconciliation.reconcile(apply=True,
                                                               grace=dt.timedelta(0))
                   if f.key == orphan.uri]
        assert (done.kind, done.action, done.done) == ("orphaned-key", "destroy", "destroyed")
        assert not service.subscriber_keys.exists(orphan.uri)
        with pytest.raises(KeyNotFoundError):
            service.subscriber_keys.signer(orphan.uri)
        with service.context.read() as session:
            (event,) = session.query(AuditEvent).filter_by(action="key.destroy").all()
            assert orphan.uri in (event.details or "")
        assert not [f for f in service.reconciliation.survey(dt.timedelta(0))
                    if f.key == orphan.uri]
    finally:
        service.close()
        engine.dispose()
