"""One exception tree for the CA core.

Every error an operator or a client can cause derives from :class:`TincayError`, so the CLI and
the HTTP layers can turn it into a one-line message or a protocol-level error without catching
unrelated bugs.
"""
from __future__ import annotations


class TincayError(Exception):
    """Base of every error the CA core raises on purpose."""


class ConfigurationError(TincayError):
    """A setting (environment variable, PIN file, hierarchy spec) is missing or invalid."""


# --- keys -----------------------------------------------------------------------------------

class KeyBackendError(TincayError):
    """The key backend (HSM or in-memory store) failed or refused an operation."""


class TokenNotFoundError(KeyBackendError):
    """No PKCS#11 token carries the configured label."""


class PinError(KeyBackendError):
    """The PIN is wrong, locked or missing."""


class KeyNotFoundError(KeyBackendError):
    """No key with the requested label exists on the token."""


class KeyExistsError(KeyBackendError):
    """A key with the requested label already exists; we never overwrite key material."""


class UnsupportedKeyError(KeyBackendError):
    """The token or backend does not support the requested algorithm, size or mechanism."""


class BackendUnavailableError(KeyBackendError):
    """The HSM cannot be reached right now; the caller may try again later."""


# --- profiles and issuance ------------------------------------------------------------------

class ProfileError(TincayError):
    """A profile file or hierarchy spec is invalid; the message names the file and field."""


class IssuanceError(TincayError):
    """A certificate request cannot be honoured under its profile."""


class SubjectError(IssuanceError):
    """The subject is malformed or violates the profile's subject rules."""


class CSRError(IssuanceError):
    """A PKCS#10 request does not parse or its signature does not verify."""


class KeyPolicyError(IssuanceError):
    """The subscriber's key algorithm or size is not allowed by the profile."""


# --- store ----------------------------------------------------------------------------------

class StoreError(TincayError):
    """The database refused an operation."""


class NotFoundError(StoreError):
    """A named authority or certificate does not exist."""


class AlreadyExistsError(StoreError):
    """An authority or record with that name already exists."""


class DatabaseUnavailableError(StoreError):
    """The database cannot serve right now: a SQLite file moved away, a PostgreSQL server
    stopped or out of reach. Callers answer in-protocol (OCSP tryLater, TSA systemFailure,
    HTTP 503) and try again later; the store logs the outage once (ca.store.outage), so they
    do not log it per request."""


class DatabaseBusyError(StoreError):
    """A write waited its bound for a lock another connection holds (a long transaction in
    another process): refused now rather than keep the client waiting longer."""


# --- the platform's clients (OAuth 2.0 client credentials, RFC 6749) ------------------------

class ClientAuthError(TincayError):
    """A relying application could not be authenticated. ``error`` is the OAuth 2.0 / CSC
    error code an HTTP adapter answers with."""

    error = "invalid_client"

    def www_authenticate(self, realm: str = "tincay") -> str:
        """The ``WWW-Authenticate`` challenge a 401 for this refusal carries: Basic for a
        client that failed to authenticate itself (RFC 6749 5.2), Bearer naming the error for
        a refused access token (RFC 6750 3). One wording for every adapter and the CSC core."""
        return f'Basic realm="{realm}"'

    def bearer_challenge(self, realm: str = "tincay") -> str:
        """The RFC 6750 3 challenge, for an API whose way in is a bearer token (a client
        certificate that authenticates no client is refused with it too)."""
        return f'Bearer realm="{realm}", error="{self.error}"'


class InvalidClientError(ClientAuthError):
    """Unknown client id, wrong secret or a disabled client: one message for all three, so a
    caller learns nothing about which it was."""


class InvalidTokenError(ClientAuthError):
    """The bearer token is unknown, revoked, or its client was disabled."""

    error = "invalid_token"

    def www_authenticate(self, realm: str = "tincay") -> str:
        return self.bearer_challenge(realm)


class ExpiredTokenError(InvalidTokenError):
    """The bearer token was valid and has expired: the client asks for a new one."""

    error = "expired_token"


class InvalidClientCertificateError(ClientAuthError):
    """A TLS client certificate that authenticates no client: bound to none, its client
    disabled, expired or not yet valid, or revoked or on hold in tincay's database. One
    ``error`` (invalid_client) for all, as for a wrong secret; the message says which, for
    the operator's log and the client's developer."""


class CertificateBindingError(TincayError):
    """A certificate that cannot be bound to a client (`tincay client bind`): not a
    certificate, a CA's, not for TLS client authentication, not valid now, or not issued."""


# --- remote-signing credentials (CSC API) ---------------------------------------------------

class CredentialRequestError(TincayError, ValueError):
    """A new credential's enrolment data breaks a rule (the user id, the PIN, the clients
    that may use it, multisign). ``field`` names the member at fault, so the registration API
    can say which; the CLI prints the message as for any ValueError."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class CredentialError(TincayError):
    """A remote-signing request the service refuses. ``error`` is the CSC error code and
    ``status`` the HTTP status an adapter answers with; every subclass sets both."""

    error = "invalid_request"
    status = 400


class CredentialNotFoundError(CredentialError):
    """Unknown credential, or one not granted to the calling client: one message for both, so
    a client learns nothing of other clients' credentials."""


class InvalidPinError(CredentialError):
    """The PIN is missing or wrong."""

    error = "invalid_pin"


class InvalidOtpError(CredentialError):
    """The one-time password is missing, wrong, or was already used."""

    error = "invalid_otp"


class CredentialLockedError(CredentialError):
    """Five failed authentications in a row: only an operator unlocks it."""

    error = "access_denied"
    status = 403


class CredentialDisabledError(CredentialError):
    """The credential was disabled, or its certificate is revoked, on hold, expired or was
    never issued."""

    error = "access_denied"
    status = 403


class InvalidSadError(CredentialError):
    """The SAD is unknown, another client's or another credential's, expired, used up, or
    does not cover the hash."""


class UnsupportedAlgorithmError(CredentialError):
    """A hash or signature algorithm the credential does not sign with, or a hash of the
    wrong length for its algorithm."""


# --- the registration API (Idempotency-Key on issuance) -------------------------------------

class IdempotencyKeyReusedError(TincayError):
    """An Idempotency-Key the client already sent with a different request body: the key names
    one request, so a second body under it is refused rather than guessed at."""


class RequestInProgressError(TincayError):
    """A request under the same Idempotency-Key is still being served (by another worker or
    thread): the client retries a moment later and gets that request's certificate."""
