"""What every key backend offers: generate, find, and hand out signer objects.

The signer objects are cryptography private-key instances (native for the in-memory backend, thin
subclasses that sign through PKCS#11 for the HSM), so cryptography's certificate, CRL and OCSP
builders and our CMS code sign through any backend without knowing which one it is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Union

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.errors import UnsupportedKeyError

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]

RSA_SIZES = (2048, 3072, 4096)
CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_CURVE_ALIASES = {"p256": "P-256", "p-256": "P-256", "secp256r1": "P-256", "prime256v1": "P-256",
                  "p384": "P-384", "p-384": "P-384", "secp384r1": "P-384"}
_SPEC_RE = re.compile(r"^(rsa)[-_:]?(\d+)$|^(ecdsa|ec)[-_:]?([A-Za-z0-9-]+)$|^(ed25519)$", re.I)


@dataclass(frozen=True)
class KeySpec:
    """An algorithm and its size: ``rsa-2048``, ``ec-p256``, ``ed25519``."""

    algorithm: str  # "rsa" | "ec" | "ed25519"
    size: int | None = None  # RSA modulus bits
    curve: str | None = None  # "P-256" | "P-384"

    @classmethod
    def parse(cls, text: str) -> "KeySpec":
        match = _SPEC_RE.match(text.strip())
        if not match:
            raise UnsupportedKeyError(
                f"key spec {text!r}: expected rsa-2048|rsa-3072|rsa-4096|ec-p256|ec-p384|ed25519"
            )
        if match.group(1):
            size = int(match.group(2))
            if size not in RSA_SIZES:
                raise UnsupportedKeyError(f"key spec {text!r}: RSA size must be one of {RSA_SIZES}")
            return cls("rsa", size=size)
        if match.group(3):
            curve = _CURVE_ALIASES.get(match.group(4).lower())
            if curve is None:
                raise UnsupportedKeyError(f"key spec {text!r}: curve must be P-256 or P-384")
            return cls("ec", curve=curve)
        return cls("ed25519")

    @classmethod
    def of_public_key(cls, key: PublicKey) -> "KeySpec":
        """The spec a public key satisfies (used to check CSR keys against a profile)."""
        if isinstance(key, rsa.RSAPublicKey):
            return cls("rsa", size=key.key_size)
        if isinstance(key, ec.EllipticCurvePublicKey):
            for name, curve in CURVES.items():
                if curve.name == key.curve.name:
                    return cls("ec", curve=name)
            raise UnsupportedKeyError(f"unsupported elliptic curve {key.curve.name}")
        if isinstance(key, ed25519.Ed25519PublicKey):
            return cls("ed25519")
        raise UnsupportedKeyError(f"unsupported public key type {type(key).__name__}")

    def __str__(self) -> str:
        if self.algorithm == "rsa":
            return f"rsa-{self.size}"
        if self.algorithm == "ec":
            return f"ec-{(self.curve or '').replace('-', '').lower()}"
        return "ed25519"


@dataclass(frozen=True)
class SigningKey:
    """A key a backend can sign with. ``private_key`` plugs straight into cryptography builders."""

    uri: str
    spec: KeySpec
    private_key: PrivateKey
    public_key: PublicKey


class KeyBackend(Protocol):
    """The small key-manager interface (after smallstep's kms/apiv1)."""

    def generate(self, label: str, spec: KeySpec) -> SigningKey:
        """Create a new key pair named ``label``; refuse if one exists."""

    def load(self, uri_or_label: str, expected: PublicKey | None = None) -> SigningKey:
        """Find an existing key by RFC 7512 URI or bare label. ``expected``: the public key
        of the caller's certificate; a backend that cannot reach its keys now (an HSM outage)
        then returns the key anyway, bound to ``expected`` and checked against the key it
        finds once it can, so a server starts and refuses until the HSM is back."""

    def exists(self, label: str) -> bool:
        """Whether a key with this label is present."""

    def destroy(self, uri_or_label: str) -> bool:
        """Delete the key pair (a retired service-unit key); whether there was one."""

    def labels(self) -> list[str]:
        """The labels of every private key the backend holds, sorted: what ``tincay
        reconcile`` compares with the keys the database knows (a token may hold others')."""

    def label_of(self, uri_or_label: str) -> str | None:
        """The label ``uri_or_label`` names on this backend; None when it names a key
        elsewhere (another token), so a comparison by label never mixes two tokens."""

    def close(self) -> None:
        """Release sessions and handles."""


class KeyWrapping(Protocol):
    """Subscriber keys kept wrapped under a key-encryption key (KEK) instead of one token object
    each (ca.keys.wrapping: the HSM's; ca.keys.memory: the in-memory one). A key is generated,
    wrapped at once and handed out as a blob the database stores; to sign, the blob is
    unwrapped again where the KEK lives (an HSM session object), so the key is never in the
    clear outside it."""

    kek_label: str

    def generate(self, spec: KeySpec) -> tuple[PublicKey, bytes]:
        """A new key pair: its public key and its private key wrapped under the KEK."""

    def unwrap(self, blob: bytes, spec: KeySpec, public: PublicKey, *,
               now: bool = True) -> PrivateKey:
        """A signer for the wrapped key ``blob`` (KeyBackendError when it does not unwrap, or
        is not the key of ``public``); ``now=False`` lets a backend unwrap at the first
        signature instead."""

    def close(self) -> None:
        """Destroy what unwrapping left (the HSM's session objects)."""
