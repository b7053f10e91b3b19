"""What the two halves of remote signing share (ca/services/credentials.py, the operator's and
the listing side; ca/services/remote_signing.py, authorise and sign): the values they hand
back, the signer's two factors (the PIN as a scrypt hash, the TOTP seed sealed on the HSM),
certificate validity as a credential sees it, and the lookups that keep a client to the
credentials granted to it."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.errors import (CredentialDisabledError, CredentialLockedError, CredentialNotFoundError)
from ca.keys.sealing import sealer_of
from ca.services import sign_algorithms as algos
from ca.services.clients import ClientInfo, secret_digest
from ca.store.models import ISSUED, REVOKED, ApiClient, CredentialClient, SigningCredential

MAX_FAILED_ATTEMPTS = 5
MIN_PIN_LENGTH = 6
# scrypt (RFC 7914) at n=2^14, r=8, p=1: 16 MiB and 59-69 ms per check measured on this
# project's shared 2-core host (n=2^15 took 150-250 ms there: too slow for an authorisation
# on the request path). It makes a stolen table cost per guess; what protects a 6-digit PIN
# is the lockout after five failures and the TOTP seed sealed on the HSM. The parameters live
# in each hash string, so raising them later leaves older hashes verifying.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
TOTP_STEP, TOTP_DIGITS, TOTP_WINDOW = 30, 6, 1
OTP_ISSUER = "tincay"


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as the CSC API and the operator see it (never its PIN or seed)."""

    credential_id: str
    user_id: str
    status: str                  # "active" | "disabled" | "locked"
    certificate_status: str      # "valid" | "expired" | "revoked" | "suspended" | "not_yet_valid"
    authority: str
    serial_hex: str
    certificates: tuple[bytes, ...]   # DER: signer first, then its issuing CA(s), root excluded
    key_algorithm_oid: str
    key_length: int
    curve_oid: str | None
    sign_algorithm_oids: tuple[str, ...]
    hash_algorithm_oids: tuple[str, ...]
    multisign: int
    clients: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class Activation:
    """A SAD handed to the client once; only its SHA-256 is kept."""

    sad: str
    expires_in: int


@dataclass(frozen=True)
class SignatureRecordInfo:
    """One entry of the signature log (``tincay csc log``)."""

    at: datetime
    credential_id: str
    user_id: str
    client: str
    authority: str
    serial_hex: str
    hash_hex: str
    hash_algorithm_oid: str
    sign_algorithm_oid: str


# --- the PIN ---------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_pin_rules(pin: str) -> None:
    if not isinstance(pin, str) or len(pin) < MIN_PIN_LENGTH:
        raise ValueError(f"the PIN must be at least {MIN_PIN_LENGTH} characters")


def hash_pin(pin: str) -> str:
    """``scrypt$n=..,r=..,p=..$salt$hash`` (base64), a fresh 16-byte salt per PIN."""
    check_pin_rules(pin)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode("utf-8", "surrogatepass"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def pin_matches(stored: str, pin: str | None) -> bool:
    """Whether ``pin`` is the one ``stored`` was made from (constant-time comparison; the
    parameters come from the stored string, so older hashes keep verifying)."""
    try:
        scheme, params, salt_text, digest_text = stored.split("$")
        values = dict(part.split("=") for part in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt, digest = base64.b64decode(salt_text), base64.b64decode(digest_text)
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt" or not isinstance(pin, str):
        return False
    candidate = hashlib.scrypt(pin.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
                               maxmem=max(_SCRYPT_MAXMEM, 256 * r * n), dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


# --- the one-time password -------------------------------------------------------------------

def new_otp_seed() -> bytes:
    """20 random bytes: RFC 4226's recommended length for HMAC-SHA-1."""
    return secrets.token_bytes(20)


def seal_seed(keys: Any, seed: bytes, credential_id: str) -> bytes:
    return sealer_of(keys).seal(seed, credential_id.encode("utf-8"))


def unseal_seed(keys: Any, sealed: bytes, credential_id: str) -> bytes:
    return sealer_of(keys).unseal(sealed, credential_id.encode("utf-8"))


def otpauth_uri(seed: bytes, user_id: str) -> str:
    """The otpauth:// URI an authenticator app reads (issuer tincay, account the user id)."""
    import pyotp

    return pyotp.TOTP(base64.b32encode(seed).decode("ascii"), digits=TOTP_DIGITS,
                      interval=TOTP_STEP).provisioning_uri(name=user_id, issuer_name=OTP_ISSUER)


def otp_step(seed: bytes, otp: str | None, now: datetime, last_step: int) -> int | None:
    """The time step (RFC 6238, SHA-1, 30 s, 6 digits, one step either side) whose code is
    ``otp`` and that is later than ``last_step`` (a code is good once); None otherwise."""
    import pyotp

    if (not isinstance(otp, str) or len(otp) != TOTP_DIGITS or not otp.isascii()
            or not otp.isdigit()):
        return None
    totp = pyotp.TOTP(base64.b32encode(seed).decode("ascii"), digits=TOTP_DIGITS,
                      interval=TOTP_STEP)
    current = int(now.timestamp()) // TOTP_STEP
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), otp) and step > last_step:
            found = step
    return found


# --- certificates and rows -------------------------------------------------------------------

def certificate_status(row: SigningCredential, now: datetime) -> str:
    cert = row.certificate
    if cert.status == REVOKED:
        return "suspended" if cert.revocation_reason == "certificateHold" else "revoked"
    if cert.status != ISSUED:
        return cert.status
    if now < cert.not_before:
        return "not_yet_valid"
    if now > cert.not_after:
        return "expired"
    return "valid"


def usable(row: SigningCredential, now: datetime) -> None:
    """Refuse a credential that cannot sign now: disabled, locked, or its certificate not
    valid. Revoking or expiring the certificate makes its credential unusable at once."""
    if row.status != "active":
        raise CredentialDisabledError("the credential is disabled")
    if row.locked_at is not None:
        raise CredentialLockedError("the credential is locked after too many failed "
                                    "authentications; the operator must unlock it")
    status = certificate_status(row, now)
    if status != "valid":
        raise CredentialDisabledError(f"the credential's certificate is {status.replace('_', ' ')}")


def client_row(session: Session, client: ClientInfo) -> ApiClient:
    row = session.scalar(select(ApiClient).where(ApiClient.client_id == client.client_id))
    if row is None or row.status != "active":
        raise CredentialNotFoundError("unknown credential")
    return row


def granted(session: Session, client: ApiClient, credential_id: str) -> SigningCredential:
    """The credential ``credential_id`` if granted to ``client``; one error otherwise."""
    query = (select(SigningCredential)
             .join(CredentialClient, CredentialClient.credential_pk == SigningCredential.id)
             .where(SigningCredential.credential_id == credential_id,
                    CredentialClient.client_pk == client.id))
    row = session.scalar(query)
    if row is None:
        raise CredentialNotFoundError("unknown credential")
    return row


def describe(row: SigningCredential, now: datetime) -> CredentialInfo:
    cert = row.certificate
    parsed = x509.load_der_x509_certificate(cert.der or b"")
    public = parsed.public_key()
    chain = [cert.der or b""]
    authority = cert.issuer
    while authority is not None and authority.parent is not None:  # the root is left out
        if authority.certificate is not None and authority.certificate.der:
            chain.append(authority.certificate.der)
        authority = authority.parent
    curve = getattr(public, "curve", None)
    status = "active" if row.status == "active" and row.locked_at is None else (
        "locked" if row.status == "active" else row.status)
    return CredentialInfo(
        credential_id=row.credential_id, user_id=row.user_id, status=status,
        certificate_status=certificate_status(row, now), authority=cert.issuer.name,
        serial_hex=cert.serial_hex, certificates=tuple(chain),
        key_algorithm_oid=algos.key_algorithm_oid(public),  # type: ignore[arg-type]
        key_length=public.key_size,  # type: ignore[union-attr]
        curve_oid=algos.CURVE_OIDS.get(curve.name) if curve is not None else None,
        sign_algorithm_oids=algos.sign_oids(public),  # type: ignore[arg-type]
        hash_algorithm_oids=algos.HASH_OIDS, multisign=row.multisign,
        clients=tuple(sorted(c.name for c in row.clients)), created_at=row.created_at)


def sad_digest(sad: str) -> str:
    """A SAD as stored (ca.services.clients.secret_digest); anything not a string digests as
    the empty one, which matches no SAD."""
    return secret_digest(sad if isinstance(sad, str) else "")
