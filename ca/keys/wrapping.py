"""Subscriber keys wrapped under an HSM key-encryption key, instead of one token object each.

One token object per subscriber does not scale: SoftHSM's file store reads every object of the
token at each lookup, so issuing 2,000 certificates with HSM-generated keys slowed down with
each 500. Server-signing devices (EN 419 221-5) keep subscriber keys outside the HSM wrapped
under a key that never leaves it, and so does this module:

- the **KEK** is an AES-256 token object (label ``tincay-kek-1``), made on first use, sensitive,
  never extractable, able to wrap and unwrap and nothing else (no CKA_ENCRYPT/DECRYPT, so it
  cannot be used to decrypt a wrapped blob into the clear);
- **generate** makes the key pair as session objects (the private key sensitive, extractable
  only so that it can be wrapped), wraps the private key at once with AES key wrap with
  padding (RFC 5649, CKM_AES_KEY_WRAP_PAD: the blob is the key's PKCS#8 encoding wrapped and
  integrity-checked), and destroys both objects;
- **unwrap** turns a blob into a session object (CKA_TOKEN false, sensitive, not extractable,
  CKA_SIGN only) that signs through the private-key classes of ca.keys.pkcs11. The objects
  are kept per process, at most ``cache_size`` of them (least recently used first out, each
  destroyed when evicted and on :meth:`HsmKeyWrapping.close`); a key evicted, or whose
  session was lost (a lost token, a forked worker), is unwrapped again when it next signs.

The private key is in the clear only inside the HSM. CKA_WRAP_WITH_TRUSTED was tried: SoftHSM
2.6 refuses CKA_TRUSTED on a key made in a user session (CKR_ATTRIBUTE_READ_ONLY: only the
security officer may mark a key trusted), and a key with CKA_WRAP_WITH_TRUSTED cannot then be
wrapped under an untrusted KEK (CKR_KEY_NOT_WRAPPABLE); so the ephemeral key is protected by
living only in this process's session for the few microseconds between generation and wrap.

Every call goes through the process's one session (ca.keys.pkcs11_session.TokenSession.run).
The database names a wrapped key ``tincay:subscriber-key:<id>`` (:func:`wrapped_uri`), the
id of its row in ``subscriber_keys`` (ca.store.models.SubscriberKey).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_named_curve_parameters

from ca import metrics
from ca.errors import ConfigurationError, KeyBackendError, UnsupportedKeyError
from ca.keys.base import KeyBackend, KeySpec, KeyWrapping, PrivateKey, PublicKey
from ca.keys.pkcs11 import Pkcs11Backend, make_signer, unsupported_mechanism
from ca.keys.pkcs11_session import TokenSession, public_key_of
from ca.keys.uri import WRAPPED_URI_PREFIX, wrapped_key_id, wrapped_uri

T = TypeVar("T")
__all__ = ["HsmKeyWrapping", "KEK_LABEL", "WRAPPED_URI_PREFIX", "key_wrapping", "wrapped_key_id",
           "wrapped_uri"]

KEK_LABEL = "tincay-kek-1"
CACHE_SIZE = 1000

_WRAP = Mechanism.AES_KEY_WRAP_PAD
_CURVE_OIDS = {"P-256": "secp256r1", "P-384": "secp384r1"}
_ED25519_OID = b"\x06\x03\x2b\x65\x70"  # 1.3.101.112, DER
_KEY_TYPES = {"rsa": KeyType.RSA, "ec": KeyType.EC, "ed25519": KeyType.EC_EDWARDS}
_KEK_TEMPLATE = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                 Attribute.EXTRACTABLE: False, Attribute.WRAP: True, Attribute.UNWRAP: True,
                 Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.SIGN: False,
                 Attribute.VERIFY: False, Attribute.DERIVE: False}
# The unwrapped private key: a session object that signs and does nothing else. python-pkcs11
# adds every capability attribute to an unwrap template; a private key has no CKA_ENCRYPT,
# CKA_VERIFY or CKA_WRAP (SoftHSM: CKR_ATTRIBUTE_TYPE_INVALID), so those are left out (DEFAULT).
_UNWRAPPED_TEMPLATE = {Attribute.TOKEN: False, Attribute.PRIVATE: True,
                       Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                       Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False,
                       Attribute.DERIVE: False, Attribute.ENCRYPT: DEFAULT,
                       Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}
# The freshly generated pair: session objects, destroyed once the private key is wrapped.
_EPHEMERAL_PRIVATE = {Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                      Attribute.EXTRACTABLE: True, Attribute.SIGN: False,
                      Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False}
_EPHEMERAL_PUBLIC = {Attribute.TOKEN: False, Attribute.VERIFY: False, Attribute.ENCRYPT: False,
                     Attribute.WRAP: False}
# a prehashed ECDSA digest's hash, by its length (to verify a key's first signature)
_PREHASHED = {28: hashes.SHA224, 32: hashes.SHA256, 48: hashes.SHA384, 64: hashes.SHA512}
_UNWRAP_REFUSED = (p11.GeneralError, p11.WrappedKeyInvalid, p11.WrappedKeyLenRange,
                   p11.EncryptedDataInvalid, p11.EncryptedDataLenRange,
                   p11.TemplateInconsistent, p11.AttributeValueInvalid)


def key_wrapping(keys: KeyBackend, cache_size: int = CACHE_SIZE) -> KeyWrapping:
    """The key wrapping of ``keys``: under the token's KEK for the PKCS#11 backend, the
    backend's own for others that offer one (the in-memory backend)."""
    if isinstance(keys, Pkcs11Backend):
        return HsmKeyWrapping(keys.session, cache_size=cache_size)
    make: Callable[..., KeyWrapping] | None = getattr(keys, "key_wrapping", None)
    if make is None:
        raise ConfigurationError(f"key backend {type(keys).__name__} cannot wrap keys")
    return make(cache_size)


class _NeedsTokenFiles(Exception):
    """The KEK must be looked up (or made): retry under the machine-wide token lock."""


class HsmKeyWrapping:
    """Subscriber keys wrapped under the token's KEK, unwrapped into a bounded set of session
    objects of the process's one session."""

    def __init__(self, session: TokenSession, kek_label: str = KEK_LABEL,
                 cache_size: int = CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ConfigurationError(f"key cache of {cache_size} entries: must be at least 1")
        self.kek_label = kek_label
        self.cache_size = cache_size
        self._session = session
        self._kek: tuple[Any, Any] | None = None  # (pkcs11 session, KEK object)
        # sha256(blob) -> its unwrapped session object, least recently used first
        self._objects: OrderedDict[bytes, _Unwrapped] = OrderedDict()

    def run(self, action: Callable[[Any, Any], T]) -> T:
        """``action(session, kek)`` in the process's session; the KEK is found (or made) under
        the machine-wide token lock only when this session has not found it yet."""
        try:
            return self._session.run(lambda s: action(s, self._kek_of(s, False)))
        except _NeedsTokenFiles:
            return self._session.run(lambda s: action(s, self._kek_of(s, True)),
                                     reads_token=True)

    def _kek_of(self, s: Any, may_read_token: bool) -> Any:
        if self._kek is not None and self._kek[0] is s:
            return self._kek[1]
        if not may_read_token:
            raise _NeedsTokenFiles
        try:
            kek = s.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES,
                            label=self.kek_label)
        except p11.NoSuchKey:
            kek = s.generate_key(KeyType.AES, 256, label=self.kek_label, store=True,
                                 id=self.kek_label.encode(), template=_KEK_TEMPLATE)
        except p11.MultipleObjectsReturned:
            raise KeyBackendError(f"several keys are labelled {self.kek_label!r}") from None
        if (not kek[Attribute.SENSITIVE] or kek[Attribute.EXTRACTABLE]
                or not kek[Attribute.UNWRAP]):
            raise KeyBackendError(f"key-encryption key {self.kek_label!r} is extractable, not "
                                  "sensitive or cannot unwrap: refusing to wrap keys under it")
        self._kek = (s, kek)
        return kek

    def generate(self, spec: KeySpec) -> tuple[PublicKey, bytes]:
        def gen(s: Any, kek: Any) -> tuple[PublicKey, bytes]:
            public_obj, private_obj = _generate_pair(s, spec)
            try:
                return public_key_of(public_obj), kek.wrap_key(private_obj, mechanism=_WRAP)
            except (p11.KeyNotWrappable, p11.KeyUnextractable, p11.MechanismInvalid) as exc:
                # SoftHSM 2.6 wraps RSA and EC private keys, not EdDSA ones (KeyNotWrappable)
                raise UnsupportedKeyError(f"token cannot wrap a {spec} key under "
                                          f"{self.kek_label!r}: {type(exc).__name__}") from None
            finally:
                private_obj.destroy()
                public_obj.destroy()
        return self.run(gen)

    def unwrap(self, blob: bytes, spec: KeySpec, public: PublicKey, *,
               now: bool = True) -> PrivateKey:
        """A signer for ``blob``, unwrapped and checked against ``public`` now (a damaged or
        swapped blob fails here, not at the first signature); ``now=False``: at the first
        signature, whose own verification is then the check (for signHash's cold keys: no
        test signature on the HSM). Unwrapped again whenever its session object was evicted
        or lost."""
        key = _WrappedKey(self, blob, spec, public)
        if now:
            self.run(key.object)
        return make_signer(self._session, key, public)  # type: ignore[no-any-return]

    def cached(self) -> int:
        """How many unwrapped session objects this process holds."""
        return len(self._objects)

    def object_of(self, blob: bytes, s: Any, kek: Any, spec: KeySpec,
                  public: PublicKey) -> "_Unwrapped":
        """The session object of ``blob`` (call inside :meth:`run`): the cached one, or
        unwrapped now, evicting (destroying) the least recently used beyond the bound. An
        EC or EdDSA object is not checked yet (``checked`` false): :meth:`check` or
        :meth:`confirm` does it before it signs anything that is returned."""
        ref = hashlib.sha256(blob).digest()
        entry = self._objects.get(ref)
        if entry is not None and entry.owner is s:
            self._objects.move_to_end(ref)
            return entry
        entry = _Unwrapped(s, self._unwrap(kek, blob, spec, public))
        metrics.subscriber_key_unwrap()
        entry.checked = isinstance(public, rsa.RSAPublicKey)  # its modulus was compared
        self._objects[ref] = entry
        self._objects.move_to_end(ref)
        while len(self._objects) > self.cache_size:
            _, old = self._objects.popitem(last=False)
            if old.owner is s:  # a lost session's objects went with it
                _destroy(old.obj)
        return entry

    def check(self, blob: bytes, entry: "_Unwrapped", public: PublicKey) -> None:
        """Check an unchecked object with a test signature; a stranger is destroyed and
        refused."""
        try:
            _check_pair(entry.obj, public)
        except BaseException:
            self._drop(blob, entry)
            raise
        entry.checked = True

    def confirm(self, blob: bytes, entry: "_Unwrapped", public: PublicKey, data: bytes,
                mechanism: Mechanism, raw: bytes) -> None:
        """Check an unchecked object by its first signature ``raw`` (of ``data`` with
        ``mechanism``), before that signature is returned: verifying it costs a fraction of
        the HSM test signature :meth:`check` makes (a mechanism it cannot verify falls back to
        :meth:`check`)."""
        try:
            if mechanism == Mechanism.ECDSA and isinstance(public, ec.EllipticCurvePublicKey) \
                    and len(data) in _PREHASHED:
                half = len(raw) // 2
                public.verify(utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                                         int.from_bytes(raw[half:], "big")),
                              data, ec.ECDSA(utils.Prehashed(_PREHASHED[len(data)]())))
            elif mechanism == Mechanism.EDDSA and isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(raw, data)
            else:
                self.check(blob, entry, public)
                return
        except InvalidSignature:
            self._drop(blob, entry)
            raise KeyBackendError("wrapped key is not the key of its public key") from None
        entry.checked = True

    def _drop(self, blob: bytes, entry: "_Unwrapped") -> None:
        self.forget(blob)
        _destroy(entry.obj)

    def forget(self, blob: bytes) -> None:
        """Drop the cached object of ``blob`` (its handle went stale)."""
        self._objects.pop(hashlib.sha256(blob).digest(), None)

    def _unwrap(self, kek: Any, blob: bytes, spec: KeySpec, public: PublicKey) -> Any:
        try:
            obj = kek.unwrap_key(ObjectClass.PRIVATE_KEY, _KEY_TYPES[spec.algorithm], blob,
                                 mechanism=_WRAP, store=False, template=_UNWRAPPED_TEMPLATE)
        except _UNWRAP_REFUSED:
            kek[Attribute.KEY_TYPE]  # a token that stopped answering fails here too: lost
            raise KeyBackendError(f"wrapped {spec} key does not unwrap under "
                                  f"{self.kek_label!r}: damaged, or wrapped under another "
                                  "KEK") from None
        if isinstance(public, rsa.RSAPublicKey):
            try:
                _check_pair(obj, public)
            except BaseException:
                _destroy(obj)
                raise
        return obj

    def close(self) -> None:
        """Destroy every unwrapped session object of this process."""
        def destroy(s: Any) -> None:
            while self._objects:
                _, entry = self._objects.popitem()
                if entry.owner is s:
                    _destroy(entry.obj)
        if self._objects:
            self._session.run(destroy)


class _Unwrapped:
    """An unwrapped session object, the session it lives in, and whether it was found to be
    the key of its public key yet."""

    __slots__ = ("owner", "obj", "checked")

    def __init__(self, owner: Any, obj: Any) -> None:
        self.owner, self.obj, self.checked = owner, obj, False


class _WrappedKey:
    """One wrapped key as ca.keys.pkcs11's signer classes sign with it
    (a :class:`ca.keys.pkcs11.KeyObjectSource`)."""

    def __init__(self, wrapping: HsmKeyWrapping, blob: bytes, spec: KeySpec,
                 public: PublicKey) -> None:
        self._wrapping, self._blob, self._spec, self._public = wrapping, blob, spec, public

    def object(self, s: Any, kek: Any) -> Any:
        """The session object, unwrapped and checked now."""
        entry = self._entry(s, kek)
        if not entry.checked:
            self._wrapping.check(self._blob, entry, self._public)
        return entry.obj

    def _entry(self, s: Any, kek: Any) -> _Unwrapped:
        return self._wrapping.object_of(self._blob, s, kek, self._spec, self._public)

    def sign(self, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        def sign(s: Any, kek: Any) -> bytes:
            try:
                entry = self._entry(s, kek)
                try:
                    raw = entry.obj.sign(data, mechanism=mechanism, mechanism_param=param)
                except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                    self._wrapping.forget(self._blob)  # destroyed elsewhere: unwrap again
                    entry = self._entry(s, kek)
                    raw = entry.obj.sign(data, mechanism=mechanism, mechanism_param=param)
            except (p11.MechanismInvalid, p11.MechanismParamInvalid) as exc:
                raise unsupported_mechanism(mechanism, exc) from None
            if not entry.checked:  # unwrapped for this signature: the signature checks it
                self._wrapping.confirm(self._blob, entry, self._public, data, mechanism, raw)
            return raw  # type: ignore[no-any-return]
        return self._wrapping.run(sign)


def _generate_pair(s: Any, spec: KeySpec) -> tuple[Any, Any]:
    try:
        if spec.algorithm == "rsa":
            return s.generate_keypair(  # type: ignore[no-any-return]
                KeyType.RSA, spec.size, store=False, private_template=_EPHEMERAL_PRIVATE,
                public_template={**_EPHEMERAL_PUBLIC,
                                 Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"})
        if spec.algorithm == "ec":
            params = encode_named_curve_parameters(_CURVE_OIDS[spec.curve or "P-256"])
            key_type, mech = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
        else:
            params, key_type, mech = _ED25519_OID, KeyType.EC_EDWARDS, \
                Mechanism.EC_EDWARDS_KEY_PAIR_GEN
        domain = s.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params}, local=True)
        return domain.generate_keypair(  # type: ignore[no-any-return]
            store=False, mechanism=mech, public_template=_EPHEMERAL_PUBLIC,
            private_template=_EPHEMERAL_PRIVATE)
    except (p11.MechanismInvalid, p11.AttributeValueInvalid, p11.KeySizeRange,
            p11.DomainParamsInvalid, p11.FunctionNotSupported) as exc:
        raise UnsupportedKeyError(f"token cannot generate {spec}: {type(exc).__name__}") from None


def _check_pair(obj: Any, public: PublicKey) -> None:
    """Refuse a blob that is not the key of ``public`` (a row whose blob was swapped): for RSA
    the modulus (public) is compared, other keys sign a test digest once."""
    if isinstance(public, rsa.RSAPublicKey):
        if int.from_bytes(obj[Attribute.MODULUS], "big") == public.public_numbers().n:
            return
    else:
        digest = hashlib.sha256(b"tincay wrapped-key check").digest()
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                raw = obj.sign(digest, mechanism=Mechanism.ECDSA)
                half = len(raw) // 2
                public.verify(utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                                         int.from_bytes(raw[half:], "big")),
                              digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
                return
            if isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(obj.sign(digest, mechanism=Mechanism.EDDSA), digest)
                return
        except InvalidSignature:
            pass
    raise KeyBackendError("wrapped key is not the key of its public key")


def _destroy(obj: Any) -> None:
    try:
        obj.destroy()
    except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
        pass  # already gone
