"""How a certificate is signed: the profile's algorithm, the throwaway lint keys, the check.

A TBSCertificate depends on the signature algorithm identifier but not on key material, so
signing the builder with a throwaway key of the issuer's algorithm yields the exact TBS the
real key will sign: :func:`ca.issuance.prepare` persists and lints that before the HSM is asked.
"""
from __future__ import annotations

import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ca.der import SEQUENCE, tlv
from ca.errors import IssuanceError, ProfileError
from ca.keys.base import KeySpec, PrivateKey, PublicKey
from ca.keys.memory import generate_private_key
from ca.profiles import Profile

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}

_LINT_KEYS: dict[KeySpec, PrivateKey] = {}
_LINT_KEYS_LOCK = threading.Lock()


def signature_params(profile: Profile, issuer_spec: KeySpec
                     ) -> tuple[hashes.HashAlgorithm | None, padding.AsymmetricPadding | None]:
    """Hash and padding for the issuer's key family; the profile picks hash and RSA padding."""
    if issuer_spec.algorithm == "ed25519":
        return None, None
    hash_cls = _HASHES.get(profile.signature.hash)
    if hash_cls is None:
        raise ProfileError(f"profile {profile.name}: signature hash {profile.signature.hash!r} "
                           f"is not one of {sorted(_HASHES)}")
    algorithm = hash_cls()
    if issuer_spec.algorithm == "ec":
        return algorithm, None
    if profile.signature.rsa_padding == "pkcs1v15":
        return algorithm, padding.PKCS1v15()
    if profile.signature.rsa_padding == "pss":
        # RFC 4055: MGF1 with the same hash, salt as long as the digest.
        return algorithm, padding.PSS(mgf=padding.MGF1(hash_cls()),
                                      salt_length=padding.PSS.DIGEST_LENGTH)
    raise ProfileError(f"profile {profile.name}: rsa_padding {profile.signature.rsa_padding!r} "
                       "is not pkcs1v15 or pss")


def lint_key(spec: KeySpec) -> PrivateKey:
    """A process-local throwaway key per spec; RSA generation is slow, so keep them."""
    with _LINT_KEYS_LOCK:
        key = _LINT_KEYS.get(spec)
        if key is None:
            key = _LINT_KEYS[spec] = generate_private_key(spec)
        return key


def placeholder_public_key(spec: KeySpec) -> PublicKey:
    """A throwaway public key of ``spec``, to dry-run :func:`ca.issuance.prepare` before an HSM
    key exists.

    Generating a subscriber key on an HSM is a side effect; checking the request first means a
    typo in the subject or validity never leaves an orphaned key on the token.
    """
    return lint_key(spec).public_key()


def sign_builder(builder: x509.CertificateBuilder, key: PrivateKey,
                 algorithm: hashes.HashAlgorithm | None,
                 rsa_padding: padding.AsymmetricPadding | None) -> x509.Certificate:
    """``builder`` signed by ``key`` (a lint key or the issuer's real one) the same way."""
    if rsa_padding is not None:
        return builder.sign(key, algorithm, rsa_padding=rsa_padding)  # type: ignore[arg-type]
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def sign_data(key: PrivateKey, data: bytes, algorithm: hashes.HashAlgorithm | None,
              rsa_padding: padding.AsymmetricPadding | None) -> bytes:
    """``key``'s signature over ``data`` as a certificate carries it: what
    ``CertificateBuilder.sign`` asks the key for over the TBSCertificate it encoded."""
    if isinstance(key, rsa.RSAPrivateKey):
        assert rsa_padding is not None and algorithm is not None
        return key.sign(data, rsa_padding, algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert algorithm is not None
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise IssuanceError(f"cannot sign with {type(key).__name__}")  # pragma: no cover


def frame(tbs_der: bytes, algorithm_der: bytes, signature: bytes) -> bytes:
    """A Certificate's DER from its parts (RFC 5280 4.1: SEQUENCE { tbsCertificate,
    signatureAlgorithm, signatureValue BIT STRING }): what ``CertificateBuilder.sign`` writes
    around the signature the key gave it."""
    return tlv(SEQUENCE, tbs_der, algorithm_der, tlv(0x03, b"\x00" + signature))


def check_signature(public_key: PublicKey, signature: bytes, tbs_der: bytes,
                    algorithm: hashes.HashAlgorithm | None,
                    rsa_padding: padding.AsymmetricPadding | None) -> None:
    """Raise InvalidSignature unless ``public_key`` made ``signature`` over ``tbs_der``: an
    HSM fault must not leave the building as a certificate (and a faulty RSA-CRT signature
    would give the key away: Boneh, DeMillo, Lipton 1997)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        assert rsa_padding is not None and algorithm is not None
        public_key.verify(signature, tbs_der, rsa_padding, algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        public_key.verify(signature, tbs_der, ec.ECDSA(algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, tbs_der)
    else:  # pragma: no cover - KeySpec admits no other family
        raise IssuanceError(f"cannot verify a signature by {type(public_key).__name__}")
