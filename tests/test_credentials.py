"""Remote-signing credentials (ca/services/credentials.py, remote_signing.py) on SoftHSM and in
memory, over SQLite (and PostgreSQL when configured): sole control by PIN + TOTP, lockout,
SADs bound to a client, a credential and exact hashes, signatures verified by cryptography
against the certificate, the signature log, and secrets that never reach audit or logs."""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from typing import Any, Iterator

import pyotp
import pytest
from asn1crypto import algos as asn1_algos
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from sqlalchemy import select

from ca.clock import FrozenClock
from ca.errors import (ConfigurationError, CredentialDisabledError, CredentialError, CredentialLockedError,
                       CredentialNotFoundError, InvalidOtpError, InvalidPinError,
                       InvalidSadError, KeyNotFoundError, UnsupportedAlgorithmError)
from ca.hierarchy import load_hierarchy
from ca.keys.base import KeySpec
from ca.keys.memory import MemoryBackend
from ca.services import KeySource
from ca.services.clients import ClientInfo
from ca.store.models import AuditEvent, SignatureRecord, SigningCredential
from tests.test_service import NOW, World, make_world
from tests.test_service import profiles  # noqa: F401 - the module-scoped fixture

PIN = "492731"
USER = "CCCD:079073009568"
SHA256, SHA384 = "2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2"
RSA, RSA_SHA256, PSS = "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.10"
ECDSA, ECDSA_SHA256 = "1.2.840.10045.2.1", "1.2.840.10045.4.3.2"


@dataclasses.dataclass
class Setup:
    world: World
    ca: str
    client: ClientInfo
    other: ClientInfo

    @property
    def creds(self) -> Any:
        return self.world.service.credentials

    @property
    def clock(self) -> FrozenClock:
        return self.world.service.clock  # type: ignore[return-value]

    def issue(self, key: str = "rsa-2048") -> str:
        return self.world.service.issuance.issue(
            self.ca, "citizen", [("CN", "Bùi Sĩ Tuấn"), ("UID", USER)],
            KeySource(generate=KeySpec.parse(key))).serial_hex

    def enrol(self, key: str = "rsa-2048", **kw: Any) -> tuple[Any, pyotp.TOTP]:
        info, uri = self.creds.create(self.issue(key), USER, [self.client.name], PIN, **kw)
        return info, pyotp.parse_uri(uri)

    def otp(self, totp: pyotp.TOTP) -> str:
        """A fresh code: the clock moves one step on, so no code is used twice."""
        self.clock.advance(dt.timedelta(seconds=30))
        return totp.at(self.clock.now())

    def authorize(self, info: Any, totp: pyotp.TOTP, digests: list[bytes], *,
                  client: ClientInfo | None = None, num: int | None = None,
                  hash_oid: str = SHA256) -> str:
        return self.creds.authorize(client or self.client, info.credential_id, pin=PIN,
                                    otp=self.otp(totp), hashes=digests,
                                    hash_algorithm_oid=hash_oid,
                                    num_signatures=num or len(digests)).sad

    def rows(self, model: type) -> list:
        with self.world.service.context.read() as session:
            return list(session.scalars(select(model).order_by(model.id)))


def _spec(prefix: str, profiles: Any) -> Any:  # noqa: F811
    return load_hierarchy({
        "authorities": [
            {"name": f"{prefix}-root", "profile": "root-ca", "key": "ec-p256",
             "subject": "C=VN, O=Tincay, CN=Credentials Root"},
            {"name": f"{prefix}-ca", "parent": f"{prefix}-root", "profile": "issuing-ca",
             "key": "ec-p256", "subject": "C=VN, O=Tincay, CN=Credentials Issuing CA"}],
        "services": []}, profiles)


def _setup(url: str, keys: Any, profiles: Any, prefix: str) -> Iterator[Setup]:  # noqa: F811
    world = make_world(url, keys, profiles, FrozenClock(NOW))
    world.service.authorities.init_hierarchy(_spec(prefix, profiles))
    client = world.service.clients.add("emr-q11").client
    other = world.service.clients.add("school-platform").client
    yield Setup(world, f"{prefix}-ca", client, other)
    world.service.close()
    world.engine.dispose()


@pytest.fixture(params=["memory", pytest.param("softhsm", marks=pytest.mark.softhsm)])
def both(request: pytest.FixtureRequest, database_url: str, profiles: Any,  # noqa: F811
         unique_label: str) -> Iterator[Setup]:
    keys = MemoryBackend() if request.param == "memory" else request.getfixturevalue(
        "hsm_backend")
    yield from _setup(database_url, keys, profiles, unique_label)


@pytest.fixture
def mem(database_url: str, profiles: Any, unique_label: str) -> Iterator[Setup]:  # noqa: F811
    yield from _setup(database_url, MemoryBackend(), profiles, unique_label)


def _public(info: Any) -> Any:
    return x509.load_der_x509_certificate(info.certificates[0]).public_key()


def _digest(text: str, algorithm: Any = hashlib.sha256) -> bytes:
    return algorithm(text.encode()).digest()


# --- signing with each algorithm, on both backends ---------------------------------------------

@pytest.mark.parametrize("sign_oid", [RSA, RSA_SHA256])
def test_rsa_pkcs1_signatures_verify_against_the_certificate(both: Setup, sign_oid: str) -> None:
    info, totp = both.enrol("rsa-2048")
    assert info.key_algorithm_oid == RSA and info.key_length == 2048 and info.curve_oid is None
    assert info.status == "active" and info.certificate_status == "valid"
    assert len(info.certificates) == 2  # the signer's and its issuing CA's, not the root's
    digests = [_digest("bệnh án 1"), _digest("bệnh án 2")]
    sad = both.authorize(info, totp, digests)
    signatures = both.creds.sign_hashes(both.client, info.credential_id, sad, digests,
                                        SHA256 if sign_oid == RSA else None, sign_oid)
    assert len(signatures) == 2
    for digest, signature in zip(digests, signatures):
        _public(info).verify(signature, digest, padding.PKCS1v15(),
                             utils.Prehashed(hashes.SHA256()))
    records = both.rows(SignatureRecord)
    assert [(r.hash_hex, r.client, r.credential_id, r.user_id) for r in records] == \
        [(d.hex(), "emr-q11", info.credential_id, USER) for d in digests]
    log = both.creds.signatures(user_id=USER)
    assert len(log) == 2 and {r.sign_algorithm_oid for r in log} == {sign_oid}


def test_rsa_pss_with_default_and_explicit_parameters(both: Setup) -> None:
    info, totp = both.enrol("rsa-2048")
    digest = _digest("đơn thuốc")
    sad = both.authorize(info, totp, [digest])
    [signature] = both.creds.sign_hashes(both.client, info.credential_id, sad, [digest],
                                         SHA256, PSS)
    _public(info).verify(signature, digest, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                         utils.Prehashed(hashes.SHA256()))
    digest = hashlib.sha384(b"x").digest()
    params = asn1_algos.RSASSAPSSParams({
        "hash_algorithm": {"algorithm": "sha384"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha384"}},
        "salt_length": 48}).dump()
    sad = both.authorize(info, totp, [digest], hash_oid=SHA384)
    [signature] = both.creds.sign_hashes(both.client, info.credential_id, sad, [digest],
                                         None, PSS, params)
    _public(info).verify(signature, digest, padding.PSS(padding.MGF1(hashes.SHA384()), 48),
                         utils.Prehashed(hashes.SHA384()))


@pytest.mark.parametrize("sign_oid", [ECDSA, ECDSA_SHA256])
def test_ecdsa_p256_signatures_are_der_and_verify(both: Setup, sign_oid: str) -> None:
    info, totp = both.enrol("ec-p256")
    assert (info.key_algorithm_oid, info.key_length, info.curve_oid) == \
        (ECDSA, 256, "1.2.840.10045.3.1.7")
    assert PSS not in info.sign_algorithm_oids and ECDSA_SHA256 in info.sign_algorithm_oids
    digest = _digest("hồ sơ")
    sad = both.authorize(info, totp, [digest])
    with pytest.raises(UnsupportedAlgorithmError):
        both.creds.sign_hashes(both.client, info.credential_id, sad, [digest], SHA256, PSS)
    [signature] = both.creds.sign_hashes(both.client, info.credential_id, sad, [digest],
                                         SHA256, sign_oid)
    utils.decode_dss_signature(signature)  # an Ecdsa-Sig-Value SEQUENCE
    _public(info).verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_the_otp_seed_is_sealed_and_the_pin_is_scrypt(both: Setup) -> None:
    info, totp = both.enrol()
    [row] = both.rows(SigningCredential)
    seed = base64.b32decode(totp.secret)
    assert len(seed) == 20 and seed not in row.otp_sealed and totp.secret.encode() not in \
        row.otp_sealed
    assert row.pin_hash.startswith("scrypt$n=16384,r=8,p=1$") and PIN not in row.pin_hash
    assert totp.issuer == "tincay" and totp.name == USER
    # the sealed seed is bound to its credential: copied to another row it does not open
    from ca.services import credential_common as common

    assert common.unseal_seed(both.world.keys, row.otp_sealed, info.credential_id) == seed
    with pytest.raises(Exception, match="does not open"):
        common.unseal_seed(both.world.keys, row.otp_sealed, "another-credential")
    assert common.unseal_seed(both.world.keys, row.otp_sealed, info.credential_id) == seed
    if not isinstance(both.world.keys, MemoryBackend):  # the seal key is on the HSM, locked in
        from pkcs11 import Attribute, ObjectClass

        def attributes(session: Any) -> list:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label="tincay-seal-1")
            return [key[a] for a in (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.TOKEN,
                                     Attribute.ENCRYPT, Attribute.DECRYPT)]
        assert both.world.keys._session.run(attributes) == [True, False, True, True, True]


# --- sole control -------------------------------------------------------------------------------

def test_wrong_pin_wrong_otp_replayed_otp_and_missing_factors(mem: Setup) -> None:
    info, totp = mem.enrol()
    digest = [_digest("a")]
    kw = dict(hashes=digest, hash_algorithm_oid=SHA256, num_signatures=1)
    with pytest.raises(InvalidPinError) as wrong_pin:
        mem.creds.authorize(mem.client, info.credential_id, pin="000000", otp=mem.otp(totp), **kw)
    assert (wrong_pin.value.error, wrong_pin.value.status) == ("invalid_pin", 400)
    with pytest.raises(InvalidOtpError) as wrong_otp:
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp="000000", **kw)
    assert wrong_otp.value.error == "invalid_otp"
    assert mem.rows(SigningCredential)[0].failed_attempts == 2  # committed though refused
    code = mem.otp(totp)
    mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=code, **kw)
    assert mem.rows(SigningCredential)[0].failed_attempts == 0  # success resets the count
    with pytest.raises(InvalidOtpError):  # the same code again, same step: replay
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=code, **kw)
    mem.clock.advance(dt.timedelta(seconds=30))  # still within the window, but used
    with pytest.raises(InvalidOtpError):
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=code, **kw)
    with pytest.raises(InvalidPinError):
        mem.creds.authorize(mem.client, info.credential_id, pin=None, otp=mem.otp(totp), **kw)
    with pytest.raises(InvalidOtpError):
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=None, **kw)
    # a code from one step before now is accepted (clock drift), two steps is not
    mem.clock.advance(dt.timedelta(seconds=60))
    old = totp.at(mem.clock.now() - dt.timedelta(seconds=30))
    mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=old, **kw)
    mem.clock.advance(dt.timedelta(seconds=90))
    with pytest.raises(InvalidOtpError):
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN,
                            otp=totp.at(mem.clock.now() - dt.timedelta(seconds=60)), **kw)


def test_five_failures_lock_until_the_operator_unlocks(mem: Setup) -> None:
    info, totp = mem.enrol()
    kw = dict(hashes=[_digest("a")], hash_algorithm_oid=SHA256, num_signatures=1)
    for _ in range(5):
        with pytest.raises(InvalidPinError):
            mem.creds.authorize(mem.client, info.credential_id, pin="999999",
                                otp=mem.otp(totp), **kw)
    with pytest.raises(CredentialLockedError) as locked:  # even with both factors right
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=mem.otp(totp), **kw)
    assert (locked.value.error, locked.value.status) == ("access_denied", 403)
    assert mem.creds.show(info.credential_id).status == "locked"
    actions = [e.action for e in mem.rows(AuditEvent)]
    assert actions.count("credential.lock") == 1 and actions.count("credential.auth_failed") == 5
    assert mem.creds.unlock(info.credential_id).status == "active"
    assert mem.rows(SigningCredential)[0].failed_attempts == 0
    mem.authorize(info, totp, [_digest("a")])


# --- the SAD ------------------------------------------------------------------------------------

def test_a_sad_expires_and_is_good_for_num_signatures_only(mem: Setup) -> None:
    info, totp = mem.enrol()
    a, b, c = _digest("a"), _digest("b"), _digest("c")
    sad = mem.authorize(info, totp, [a, b, c], num=2)
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [a], SHA256, RSA)
    with pytest.raises(InvalidSadError):  # signed already
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [a], SHA256, RSA)
    with pytest.raises(InvalidSadError):  # b and c: three signatures past num_signatures=2
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [b, c], SHA256, RSA)
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [b], SHA256, RSA)
    with pytest.raises(InvalidSadError, match="used up"):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [c], SHA256, RSA)
    with pytest.raises(InvalidSadError, match="not cover"):  # a hash the SAD never covered
        other = mem.authorize(info, totp, [a])
        mem.creds.sign_hashes(mem.client, info.credential_id, other, [b], SHA256, RSA)
    sad = mem.authorize(info, totp, [c])
    mem.clock.advance(dt.timedelta(seconds=301))
    with pytest.raises(InvalidSadError, match="expired"):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [c], SHA256, RSA)
    assert len(mem.rows(SignatureRecord)) == 2


@pytest.mark.softhsm
def test_authorize_unwraps_the_key_in_this_worker_before_signhash(
        database_url: str, profiles: Any, unique_label: str, hsm_backend: Any) -> None:  # noqa: F811
    """The SAD is for signatures that follow at once: authorize leaves the subscriber's key
    unwrapped in the HSM session of the worker that checked the factors (one session object),
    and signHash then signs with that object."""
    from ca.services.credentials import Credentials
    from ca.services.subscriber_keys import SubscriberKeys

    for setup in _setup(database_url, hsm_backend, profiles, unique_label):
        info, totp = setup.enrol("ec-p256")
        keys = SubscriberKeys(setup.world.service.context)  # a fresh worker's cache
        creds = Credentials(setup.world.service.context, keys)
        assert keys.wrapping.cached() == 0
        digest = _digest("đơn thuốc")
        sad = creds.authorize(setup.client, info.credential_id, pin=PIN, otp=setup.otp(totp),
                              hashes=[digest], hash_algorithm_oid=SHA256,
                              num_signatures=1).sad
        assert keys.wrapping.cached() == 1
        signature, = creds.sign_hashes(setup.client, info.credential_id, sad, [digest], SHA256,
                                       ECDSA_SHA256)
        assert keys.wrapping.cached() == 1  # no second unwrap
        _public(info).verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        keys.close()


def test_tincay_sad_lifetime_sets_how_long_a_sad_is_good_for(
        mem: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from ca.services.credentials import Credentials
    from ca.settings import sad_lifetime

    monkeypatch.setenv("TINCAY_SAD_LIFETIME", "90s")
    creds = Credentials(mem.world.service.context)  # built after the variable, as a worker is
    info, totp = mem.enrol()
    a, b = _digest("a"), _digest("b")
    activation = creds.authorize(mem.client, info.credential_id, pin=PIN, otp=mem.otp(totp),
                                 hashes=[a, b], hash_algorithm_oid=SHA256, num_signatures=2)
    assert activation.expires_in == 90
    mem.clock.advance(dt.timedelta(seconds=89))
    creds.sign_hashes(mem.client, info.credential_id, activation.sad, [a], SHA256, RSA)
    mem.clock.advance(dt.timedelta(seconds=2))
    with pytest.raises(InvalidSadError, match="expired"):
        creds.sign_hashes(mem.client, info.credential_id, activation.sad, [b], SHA256, RSA)
    for bad, says in (("0s", "must be longer than 0s"), ("soon", "soon")):
        with pytest.raises(ConfigurationError, match=f"^TINCAY_SAD_LIFETIME: .*{says}"):
            sad_lifetime({"TINCAY_SAD_LIFETIME": bad})
    assert sad_lifetime({}) == dt.timedelta(minutes=5)


def test_extend_gives_a_new_sad_for_what_is_left_and_ends_the_old(mem: Setup) -> None:
    info, totp = mem.enrol()
    a, b = _digest("a"), _digest("b")
    sad = mem.authorize(info, totp, [a, b])
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [a], SHA256, RSA)
    mem.clock.advance(dt.timedelta(seconds=250))
    renewed = mem.creds.extend(mem.client, info.credential_id, sad)
    assert renewed.sad != sad and renewed.expires_in == 300
    with pytest.raises(InvalidSadError):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [b], SHA256, RSA)
    with pytest.raises(InvalidSadError):
        mem.creds.extend(mem.client, info.credential_id, sad)
    mem.clock.advance(dt.timedelta(seconds=250))  # past the old expiry, within the new one
    with pytest.raises(InvalidSadError):
        mem.creds.sign_hashes(mem.client, info.credential_id, renewed.sad, [a], SHA256, RSA)
    mem.creds.sign_hashes(mem.client, info.credential_id, renewed.sad, [b], SHA256, RSA)


def test_a_sad_or_credential_of_another_client_is_refused(mem: Setup) -> None:
    info, totp = mem.enrol()
    digest = _digest("a")
    sad = mem.authorize(info, totp, [digest])
    with pytest.raises(CredentialNotFoundError) as foreign:  # not granted: same as unknown
        mem.creds.sign_hashes(mem.other, info.credential_id, sad, [digest], SHA256, RSA)
    with pytest.raises(CredentialNotFoundError) as unknown:
        mem.creds.sign_hashes(mem.client, "no-such-credential", sad, [digest], SHA256, RSA)
    assert str(foreign.value) == str(unknown.value)
    with pytest.raises(CredentialNotFoundError):
        mem.creds.info_for(mem.other, info.credential_id)
    with pytest.raises(CredentialNotFoundError):
        mem.authorize(info, totp, [digest], client=mem.other)
    assert mem.creds.list_for(mem.other) == [] and len(mem.creds.list_for(mem.client)) == 1
    # the other client holds its own credential: the first client's SAD does not sign with it
    second, _ = mem.creds.create(mem.issue(), USER, [mem.client.name, mem.other.name], PIN)
    with pytest.raises(InvalidSadError):
        mem.creds.sign_hashes(mem.client, second.credential_id, sad, [digest], SHA256, RSA)
    assert [c.credential_id for c in mem.creds.list_for(mem.other, USER)] == \
        [second.credential_id]
    assert mem.creds.list_for(mem.other, "CCCD:000000000000") == []
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest], SHA256, RSA)


def test_disabled_credential_and_revoked_certificate_are_refused_at_once(mem: Setup) -> None:
    info, totp = mem.enrol()
    digest = _digest("a")
    sad = mem.authorize(info, totp, [digest])
    mem.world.service.revocation.revoke(mem.ca, info.serial_hex, "certificateHold")
    with pytest.raises(CredentialDisabledError) as held:  # a SAD issued before: refused too
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest], SHA256, RSA)
    assert (held.value.error, held.value.status) == ("access_denied", 403)
    assert mem.creds.show(info.credential_id).certificate_status == "suspended"
    mem.world.service.revocation.release_hold(mem.ca, info.serial_hex)
    assert len(mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest],
                                     SHA256, RSA)) == 1
    mem.world.service.revocation.revoke(mem.ca, info.serial_hex, "keyCompromise")
    with pytest.raises(CredentialDisabledError):
        mem.authorize(info, totp, [digest])
    assert mem.creds.show(info.credential_id).certificate_status == "revoked"

    second, totp2 = mem.enrol()
    sad = mem.authorize(second, totp2, [digest])
    assert mem.creds.disable(second.credential_id).status == "disabled"
    with pytest.raises(CredentialDisabledError):
        mem.creds.sign_hashes(mem.client, second.credential_id, sad, [digest], SHA256, RSA)
    third, totp3 = mem.enrol()
    mem.clock.advance(dt.timedelta(days=400))  # past the certificate's end
    with pytest.raises(CredentialDisabledError, match="expired"):
        mem.authorize(third, totp3, [digest])
    assert "credential.disable" in [e.action for e in mem.rows(AuditEvent)]


@pytest.mark.parametrize("hashes_, oid, num", [
    ([_digest("a")], "1.2.3.4", 1),                      # unknown hash OID
    ([b"\x00" * 31], SHA256, 1),                          # wrong length
    ([hashlib.sha256(b"a").digest()], SHA384, 1),         # SHA-256 length for SHA-384
])
def test_unknown_hash_oid_and_wrong_lengths_are_refused(mem: Setup, hashes_: list, oid: str,
                                                        num: int) -> None:
    info, totp = mem.enrol()
    with pytest.raises(UnsupportedAlgorithmError) as refused:
        mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=mem.otp(totp),
                            hashes=hashes_, hash_algorithm_oid=oid, num_signatures=num)
    assert refused.value.error == "invalid_request"
    assert mem.rows(SigningCredential)[0].failed_attempts == 0


def test_bad_counts_and_mismatched_algorithms(mem: Setup) -> None:
    info, totp = mem.enrol(multisign=2)
    a, b, c = _digest("a"), _digest("b"), _digest("c")
    for hashes_, num in (([a, b, c], 3), ([], 1), ([a], 0), ([a], 2), ([a, a], 2)):
        with pytest.raises(CredentialError):
            mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=mem.otp(totp),
                                hashes=hashes_, hash_algorithm_oid=SHA256, num_signatures=num)
    sad = mem.authorize(info, totp, [a])
    for hash_oid, sign_oid, params in ((SHA384, RSA, None), (None, "1.2.840.113549.1.1.12", None),
                                       (SHA256, ECDSA, None), (SHA256, RSA, b"\x30\x00"),
                                       (SHA256, PSS, b"garbage")):
        with pytest.raises(UnsupportedAlgorithmError):
            mem.creds.sign_hashes(mem.client, info.credential_id, sad, [a], hash_oid,
                                  sign_oid, params)
    assert mem.rows(SignatureRecord) == []  # refused before anything was consumed
    mem.creds.sign_hashes(mem.client, info.credential_id, sad, [a], SHA256, RSA)


# --- enrolment, the operator's commands, secrets ---------------------------------------------------

def test_enrolment_needs_an_issued_valid_certificate_with_its_key_here(mem: Setup) -> None:
    creds = mem.creds
    with pytest.raises(ValueError, match="at least 6"):
        creds.create(mem.issue(), USER, [mem.client.name], "12345")
    with pytest.raises(Exception, match="no client named"):
        creds.create(mem.issue(), USER, ["nobody"], PIN)
    serial = mem.issue()
    mem.world.service.revocation.revoke(mem.ca, serial, "superseded")
    with pytest.raises(CredentialDisabledError, match="revoked"):
        creds.create(serial, USER, [mem.client.name], PIN)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
           .sign(key, hashes.SHA256()))
    from_csr = mem.world.service.issuance.issue(
        mem.ca, "citizen", [("CN", "Bùi Sĩ Tuấn"), ("UID", USER)], KeySource(csr=csr))
    with pytest.raises(CredentialError, match="CSR"):
        creds.create(from_csr.serial_hex, USER, [mem.client.name], PIN, authority=mem.ca)
    assert creds.list_all() == []


def test_reset_pin_and_seed(mem: Setup) -> None:
    info, totp = mem.enrol()
    _, uri = mem.creds.reset(info.credential_id, pin="7654321", new_otp=True)
    new = pyotp.parse_uri(uri)
    assert new.secret != totp.secret
    with pytest.raises(InvalidPinError):  # the old PIN
        mem.authorize(info, new, [_digest("a")])
    mem.creds.authorize(mem.client, info.credential_id, pin="7654321", otp=mem.otp(new),
                        hashes=[_digest("a")], hash_algorithm_oid=SHA256, num_signatures=1)
    with pytest.raises(InvalidOtpError):  # the old seed
        mem.creds.authorize(mem.client, info.credential_id, pin="7654321", otp=mem.otp(totp),
                            hashes=[_digest("a")], hash_algorithm_oid=SHA256, num_signatures=1)
    assert mem.creds.reset(info.credential_id, pin="11223344")[1] is None
    assert [e.action for e in mem.rows(AuditEvent)].count("credential.reset") == 2


def test_no_secret_in_audit_events_or_log_records(mem: Setup,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    info, uri = mem.creds.create(mem.issue(), USER, [mem.client.name], PIN)
    totp = pyotp.parse_uri(uri)
    otp = mem.otp(totp)
    activation = mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=otp,
                                     hashes=[_digest("a")], hash_algorithm_oid=SHA256,
                                     num_signatures=1)
    mem.creds.sign_hashes(mem.client, info.credential_id, activation.sad, [_digest("a")],
                          SHA256, RSA)
    with pytest.raises(InvalidPinError):
        mem.creds.authorize(mem.client, info.credential_id, pin="918273", otp=mem.otp(totp),
                            hashes=[_digest("b")], hash_algorithm_oid=SHA256, num_signatures=1)
    _, uri2 = mem.creds.reset(info.credential_id, pin="55556666", new_otp=True)
    events = " ".join(f"{e.action} {e.details}" for e in mem.rows(AuditEvent))
    logs = " ".join(r.getMessage() for r in caplog.records)
    assert "credential.create" in events and "credential.authorize" in events
    for secret in (PIN, "918273", "55556666", otp, activation.sad, totp.secret, uri,
                   pyotp.parse_uri(uri2).secret):
        assert secret not in events and secret not in logs


def test_two_threads_racing_for_one_hash_one_signature(mem: Setup) -> None:
    info, totp = mem.enrol()
    digest = _digest("a")
    sad = mem.authorize(info, totp, [digest])
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def sign() -> None:
        barrier.wait()
        try:
            results.append(mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest],
                                                 SHA256, RSA))
        except Exception as exc:  # noqa: BLE001 - the loser's refusal is the point
            results.append(exc)

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wins = [r for r in results if isinstance(r, list)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert isinstance(losses[0], InvalidSadError)
    assert len(mem.rows(SignatureRecord)) == 1


# --- the CLI ------------------------------------------------------------------------------------

@pytest.mark.softhsm
def test_cli_create_list_and_the_signature_log(softhsm_env: dict[str, str], database_url: str,
                                               tmp_path: Any, unique_label: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cli.context import AppContext
    from cli.main import main
    from tests.test_cli import write_spec

    monkeypatch.setenv("TINCAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINCAY_DATABASE_URL", database_url)
    monkeypatch.setenv("TINCAY_PUBLIC_URL", "http://127.0.0.1:8080")

    def tincay(*args: str, code: int = 0) -> str:
        capsys.readouterr()
        assert main(list(args)) == code, capsys.readouterr()
        out, err = capsys.readouterr()
        tincay.err = err  # type: ignore[attr-defined]
        return out

    tincay("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    ca = f"{unique_label}-ca"
    issued = json.loads(tincay("issue", "--ca", ca, "--profile", "citizen", "--subject",
                               f"C=VN, CN=Bùi Sĩ Tuấn, UID={USER}", "--generate-key",
                               "--key-type", "ec-p256", "--out", str(tmp_path / "c.pem"),
                               "--json"))
    app = AppContext()
    client = app.service.clients.add("emr-q11").client
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    created = json.loads(tincay("credential", "create", "--cert", issued["serial"], "--ca", ca,
                                "--user", USER, "--client", "emr-q11", "--pin-file",
                                str(pin_file), "--json"))
    assert created["otpauth_uri"].startswith("otpauth://totp/tincay:")
    assert created["status"] == "active" and created["clients"] == ["emr-q11"]
    credential_id = created["credential_id"]
    human = tincay("credential", "list")
    assert credential_id in human and created["otpauth_uri"] not in human
    [listed] = json.loads(tincay("credential", "list", "--user", USER, "--json"))
    assert listed["credential_id"] == credential_id

    digest = hashlib.sha256("hồ sơ".encode()).digest()
    totp = pyotp.parse_uri(created["otpauth_uri"])
    sad = app.service.credentials.authorize(client, credential_id, pin=PIN, otp=totp.now(),
                                            hashes=[digest], hash_algorithm_oid=SHA256,
                                            num_signatures=1).sad
    app.service.credentials.sign_hashes(client, credential_id, sad, [digest], SHA256, ECDSA)
    app.close()
    [entry] = json.loads(tincay("csc", "log", "--since", "1h", "--json"))
    assert (entry["credential_id"], entry["client"], entry["hash_hex"]) == \
        (credential_id, "emr-q11", digest.hex())
    assert json.loads(tincay("csc", "log", "--since", "2000-01-01", "--user", "CCCD:1",
                             "--json")) == []
    assert "disabled" in tincay("credential", "disable", credential_id)

    # the human output: the id, the URI once and a QR code; reset with a new seed shows a new one
    second = json.loads(tincay("issue", "--ca", ca, "--profile", "citizen", "--subject",
                               f"C=VN, CN=Bùi Sĩ Tuấn, UID={USER}", "--generate-key",
                               "--key-type", "rsa-2048", "--out", str(tmp_path / "d.pem"),
                               "--json"))
    out = tincay("credential", "create", "--cert", second["serial"], "--user", USER,
                 "--client", "emr-q11", "--pin-file", str(pin_file))
    assert "otpauth://totp/tincay:" in out and "\u2588" in out  # the QR code's blocks
    new_id = out.split()[1]
    assert json.loads(tincay("credential", "show", new_id, "--json"))["status"] == "active"
    reset = tincay("credential", "reset", new_id, "--new-otp")
    assert "new OTP seed" in reset and "new PIN" not in reset and "otpauth://" in reset

    # operator mistakes: one line, exit 1, no traceback
    short = tmp_path / "short"
    short.write_text("123")
    tincay("credential", "create", "--cert", issued["serial"], "--user", USER, "--client",
           "emr-q11", "--pin-file", str(short), code=1)
    assert "at least 6" in tincay.err and "Traceback" not in tincay.err  # type: ignore
    tincay("credential", "show", "nope", code=1)
    assert "no credential nope" in tincay.err  # type: ignore[attr-defined]
    tincay("csc", "log", "--since", "yesterday", code=2)


def test_pin_hashes_keep_their_own_parameters() -> None:
    from ca.services import credential_common as common

    salt = b"\x01" * 16
    older = hashlib.scrypt(PIN.encode(), salt=salt, n=2 ** 12, r=8, p=1, dklen=32)
    stored = f"scrypt$n=4096,r=8,p=1${base64.b64encode(salt).decode()}$" \
             f"{base64.b64encode(older).decode()}"
    assert common.pin_matches(stored, PIN) and not common.pin_matches(stored, "492732")
    assert not common.pin_matches("garbage", PIN) and not common.pin_matches(stored, None)
    assert common.hash_pin(PIN) != common.hash_pin(PIN)  # a fresh salt each time


def test_a_signing_failure_after_the_log_is_recorded_as_such(mem: Setup) -> None:
    """The log row is committed before the key signs; when signing fails, an audit event
    names the rows that got no signature, and the hash stays used."""
    info, totp = mem.enrol()
    digest = _digest("a")
    sad = mem.authorize(info, totp, [digest])
    with mem.world.service.context.read() as session:
        key_uri = session.scalar(select(SigningCredential)).certificate.key_uri
    assert mem.world.service.subscriber_keys.destroy(key_uri)  # the wrapped key is gone
    with pytest.raises(KeyNotFoundError, match="no subscriber key"):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest], SHA256, RSA)
    [record] = mem.rows(SignatureRecord)
    [failed] = [e for e in mem.rows(AuditEvent) if e.action == "credential.sign_failed"]
    assert f"[{record.id}]" in failed.details and "KeyNotFoundError" in failed.details
    with pytest.raises(InvalidSadError):
        mem.creds.sign_hashes(mem.client, info.credential_id, sad, [digest], SHA256, RSA)


def test_odd_factor_and_sad_values_are_refusals_not_crashes(mem: Setup) -> None:
    info, totp = mem.enrol()
    kw = dict(hashes=[_digest("a")], hash_algorithm_oid=SHA256, num_signatures=1)
    for otp in ("١٢٣٤٥٦", "12345", "1234567", "abcdef"):
        with pytest.raises(InvalidOtpError):
            mem.creds.authorize(mem.client, info.credential_id, pin=PIN, otp=otp, **kw)
    with pytest.raises(InvalidPinError):
        mem.creds.authorize(mem.client, info.credential_id, pin="\udcff" * 6,
                            otp=mem.otp(totp), **kw)
    assert mem.creds.show(info.credential_id).status == "locked"  # five failures, all counted
    mem.creds.unlock(info.credential_id)
    for sad in ("", "x" * 5000, None):
        with pytest.raises(InvalidSadError):
            mem.creds.sign_hashes(mem.client, info.credential_id, sad,  # type: ignore[arg-type]
                                  [_digest("a")], SHA256, RSA)
