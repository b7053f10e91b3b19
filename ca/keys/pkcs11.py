"""Keys on a PKCS#11 token (SoftHSM in tests and demos, a network HSM in production).

SoftHSM, initialised by python-pkcs11 without locking callbacks, runs without mutexes: two
threads on two sessions of one process crash it. So every process holds exactly one logged-in
session per token, shared by every backend object in that process and guarded by one lock, and
scales by adding processes. After a fork (gunicorn workers) the child re-initialises the module and
opens its own session on first use.

Processes also get in each other's way: SoftHSM rewrites its token file at every login, and a
process that reads the token meanwhile (its own C_Initialize, finding the token or a key)
sees no token, or a key that "vanished", for as long as its module stays initialised
(softhsm/SoftHSMv2#757; four processes opening the token in a loop failed every other time
here). So opening a session, looking a key up and generating one happen under an exclusive
lock on the module file shared by every process of the machine; signing with a key already
found does not read the token file and takes no such lock.

A token can also stop answering under a running process: a network HSM's link goes down, a
SoftHSM token directory is moved away. The process's session then fails (and SoftHSM, like
some HSM client libraries, never sees the token again until its module is re-initialised), so
each such failure drops the session and marks the module for re-initialisation: requests fail
with a BackendUnavailableError while the token is gone (the TSA answers systemFailure, the OCSP
responder tryLater) and sign again once it is back, without a restart.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import pkcs11
from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from ca.errors import (BackendUnavailableError, ConfigurationError, KeyBackendError,
                       KeyExistsError, KeyNotFoundError, PinError, TokenNotFoundError,
                       UnsupportedKeyError)
from ca.keys.base import CURVES, KeySpec, PublicKey, SigningKey
from ca.keys.uri import Pkcs11Uri
from ca.settings import PinSource

T = TypeVar("T")

_CURVE_OIDS = {"P-256": "secp256r1", "P-384": "secp384r1"}
_ED25519_OID = "1.3.101.112"
_PKCS1_HASH_MECHS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
                     "sha512": Mechanism.SHA512_RSA_PKCS, "sha224": Mechanism.SHA224_RSA_PKCS,
                     "sha1": Mechanism.SHA1_RSA_PKCS}
_PSS_HASH_MECHS = {"sha256": (Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA256, pkcs11.MGF.SHA256),
                   "sha384": (Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA384, pkcs11.MGF.SHA384),
                   "sha512": (Mechanism.SHA512_RSA_PKCS_PSS, Mechanism.SHA512, pkcs11.MGF.SHA512)}
_PSS_DIGEST_MECHS = {"sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
                     "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
                     "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512)}

# One lock for every PKCS#11 call in this process, and one session per (module, token).
_PROCESS_LOCK = threading.RLock()
_LIBS: dict[str, Any] = {}
_SESSIONS: dict[tuple[str, str], "_TokenSession"] = {}
_STALE_MODULES: set[str] = set()  # re-initialise before the next session: a token was lost
# what a token that stopped answering raises (SoftHSM whose storage went away: GeneralError)
_TOKEN_LOST = (p11.DeviceRemoved, p11.DeviceError, p11.SessionClosed, p11.SessionHandleInvalid,
               p11.TokenNotPresent, p11.GeneralError)
_MODULE_LOCKS: dict[str, tuple[int, int, int]] = {}  # module -> (pid, fd, depth)


@contextmanager
def _token_files_locked(module: str) -> Iterator[None]:
    """Hold the machine-wide lock on ``module`` (reentrant; call under _PROCESS_LOCK)."""
    pid = os.getpid()
    held = _MODULE_LOCKS.get(module)
    if held is not None and held[0] == pid:
        _MODULE_LOCKS[module] = (pid, held[1], held[2] + 1)
    else:
        try:
            fd = os.open(module, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigurationError(f"PKCS#11 module {module}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        _MODULE_LOCKS[module] = (pid, fd, 1)
    try:
        yield
    finally:
        _, fd, depth = _MODULE_LOCKS[module]
        if depth > 1:
            _MODULE_LOCKS[module] = (pid, fd, depth - 1)
        else:
            del _MODULE_LOCKS[module]
            os.close(fd)  # releases the flock


class _TokenSession:
    """The process's single logged-in session on one token."""

    def __init__(self, module: str, token_label: str, pin: PinSource) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._pid = -1
        self._session: Any = None
        # label -> private key object of this session. SoftHSM keeps private objects'
        # attributes encrypted, so finding a key by label decrypts the labels of every private
        # object on the token: more than the signature itself costs. Handles live as long as
        # the session; a stale one is forgotten and looked up again.
        self._keys: dict[str, Any] = {}
        self._found: set[str] = set()  # labels found on the token since the process started
        self._expected: dict[str, bytes] = {}  # label -> SPKI its certificate holds, unchecked

    def run(self, action: Callable[[Any], T], *, reads_token: bool = False) -> T:
        """Run ``action(session)`` under the process lock, opening the session if needed;
        ``reads_token``: also under the machine-wide lock (finding or making objects)."""
        with _PROCESS_LOCK:
            if self._session is None or self._pid != os.getpid():
                with _token_files_locked(self.module):
                    self._open()
            try:
                if reads_token:
                    with _token_files_locked(self.module):
                        return action(self._session)
                return action(self._session)
            except _TOKEN_LOST as exc:
                self.lost()
                raise BackendUnavailableError(
                    f"HSM token {self.token_label!r} unavailable: {type(exc).__name__}") from None

    def lost(self) -> None:
        """Forget the session after the token stopped answering (call under the process lock);
        the next call re-initialises the module and opens a new one."""
        self.drop()
        _STALE_MODULES.add(self.module)

    def drop(self) -> None:
        """Forget the session and its key handles (closed, or about to be)."""
        self._session, self._keys = None, {}

    def private_key(self, label: str) -> Any:
        """The private key labelled ``label`` (call inside :meth:`run`); NoSuchKey if absent."""
        key = self._keys.get(label)
        if key is None:
            try:
                with _token_files_locked(self.module):
                    key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY,
                                                label=label)
                    if label in self._expected:
                        self._check_expected(label)
            except p11.NoSuchKey:
                if label in self._found:  # it was there: deleted, or the token's storage went
                    self.lost()           # away, and then only a re-initialised module sees it
                raise
            self._keys[label] = key
            self._found.add(label)
        return key

    def forget(self, label: str) -> None:
        self._keys.pop(label, None)

    def expect(self, label: str, public: PublicKey) -> None:
        """Check the key labelled ``label``, when it is first found, against ``public``."""
        self._expected[label] = _spki(public)

    def _check_expected(self, label: str) -> None:
        found = _public_key(self._session.get_key(object_class=ObjectClass.PUBLIC_KEY,
                                                  label=label))
        if _spki(found) != self._expected[label]:
            raise _not_the_certificates(label, self.token_label)
        del self._expected[label]

    def _open(self) -> None:
        try:
            self._login()
        except (TokenNotFoundError, BackendUnavailableError):
            _STALE_MODULES.add(self.module)  # it may not see the token until re-initialised
            raise
        _STALE_MODULES.discard(self.module)

    def _login(self) -> None:
        self._keys = {}
        lib = _load_lib(self.module)
        try:
            token = lib.get_token(token_label=self.token_label)
        except p11.NoSuchToken:
            raise TokenNotFoundError(
                f"no PKCS#11 token labelled {self.token_label!r} in {self.module}") from None
        except p11.MultipleTokensReturned:
            raise TokenNotFoundError(
                f"several PKCS#11 tokens are labelled {self.token_label!r}") from None
        pin = self._pin.read()
        try:
            self._session = token.open(user_pin=pin, rw=True)
        except p11.PinIncorrect:
            raise PinError(f"wrong PIN for PKCS#11 token {self.token_label!r}") from None
        except p11.PinLocked:
            raise PinError(f"PIN of PKCS#11 token {self.token_label!r} is locked") from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise PinError(f"invalid PIN for PKCS#11 token {self.token_label!r}") from None
        except p11.PKCS11Error as exc:
            raise BackendUnavailableError(
                f"cannot open a session on token {self.token_label!r}: {type(exc).__name__}"
            ) from None
        self._pid = os.getpid()

    def close(self) -> None:
        with _PROCESS_LOCK:
            if self._session is not None and self._pid == os.getpid():
                try:
                    self._session.close()
                except p11.PKCS11Error:
                    pass
            self.drop()


def _load_lib(module: str) -> Any:
    """The module, initialised in this process: re-initialised after a fork or once a token of
    it was lost (every session of the module is then forgotten: re-initialising closed them)."""
    lib = _LIBS.get(module)
    pid = os.getpid()
    if lib is not None and (lib[1] != pid or module in _STALE_MODULES):
        try:
            lib[0].reinitialize()
        except p11.PKCS11Error as exc:
            raise _not_initialised(module, exc) from None
        _LIBS[module] = lib = (lib[0], pid)
        for session in _SESSIONS.values():
            if session.module == module:
                session.drop()
    if lib is None:
        if not os.path.exists(module):
            raise ConfigurationError(f"PKCS#11 module {module} does not exist")
        try:
            lib = (pkcs11.lib(module), pid)
        except p11.PKCS11Error as exc:  # loaded, but C_Initialize failed (SoftHSM: no storage)
            raise _not_initialised(module, exc) from None
        except (RuntimeError, OSError) as exc:
            raise ConfigurationError(f"cannot load PKCS#11 module {module}: {exc}") from None
        _LIBS[module] = lib
    return lib[0]


def _not_the_certificates(label: str, token: str) -> KeyBackendError:
    return KeyBackendError(f"key {label!r} on token {token!r} is not the key of the certificate "
                           "it was loaded for")


def _not_initialised(module: str, exc: Exception) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"PKCS#11 module {module} cannot be initialised: {type(exc).__name__}")


def shared_session(module: str, token_label: str, pin: PinSource) -> _TokenSession:
    with _PROCESS_LOCK:
        key = (module, token_label)
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = _TokenSession(module, token_label, pin)
        return session


class Pkcs11Backend:
    """Generate and find keys on one token, named by RFC 7512 URIs."""

    scheme = "pkcs11"

    def __init__(self, module: str | None, token_label: str, pin: PinSource) -> None:
        if not module:
            raise ConfigurationError(
                "no PKCS#11 module: set TINCAY_PKCS11_MODULE or install softhsm2")
        self.token_label = token_label
        self._session = shared_session(module, token_label, pin)

    def uri(self, label: str) -> str:
        return str(Pkcs11Uri(token=self.token_label, object=label))

    def _label(self, uri_or_label: str) -> str:
        if not uri_or_label.startswith("pkcs11:"):
            return uri_or_label
        uri = Pkcs11Uri.parse(uri_or_label)
        if uri.token is not None and uri.token != self.token_label:
            raise KeyNotFoundError(
                f"key {uri_or_label} is on token {uri.token!r}, not {self.token_label!r}")
        if not uri.object:
            raise ConfigurationError(f"PKCS#11 URI {uri_or_label} names no object")
        return uri.object

    def exists(self, label: str) -> bool:
        def find(session: Any) -> bool:
            return any(True for _ in session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
        return self._session.run(find, reads_token=True)

    def generate(self, label: str, spec: KeySpec) -> SigningKey:
        def gen(session: Any) -> None:
            if any(True for _ in session.get_objects({Attribute.LABEL: label})):
                raise KeyExistsError(f"key {label!r} already exists on token {self.token_label!r}")
            key_id = hashlib.sha1(label.encode()).digest()
            private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                Attribute.SIGN: True, Attribute.PRIVATE: True,
                                Attribute.TOKEN: True, Attribute.DECRYPT: False,
                                Attribute.UNWRAP: False, Attribute.DERIVE: False}
            public_template = {Attribute.VERIFY: True, Attribute.TOKEN: True,
                               Attribute.ENCRYPT: False, Attribute.WRAP: False}
            try:
                if spec.algorithm == "rsa":
                    session.generate_keypair(
                        KeyType.RSA, spec.size, label=label, id=key_id, store=True,
                        public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                        private_template=private_template)
                else:
                    if spec.algorithm == "ec":
                        params = encode_named_curve_parameters(_CURVE_OIDS[spec.curve or "P-256"])
                        key_type, mech = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
                    else:
                        params = asn1_core.ObjectIdentifier(_ED25519_OID).dump()
                        key_type, mech = KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                    domain = session.create_domain_parameters(
                        key_type, {Attribute.EC_PARAMS: params}, local=True)
                    domain.generate_keypair(label=label, id=key_id, store=True, mechanism=mech,
                                            public_template=public_template,
                                            private_template=private_template)
            except (p11.MechanismInvalid, p11.AttributeValueInvalid, p11.KeySizeRange,
                    p11.DomainParamsInvalid, p11.FunctionNotSupported) as exc:
                raise UnsupportedKeyError(
                    f"token {self.token_label!r} cannot generate {spec}: {type(exc).__name__}"
                ) from None
        self._session.run(gen, reads_token=True)
        return self.load(label)

    def load(self, uri_or_label: str, expected: PublicKey | None = None) -> SigningKey:
        label = self._label(uri_or_label)

        def find(session: Any) -> PublicKey:
            try:
                self._session.private_key(label)  # found (and remembered) in this session
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            except p11.NoSuchKey:
                raise KeyNotFoundError(
                    f"no key {label!r} on PKCS#11 token {self.token_label!r}") from None
            except p11.MultipleObjectsReturned:
                raise KeyBackendError(
                    f"several keys are labelled {label!r} on token {self.token_label!r}") from None
            return _public_key(public)

        try:
            public = self._session.run(find, reads_token=True)
        except (BackendUnavailableError, TokenNotFoundError):
            if expected is None:
                raise
            public = expected  # the HSM is unreachable: signing finds the key once it is back
            with _PROCESS_LOCK:
                self._session.expect(label, expected)
        else:
            if expected is not None and _spki(public) != _spki(expected):
                raise _not_the_certificates(label, self.token_label)
        spec = KeySpec.of_public_key(public)
        signer = _make_signer(self._session, label, public)
        return SigningKey(self.uri(label), spec, signer, public)

    def close(self) -> None:
        self._session.close()


def _spki(public: PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _public_key(obj: Any) -> PublicKey:
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        n = int.from_bytes(obj[Attribute.MODULUS], "big")
        e = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    point = asn1_core.OctetString.load(obj[Attribute.EC_POINT]).native
    if key_type == KeyType.EC:
        params = asn1_keys.ECDomainParameters.load(obj[Attribute.EC_PARAMS])
        curve_name = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(params.chosen.native)
        if curve_name is None:
            raise UnsupportedKeyError(f"unsupported curve {params.chosen.native}")
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[curve_name], point)
    if key_type == KeyType.EC_EDWARDS:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    raise UnsupportedKeyError(f"unsupported PKCS#11 key type {key_type!r}")


def _hsm_sign(session: _TokenSession, label: str, data: bytes, mechanism: Mechanism,
              param: Any = None) -> bytes:
    def sign(s: Any) -> bytes:
        try:
            try:
                return session.private_key(label).sign(data, mechanism=mechanism,
                                                       mechanism_param=param)
            except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                session.forget(label)  # destroyed or re-created since: look it up again
                return session.private_key(label).sign(data, mechanism=mechanism,
                                                       mechanism_param=param)
        except p11.NoSuchKey:
            raise KeyNotFoundError(f"key {label!r} vanished from the token") from None
        except (p11.MechanismInvalid, p11.MechanismParamInvalid) as exc:
            raise UnsupportedKeyError(
                f"token cannot sign with {mechanism.name}: {type(exc).__name__}") from None
    return session.run(sign)


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm  # noqa: SLF001 - cryptography exposes no public accessor
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


def _no_export(*_: Any, **__: Any) -> Any:
    raise KeyBackendError("HSM private keys are non-extractable")


class _HsmRsaKey(rsa.RSAPrivateKey):
    def __init__(self, session: _TokenSession, label: str, public: rsa.RSAPublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        if isinstance(padding_, padding.PSS):
            digest, hash_alg = _digest(data, algorithm)
            mech_hash, mgf = _PSS_DIGEST_MECHS.get(hash_alg.name, (None, None))
            if mech_hash is None:
                raise UnsupportedKeyError(f"RSA-PSS with {hash_alg.name} is not supported")
            salt = padding_._salt_length  # noqa: SLF001
            if salt in (padding.PSS.DIGEST_LENGTH, padding.PSS.AUTO) or not isinstance(salt, int):
                salt = hash_alg.digest_size
            return _hsm_sign(self._session, self._label, digest, Mechanism.RSA_PKCS_PSS,
                             (mech_hash, mgf, salt))
        if not isinstance(padding_, padding.PKCS1v15):
            raise UnsupportedKeyError(f"unsupported RSA padding {padding_.name}")
        if isinstance(algorithm, utils.Prehashed):
            digest_info = _digest_info(data, algorithm._algorithm)  # noqa: SLF001
            return _hsm_sign(self._session, self._label, digest_info, Mechanism.RSA_PKCS)
        mech = _PKCS1_HASH_MECHS.get(algorithm.name)
        if mech is None:
            raise UnsupportedKeyError(f"RSA PKCS#1 v1.5 with {algorithm.name} is not supported")
        return _hsm_sign(self._session, self._label, data, mech)

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    decrypt = private_numbers = private_bytes = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmRsaKey":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmRsaKey":
        return self


class _HsmEcKey(ec.EllipticCurvePrivateKey):
    def __init__(self, session: _TokenSession, label: str,
                 public: ec.EllipticCurvePublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedKeyError("only ECDSA signatures are supported")
        digest, _ = _digest(data, signature_algorithm.algorithm)
        raw = _hsm_sign(self._session, self._label, digest, Mechanism.ECDSA)
        half = len(raw) // 2  # PKCS#11 gives r || s; X.509 and CMS want Ecdsa-Sig-Value
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                          int.from_bytes(raw[half:], "big"))

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    exchange = private_numbers = private_bytes = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmEcKey":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmEcKey":
        return self


class _HsmEd25519Key(ed25519.Ed25519PrivateKey):
    def __init__(self, session: _TokenSession, label: str,
                 public: ed25519.Ed25519PublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes) -> bytes:
        return _hsm_sign(self._session, self._label, data, Mechanism.EDDSA)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    private_bytes = private_bytes_raw = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmEd25519Key":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmEd25519Key":
        return self


def _make_signer(session: _TokenSession, label: str, public: PublicKey) -> Any:
    if isinstance(public, rsa.RSAPublicKey):
        return _HsmRsaKey(session, label, public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _HsmEcKey(session, label, public)
    return _HsmEd25519Key(session, label, public)


def _digest_info(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """RSA PKCS#1 v1.5 over a precomputed digest signs a DigestInfo (RFC 8017, 9.2)."""
    if algorithm.name not in ("sha256", "sha384", "sha512"):
        raise UnsupportedKeyError(f"RSA PKCS#1 v1.5 with {algorithm.name} is not supported")
    return asn1_algos.DigestInfo({
        "digest_algorithm": {"algorithm": algorithm.name, "parameters": asn1_core.Null()},
        "digest": digest,
    }).dump()


def public_key_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
