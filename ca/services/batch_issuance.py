"""The rows of ``tincay issue --batch``, a chunk at a time (ca.services.batch runs the file):
checked, claimed, prepared, persisted in one transaction, signed, recorded in a second.

Every row is claimed in ``idempotency_keys`` under the client ``operator`` with a key derived
from the CA, the row's number and its content, in the same transaction as its pending
certificate row: that is what makes a rerun resume (ca.services.batch says how).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ca import issuance as core
from ca.errors import (AlreadyExistsError, CSRError, KeyBackendError, KeyPolicyError,
                       SubjectError, TincayError, UnsupportedKeyError)
from ca.issuance import CertificateRequest, IssuerInfo, PreparedCertificate
from ca.issuance.checks import check_dns_names, check_emails
from ca.keys.base import KeySpec, PublicKey
from ca.profiles import Profile
from ca.services.batch_files import (IssueRow, RawRow, RowError, RowResult, csr_bytes,
                                     dump_row, validate)
from ca.services.context import ServiceContext, as_json, not_after
from ca.services.issuance import Issuance
from ca.services.reconciliation import NEVER_ISSUED_REASON
from ca.services.revocation import Revocation
from ca.store import chain_store, queries
from ca.store.models import ISSUED, PENDING, Certificate, IdempotencyKey
from ca.subject import build_name, format_name, parse_subject

OPERATOR = "operator"  # the claims' client id: the CA operator at the CLI
CHUNK = 200  # rows per pair of transactions
_ATTEMPTS = 3  # a serial collision (2^-159) or a concurrent run's claim: prepare again


@dataclass
class _Request:
    """A row that passed its checks, on its way to a certificate."""

    number: int
    claim: str
    digest: str
    profile: Profile
    subject: x509.Name
    subject_text: str
    emails: tuple[str, ...]
    dns_names: tuple[str, ...]
    days: int | None
    public_key: PublicKey | None = None  # None until a key_type row's key is generated
    spec: KeySpec | None = None
    key_uri: str | None = None
    prepared: PreparedCertificate | None = None
    cert_id: int | None = None


class RowIssuance:
    """Issues the rows of a batch file a chunk at a time, resumably."""

    def __init__(self, context: ServiceContext, issuance: Issuance,
                 revocation: Revocation) -> None:
        self.context = context
        self.issuance = issuance
        self.revocation = revocation

    def issue_rows(self, ca: str, rows: Iterable[RawRow], base: Path, *, chunk: int = CHUNK,
                   batch: str = "-") -> Iterator[list[RowResult]]:
        """The results of each chunk of ``rows``, in row order, once the chunk is committed."""
        with self.context.read() as session:
            authority = queries.get_authority(session, ca)
            issuer_id = authority.id
            issuer = self.context.issuer_info(authority)  # the key found once per batch
        urls = self.context.urls(issuer)
        pending: list[RawRow] = []
        for raw in rows:
            pending.append(raw)
            if len(pending) >= chunk:
                yield self._issue_chunk(ca, issuer_id, issuer, urls, pending, base, batch)
                pending = []
        if pending:
            yield self._issue_chunk(ca, issuer_id, issuer, urls, pending, base, batch)

    def _issue_chunk(self, ca: str, issuer_id: int, issuer: IssuerInfo, urls: core.Urls | None,
                     rows: list[RawRow], base: Path, batch: str) -> list[RowResult]:
        results: dict[int, RowResult] = {}
        requests: list[_Request] = []
        for raw in rows:
            try:
                requests.append(self._check(ca, raw, base))
            except RowError as exc:
                results[raw.number] = RowResult(raw.number, "error", field=exc.field,
                                                error=exc.message)
        for attempt in range(_ATTEMPTS):
            todo, stale = self._claimed(ca, requests, results)
            todo = [r for r in todo if self._dry_run(r, issuer, urls, results)]
            todo = self._generate_keys(issuer.name, todo, results)
            todo = [r for r in todo if self._prepare(r, issuer, urls, results)]
            try:
                self._persist(ca, issuer_id, todo, stale, batch)
                break
            except AlreadyExistsError:
                if attempt == _ATTEMPTS - 1:
                    raise
                requests = todo
        self._sign_and_record(ca, issuer, todo, batch, results)
        return [results[raw.number] for raw in rows]

    def _check(self, ca: str, raw: RawRow, base: Path) -> _Request:
        """Everything about a row that needs no key and no database: RowError naming the
        field at fault."""
        if raw.unreadable is not None:
            raise RowError("row", raw.unreadable)
        row: IssueRow = validate(IssueRow, raw.fields)
        if (row.csr is None) == (row.key_type is None):
            raise RowError("key_type" if row.key_type else "csr",
                           "give exactly one of csr and key_type")
        profile = _field("profile", lambda: self.context.profiles.get(row.profile))
        if profile.self_signed or (profile.basic_constraints and profile.basic_constraints.ca):
            raise RowError("profile", f"profile {profile.name} is for CAs: use tincay init")
        subject = _field("subject", lambda: build_name(profile, parse_subject(row.subject)))
        emails = _field("email", lambda: check_emails(profile, tuple(row.email)))
        dns_names = _field("dns", lambda: check_dns_names(profile, tuple(row.dns)))
        content = dump_row(raw.fields)
        digest = hashlib.sha256(content.encode()).hexdigest()
        claim = "batch:" + hashlib.sha256(f"{ca}\n{raw.number}\n{content}".encode()).hexdigest()
        request = _Request(raw.number, claim, digest, profile, subject, format_name(subject),
                           emails, dns_names, row.days)
        if row.csr is not None:
            csr = _field("csr", lambda: core.load_csr(csr_bytes(row.csr or "", base)))
            request.public_key = csr.public_key()  # type: ignore[assignment]
            _field("csr", lambda: core.check_key(profile, request.public_key))  # type: ignore[arg-type]
        else:
            spec = _field("key_type", lambda: KeySpec.parse(row.key_type or ""))
            if not profile.allows_key(spec):
                raise RowError("key_type", f"key_type: profile {profile.name} does not allow "
                                           f"{spec} keys")
            request.spec = spec
        return request

    def _claimed(self, ca: str, requests: list[_Request], results: dict[int, RowResult]
                 ) -> tuple[list[_Request], list[int]]:
        """The requests not issued before, and the claims to let go of (their certificate
        never signed: its pending serial is revoked as never issued here)."""
        if not requests:
            return [], []
        with self.context.read() as session:
            found = {key: (claim_id, serial, status, has_der) for key, claim_id, serial, status,
                     has_der in session.execute(
                         select(IdempotencyKey.key, IdempotencyKey.id, Certificate.serial_hex,
                                Certificate.status, Certificate.der.is_not(None))
                         .outerjoin(Certificate, IdempotencyKey.certificate_id == Certificate.id)
                         .where(IdempotencyKey.client_id == OPERATOR,
                                IdempotencyKey.key.in_([r.claim for r in requests])))}
        todo, stale = [], []
        for request in requests:
            earlier = found.get(request.claim)
            if earlier is None:
                todo.append(request)
                continue
            claim_id, serial, status, has_der = earlier
            if has_der:
                results[request.number] = RowResult(request.number, "already-issued", serial)
                continue
            if status == PENDING and self.revocation.revoke_never_issued(
                    ca, serial, NEVER_ISSUED_REASON, via="batch") is None \
                    and self._signed(ca, serial):
                # not pending any more: a concurrent run of the file signed it just now
                results[request.number] = RowResult(request.number, "already-issued", serial)
                continue
            stale.append(claim_id)  # its certificate never signed: issue the row again
            todo.append(request)
        return todo, stale

    def _signed(self, ca: str, serial: str) -> bool:
        with self.context.read() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            return row.der is not None

    def _dry_run(self, request: _Request, issuer: IssuerInfo, urls: core.Urls | None,
                 results: dict[int, RowResult]) -> bool:
        """A key_type row checked with a placeholder key before its key is made (a refused
        row never leaves a key behind); False if refused. CSR rows pass: :meth:`_prepare`
        checks them."""
        if request.public_key is not None:
            return True
        assert request.spec is not None
        return self._refusing(request, results, lambda now, until: self.issuance.dry_run(
            request.profile, request.subject, request.spec, issuer, issuer.name, urls, now,  # type: ignore[arg-type]
            until, request.emails, request.dns_names))

    def _generate_keys(self, ca: str, requests: list[_Request],
                       results: dict[int, RowResult]) -> list[_Request]:
        """The keys of the key_type rows, generated on the HSM and stored wrapped, in one
        transaction for the chunk; the requests left (a key the token cannot make or wrap
        refuses its row, on ``key_type``)."""
        waiting = [r for r in requests if r.public_key is None]
        keys = self.issuance.subscriber_keys
        try:
            made = keys.generate_many([r.spec for r in waiting],  # type: ignore[misc]
                                      authority=ca) if waiting else []
        except UnsupportedKeyError:  # one at a time, to name the rows
            made = []
            for request in waiting:
                try:
                    made.append(keys.generate(request.spec, authority=ca))  # type: ignore[arg-type]
                except UnsupportedKeyError as exc:
                    results[request.number] = _error(request, "key_type", exc)
            waiting = [r for r in waiting if r.number not in results]
        for request, key in zip(waiting, made):
            request.public_key, request.key_uri = key.public_key, key.uri
        return [r for r in requests if r.number not in results]

    def _prepare(self, request: _Request, issuer: IssuerInfo, urls: core.Urls | None,
                 results: dict[int, RowResult]) -> bool:
        """The TBSCertificate of ``request``; False if refused."""
        def prepare(now: Any, until: Any) -> None:
            request.prepared = core.prepare(CertificateRequest(
                request.profile, request.subject, request.public_key,  # type: ignore[arg-type]
                serial=core.new_serial(), not_before=now, not_after=until,
                emails=request.emails, dns_names=request.dns_names), issuer, urls)
        return self._refusing(request, results, prepare)

    def _refusing(self, request: _Request, results: dict[int, RowResult],
                  step: Callable[[Any, Any], None]) -> bool:
        """``step(now, notAfter)``; False, with the row's error naming its field, if it
        refuses the row."""
        now = self.context.clock.now()
        try:
            step(now, not_after(now, request.days))
            return True
        except KeyPolicyError as exc:
            results[request.number] = _error(request, "csr" if request.spec is None
                                             else "key_type", exc)
        except (SubjectError, CSRError) as exc:
            results[request.number] = _error(request, "subject", exc)
        except KeyBackendError:
            raise
        except TincayError as exc:  # validity beyond the profile or the issuer, mostly
            text = str(exc)
            results[request.number] = _error(
                request, "days" if "notAfter" in text or "validity" in text else "profile", exc)
        return False

    def _persist(self, ca: str, issuer_id: int, requests: list[_Request], stale: list[int],
                 batch: str) -> None:
        """One transaction: the pending rows, their claims and ``certificate.prepare`` events.
        AlreadyExistsError if a serial or a claim was taken meanwhile."""
        if not requests and not stale:
            return
        now = self.context.clock.now()
        try:
            with self.context.transaction() as session:
                if stale:
                    session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(stale)))
                if not requests:
                    return
                certificates = Certificate.__table__
                ids = session.execute(
                    insert(certificates).returning(certificates.c.id,
                                                   sort_by_parameter_order=True),
                    [_pending_row(issuer_id, r, now) for r in requests]).scalars().all()
                for request, cert_id in zip(requests, ids):
                    request.cert_id = cert_id
                session.execute(insert(IdempotencyKey.__table__), [
                    {"client_id": OPERATOR, "key": r.claim, "request_sha256": r.digest,
                     "certificate_id": r.cert_id, "created_at": now} for r in requests])
                chain_store.defer(session, "audit", [
                    _event(now, "certificate.prepare", ca, r, batch,
                           tbs_sha256=hashlib.sha256(_prepared(r).tbs_der).hexdigest())
                    for r in requests])
        except IntegrityError as exc:
            if not queries.is_unique_violation(exc):
                raise
            raise AlreadyExistsError("a serial or a row's claim was taken meanwhile") from None

    def _sign_and_record(self, ca: str, issuer: IssuerInfo, requests: list[_Request],
                         batch: str, results: dict[int, RowResult]) -> None:
        """Sign what was persisted, then record the certificates in one transaction (or the
        failure of a signature that does not verify)."""
        signed: list[tuple[_Request, bytes]] = []
        failed: list[tuple[_Request, TincayError]] = []
        for request in requests:
            try:
                cert = core.sign(_prepared(request), issuer)
            except KeyBackendError:
                raise  # the HSM: the batch stops, its pending rows resume on the rerun
            except TincayError as exc:
                failed.append((request, exc))
                continue
            signed.append((request, cert.public_bytes(serialization.Encoding.DER)))
        if not requests:
            return
        now = self.context.clock.now()
        table = Certificate.__table__
        with self.context.transaction() as session:
            if signed:
                session.execute(
                    update(table).where(table.c.id == bindparam("b_id"),
                                        table.c.status == PENDING)
                    .values(der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fp"),
                            status=ISSUED, issued_at=now),
                    [{"b_id": r.cert_id, "b_der": der,
                      "b_fp": hashlib.sha256(der).hexdigest()} for r, der in signed])
                recorded = dict(session.execute(
                    select(Certificate.id, Certificate.fingerprint_sha256)
                    .where(Certificate.id.in_([r.cert_id for r, _ in signed]))).all())
            events = []
            for request, der in signed:
                fingerprint = hashlib.sha256(der).hexdigest()
                serial = _prepared(request).serial_hex
                if recorded.get(request.cert_id) != fingerprint:  # revoked as never issued
                    results[request.number] = RowResult(
                        request.number, "error", serial, "row",
                        f"certificate {serial} was revoked meanwhile: its signature is not "
                        "recorded; run the batch again")
                    continue
                events.append(_event(now, "certificate.issue", ca, request, batch,
                                     fingerprint_sha256=fingerprint))
                results[request.number] = RowResult(request.number, "issued", serial)
            for request, exc in failed:
                session.execute(update(table).where(table.c.id == request.cert_id)
                                .values(status="failed", failure=str(exc)[:2000]))
                events.append(_event(now, "certificate.fail", ca, request, batch,
                                     error=str(exc)))
                results[request.number] = _error(request, "ca", exc)
            chain_store.defer(session, "audit", events)



def _field(name: str, check: Callable[[], Any]) -> Any:
    """``check()``, its refusal as a RowError naming ``name``."""
    try:
        return check()
    except (TincayError, ValueError) as exc:
        if isinstance(exc, RowError):
            raise
        raise RowError(name, f"{name}: {exc}") from None


def _error(request: _Request, name: str, exc: Exception) -> RowResult:
    return RowResult(request.number, "error", field=name, error=f"{name}: {exc}")


def _prepared(request: _Request) -> PreparedCertificate:
    assert request.prepared is not None
    return request.prepared


def _pending_row(issuer_id: int, request: _Request, now: Any) -> dict[str, Any]:
    prepared = _prepared(request)
    san = list(request.emails) + list(request.dns_names)
    return {"issuer_id": issuer_id, "serial_hex": prepared.serial_hex, "status": PENDING,
            "profile": prepared.profile_name, "subject": request.subject_text,
            "san": san or None, "not_before": prepared.not_before,
            "not_after": prepared.not_after, "tbs_der": prepared.tbs_der,
            "key_uri": request.key_uri, "created_at": now}


def _event(now: Any, action: str, ca: str, request: _Request, batch: str,
           **details: Any) -> dict[str, Any]:
    """An audit event of a batch row, naming the operator, the file, the row and its claim."""
    prepared = _prepared(request)
    return {"at": now, "action": action, "authority": ca, "serial_hex": prepared.serial_hex,
            "subject": request.subject_text,
            "details": as_json({"profile": prepared.profile_name, **details,
                                "client": OPERATOR, "batch": batch, "row": request.number,
                                "idempotency_key": request.claim})}
