"""What the registration API (ra/) needs beyond issuance, revocation and the listings: issuance
under an Idempotency-Key, certificates with their PEM and chain, and cursor pages of
certificates and audit events.

**Idempotency.** A client that lost the answer to ``POST /api/v1/certificates`` retries with
the same ``Idempotency-Key``; it must get the certificate it already has, never a second one
(an HR system issuing twice leaves a valid certificate nobody holds). The key is claimed first,
in a transaction of its own, by inserting (client, key, body hash) into ``idempotency_keys``,
whose unique constraint is the lock: of two concurrent requests one inserts, the other's
insert fails and it reads the winner's row. The winner then issues, and the transaction that
commits its pending certificate points the claim at it; if issuance is refused the claim is
deleted, so the client can correct the request and use the key again. A claim whose
certificate is signed answers every retry with it; one with another body hash is
IdempotencyKeyReusedError; one not signed yet is a request in progress (RequestInProgressError:
retry), unless it is older than any request lives (STALE_CLAIM: its request died with its
worker), when the next retry revokes its pending serial as never issued and issues anew.

**Cursors.** Pages are in id order, oldest first, and a cursor is the last id served: a
certificate issued meanwhile has a larger id, so it shows on a later page, and none is served
twice or skipped (an offset would shift under inserts, newest-first would bury them).

**Credentials.** A certificate whose key is generated here may be enrolled for remote signing
in the same request (``credential``: holder, initial PIN, the clients that may drive it). Its
rules are checked before anything is issued; the credential is made once the certificate is
signed, and a retry under the same Idempotency-Key answers its id (the otpauth:// URI only
ever in the answer that made it; a lost one is replaced with `tincay credential reset
--new-otp`), or makes it when the first request died between the two.

Every change is an audit event naming the client (``client``, ``client_id``), in the same
transaction as the change (the ``by`` details passed to issuance and revocation).
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Mapping, Protocol, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca.errors import (IdempotencyKeyReusedError, KeyPolicyError, NotFoundError,
                       RequestInProgressError)
from ca.hierarchy import SERVICE_KINDS
from ca.keys.base import KeySpec
from ca.services.context import ServiceContext, authority_certificate
from ca.services.credentials import Credentials
from ca.services.issuance import Issuance
from ca.services.listings import describe_authority, describe_certificate
from ca.services.reconciliation import NEVER_ISSUED_REASON
from ca.services.results import KeySource
from ca.services.revocation import Revocation
from ca.store import queries
from ca.store.models import CERTIFICATE_STATUSES, AuditEvent, Authority, Certificate, \
    IdempotencyKey

MAX_PAGE = 500
# a claim whose certificate is still unsigned this long after it was made is abandoned: no
# request lives that long (gunicorn ends a worker silent for 30 s; HSM and database waits are
# bounded well below it)
STALE_CLAIM = timedelta(minutes=2)
_SERVICE_USAGES = set(SERVICE_KINDS.values())  # OCSPSigning, timeStamping


def _link(session: Session, claim: int, row: Certificate) -> None:
    """The claim points at its certificate from the transaction that commits the pending row:
    a request that dies later leaves a claim that says which serial it was issuing."""
    session.flush()
    found = session.get(IdempotencyKey, claim)
    if found is not None:
        found.certificate_id = row.id


def _pem(der: bytes | None) -> str | None:
    if der is None:
        return None
    return x509.load_der_x509_certificate(der).public_bytes(
        serialization.Encoding.PEM).decode("ascii")


class NewCredential(Protocol):
    """A remote-signing credential to enrol with a certificate issued through the API: its
    holder, initial PIN (hashed at once, never stored or logged as given), the registered
    clients that may drive it, and how many hashes one authorisation may cover (the
    registration API's CredentialRequest is one)."""

    user_id: str
    pin: str
    clients: Sequence[str]
    multisign: int


class Registration:
    """Issue, revoke, hold and release for API clients; read certificates and the audit log a
    page at a time."""

    def __init__(self, context: ServiceContext, issuance: Issuance,
                 revocation: Revocation, credentials: Credentials | None = None) -> None:
        self.context = context
        self.issuance = issuance
        self.revocation = revocation
        self.credentials = credentials

    # --- issuance under an Idempotency-Key -----------------------------------------------

    def issue(self, by: Mapping[str, Any], ca: str, profile: str,
              subject_pairs: Sequence[tuple[str, str]], *,
              csr: x509.CertificateSigningRequest | None = None,
              key_type: KeySpec | None = None, emails: Sequence[str] = (),
              dns_names: Sequence[str] = (), days: int | None = None,
              idempotency_key: str | None = None,
              request_sha256: str | None = None,
              credential: NewCredential | None = None) -> tuple[dict[str, Any], bool]:
        """Issue for the client ``by`` (``client``, ``client_id``); (the certificate's record,
        whether it was already issued under ``idempotency_key``). With ``credential`` (a key
        generated here only), the certificate is also enrolled for remote signing: the record's
        ``credential`` holds its id and the otpauth:// URI, which exists nowhere else after."""
        if credential is not None:
            if self.credentials is None or csr is not None:
                raise KeyPolicyError("a remote-signing credential needs a key generated here")
            self.credentials.check_new(credential.user_id, credential.clients, credential.pin,
                                       credential.multisign)  # before anything is issued
        claim: int | None = None
        if idempotency_key is not None:
            if request_sha256 is None:
                raise ValueError("an idempotency key goes with the request's hash")
            claim, earlier = self._claim(str(by["client_id"]), idempotency_key, request_sha256)
            if earlier is not None:
                return self._enrolled(earlier, credential), True
        if csr is not None:
            source = KeySource(csr=csr)
        else:
            spec = key_type or next(iter(self.context.profiles.get(profile).key_algorithms),
                                    None)
            if spec is None:
                raise KeyPolicyError(f"profile {profile} lists no key algorithm: "
                                      "give key_type")
            source = KeySource(generate=spec)
        details = {**by, "idempotency_key": idempotency_key}
        try:
            issued = self.issuance.issue(
                ca, profile, subject_pairs, source, emails=emails, dns_names=dns_names,
                days=days, requested_by=details,
                on_pending=None if claim is None else lambda session, row: _link(
                    session, claim, row))
        except BaseException:
            if claim is not None:
                self._forget(claim)
            raise
        return self._enrolled(self.certificate(ca, issued.serial_hex), credential), False

    def _enrolled(self, record: dict[str, Any], credential: NewCredential | None
                  ) -> dict[str, Any]:
        """``record`` with its remote-signing credential, enrolled now unless it already is
        (a retry under the same Idempotency-Key: the credential the first request made, whose
        URI was in that answer only; or none yet, when that request died after issuing)."""
        if credential is None or self.credentials is None or record["status"] != "issued":
            return record
        existing = self.credentials.for_certificate(record["ca"], record["serial"])
        if existing is not None:
            return {**record, "credential": {"credential_id": existing.credential_id,
                                             "user_id": existing.user_id, "otpauth_uri": None}}
        info, uri = self.credentials.create(record["serial"], credential.user_id,
                                            credential.clients, credential.pin,
                                            authority=record["ca"],
                                            multisign=credential.multisign)
        return {**record, "credential": {"credential_id": info.credential_id,
                                         "user_id": info.user_id, "otpauth_uri": uri}}

    def _claim(self, client_id: str, key: str, request_sha256: str, *, again: bool = True
               ) -> tuple[int | None, dict[str, Any] | None]:
        """(our claim's id, None), or (None, the certificate an earlier request issued)."""
        try:
            with self.context.transaction() as session:
                row = IdempotencyKey(client_id=client_id, key=key,
                                     request_sha256=request_sha256,
                                     created_at=self.context.clock.now())
                session.add(row)
                session.flush()
                return row.id, None
        except IntegrityError as exc:
            if not queries.is_unique_violation(exc):
                raise
        with self.context.read() as session:  # the loser reads the winner's row
            found = session.scalar(select(IdempotencyKey).where(
                IdempotencyKey.client_id == client_id, IdempotencyKey.key == key))
            if found is None:  # the winner was refused and let the key go: try again
                raise RequestInProgressError("a request with this Idempotency-Key was just "
                                             "refused; send it again")
            if found.request_sha256 != request_sha256:
                raise IdempotencyKeyReusedError("this Idempotency-Key was used with another "
                                                "request body")
            cert = None if found.certificate_id is None else session.get(
                Certificate, found.certificate_id)
            if cert is not None and cert.der is not None:
                return None, self._record(session, cert)
            claim_id, claimed_at = found.id, found.created_at
            pending = None if cert is None else (cert.issuer.name, cert.serial_hex)
        if not again or self.context.clock.now() - claimed_at < STALE_CLAIM:
            raise RequestInProgressError("a request with this Idempotency-Key is still being "
                                         "served; retry shortly")
        return self._take_over(client_id, key, request_sha256, claim_id, pending)

    def _take_over(self, client_id: str, key: str, request_sha256: str, claim_id: int,
                   pending: tuple[str, str] | None) -> tuple[int | None, dict[str, Any] | None]:
        """A claim older than any request lives (STALE_CLAIM) whose certificate was never
        signed: its request ended mid-way (a worker killed). Its pending serial is revoked as
        never issued (as `tincay reconcile` would), the claim let go, and claimed anew; a
        serial signed meanwhile after all is the answer."""
        if pending is not None and self.revocation.revoke_never_issued(
                *pending, NEVER_ISSUED_REASON, via="api") is None:
            with self.context.read() as session:
                cert = queries.get_certificate(session, queries.get_authority(
                    session, pending[0]), pending[1])
                if cert.der is not None:
                    return None, self._record(session, cert)
        with self.context.transaction() as session:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == claim_id))
        return self._claim(client_id, key, request_sha256, again=False)

    def _forget(self, claim: int) -> None:
        with self.context.transaction() as session:
            row = session.get(IdempotencyKey, claim)
            if row is not None:
                session.delete(row)

    # --- revocation, hold, release ------------------------------------------------------

    def revoke(self, by: Mapping[str, Any], ca: str, serial: str, reason: str,
               invalidity_date: Any = None) -> dict[str, Any]:
        self.revocation.revoke(ca, serial, reason, invalidity_date=invalidity_date, by=by)
        return self.certificate(ca, serial)

    def release(self, by: Mapping[str, Any], ca: str, serial: str) -> dict[str, Any]:
        self.revocation.release_hold(ca, serial, by=by)
        return self.certificate(ca, serial)

    # --- reading ------------------------------------------------------------------------

    def certificate(self, ca: str, serial: str) -> dict[str, Any]:
        """The record of ``ca``'s certificate ``serial``, with its PEM and CA chain;
        NotFoundError for a serial ``ca`` never issued (another CA's included)."""
        with self.context.read() as session:
            authority = queries.get_authority(session, ca)
            return self._record(session, queries.get_certificate(session, authority, serial))

    def _record(self, session: Session, cert: Certificate) -> dict[str, Any]:
        chain: list[str] = []
        authority: Authority | None = cert.issuer
        while authority is not None:
            chain.append(authority_certificate(authority).public_bytes(
                serialization.Encoding.PEM).decode("ascii"))
            authority = authority.parent
        record = describe_certificate(cert)
        return {**_summary(record), "certificate": _pem(cert.der), "chain": chain,
                "key_uri": cert.key_uri}

    def certificates(self, *, after: int = 0, limit: int = 100, ca: str | None = None,
                     profile: str | None = None, status: str | None = None,
                     cas: Sequence[str] | None = None,
                     profiles: Sequence[str] | None = None
                     ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of certificates with ids past ``after``, oldest first, and the cursor of
        the next page (None on the last). ``cas``/``profiles``: the caller's scope (None: all)."""
        if status is not None and status not in CERTIFICATE_STATUSES:
            raise NotFoundError(f"status {status!r} is not one of "
                                f"{', '.join(CERTIFICATE_STATUSES)}")
        limit = max(1, min(limit, MAX_PAGE))
        query = (select(Certificate).join(Authority, Certificate.issuer_id == Authority.id)
                 .where(Certificate.id > after))
        if ca is not None:
            query = query.where(Authority.name == ca)
        if cas is not None:
            query = query.where(Authority.name.in_(list(cas)))
        if profile is not None:
            query = query.where(Certificate.profile == profile)
        if profiles is not None:
            query = query.where(Certificate.profile.in_(list(profiles)))
        if status is not None:
            query = query.where(Certificate.status == status)
        with self.context.read() as session:
            if ca is not None:
                queries.get_authority(session, ca)  # NotFoundError for a CA that is not
            rows = session.scalars(query.order_by(Certificate.id).limit(limit + 1)).all()
            page = [_summary(describe_certificate(row)) for row in rows[:limit]]
            return page, rows[limit - 1].id if len(rows) > limit else None

    def events(self, *, after: int = 0, limit: int = 100
               ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the audit log past ``after``, oldest first, and the next cursor."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.context.read() as session:
            rows = session.scalars(select(AuditEvent).where(AuditEvent.id > after)
                                   .order_by(AuditEvent.id).limit(limit + 1)).all()
            page = [{"id": e.id, "at": e.at, "action": e.action, "authority": e.authority,
                     "serial": e.serial_hex, "subject": e.subject,
                     "details": json.loads(e.details) if e.details else None}
                    for e in rows[:limit]]
            return page, rows[limit - 1].id if len(rows) > limit else None

    def authorities(self) -> list[dict[str, Any]]:
        """The CAs, each with its certificate's PEM."""
        with self.context.read() as session:
            return [{**describe_authority(a),
                     "certificate": _pem(a.certificate.der if a.certificate else None)}
                    for a in queries.list_authorities(session)]

    def profiles(self) -> list[dict[str, Any]]:
        """The subscribers' profiles one may issue from. CA and self-signed ones are
        ``tincay init``'s, and the service units' (OCSPSigning, timeStamping) too: an API
        client that could have a delegated OCSP responder certified for a key it holds could
        sign "good" for any serial of the CA, and one with a time-stamp unit backdate
        signatures."""
        out = []
        for profile in self.context.profiles:
            if profile.abstract or profile.self_signed or (
                    profile.basic_constraints and profile.basic_constraints.ca) or (
                    _SERVICE_USAGES & set(profile.extended_key_usage)):
                continue
            out.append({"name": profile.name, "description": profile.description,
                        "key_algorithms": [str(k) for k in profile.key_algorithms],
                        "max_days": profile.validity.max_days,
                        "email_san": profile.email_san, "dns_san": profile.dns_san,
                        "subject": [{"name": r.name, "required": r.required}
                                    for r in profile.subject]})
        return out

    def has_authority(self, name: str) -> bool:
        with self.context.read() as session:
            return queries.find_authority(session, name) is not None


def _summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"ca": record["issuer"], "serial": record["serial"], "status": record["status"],
            "profile": record["profile"], "subject": record["subject"],
            "not_before": record["not_before"], "not_after": record["not_after"],
            "revoked_at": record["revoked_at"],
            "revocation_reason": record["revocation_reason"]}
