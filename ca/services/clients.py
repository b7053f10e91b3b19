"""The platform's registered clients and their short-lived bearer tokens.

One registry for every HTTP API tincay serves (remote signing now, the registration API next):
the operator registers an application (`tincay client add`), which gets a client id and a
secret shown once; it trades them for bearer tokens (OAuth 2.0 client credentials, RFC 6749
4.4) and presents those. Secrets and tokens are 256 random bits kept only as SHA-256 hashes,
and tokens live in the database so every worker on every host honours (and revokes) them.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Callable, Sequence

from sqlalchemy import bindparam, select

from ca.errors import (AlreadyExistsError, ExpiredTokenError, InvalidClientCertificateError,
                       InvalidClientError, InvalidTokenError, NotFoundError)
from ca.services import client_bindings
from ca.services.client_bindings import CertificateBinding
from ca.services.context import ServiceContext, as_json
from ca.store import queries
from ca.store.hot import HotQuery
from ca.store.models import AccessToken, ApiClient

DEFAULT_TOKEN_LIFETIME = timedelta(minutes=10)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN_PREFIX = "tct_"


@dataclass(frozen=True)
class ClientInfo:
    """A registered client as services and HTTP adapters see it (never its secret)."""

    client_id: str
    name: str
    status: str
    role: str | None
    cas: tuple[str, ...]
    profiles: tuple[str, ...]
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class PendingToken:
    """A bearer token whose check is left to the call it authorises: signHash checks it in
    the query of its own transaction (ca.services.sign_path) instead of a query of its own
    first; any other outcome asks :meth:`client`, which is ``Clients.verify``'s answer
    (InvalidTokenError, ExpiredTokenError)."""

    token: str
    verify: Callable[[str], ClientInfo]

    @cached_property
    def token_hash(self) -> str:
        return secret_digest(self.token)

    def client(self) -> ClientInfo:
        return self.verify(self.token)


@dataclass(frozen=True)
class RegisteredClient:
    """What `tincay client add` prints once: the secret exists nowhere else afterwards."""

    client: ClientInfo
    client_secret: str


@dataclass(frozen=True)
class AccessGrant:
    """An OAuth 2.0 token response (RFC 6749 5.1)."""

    access_token: str
    expires_in: int
    token_type: str = "Bearer"


def secret_digest(secret: str) -> str:
    """How a 256-bit random secret (client secret, bearer token, SAD) is kept: its SHA-256,
    hex; a fast hash is enough for secrets no person chose."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _info(row: ApiClient) -> ClientInfo:
    return ClientInfo(row.client_id, row.name, row.status, row.role, tuple(row.cas or ()),
                      tuple(row.profiles or ()), row.created_at)


class Clients:
    """Register, list and disable clients; authenticate them; issue and check their tokens."""

    def __init__(self, context: ServiceContext,
                 token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME) -> None:
        self.context = context
        self.token_lifetime = token_lifetime

    # --- the registry (operator commands) ------------------------------------------------

    def add(self, name: str, *, role: str | None = None, cas: Sequence[str] = (),
            profiles: Sequence[str] = (), certificate: bytes | None = None) -> RegisteredClient:
        """Register ``name``; the returned secret is the only copy there will ever be. With
        ``certificate`` (DER), bound to it in the same transaction (:meth:`bind_certificate`),
        so a certificate refused leaves no client behind."""
        if not _NAME.match(name):
            raise ValueError(f"client name {name!r}: letters, digits, '.', '_' or '-', "
                             "at most 64, starting with a letter or digit")
        secret = secrets.token_urlsafe(32)
        now = self.context.clock.now()
        with self.context.transaction() as session:
            if session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
                raise AlreadyExistsError(f"client {name} already exists")
            row = ApiClient(client_id=secrets.token_hex(16), name=name,
                            secret_hash=secret_digest(secret), status="active", role=role,
                            cas=list(cas) or None, profiles=list(profiles) or None,
                            created_at=now)
            session.add(row)
            session.flush()
            queries.record_event(session, at=now, action="client.add", details=as_json(
                {"client": name, "client_id": row.client_id, "role": role,
                 "cas": list(cas), "profiles": list(profiles)}))
            if certificate is not None:
                client_bindings.bind(session, row, certificate, now)
            return RegisteredClient(_info(row), secret)

    def list(self) -> list[ClientInfo]:
        with self.context.transaction() as session:
            return [_info(row) for row in
                    session.scalars(select(ApiClient).order_by(ApiClient.name))]

    def get(self, name_or_id: str) -> ClientInfo:
        with self.context.transaction() as session:
            return _info(self._row(session, name_or_id))

    def disable(self, name_or_id: str) -> ClientInfo:
        """Refuse the client from now on: its secret and every token it holds stop working."""
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = self._row(session, name_or_id)
            if row.status != "disabled":
                row.status, row.disabled_at = "disabled", now
                queries.record_event(session, at=now, action="client.disable",
                                     details=as_json({"client": row.name,
                                                      "client_id": row.client_id}))
            return _info(row)

    @staticmethod
    def _row(session: object, name_or_id: str) -> ApiClient:
        row = session.scalar(select(ApiClient).where(  # type: ignore[attr-defined]
            (ApiClient.name == name_or_id) | (ApiClient.client_id == name_or_id)))
        if row is None:
            raise NotFoundError(f"no client named {name_or_id}")
        return row

    # --- authentication (the HTTP adapters) -----------------------------------------------

    def authenticate(self, client_id: str, client_secret: str) -> ClientInfo:
        """The active client these credentials name, or InvalidClientError (one message
        whether the id is unknown, the secret wrong or the client disabled)."""
        with self.context.transaction() as session:
            row = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
            stored = row.secret_hash if row is not None else secret_digest("")
            matches = hmac.compare_digest(stored, secret_digest(client_secret))
            if row is None or not matches or row.status != "active":
                raise InvalidClientError("client authentication failed")
            return _info(row)

    def grant(self, client_id: str, client_secret: str) -> AccessGrant:
        """The client-credentials grant: a new bearer token for an authenticated client."""
        client = self.authenticate(client_id, client_secret)
        return self._mint(client)

    def _mint(self, client: ClientInfo) -> AccessGrant:
        """A new bearer token for an authenticated client, kept as its hash."""
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = session.scalar(select(ApiClient).where(ApiClient.client_id == client.client_id))
            session.add(AccessToken(token_hash=secret_digest(token), client_pk=row.id,
                                    issued_at=now, expires_at=now + self.token_lifetime))
        return AccessGrant(token, int(self.token_lifetime.total_seconds()))

    def verify(self, token: str) -> ClientInfo:
        """The active client holding ``token``; InvalidTokenError, or ExpiredTokenError when
        it was good and has run out.

        Asked of the database at every call (no cache: a revoked token or a disabled client is
        refused by every worker at once), as one prebuilt query on a kept connection
        (ca.store.hot) rather than an ORM transaction: it runs before every CSC call."""
        now = self.context.clock.now()
        row = self._verify_query.first({"token_hash": secret_digest(token)})
        if row is None:
            raise InvalidTokenError("the access token is not valid")
        revoked_at, expires_at, client_id, name, status, role, cas, profiles, created_at = row
        if revoked_at is not None or status != "active":
            raise InvalidTokenError("the access token is not valid")
        if expires_at <= now:
            raise ExpiredTokenError("the access token has expired")
        return ClientInfo(client_id, name, status, role, tuple(cas or ()), tuple(profiles or ()),
                          created_at)

    def pending(self, token: str) -> PendingToken:
        """``token`` to be checked by the call it authorises (signHash, see PendingToken)."""
        return PendingToken(token, self.verify)

    @cached_property
    def _verify_query(self) -> HotQuery:
        return self.context.hot_query(
            select(AccessToken.revoked_at, AccessToken.expires_at, ApiClient.client_id,
                   ApiClient.name, ApiClient.status, ApiClient.role, ApiClient.cas,
                   ApiClient.profiles, ApiClient.created_at)
            .join(ApiClient, ApiClient.id == AccessToken.client_pk)
            .where(AccessToken.token_hash == bindparam("token_hash")))

    def revoke(self, token: str) -> bool:
        """End ``token`` now (CSC auth/revoke, RFC 7009); whether it was a live token."""
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = session.scalar(select(AccessToken).where(
                AccessToken.token_hash == secret_digest(token)))
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = now
            return True

    def purge_expired(self, before: datetime) -> int:
        """Delete tokens that ended by ``before`` (a maintenance pass keeps the table small)."""
        with self.context.transaction() as session:
            rows = session.scalars(select(AccessToken).where(AccessToken.expires_at <= before))
            count = 0
            for row in rows:
                session.delete(row)
                count += 1
            return count

    # --- TLS client certificates (RFC 8705; ca/services/client_bindings.py) ----------------

    def bind_certificate(self, name_or_id: str, *, der: bytes | None = None,
                         ca: str | None = None, serial: str | None = None) -> CertificateBinding:
        """Let the client authenticate with a TLS client certificate: ``der``, or tincay's
        certificate ``serial`` of CA ``ca``. CertificateBindingError for one no TLS client
        could log in with, AlreadyExistsError if it is bound (to any client) already."""
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = self._row(session, name_or_id)
            if der is None:
                der = client_bindings.tincay_der(session, ca or "", serial or "")
            return client_bindings.bind(session, row, der, now)

    def unbind_certificate(self, name_or_id: str, *, der: bytes | None = None,
                           ca: str | None = None, serial: str | None = None,
                           fingerprint: str | None = None) -> CertificateBinding:
        """End a binding, named by the certificate (``der``, or ``ca`` and ``serial``) or by
        its SHA-256 ``fingerprint``; the certificate itself stays valid."""
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = self._row(session, name_or_id)
            if fingerprint is not None:
                digest = client_bindings.normalize_fingerprint(fingerprint)
            else:
                digest = client_bindings.fingerprint(der if der is not None else
                                                     client_bindings.tincay_der(
                                                         session, ca or "", serial or "",
                                                         issued=False))
            return client_bindings.unbind(session, row, digest, now)

    def certificate_bindings(self, name_or_id: str | None = None) -> list[CertificateBinding]:
        """The certificates bound to one client, or to every client."""
        with self.context.transaction() as session:
            row = self._row(session, name_or_id) if name_or_id is not None else None
            return client_bindings.bindings(session, row)

    def by_certificate(self, der: bytes) -> ClientInfo:
        """The active client bound to the TLS client certificate ``der`` (what the handshake
        verified), or InvalidClientCertificateError: bound to none, its client disabled,
        expired, or revoked or on hold in tincay's database. One prebuilt query per call, as
        :meth:`verify`: a revocation, a hold or a disabled client is refused at once."""
        now = self.context.clock.now()
        row = self._bound_query.first({"fingerprint": client_bindings.fingerprint(der)})
        reason = client_bindings.refusal(row, now)
        if reason is not None or row is None:
            raise InvalidClientCertificateError(reason)
        client_id, name, status, role, cas, profiles, created_at = row[2:9]
        return ClientInfo(client_id, name, status, role, tuple(cas or ()), tuple(profiles or ()),
                          created_at)

    def grant_by_certificate(self, client_id: str, der: bytes) -> AccessGrant:
        """The client-credentials grant for a client that authenticated with its TLS client
        certificate (RFC 8705 2.1 tls_client_auth): ``der`` must be bound to ``client_id``;
        InvalidClientCertificateError otherwise (:meth:`by_certificate`'s refusals, or a
        certificate bound to another client)."""
        client = self.by_certificate(der)
        if not hmac.compare_digest(client.client_id.encode(), client_id.encode()):
            raise InvalidClientCertificateError("the client certificate is bound to another "
                                                "client")
        return self._mint(client)

    @cached_property
    def _bound_query(self) -> HotQuery:
        return self.context.hot_query(client_bindings.BOUND_CLIENT_QUERY)
