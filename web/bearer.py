"""Bearer tokens on the HTTP APIs (RFC 6750): the one parse of ``Authorization: Bearer x``
every JSON adapter shares (web/csc.py, the registration API), so each answers a missing or
garbled header the same way.

The token itself is checked by ca.services.clients.Clients.verify, against the database, so a
token granted by one worker (or host) is honoured, and revoked, by all.
"""
from __future__ import annotations

import re
from typing import Protocol

from ca.errors import ClientAuthError, InvalidTokenError
from ca.services.clients import ClientInfo, PendingToken

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *$")
_MAX_HEADER = 4096


class TokenVerifier(Protocol):
    """What bearer_client needs of ca.services.clients.Clients."""

    def verify(self, token: str) -> ClientInfo: ...

    def pending(self, token: str) -> PendingToken: ...


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; InvalidTokenError for a
    missing header, another scheme or a token that is not a b64token."""
    if not authorization_header or len(authorization_header) > _MAX_HEADER:
        raise InvalidTokenError("a bearer access token is required")
    match = _BEARER.match(authorization_header)
    if match is None:
        raise InvalidTokenError("the Authorization header must be 'Bearer <access token>'")
    return match.group(1)


def bearer_client(clients: TokenVerifier, authorization_header: str | None) -> ClientInfo:
    """The active client whose bearer token the header carries. Raises the
    ca.errors.ClientAuthError subclasses: InvalidTokenError (missing, garbled, unknown,
    revoked, client disabled) or ExpiredTokenError; each has ``.error`` for the body."""
    return clients.verify(bearer_token(authorization_header))


def challenge(exc: ClientAuthError, realm: str = "tincay") -> tuple[int, dict[str, str],
                                                                   dict[str, str]]:
    """The 401 an adapter answers a refused token with (RFC 6750 3): status, JSON body
    ({"error", "error_description"}) and the WWW-Authenticate header."""
    return 401, {"error": exc.error, "error_description": str(exc)}, {
        "WWW-Authenticate": exc.bearer_challenge(realm)}
