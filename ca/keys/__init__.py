"""Key backends: PKCS#11 (HSM) and in-memory, behind one small interface."""
from ca.keys.base import KeyBackend, KeySpec, PrivateKey, PublicKey, SigningKey

__all__ = ["KeyBackend", "KeySpec", "PrivateKey", "PublicKey", "SigningKey"]
