"""Sealing small secrets (a signer's TOTP seed) under a key that never leaves the key backend.

A TOTP seed must be read back to check a code, so it cannot be hashed like a PIN; it is kept
encrypted instead, under an AES-256 key resident on the HSM (sensitive, non-extractable, made
on first use), with AES-GCM: a seed copied from one credential's row to another's does not
open, because the caller binds each sealed blob to its owner through the associated data.
Someone holding the database alone holds no seed.

SoftHSM 2.6 through python-pkcs11 does CKM_AES_GCM (checked: encrypt, decrypt, and a
tampered blob refused), so there is no CBC + HMAC fallback.

The blob is ``version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)``.
"""
from __future__ import annotations

import secrets
from typing import Any, Protocol

from ca.errors import ConfigurationError, KeyBackendError

SEAL_KEY_LABEL = "tincay-seal-1"
_VERSION = b"\x01"
_NONCE = 12
_TAG_BITS = 128


class Sealer(Protocol):
    """Encrypt and authenticate small secrets under a key the backend keeps."""

    def seal(self, data: bytes, associated_data: bytes) -> bytes:
        """``data`` encrypted, bound to ``associated_data`` (which is not stored in it)."""

    def unseal(self, blob: bytes, associated_data: bytes) -> bytes:
        """What :meth:`seal` sealed with the same ``associated_data``; KeyBackendError if the
        blob was altered, belongs to another owner or was sealed under another key."""


def sealer_of(keys: Any) -> Sealer:
    """The key backend's sealer; a ConfigurationError for a backend that has none."""
    sealer = getattr(keys, "sealer", None)
    if sealer is None:
        raise ConfigurationError(f"key backend {type(keys).__name__} cannot seal secrets")
    return sealer


def _split(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) < 1 + _NONCE + _TAG_BITS // 8 or blob[:1] != _VERSION:
        raise KeyBackendError("sealed data is malformed or of an unknown version")
    return blob[1:1 + _NONCE], blob[1 + _NONCE:]


class MemorySealer:
    """AES-256-GCM under a key held in this process (the in-memory backend's sealer)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, data: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, associated_data)

    def unseal(self, blob: bytes, associated_data: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        nonce, sealed = _split(blob)
        try:
            return self._aead.decrypt(nonce, sealed, associated_data)
        except InvalidTag:
            raise KeyBackendError("sealed data does not open (altered, or another owner's)") \
                from None


class Pkcs11Sealer:
    """CKM_AES_GCM under the token's AES key :data:`SEAL_KEY_LABEL`, through the process's
    one session (ca/keys/pkcs11_session.py), the key generated there on first use."""

    def __init__(self, session: Any, label: str = SEAL_KEY_LABEL) -> None:
        self._session = session
        self._label = label

    def seal(self, data: bytes, associated_data: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce = secrets.token_bytes(_NONCE)

        def encrypt(session: Any) -> bytes:
            return self._key(session).encrypt(
                data, mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, associated_data, _TAG_BITS))
        return _VERSION + nonce + self._session.run(encrypt, reads_token=True)

    def unseal(self, blob: bytes, associated_data: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11 import exceptions as p11
        from pkcs11.mechanisms import GCMParams

        nonce, sealed = _split(blob)

        def decrypt(session: Any) -> bytes:
            key = self._key(session)
            try:
                return key.decrypt(sealed, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(nonce, associated_data, _TAG_BITS))
            except (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange):
                # SoftHSM answers a failed tag check with CKR_GENERAL_ERROR, which is also
                # what a lost token says: ask the token something; if it answers, the blob
                # was bad (a lost token raises here and the session's run() handles it).
                session.get_key(object_class=_secret_key_class(), label=self._label)
                raise KeyBackendError(
                    "sealed data does not open (altered, or another owner's)") from None
        return self._session.run(decrypt, reads_token=True)

    def _key(self, session: Any) -> Any:
        """The seal key, generated (sensitive, non-extractable, on the token) if absent; the
        caller holds the machine-wide lock, so two processes cannot both create it."""
        from pkcs11 import Attribute, KeyType
        from pkcs11 import exceptions as p11

        try:
            return session.get_key(object_class=_secret_key_class(), label=self._label)
        except p11.NoSuchKey:
            pass
        except p11.MultipleObjectsReturned:
            raise KeyBackendError(f"several keys are labelled {self._label!r}") from None
        return session.generate_key(
            KeyType.AES, 256, label=self._label, store=True,
            template={Attribute.TOKEN: True, Attribute.PRIVATE: True,
                      Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                      Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                      Attribute.WRAP: False, Attribute.UNWRAP: False,
                      Attribute.SIGN: False, Attribute.VERIFY: False,
                      Attribute.DERIVE: False})


def _secret_key_class() -> Any:
    from pkcs11 import ObjectClass

    return ObjectClass.SECRET_KEY
