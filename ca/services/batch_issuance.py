"""The rows of ``tincay issue --batch``, a chunk at a time (ca.services.batch runs the file):
checked, claimed, prepared, persisted in one transaction, signed, recorded in a second.

Every row is claimed in ``idempotency_keys`` under the client ``operator`` with a key derived
from the CA, the row's number and its content, in the same transaction as its pending
certificate row: that is what makes a rerun resume (ca.services.batch says how).

The pure part of a row (ca.services.batch_rows: its checks, the CSR's signature, its
TBSCertificate) runs in worker processes two chunks ahead (ca.services.batch_workers,
TINCAY_BATCH_WORKERS) from row WORKERS_AFTER on, so a small batch starts no process; the
claims, the transactions and the HSM stay here.
"""
from __future__ import annotations

import hashlib
import itertools
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ca import issuance as core
from ca.errors import AlreadyExistsError, KeyBackendError, TincayError, UnsupportedKeyError
from ca.issuance import IssuerInfo, PreparedCertificate
from ca.services.batch_files import RawRow, RowError, RowResult
from ca.services.batch_rows import Request, check_row, prepare_row, refusing, row_error
from ca.services.batch_workers import Checked, Part, RowWorkers
from ca.services.context import ServiceContext, as_json
from ca.services.issuance import Issuance
from ca.services.reconciliation import NEVER_ISSUED_REASON
from ca.services.revocation import Revocation
from ca.settings import batch_workers
from ca.store import chain_store, queries
from ca.store.models import ISSUED, PENDING, Certificate, IdempotencyKey

OPERATOR = "operator"  # the claims' client id: the CA operator at the CLI
CHUNK = 200  # rows per pair of transactions
_ATTEMPTS = 3  # a serial collision (2^-159) or a concurrent run's claim: prepare again
WORKERS_AFTER = 2000  # rows issued in this process before the workers start
_AHEAD = 2  # chunks the workers check and prepare ahead of the one being committed


class RowIssuance:
    """Issues the rows of a batch file a chunk at a time, resumably."""

    def __init__(self, context: ServiceContext, issuance: Issuance,
                 revocation: Revocation, workers: int | None = None) -> None:
        self.context = context
        self.issuance = issuance
        self.revocation = revocation
        # worker processes for the rows' pure part; 0: all in this process
        self.workers = batch_workers() if workers is None else workers
        self.rows_in_workers = 0  # rows a worker checked, over this object's batches
        self.wait_for_workers = False  # True: never check a row here that a worker has
        # rows issued here before workers start: spawning one costs 0.3-0.7 s of CPU
        # (imports), which a batch of a few chunks would not win back on a busy machine
        self.workers_after = WORKERS_AFTER

    def issue_rows(self, ca: str, rows: Iterable[RawRow], base: Path, *, chunk: int = CHUNK,
                   batch: str = "-") -> Iterator[list[RowResult]]:
        """The results of each chunk of ``rows``, in row order, once the chunk is committed."""
        with self.context.read() as session:
            authority = queries.get_authority(session, ca)
            issuer_id = authority.id
            issuer = self.context.issuer_info(authority)  # the key found once per batch
        urls = self.context.urls(issuer)
        chunks = _chunks(rows, chunk)
        done_here = 0
        while True:  # in this process until the batch is big enough for workers to pay
            first = next(chunks, None)
            if first is None:
                return
            second = next(chunks, None) if self.workers else None
            if second is not None and done_here + len(first) >= self.workers_after:
                break
            yield self._issue_chunk(ca, issuer_id, issuer, urls, first, base, batch)
            done_here += len(first)
            if second is not None:
                chunks = itertools.chain([second], chunks)
        # big enough: the workers start on ``second`` while ``first`` is issued here
        workers = RowWorkers(self.workers, self.context.profiles, ca, issuer, urls, base)
        try:
            ahead: deque[tuple[list[RawRow], list[Part]]] = deque(
                [(second, workers.submit(second, self.context.clock.now()))])
            yield self._issue_chunk(ca, issuer_id, issuer, urls, first, base, batch)
            while ahead:
                done, parts = ahead.popleft()
                checked = workers.collect(parts, self.wait_for_workers)
                # until the workers first answer, one chunk at a time is theirs (what they
                # make of a chunk checked here meanwhile is dropped: bounded waste)
                while len(ahead) < (_AHEAD if workers.ready else 1):
                    more = next(chunks, None)
                    if more is None:
                        break
                    ahead.append((more, workers.submit(more, self.context.clock.now())))
                yield self._issue_chunk(ca, issuer_id, issuer, urls, done, base, batch,
                                        checked)
        finally:
            workers.close()

    def _issue_chunk(self, ca: str, issuer_id: int, issuer: IssuerInfo, urls: core.Urls | None,
                     rows: list[RawRow], base: Path, batch: str,
                     checked: list[Checked | None] | None = None) -> list[RowResult]:
        results: dict[int, RowResult] = {}
        raws = {raw.number: raw for raw in rows}
        requests = self._requests(ca, rows, base, checked, results)
        self.rows_in_workers += sum(c is not None for c in checked or ())
        for attempt in range(_ATTEMPTS):
            todo, stale = self._claimed(ca, requests, results)
            todo = [r for r in todo if self._dry_run(r, issuer, urls, results)]
            todo = self._generate_keys(issuer.name, todo, results)
            todo = [r for r in todo if r.prepared is not None
                    or self._prepare(r, issuer, urls, results)]
            try:
                self._persist(ca, issuer_id, todo, stale, batch)
                break
            except AlreadyExistsError:
                if attempt == _ATTEMPTS - 1:
                    raise
                requests = [self._again(ca, r, raws[r.number], base) for r in todo]
        self._sign_and_record(ca, issuer, todo, batch, results)
        return [results[raw.number] for raw in rows]

    def _requests(self, ca: str, rows: list[RawRow], base: Path,
                  checked: list[Checked | None] | None, results: dict[int, RowResult]
                  ) -> list[Request]:
        """The chunk's rows that passed their checks (checked here, or by the workers)."""
        requests: list[Request] = []
        profiles = self.context.profiles
        for raw, done in zip(rows, checked or [None] * len(rows)):
            if done is not None and done.error is not None:
                results[raw.number] = done.error
            elif done is not None and done.raw is None:
                requests.append(done.request(profiles))
            else:
                try:
                    requests.append(check_row(profiles, ca, raw, base))
                except RowError as exc:
                    results[raw.number] = RowResult(raw.number, "error", field=exc.field,
                                                    error=exc.message)
        return requests

    def _again(self, ca: str, request: Request, raw: RawRow, base: Path) -> Request:
        """``request`` to be prepared again (a serial or claim taken meanwhile): checked here
        if a worker checked it (its subject object stayed there)."""
        if request.subject is None:
            return check_row(self.context.profiles, ca, raw, base)
        request.prepared = None
        request.cert_id = None
        return request

    def _claimed(self, ca: str, requests: list[Request], results: dict[int, RowResult]
                 ) -> tuple[list[Request], list[int]]:
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

    def _dry_run(self, request: Request, issuer: IssuerInfo, urls: core.Urls | None,
                 results: dict[int, RowResult]) -> bool:
        """A key_type row checked with a placeholder key before its key is made (a refused
        row never leaves a key behind); False if refused. CSR rows pass: :meth:`_prepare`
        checks them."""
        if request.public_key is not None or request.prepared is not None:
            return True
        spec, subject = request.spec, request.subject
        assert spec is not None and subject is not None
        refused = refusing(request, self.context.clock.now(), lambda now, until:
                           self.issuance.dry_run(request.profile, subject, spec, issuer,
                                                 issuer.name, urls, now, until,
                                                 request.emails, request.dns_names))
        if refused is not None:
            results[request.number] = refused
        return refused is None

    def _generate_keys(self, ca: str, requests: list[Request],
                       results: dict[int, RowResult]) -> list[Request]:
        """The keys of the key_type rows, generated on the HSM and stored wrapped, in one
        transaction for the chunk; the requests left (a key the token cannot make or wrap
        refuses its row, on ``key_type``)."""
        waiting = [r for r in requests if r.spec is not None and r.public_key is None]
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
                    results[request.number] = row_error(request, "key_type", exc)
            waiting = [r for r in waiting if r.number not in results]
        for request, key in zip(waiting, made):
            request.public_key, request.key_uri = key.public_key, key.uri
        return [r for r in requests if r.number not in results]

    def _prepare(self, request: Request, issuer: IssuerInfo, urls: core.Urls | None,
                 results: dict[int, RowResult]) -> bool:
        """The TBSCertificate of ``request``; False if refused."""
        refused = prepare_row(request, issuer, urls, self.context.clock.now())
        if refused is not None:
            results[request.number] = refused
        return refused is None

    def _persist(self, ca: str, issuer_id: int, requests: list[Request], stale: list[int],
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

    def _sign_and_record(self, ca: str, issuer: IssuerInfo, requests: list[Request],
                         batch: str, results: dict[int, RowResult]) -> None:
        """Sign what was persisted, then record the certificates in one transaction (or the
        failure of a signature that does not verify)."""
        signed: list[tuple[Request, bytes]] = []
        failed: list[tuple[Request, TincayError]] = []
        for request in requests:
            try:
                signed.append((request, core.sign_der(_prepared(request), issuer)))
            except KeyBackendError:
                raise  # the HSM: the batch stops, its pending rows resume on the rerun
            except TincayError as exc:
                failed.append((request, exc))
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
                results[request.number] = row_error(request, "ca", exc)
            chain_store.defer(session, "audit", events)



def _chunks(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    for raw in rows:
        chunk.append(raw)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepared(request: Request) -> PreparedCertificate:
    assert request.prepared is not None
    return request.prepared


def _pending_row(issuer_id: int, request: Request, now: Any) -> dict[str, Any]:
    prepared = _prepared(request)
    san = list(request.emails) + list(request.dns_names)
    return {"issuer_id": issuer_id, "serial_hex": prepared.serial_hex, "status": PENDING,
            "profile": prepared.profile_name, "subject": request.subject_text,
            "san": san or None, "not_before": prepared.not_before,
            "not_after": prepared.not_after, "tbs_der": prepared.tbs_der,
            "key_uri": request.key_uri, "created_at": now}


def _event(now: Any, action: str, ca: str, request: Request, batch: str,
           **details: Any) -> dict[str, Any]:
    """An audit event of a batch row, naming the operator, the file, the row and its claim."""
    prepared = _prepared(request)
    return {"at": now, "action": action, "authority": ca, "serial_hex": prepared.serial_hex,
            "subject": request.subject_text,
            "details": as_json({"profile": prepared.profile_name, **details,
                                "client": OPERATOR, "batch": batch, "row": request.number,
                                "idempotency_key": request.claim})}
