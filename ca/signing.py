"""Signing DER structures (CRLs, OCSP responses, CMS) through any key backend.

Certificates are signed by cryptography's builder; the structures cryptography cannot build
the way tincay needs them (streamed CRLs, multi-answer OCSP responses, RFC 3161 tokens) are
built with asn1crypto and signed here, through the same key objects, so HSM keys need nothing
else. One place chooses the AlgorithmIdentifier and the matching signature call.
"""
from __future__ import annotations

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ca.errors import IssuanceError
from ca.keys.base import PublicKey, SigningKey

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
RSA_PADDINGS = ("pkcs1v15", "pss")


def default_hash(key: SigningKey) -> str:
    """SHA-384 for P-384 keys (matching strength), SHA-256 otherwise."""
    return "sha384" if key.spec.curve == "P-384" else "sha256"


def signature_algorithm(public: PublicKey, hash_name: str = "sha256",
                        rsa_padding: str = "pkcs1v15") -> asn1_algos.SignedDigestAlgorithm:
    """The AlgorithmIdentifier a signature by ``public``'s private key will carry."""
    _check(hash_name, rsa_padding)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return asn1_algos.SignedDigestAlgorithm({"algorithm": "ed25519"})
    if isinstance(public, ec.EllipticCurvePublicKey):
        return asn1_algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_ecdsa"})
    if rsa_padding == "pss":  # RFC 4055: MGF1 with the same hash, salt as long as the digest
        return asn1_algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": hash_name},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": hash_name}},
            "salt_length": HASHES[hash_name]().digest_size, "trailer_field": "trailer_field_bc"}})
    return asn1_algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_rsa",
                                             "parameters": asn1_core.Null()})


def sign(key: SigningKey, data: bytes, hash_name: str = "sha256",
         rsa_padding: str = "pkcs1v15") -> bytes:
    """Sign ``data`` with ``key`` (HSM or memory) as :func:`signature_algorithm` announces."""
    _check(hash_name, rsa_padding)
    private, algorithm = key.private_key, HASHES[hash_name]()
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(data, ec.ECDSA(algorithm))
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(data, _rsa_padding(hash_name, rsa_padding), algorithm)
    raise IssuanceError(f"cannot sign with a {type(private).__name__}")


def verify(public: PublicKey, signature: bytes, data: bytes, hash_name: str = "sha256",
           rsa_padding: str = "pkcs1v15") -> None:
    """IssuanceError unless ``signature`` verifies: an HSM fault must never be published."""
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(HASHES[hash_name]()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, _rsa_padding(hash_name, rsa_padding),
                          HASHES[hash_name]())
        else:  # pragma: no cover - KeySpec admits no other family
            raise IssuanceError(f"cannot verify a signature by {type(public).__name__}")
    except InvalidSignature:
        raise IssuanceError("the signature does not verify with the signer's key") from None


def _rsa_padding(hash_name: str, rsa_padding: str) -> padding.AsymmetricPadding:
    if rsa_padding == "pss":
        return padding.PSS(mgf=padding.MGF1(HASHES[hash_name]()),
                           salt_length=HASHES[hash_name]().digest_size)
    return padding.PKCS1v15()


def _check(hash_name: str, rsa_padding: str) -> None:
    if hash_name not in HASHES or rsa_padding not in RSA_PADDINGS:
        raise ValueError(f"unsupported signature {hash_name}/{rsa_padding}")
