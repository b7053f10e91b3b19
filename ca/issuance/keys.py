"""The subscriber's key: which keys a profile certifies, and proof that the requester holds it.

Both are asked before anything is built or any HSM key generated, so a refused key never
costs a side effect.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from ca.errors import CSRError, KeyPolicyError, UnsupportedKeyError
from ca.keys.base import KeySpec, PublicKey
from ca.profiles import Profile

MIN_RSA_BITS = 2048  # Circular 15/2025: RSA >= 2048
MAX_CSR_BYTES = 64 * 1024


def check_key(profile: Profile, public_key: PublicKey) -> KeySpec:
    """The subscriber key's spec, if the profile allows it; KeyPolicyError otherwise.

    A profile without a key list still refuses what no tincay certificate may carry: RSA below
    2048 bits or with a bad exponent, unknown curves, other algorithms.
    """
    try:
        spec = KeySpec.of_public_key(public_key)
    except UnsupportedKeyError as exc:
        raise KeyPolicyError(f"profile {profile.name}: {exc}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        exponent = public_key.public_numbers().e
        if public_key.key_size < MIN_RSA_BITS:
            raise KeyPolicyError(
                f"profile {profile.name}: RSA key of {public_key.key_size} bits is too small "
                f"(minimum {MIN_RSA_BITS})")
        if exponent < 65537 or exponent % 2 == 0:
            raise KeyPolicyError(
                f"profile {profile.name}: RSA public exponent {exponent} is not allowed")
    if not profile.allows_key(spec):
        allowed = ", ".join(str(s) for s in profile.key_algorithms)
        raise KeyPolicyError(
            f"profile {profile.name} does not allow {spec} keys (allowed: {allowed})")
    return spec


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 request (PEM or DER) and insist its self-signature verifies.

    The signature proves the requester holds the private key; without it anyone could get a
    certificate for someone else's public key.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("load_csr expects bytes")
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"CSR of {len(data)} bytes exceeds the {MAX_CSR_BYTES}-byte limit")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(bytes(data))
        else:
            csr = x509.load_der_x509_csr(bytes(data))
    except ValueError as exc:
        raise CSRError(f"CSR does not parse: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(f"CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise CSRError("CSR signature does not verify: the requester did not prove possession "
                       "of the private key, or the request was altered")
    return csr
