"""The JSON bodies of the CSC API, v2.0.0.2 and v1.0.4.0, as pydantic v2 models.

Every model is frozen, strict and closed (``extra="forbid"``, as every JSON body tincay reads):
an unknown member is refused with its name, so a misspelt ``hashAlgorithmOid`` is an error the
client sees, not a default it did not mean. Each model lists every optional member its method
has in the spec (``clientData``, ``description``, ``lang``, v2's ``validity_period`` ...), so
real clients pass; members we accept and do not act on are said so below.

Binary values (hashes, signature parameters) are standard base64 in JSON (CSC 8.3); they are
decoded here, so the core sees bytes, and garbage is an error naming the member. Lengths are
bounded so a body cannot make the service hash or sign without limit (the HTTP adapter also
caps a body at 64 KiB).

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ca.validation import FieldError, InputModel, type_name

__all__ = ["HASH_SIZES", "AuthObject", "AuthorizeV1", "AuthorizeV2", "CredentialInfoRequest",
           "ExtendV1", "ExtendV2", "InfoRequest", "ListV1", "ListV2", "LoginRequest",
           "RevokeRequest", "SignHashV1", "SignHashV2", "TimestampRequest"]

# hash algorithm OID -> digest length (the contract's three; CSC clients send OIDs)
HASH_SIZES = {"2.16.840.1.101.3.4.2.1": 32, "2.16.840.1.101.3.4.2.2": 48,
              "2.16.840.1.101.3.4.2.3": 64}
MAX_HASHES = 1000  # one request; a credential's multisign is the real bound
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]{0,19})){1,40}$")
_HEX = re.compile(r"^[0-9A-Fa-f]{1,128}$")


def _base64(value: object) -> bytes:
    """Standard base64 (with padding) -> bytes; a FieldError for anything else."""
    if not isinstance(value, str):
        raise FieldError(f"expected a base64 string, got {type_name(value)}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise FieldError("is not valid base64") from None


def _oid(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected an OID string, got {type_name(value)}")
    if not _OID.match(value):
        raise FieldError(f"{value[:64]!r} is not a dotted OID")
    return value


Base64 = Annotated[bytes, BeforeValidator(_base64)]
Oid = Annotated[str, BeforeValidator(_oid)]
Text = Annotated[str, Field(max_length=256)]
Secret = Annotated[str, Field(max_length=512)]          # PIN, OTP, SAD, tokens
ClientData = Annotated[str, Field(max_length=4096)]    # opaque to us, never logged
Hashes = Annotated[list[Base64], Field(min_length=1, max_length=MAX_HASHES)]
Count = Annotated[int, Field(ge=1, le=MAX_HASHES)]


def check_hash_lengths(hashes: list[bytes], oid: str | None, field: str) -> None:
    """Each hash as long as its algorithm's digest; a FieldError naming the first that is not."""
    if oid is None or oid not in HASH_SIZES:
        return  # an OID we do not know: the service refuses the algorithm by name
    size = HASH_SIZES[oid]
    for index, value in enumerate(hashes):
        if len(value) != size:
            raise FieldError(f"{len(value)} bytes, a hash of {oid} has {size}", field, index)


def same_length_hashes(hashes: list[bytes], field: str) -> None:
    """v1 authorize sends no hash algorithm: the hashes' length names it, so all must agree
    and be a length we know."""
    sizes = {len(value) for value in hashes}
    if len(sizes) != 1 or next(iter(sizes)) not in HASH_SIZES.values():
        raise FieldError("hashes must all be SHA-256, SHA-384 or SHA-512 values "
                         "(32, 48 or 64 bytes)", field)


class CscModel(InputModel):
    """Frozen, strict, closed: a CSC request body."""


class InfoRequest(CscModel):
    """``info``: the service description (no authentication)."""

    lang: Text | None = None


class LoginRequest(CscModel):
    """``auth/login`` (HTTP Basic client id and secret). tincay issues no refresh tokens, so
    ``refresh_token`` and ``rememberMe`` are accepted and not acted on."""

    refresh_token: Secret | None = None
    rememberMe: bool | None = None
    clientData: ClientData | None = None


class RevokeRequest(CscModel):
    """``auth/revoke`` (RFC 7009): the token to end, usually the caller's own."""

    token: Secret
    token_type_hint: Literal["access_token", "refresh_token"] | None = None
    clientData: ClientData | None = None


class ListV1(CscModel):
    """v1 ``credentials/list``."""

    userID: Text | None = None
    maxResults: Count | None = None
    pageToken: Text | None = None
    clientData: ClientData | None = None


class ListV2(ListV1):
    """v2 ``credentials/list``: optionally each credential's info too."""

    credentialInfo: bool = False
    certificates: Literal["none", "single", "chain"] = "single"
    certInfo: bool = False
    authInfo: bool = False
    onlyValid: bool = False
    lang: Text | None = None


class CredentialInfoRequest(CscModel):
    """``credentials/info`` (the same members in v1 and v2)."""

    credentialID: Text
    certificates: Literal["none", "single", "chain"] = "single"
    certInfo: bool = False
    authInfo: bool = False
    lang: Text | None = None
    clientData: ClientData | None = None


class AuthObject(CscModel):
    """One v2 ``authData`` entry: ``{"id": "PIN", "value": "..."}``."""

    id: Text
    value: Secret


class AuthorizeV2(CscModel):
    """v2 ``credentials/authorize``: the hashes the SAD will cover, and the signer's factors
    as ``authData`` (ids ``PIN`` and ``OTP``, as credentials/info announces them)."""

    credentialID: Text
    numSignatures: Count
    hashes: Hashes
    hashAlgorithmOID: Oid
    authData: Annotated[list[AuthObject], Field(max_length=8)] = []
    description: Annotated[str, Field(max_length=500)] | None = None
    clientData: ClientData | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "AuthorizeV2":
        check_hash_lengths(self.hashes, self.hashAlgorithmOID, "hashes")
        return self

    def factor(self, name: str) -> str | None:
        """The value of authData entry ``name`` (PIN, OTP), if sent."""
        for entry in self.authData:
            if entry.id.upper() == name:
                return entry.value
        return None


class AuthorizeV1(CscModel):
    """v1 ``credentials/authorize``: ``hash[]`` with no algorithm (its length says it),
    ``PIN`` and ``OTP`` as members (what pyHanko's authorization managers send)."""

    credentialID: Text
    numSignatures: Count
    hash: Hashes
    PIN: Secret | None = None
    OTP: Secret | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    clientData: ClientData | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "AuthorizeV1":
        same_length_hashes(self.hash, "hash")
        return self

    @property
    def hash_algorithm_oid(self) -> str:
        size = len(self.hash[0])
        return next(oid for oid, length in HASH_SIZES.items() if length == size)


class ExtendV2(CscModel):
    """v2 ``credentials/extendTransaction``. The new SAD covers the hashes the old one was
    bound to; ``hashes`` and ``hashAlgorithmOID`` are checked for form only."""

    credentialID: Text
    SAD: Secret
    hashes: Hashes | None = None
    hashAlgorithmOID: Oid | None = None
    clientData: ClientData | None = None


class ExtendV1(CscModel):
    """v1 ``credentials/extendTransaction`` (``hash[]`` checked for form only)."""

    credentialID: Text
    SAD: Secret
    hash: Hashes | None = None
    clientData: ClientData | None = None


class SignHashV2(CscModel):
    """v2 ``signatures/signHash``. Only the synchronous mode (``operationMode`` "S") is
    served; ``validity_period`` and ``response_uri`` belong to the asynchronous one."""

    credentialID: Text
    SAD: Secret
    hashes: Hashes
    hashAlgorithmOID: Oid | None = None
    signAlgo: Oid
    signAlgoParams: Base64 | None = None
    operationMode: Literal["S", "A"] = "S"
    validity_period: int | None = None
    response_uri: Annotated[str, Field(max_length=2048)] | None = None
    clientData: ClientData | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "SignHashV2":
        check_hash_lengths(self.hashes, self.hashAlgorithmOID, "hashes")
        return self


class SignHashV1(CscModel):
    """v1 ``signatures/signHash`` (pyHanko: credentialID, SAD, hashAlgo, signAlgo, hash[])."""

    credentialID: Text
    SAD: Secret
    hash: Hashes
    hashAlgo: Oid | None = None
    signAlgo: Oid
    signAlgoParams: Base64 | None = None
    clientData: ClientData | None = None

    @model_validator(mode="after")
    def _lengths(self) -> "SignHashV1":
        check_hash_lengths(self.hash, self.hashAlgo, "hash")
        return self


class TimestampRequest(CscModel):
    """``signatures/timestamp``: an RFC 3161 token for ``hash``; ``nonce`` is hex."""

    hash: Base64
    hashAlgo: Oid
    nonce: Annotated[str, Field(max_length=128)] | None = None
    clientData: ClientData | None = None

    @model_validator(mode="after")
    def _check(self) -> "TimestampRequest":
        if self.hashAlgo not in HASH_SIZES:
            raise FieldError(f"{self.hashAlgo} is not SHA-256, SHA-384 or SHA-512", "hashAlgo")
        check_hash_lengths([self.hash], self.hashAlgo, "hash")
        if self.nonce is not None and not _HEX.match(self.nonce):
            raise FieldError("must be a hex string", "nonce")
        return self
