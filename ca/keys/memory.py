"""In-memory keys from cryptography, for throwaway hierarchies and unit tests.

Same interface as the HSM backend; keys vanish with the process (or can be exported as PEM for
test suites that need the private key, which is the point of a throwaway hierarchy).
"""
from __future__ import annotations

import os
import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap_with_padding,
                                                    aes_key_wrap_with_padding)

from ca.errors import KeyBackendError, KeyExistsError, KeyNotFoundError
from ca.keys.base import CURVES, KeySpec, PrivateKey, PublicKey, SigningKey
from ca.keys.uri import Pkcs11Uri


def generate_private_key(spec: KeySpec) -> PrivateKey:
    if spec.algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size or 2048)
    if spec.algorithm == "ec":
        return ec.generate_private_key(CURVES[spec.curve or "P-256"])
    return ed25519.Ed25519PrivateKey.generate()


class MemoryBackend:
    """Keys held in a dict; URIs look like ``memory:<label>``."""

    scheme = "memory"

    def __init__(self) -> None:
        self._keys: dict[str, SigningKey] = {}
        self._lock = threading.Lock()
        self._kek = os.urandom(32)  # AES-256; gone with the process, like the keys

    def key_wrapping(self, cache_size: int = 0) -> "MemoryKeyWrapping":
        """Subscriber keys wrapped under this backend's KEK (``cache_size``: nothing to cache,
        the unwrapped key is a native cryptography key)."""
        return MemoryKeyWrapping(self._kek)

    def generate(self, label: str, spec: KeySpec) -> SigningKey:
        with self._lock:
            if label in self._keys:
                raise KeyExistsError(f"key {label!r} already exists")
            private = generate_private_key(spec)
            key = SigningKey(f"memory:{label}", spec, private, private.public_key())
            self._keys[label] = key
            return key

    def add(self, label: str, private: PrivateKey) -> SigningKey:
        """Adopt an existing private key (tests that bring their own)."""
        with self._lock:
            public = private.public_key()
            key = SigningKey(f"memory:{label}", KeySpec.of_public_key(public), private, public)
            self._keys[label] = key
            return key

    def load(self, uri_or_label: str, expected: PublicKey | None = None) -> SigningKey:
        """``expected`` is not needed: memory is always reachable."""
        label = _label(uri_or_label)
        with self._lock:
            try:
                return self._keys[label]
            except KeyError:
                raise KeyNotFoundError(f"no key {label!r} in the in-memory key store") from None

    def exists(self, label: str) -> bool:
        with self._lock:
            return label in self._keys

    def destroy(self, uri_or_label: str) -> bool:
        with self._lock:
            return self._keys.pop(_label(uri_or_label), None) is not None

    def labels(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def label_of(self, uri_or_label: str) -> str | None:
        if uri_or_label.startswith(("pkcs11:", "tincay:")):  # tincay: a wrapped key's row
            return None
        return _label(uri_or_label)

    def close(self) -> None:
        pass

    @property
    def sealer(self) -> "MemorySealer":  # noqa: F821 - imported when first used
        """Seals small secrets under a key held by this process (ca/keys/sealing.py)."""
        from ca.keys.sealing import MemorySealer

        with self._lock:
            sealer = self.__dict__.get("_sealer")
            if sealer is None:
                sealer = self.__dict__["_sealer"] = MemorySealer()
            return sealer


class MemoryKeyWrapping:
    """What ca.keys.wrapping does on the HSM, in memory: the private key as PKCS#8 DER wrapped
    with AES key wrap with padding (RFC 5649) under a KEK held by the backend, so tests and
    demos on the in-memory backend store and sign with wrapped keys alike."""

    kek_label = "memory-kek"

    def __init__(self, kek: bytes) -> None:
        self._kek = kek

    def generate(self, spec: KeySpec) -> tuple[PublicKey, bytes]:
        private = generate_private_key(spec)
        der = private.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return private.public_key(), aes_key_wrap_with_padding(self._kek, der)

    def unwrap(self, blob: bytes, spec: KeySpec, public: PublicKey, *,
               now: bool = True) -> PrivateKey:
        try:
            der = aes_key_unwrap_with_padding(self._kek, blob)
            private = serialization.load_der_private_key(der, None)
        except (InvalidUnwrap, ValueError, TypeError):
            raise KeyBackendError(f"wrapped {spec} key does not unwrap under the "
                                  f"{self.kek_label}: damaged, or wrapped under another KEK"
                                  ) from None
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*raw) != public.public_bytes(*raw):
            raise KeyBackendError(f"wrapped {spec} key is not the key of its public key")
        return private  # type: ignore[return-value]

    def close(self) -> None:
        pass


def _label(uri_or_label: str) -> str:
    if uri_or_label.startswith("memory:"):
        return uri_or_label[len("memory:"):]
    if uri_or_label.startswith("pkcs11:"):
        return Pkcs11Uri.parse(uri_or_label).object or ""
    return uri_or_label
