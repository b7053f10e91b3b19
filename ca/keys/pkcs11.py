"""Keys on a PKCS#11 token (SoftHSM in tests and demos, a network HSM in production).

:class:`Pkcs11Backend` generates and finds keys on one token; each key it hands out signs
through a private-key object below that plugs into cryptography's certificate, CRL and OCSP
builders and sends every signature to the token. All of them go through the process's one
session on the token (ca/keys/pkcs11_session.py: one session and one lock per process, because
SoftHSM crashes with two sessions in two threads of one process; the machine-wide lock; how a
lost token is found again).

Keys are generated sensitive and non-extractable (the templates in
:meth:`Pkcs11Backend.generate`), and the private-key objects here refuse every export,
decryption and key agreement. Signing through ``_HsmEcKey.sign`` is on the OCSP and TSA hot
path: one digest, one call into the session, nothing in between.

The same private-key classes sign with a subscriber's key unwrapped into a session object
(ca.keys.wrapping): given a :class:`KeyObjectSource` instead of a label, they hand it each
signature, and it finds (or unwraps again) its own object.
"""
from __future__ import annotations

import hashlib
from typing import Any, Protocol

import pkcs11
from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from ca.errors import (BackendUnavailableError, ConfigurationError, KeyBackendError,
                       KeyExistsError, KeyNotFoundError, TokenNotFoundError, UnsupportedKeyError)
from ca.keys.base import KeySpec, PublicKey, SigningKey
from ca.keys.pkcs11_session import (TokenSession, not_the_certificates, public_key_der,
                                    public_key_of, shared_session)
from ca.keys.uri import Pkcs11Uri
from ca.settings import PinSource

__all__ = ["Pkcs11Backend", "public_key_der", "shared_session"]

_CURVE_OIDS = {"P-256": "secp256r1", "P-384": "secp384r1"}
_ED25519_OID = "1.3.101.112"
_PKCS1_HASH_MECHS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
                     "sha512": Mechanism.SHA512_RSA_PKCS, "sha224": Mechanism.SHA224_RSA_PKCS,
                     "sha1": Mechanism.SHA1_RSA_PKCS}
_PSS_HASH_MECHS = {"sha256": (Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA256, pkcs11.MGF.SHA256),
                   "sha384": (Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA384, pkcs11.MGF.SHA384),
                   "sha512": (Mechanism.SHA512_RSA_PKCS_PSS, Mechanism.SHA512, pkcs11.MGF.SHA512)}
_PSS_DIGEST_MECHS = {"sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
                     "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
                     "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512)}


class Pkcs11Backend:
    """Generate and find keys on one token, named by RFC 7512 URIs."""

    scheme = "pkcs11"

    def __init__(self, module: str | None, token_label: str, pin: PinSource) -> None:
        if not module:
            raise ConfigurationError(
                "no PKCS#11 module: set TINCAY_PKCS11_MODULE or install softhsm2")
        self.token_label = token_label
        self._session = shared_session(module, token_label, pin)

    def uri(self, label: str) -> str:
        return str(Pkcs11Uri(token=self.token_label, object=label))

    def _label(self, uri_or_label: str) -> str:
        if not uri_or_label.startswith("pkcs11:"):
            return uri_or_label
        uri = Pkcs11Uri.parse(uri_or_label)
        if uri.token is not None and uri.token != self.token_label:
            raise KeyNotFoundError(
                f"key {uri_or_label} is on token {uri.token!r}, not {self.token_label!r}")
        if not uri.object:
            raise ConfigurationError(f"PKCS#11 URI {uri_or_label} names no object")
        return uri.object

    def exists(self, label: str) -> bool:
        def find(session: Any) -> bool:
            return any(True for _ in session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
        return self._session.run(find, reads_token=True)

    def destroy(self, uri_or_label: str) -> bool:
        label = self._label(uri_or_label)
        return self._session.run(lambda session: self._session.destroy(label), reads_token=True)

    def labels(self) -> list[str]:
        def find(session: Any) -> list[str]:
            return sorted({obj.label for obj in session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY}) if obj.label})
        return self._session.run(find, reads_token=True)

    @property
    def session(self) -> TokenSession:
        """The process's one session on the token (ca.keys.wrapping signs through it too)."""
        return self._session

    def label_of(self, uri_or_label: str) -> str | None:
        if uri_or_label.startswith(("memory:", "tincay:")):  # tincay: a wrapped key's row
            return None
        try:
            return self._label(uri_or_label)
        except (KeyNotFoundError, ConfigurationError):  # another token's, or no object named
            return None

    def generate(self, label: str, spec: KeySpec) -> SigningKey:
        def gen(session: Any) -> None:
            if any(True for _ in session.get_objects({Attribute.LABEL: label})):
                raise KeyExistsError(f"key {label!r} already exists on token {self.token_label!r}")
            key_id = hashlib.sha1(label.encode()).digest()
            private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                Attribute.SIGN: True, Attribute.PRIVATE: True,
                                Attribute.TOKEN: True, Attribute.DECRYPT: False,
                                Attribute.UNWRAP: False, Attribute.DERIVE: False}
            public_template = {Attribute.VERIFY: True, Attribute.TOKEN: True,
                               Attribute.ENCRYPT: False, Attribute.WRAP: False}
            try:
                if spec.algorithm == "rsa":
                    session.generate_keypair(
                        KeyType.RSA, spec.size, label=label, id=key_id, store=True,
                        public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                        private_template=private_template)
                else:
                    if spec.algorithm == "ec":
                        params = encode_named_curve_parameters(_CURVE_OIDS[spec.curve or "P-256"])
                        key_type, mech = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
                    else:
                        params = asn1_core.ObjectIdentifier(_ED25519_OID).dump()
                        key_type, mech = KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                    domain = session.create_domain_parameters(
                        key_type, {Attribute.EC_PARAMS: params}, local=True)
                    domain.generate_keypair(label=label, id=key_id, store=True, mechanism=mech,
                                            public_template=public_template,
                                            private_template=private_template)
            except (p11.MechanismInvalid, p11.AttributeValueInvalid, p11.KeySizeRange,
                    p11.DomainParamsInvalid, p11.FunctionNotSupported) as exc:
                raise UnsupportedKeyError(
                    f"token {self.token_label!r} cannot generate {spec}: {type(exc).__name__}"
                ) from None
        self._session.run(gen, reads_token=True)
        return self.load(label)

    def load(self, uri_or_label: str, expected: PublicKey | None = None) -> SigningKey:
        label = self._label(uri_or_label)

        def find(session: Any) -> PublicKey:
            try:
                self._session.private_key(label)  # found (and remembered) in this session
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            except p11.NoSuchKey:
                raise KeyNotFoundError(
                    f"no key {label!r} on PKCS#11 token {self.token_label!r}") from None
            except p11.MultipleObjectsReturned:
                raise KeyBackendError(
                    f"several keys are labelled {label!r} on token {self.token_label!r}") from None
            return public_key_of(public)

        try:
            public = self._session.run(find, reads_token=True)
        except (BackendUnavailableError, TokenNotFoundError):
            if expected is None:
                raise
            public = expected  # the HSM is unreachable: signing finds the key once it is back
            self._session.expect(label, expected)
        else:
            if expected is not None and public_key_der(public) != public_key_der(expected):
                raise not_the_certificates(label, self.token_label)
        spec = KeySpec.of_public_key(public)
        signer = make_signer(self._session, label, public)
        return SigningKey(self.uri(label), spec, signer, public)

    def close(self) -> None:
        self._session.close()

    @property
    def sealer(self) -> Any:
        """Seals small secrets (TOTP seeds) under the token's AES key (ca/keys/sealing.py)."""
        from ca.keys.sealing import Pkcs11Sealer

        sealer = self.__dict__.get("_sealer")
        if sealer is None:
            sealer = self.__dict__["_sealer"] = Pkcs11Sealer(self._session)
        return sealer


class KeyObjectSource(Protocol):
    """A private-key object that is not a labelled token object (a subscriber's key unwrapped
    into a session object, ca.keys.wrapping): it signs through the session itself, finding or
    re-making its object as needed."""

    def sign(self, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        """Sign ``data`` with ``mechanism`` through the process's session."""


def _hsm_sign(session: TokenSession, label: str | KeyObjectSource, data: bytes,
              mechanism: Mechanism, param: Any = None) -> bytes:
    if not isinstance(label, str):
        return label.sign(data, mechanism, param)

    def sign(s: Any) -> bytes:
        try:
            try:
                return session.private_key(label).sign(data, mechanism=mechanism,
                                                       mechanism_param=param)
            except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                session.forget(label)  # destroyed or re-created since: look it up again
                return session.private_key(label).sign(data, mechanism=mechanism,
                                                       mechanism_param=param)
        except p11.NoSuchKey:
            raise KeyNotFoundError(f"key {label!r} vanished from the token") from None
        except (p11.MechanismInvalid, p11.MechanismParamInvalid) as exc:
            raise unsupported_mechanism(mechanism, exc) from None
    return session.run(sign)


def unsupported_mechanism(mechanism: Mechanism, exc: Exception) -> UnsupportedKeyError:
    """The error for a signature mechanism the token refuses."""
    return UnsupportedKeyError(f"token cannot sign with {mechanism.name}: {type(exc).__name__}")


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm  # noqa: SLF001 - cryptography exposes no public accessor
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


def _no_export(*_: Any, **__: Any) -> Any:
    raise KeyBackendError("HSM private keys are non-extractable")


class _HsmRsaKey(rsa.RSAPrivateKey):
    def __init__(self, session: TokenSession, label: str | KeyObjectSource,
                 public: rsa.RSAPublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        if isinstance(padding_, padding.PSS):
            digest, hash_alg = _digest(data, algorithm)
            mech_hash, mgf = _PSS_DIGEST_MECHS.get(hash_alg.name, (None, None))
            if mech_hash is None:
                raise UnsupportedKeyError(f"RSA-PSS with {hash_alg.name} is not supported")
            salt = padding_._salt_length  # noqa: SLF001
            if salt in (padding.PSS.DIGEST_LENGTH, padding.PSS.AUTO) or not isinstance(salt, int):
                salt = hash_alg.digest_size
            return _hsm_sign(self._session, self._label, digest, Mechanism.RSA_PKCS_PSS,
                             (mech_hash, mgf, salt))
        if not isinstance(padding_, padding.PKCS1v15):
            raise UnsupportedKeyError(f"unsupported RSA padding {padding_.name}")
        if isinstance(algorithm, utils.Prehashed):
            digest_info = _digest_info(data, algorithm._algorithm)  # noqa: SLF001
            return _hsm_sign(self._session, self._label, digest_info, Mechanism.RSA_PKCS)
        mech = _PKCS1_HASH_MECHS.get(algorithm.name)
        if mech is None:
            raise UnsupportedKeyError(f"RSA PKCS#1 v1.5 with {algorithm.name} is not supported")
        return _hsm_sign(self._session, self._label, data, mech)

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    decrypt = private_numbers = private_bytes = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmRsaKey":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmRsaKey":
        return self


class _HsmEcKey(ec.EllipticCurvePrivateKey):
    def __init__(self, session: TokenSession, label: str | KeyObjectSource,
                 public: ec.EllipticCurvePublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedKeyError("only ECDSA signatures are supported")
        digest, _ = _digest(data, signature_algorithm.algorithm)
        raw = _hsm_sign(self._session, self._label, digest, Mechanism.ECDSA)
        half = len(raw) // 2  # PKCS#11 gives r || s; X.509 and CMS want Ecdsa-Sig-Value
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                          int.from_bytes(raw[half:], "big"))

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    exchange = private_numbers = private_bytes = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmEcKey":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmEcKey":
        return self


class _HsmEd25519Key(ed25519.Ed25519PrivateKey):
    def __init__(self, session: TokenSession, label: str | KeyObjectSource,
                 public: ed25519.Ed25519PublicKey) -> None:
        self._session, self._label, self._public = session, label, public

    def sign(self, data: bytes) -> bytes:
        return _hsm_sign(self._session, self._label, data, Mechanism.EDDSA)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    private_bytes = private_bytes_raw = _no_export  # type: ignore[assignment]

    def __copy__(self) -> "_HsmEd25519Key":
        return self

    def __deepcopy__(self, memo: dict) -> "_HsmEd25519Key":
        return self


def make_signer(session: TokenSession, label: str | KeyObjectSource, public: PublicKey) -> Any:
    """The cryptography private-key object that signs with the token's key ``label`` (a
    labelled token object) or through ``label``'s own object (a :class:`KeyObjectSource`)."""
    if isinstance(public, rsa.RSAPublicKey):
        return _HsmRsaKey(session, label, public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _HsmEcKey(session, label, public)
    return _HsmEd25519Key(session, label, public)


def _digest_info(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """RSA PKCS#1 v1.5 over a precomputed digest signs a DigestInfo (RFC 8017, 9.2)."""
    if algorithm.name not in ("sha256", "sha384", "sha512"):
        raise UnsupportedKeyError(f"RSA PKCS#1 v1.5 with {algorithm.name} is not supported")
    return asn1_algos.DigestInfo({
        "digest_algorithm": {"algorithm": algorithm.name, "parameters": asn1_core.Null()},
        "digest": digest,
    }).dump()
