"""The hash and signature algorithms remote signing accepts, by the OIDs CSC clients send, and
the cryptography objects that sign a precomputed hash with them.

Pure: OIDs and DER parameters in, padding and hash objects out, every refusal an
UnsupportedAlgorithmError (a client mistake, answered invalid_request).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ca.errors import UnsupportedAlgorithmError
from ca.keys.base import PublicKey

SHA256, SHA384, SHA512 = "2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3"
HASHES: dict[str, type[hashes.HashAlgorithm]] = {SHA256: hashes.SHA256, SHA384: hashes.SHA384,
                                                 SHA512: hashes.SHA512}
HASH_OIDS = tuple(HASHES)
_HASH_BY_NAME = {"sha256": SHA256, "sha384": SHA384, "sha512": SHA512}

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSA_PSS = "1.2.840.113549.1.1.10"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_RSA_WITH = {"1.2.840.113549.1.1.11": SHA256, "1.2.840.113549.1.1.12": SHA384,
             "1.2.840.113549.1.1.13": SHA512}
_ECDSA_WITH = {"1.2.840.10045.4.3.2": SHA256, "1.2.840.10045.4.3.3": SHA384,
               "1.2.840.10045.4.3.4": SHA512}
RSA_SIGN_OIDS = (RSA_ENCRYPTION, *_RSA_WITH, RSA_PSS)
EC_SIGN_OIDS = (EC_PUBLIC_KEY, *_ECDSA_WITH)
CURVE_OIDS = {"secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34",
              "secp521r1": "1.3.132.0.35"}
_DER_NULL = b"\x05\x00"


def hash_algorithm(oid: str) -> hashes.HashAlgorithm:
    """The hash ``oid`` names among those allowed."""
    cls = HASHES.get(oid)
    if cls is None:
        raise UnsupportedAlgorithmError(f"hash algorithm {oid} is not supported "
                                        f"(allowed: {', '.join(HASH_OIDS)})")
    return cls()


def check_hashes(hashes_: Any, oid: str) -> list[bytes]:
    """The hashes as bytes, each of the length ``oid``'s algorithm produces."""
    size = hash_algorithm(oid).digest_size
    out = []
    for value in hashes_:
        if not isinstance(value, (bytes, bytearray)) or len(value) != size:
            raise UnsupportedAlgorithmError(
                f"every hash must be {size} bytes for hash algorithm {oid}")
        out.append(bytes(value))
    return out


def key_algorithm_oid(public: PublicKey) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        return RSA_ENCRYPTION
    if isinstance(public, ec.EllipticCurvePublicKey):
        return EC_PUBLIC_KEY
    raise UnsupportedAlgorithmError(
        f"a {type(public).__name__} key cannot sign precomputed hashes (RSA or ECDSA only)")


def sign_oids(public: PublicKey) -> tuple[str, ...]:
    return RSA_SIGN_OIDS if key_algorithm_oid(public) == RSA_ENCRYPTION else EC_SIGN_OIDS


@dataclass(frozen=True)
class SignatureScheme:
    """How to sign one precomputed hash: the hash's OID and a ``sign(key, digest)``."""

    hash_oid: str
    sign_oid: str
    padding: padding.AsymmetricPadding | None  # None: ECDSA

    def sign(self, private_key: Any, digest: bytes) -> bytes:
        prehashed = utils.Prehashed(hash_algorithm(self.hash_oid))
        if self.padding is None:
            return private_key.sign(digest, ec.ECDSA(prehashed))
        return private_key.sign(digest, self.padding, prehashed)


def scheme(public: PublicKey, sign_oid: str, hash_oid: str | None,
           parameters: bytes | None, activated_hash_oid: str) -> SignatureScheme:
    """The scheme for ``sign_oid`` on this key, its hash agreeing with the hash the SAD was
    issued for (``activated_hash_oid``), with ``hash_oid`` and with what ``sign_oid`` or the
    PSS ``parameters`` imply; anything else is refused."""
    if sign_oid not in sign_oids(public):
        raise UnsupportedAlgorithmError(f"signature algorithm {sign_oid} is not supported "
                                        "by this credential's key")
    implied = _RSA_WITH.get(sign_oid) or _ECDSA_WITH.get(sign_oid)
    pss: padding.AsymmetricPadding | None = None
    if sign_oid == RSA_PSS:
        implied, pss = _pss(parameters)
    elif parameters not in (None, b"", _DER_NULL):
        raise UnsupportedAlgorithmError(f"signature algorithm {sign_oid} takes no parameters")
    chosen = implied or hash_oid or activated_hash_oid
    for given in (hash_oid, implied):
        if given is not None and given != chosen:
            raise UnsupportedAlgorithmError(
                f"hash algorithm {given} disagrees with the signature algorithm's {chosen}")
    if chosen != activated_hash_oid:
        raise UnsupportedAlgorithmError(f"the SAD was issued for hash algorithm "
                                        f"{activated_hash_oid}, not {chosen}")
    hash_algorithm(chosen)
    if pss is not None:
        return SignatureScheme(chosen, sign_oid, pss)
    if isinstance(public, rsa.RSAPublicKey):
        return SignatureScheme(chosen, sign_oid, padding.PKCS1v15())
    return SignatureScheme(chosen, sign_oid, None)


def _pss(parameters: bytes | None) -> tuple[str, padding.PSS]:
    """RSASSA-PSS-params (RFC 4055): hash, MGF1 with the same hash, salt length; absent
    parameters mean SHA-256, MGF1-SHA-256 and 32 bytes of salt (what CSC clients send)."""
    if parameters in (None, b"", _DER_NULL):
        return SHA256, padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    from asn1crypto import algos

    try:
        params = algos.RSASSAPSSParams.load(parameters)
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        mgf_name = mgf["algorithm"].native
        mgf_hash = mgf["parameters"]["algorithm"].native
        salt = int(params["salt_length"].native)
        trailer = params["trailer_field"].native
    except Exception:  # noqa: BLE001 - any malformed DER is one refusal
        raise UnsupportedAlgorithmError("RSASSA-PSS parameters are not valid DER") from None
    oid = _HASH_BY_NAME.get(hash_name)
    if oid is None or mgf_name != "mgf1" or mgf_hash != hash_name:
        raise UnsupportedAlgorithmError(
            "RSASSA-PSS: hash must be SHA-256/384/512 with MGF1 over the same hash")
    if not 0 <= salt <= 64 or trailer not in ("trailer_field_bc", 1):
        raise UnsupportedAlgorithmError("RSASSA-PSS: salt length 0..64, trailer field 1")
    return oid, padding.PSS(padding.MGF1(HASHES[oid]()), salt)
