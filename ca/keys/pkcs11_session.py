"""The process's one session on a PKCS#11 token: module loading, login, locks, lost tokens.

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

The PIN is read from its :class:`~ca.settings.PinSource` only to log in and appears in no
message.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import pkcs11
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11

from ca import metrics
from ca.errors import (BackendUnavailableError, ConfigurationError, KeyBackendError, PinError,
                       TokenNotFoundError, UnsupportedKeyError)
from ca.keys.base import CURVES, PublicKey
from ca.settings import PinSource

T = TypeVar("T")

# One lock for every PKCS#11 call in this process, and one session per (module, token).
_PROCESS_LOCK = threading.RLock()
_LIBS: dict[str, Any] = {}
_SESSIONS: dict[tuple[str, str], "TokenSession"] = {}
log = logging.getLogger("tincay.hsm")
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


class TokenSession:
    """The process's single logged-in session on one token (get it from :func:`shared_session`)."""

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
        the next call re-initialises the module and opens a new one. Counted (ca.metrics)
        and logged: once per session lost, not per refused request."""
        metrics.hsm_error(self.token_label)
        log.error("HSM token %r lost: session dropped, re-opened at the next signature",
                  self.token_label)
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
        """Forget the handle of ``label`` (stale: the key was destroyed or re-created)."""
        self._keys.pop(label, None)

    def destroy(self, label: str) -> bool:
        """Destroy every object labelled ``label`` (call inside :meth:`run` with reads_token);
        forgotten too, so its absence is not taken for a lost token."""
        objects = list(self._session.get_objects({Attribute.LABEL: label}))
        for obj in objects:
            obj.destroy()
        self.forget(label)
        self._found.discard(label)
        self._expected.pop(label, None)
        return bool(objects)

    def expect(self, label: str, public: PublicKey) -> None:
        """Check the key labelled ``label``, when it is first found, against ``public``."""
        with _PROCESS_LOCK:
            self._expected[label] = public_key_der(public)

    def _check_expected(self, label: str) -> None:
        found = public_key_of(self._session.get_key(object_class=ObjectClass.PUBLIC_KEY,
                                                    label=label))
        if public_key_der(found) != self._expected[label]:
            raise not_the_certificates(label, self.token_label)
        del self._expected[label]

    def _open(self) -> None:
        """Log in; a failure and a session re-opened after a lost token are counted."""
        try:
            self._login()
        except (TokenNotFoundError, BackendUnavailableError) as exc:
            if self.module not in _STALE_MODULES:  # a token already lost was logged then
                log.error("HSM token %r unavailable: %s", self.token_label, exc)
            _STALE_MODULES.add(self.module)  # it may not see the token until re-initialised
            metrics.hsm_error(self.token_label)
            raise
        if self.module in _STALE_MODULES:
            log.warning("HSM token %r answers again: session re-opened", self.token_label)
            metrics.hsm_reconnect(self.token_label)
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
        """Close the session (in the process that opened it) and forget it."""
        with _PROCESS_LOCK:
            if self._session is not None and self._pid == os.getpid():
                try:
                    self._session.close()
                except p11.PKCS11Error:
                    pass
            self.drop()


def shared_session(module: str, token_label: str, pin: PinSource) -> TokenSession:
    """The process's one session on ``token_label`` of ``module``, made on first use."""
    with _PROCESS_LOCK:
        key = (module, token_label)
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = TokenSession(module, token_label, pin)
        return session


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


def _not_initialised(module: str, exc: Exception) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"PKCS#11 module {module} cannot be initialised: {type(exc).__name__}")


def not_the_certificates(label: str, token: str) -> KeyBackendError:
    """The error for a key on the token that is not the one its certificate certifies."""
    return KeyBackendError(f"key {label!r} on token {token!r} is not the key of the certificate "
                           "it was loaded for")


def public_key_der(key: PublicKey) -> bytes:
    """The key's SubjectPublicKeyInfo DER: how a token's key is compared with a certificate's."""
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_of(obj: Any) -> PublicKey:
    """The cryptography public key of a PKCS#11 public-key object."""
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
