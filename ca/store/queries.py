"""Query functions over the CA tables. Each takes the caller's Session and never commits.

Not-found and duplicate conditions become :class:`NotFoundError` / :class:`AlreadyExistsError`
with a message an operator can act on; anything else SQLAlchemy raises is a real fault.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

from sqlalchemy import String, bindparam, exists, func, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca.crl import StoredRevocation
from ca.errors import AlreadyExistsError, IssuanceError, NotFoundError
from ca.publication import PublicationSettings
from ca.store import chain_store
from ca.store.hot import HotInsert, HotQuery, stream_rows
from ca.timestamps import TimestampRecord
from ca.store.models import (CERTIFICATE_STATUSES, FAILED, ISSUED, PENDING, REVOKED,
                             AuditEvent, Authority, Certificate, CrlRecord, OcspResponse,
                             ServiceUnit, TimestampToken, status_token)

_HEX = re.compile(r"[0-9a-f]+")


def normalize_serial(text: str) -> str:
    """A serial as operators type it (``openssl x509 -serial``: ``serial=0A1B...``, colons,
    any case, leading zeros, ``0x``) -> the stored form: lower-case hex, no leading zeros."""
    value = text.strip().lower()
    for prefix in ("serial=", "0x"):
        if value.startswith(prefix):
            value = value[len(prefix):]
    value = value.replace(":", "").replace(" ", "")
    if not value or not _HEX.fullmatch(value):
        raise NotFoundError(f"{text!r} is not a hexadecimal serial number")
    return value.lstrip("0") or "0"


# --- authorities ----------------------------------------------------------------------------

def list_authorities(session: Session) -> Sequence[Authority]:
    return session.scalars(select(Authority).order_by(Authority.id)).all()


def find_authority(session: Session, name: str) -> Authority | None:
    return session.scalars(select(Authority).where(Authority.name == name)).one_or_none()


def get_authority(session: Session, name: str) -> Authority:
    authority = find_authority(session, name)
    if authority is None:
        known = ", ".join(a.name for a in list_authorities(session)) or "none yet"
        raise NotFoundError(f"no CA named {name!r} (known: {known})")
    return authority


def add_authority(session: Session, *, name: str, profile: str, key_uri: str, subject: str,
                  parent: Authority | None, created_at: datetime,
                  publication: PublicationSettings | None = None) -> Authority:
    authority = Authority(name=name, status="pending", profile=profile, key_uri=key_uri,
                          subject=subject, parent=parent, created_at=created_at)
    set_publication(authority, publication or PublicationSettings())
    session.add(authority)
    _flush(session, f"CA {name!r} already exists")
    return authority


def publication(authority: Authority) -> PublicationSettings:
    delta = authority.delta_crl_validity_seconds
    return PublicationSettings(
        crl_validity=timedelta(seconds=authority.crl_validity_seconds),
        delta_crl_validity=None if delta is None else timedelta(seconds=delta),
        ocsp_validity=timedelta(seconds=authority.ocsp_validity_seconds))


def set_publication(authority: Authority, settings: PublicationSettings) -> None:
    authority.crl_validity_seconds = int(settings.crl_validity.total_seconds())
    authority.delta_crl_validity_seconds = (
        None if settings.delta_crl_validity is None
        else int(settings.delta_crl_validity.total_seconds()))
    authority.ocsp_validity_seconds = int(settings.ocsp_validity.total_seconds())


def set_authority_certificate(session: Session, authority: Authority,
                              certificate: Certificate) -> None:
    authority.certificate = certificate
    authority.status = "active"
    session.flush()


# --- certificates ---------------------------------------------------------------------------

def add_pending_certificate(session: Session, *, issuer: Authority, serial_hex: str, profile: str,
                            subject: str, san: list[str] | None, not_before: datetime,
                            not_after: datetime, tbs_der: bytes, key_uri: str | None,
                            created_at: datetime) -> Certificate:
    """Record a certificate about to be signed: its serial and exact TBSCertificate."""
    row = Certificate(issuer=issuer, serial_hex=serial_hex, status="pending", profile=profile,
                      subject=subject, san=san, not_before=not_before, not_after=not_after,
                      tbs_der=tbs_der, key_uri=key_uri, created_at=created_at)
    session.add(row)
    _flush(session, f"serial {serial_hex} already exists under CA {issuer.name}")
    return row


def mark_issued(session: Session, certificate_id: int, der: bytes, at: datetime) -> Certificate:
    """Record the signed certificate of a row that is still pending; the row as it is now.

    One conditional UPDATE, so a row ``tincay reconcile`` (or ``tincay revoke``) revoked as
    never issued meanwhile stays revoked: the signature is then refused, never recorded over
    the revocation."""
    done = session.execute(
        update(Certificate).where(Certificate.id == certificate_id, Certificate.status == PENDING)
        .values(der=der, fingerprint_sha256=hashlib.sha256(der).hexdigest(), status=ISSUED,
                issued_at=at).execution_options(synchronize_session=False)).rowcount
    row = session.get(Certificate, certificate_id, populate_existing=True)
    if not done:
        raise IssuanceError(f"certificate {row.serial_hex if row else certificate_id} is "
                            f"{row.status if row else 'gone'}, no longer pending: its "
                            "signature is not recorded")
    assert row is not None
    return row


def revoke_pending(session: Session, row: Certificate, *, reason: str, at: datetime) -> bool:
    """Revoke ``row`` as never issued if it is still pending (one conditional UPDATE: an
    issuance finishing meanwhile wins, and its certificate is then not revoked by mistake)."""
    done = session.execute(
        update(Certificate).where(Certificate.id == row.id, Certificate.status == PENDING)
        .values(status=REVOKED, revocation_reason=reason, revoked_at=at, status_changed_at=at)
        .execution_options(synchronize_session=False)).rowcount
    session.refresh(row)
    return bool(done)


def mark_failed(session: Session, row: Certificate, reason: str, at: datetime) -> None:
    row.status = FAILED
    row.failure = reason[:2000]
    row.issued_at = None
    session.flush()


def mark_revoked(session: Session, row: Certificate, *, reason: str, at: datetime,
                 invalidity_date: datetime | None, changed_at: datetime) -> None:
    """``at`` is the revocationDate (a held certificate keeps its hold time when revoked for
    good); ``changed_at`` is now, what delta CRLs select by."""
    row.status = REVOKED
    row.revocation_reason = reason
    row.revoked_at = at
    row.invalidity_date = invalidity_date
    row.status_changed_at = changed_at
    session.flush()


def mark_released(session: Session, row: Certificate, *, at: datetime) -> None:
    """Off hold: the certificate is good again, as if never revoked (a delta CRL lists it as
    removeFromCRL, selected by ``status_changed_at``)."""
    row.status = ISSUED
    row.status_changed_at = at
    row.revocation_reason = None
    row.revoked_at = None
    row.invalidity_date = None
    session.flush()


def get_certificate(session: Session, issuer: Authority, serial: str) -> Certificate:
    serial_hex = normalize_serial(serial)
    row = session.scalars(select(Certificate).where(
        Certificate.issuer_id == issuer.id, Certificate.serial_hex == serial_hex)).one_or_none()
    if row is None:
        raise NotFoundError(f"CA {issuer.name} has no certificate with serial {serial_hex}")
    return row


def certificates_by_serial(session: Session, serial: str) -> Sequence[Certificate]:
    """Every certificate with this serial, whichever CA issued it (serials are per issuer)."""
    return session.scalars(select(Certificate).where(
        Certificate.serial_hex == normalize_serial(serial)).order_by(Certificate.id)).all()


STATUS_QUERY = (  # built once: the live OCSP path runs it per request (ca/store/hot.py)
    select(Certificate.status, Certificate.revoked_at, Certificate.revocation_reason,
           Certificate.invalidity_date)
    .join(Authority, Certificate.issuer_id == Authority.id)
    .where(Authority.name == bindparam("ca"), Certificate.serial_hex == bindparam("serial")))


def certificate_status(status_query: HotQuery, ca: str, serial_hex: str
                       ) -> tuple[str, datetime | None, str | None, datetime | None] | None:
    """(status, revoked_at, reason, invalidity_date) of one serial under the CA named ``ca``;
    ``status_query`` is a :class:`HotQuery` of :data:`STATUS_QUERY`."""
    row = status_query.first({"ca": ca, "serial": serial_hex})
    return None if row is None else (row[0], row[1], row[2], row[3])


def find_certificates(session: Session, *, issuer: Authority | None = None,
                      profile: str | None = None, status: str | None = None,
                      subject_contains: str | None = None, limit: int = 100,
                      offset: int = 0) -> Sequence[Certificate]:
    """Newest first. ``subject_contains`` matches the readable subject line, case-sensitively."""
    query = select(Certificate)
    if issuer is not None:
        query = query.where(Certificate.issuer_id == issuer.id)
    if profile is not None:
        query = query.where(Certificate.profile == profile)
    if status is not None:
        if status not in CERTIFICATE_STATUSES:
            raise NotFoundError(f"status {status!r} is not one of {', '.join(CERTIFICATE_STATUSES)}")
        query = query.where(Certificate.status == status)
    if subject_contains:
        query = query.where(Certificate.subject.contains(subject_contains, autoescape=True))
    query = query.order_by(Certificate.created_at.desc(), Certificate.id.desc())
    return session.scalars(query.limit(limit).offset(offset)).all()


# --- service units --------------------------------------------------------------------------

def list_service_units(session: Session) -> Sequence[ServiceUnit]:
    return session.scalars(select(ServiceUnit).order_by(ServiceUnit.id)).all()


def add_service_unit(session: Session, *, name: str, kind: str, authority: Authority,
                     certificate: Certificate, key_uri: str, created_at: datetime) -> ServiceUnit:
    unit = ServiceUnit(name=name, kind=kind, authority=authority, certificate=certificate,
                       key_uri=key_uri, created_at=created_at)
    session.add(unit)
    _flush(session, f"service unit {name!r} already exists")
    return unit


# --- CRLs -----------------------------------------------------------------------------------

class utc_digits(FunctionElement):
    """A timestamp column as its UTC digits YYYYMMDDHHMMSS, formatted by the database: the
    CRL encoder needs exactly these, and a million rows then cost no datetime objects."""

    type = String()
    inherit_cache = True


@compiles(utc_digits, "sqlite")
def _utc_digits_sqlite(element: utc_digits, compiler: Any, **kw: Any) -> str:
    # UtcDateTime stores naive UTC text on SQLite
    return f"strftime('%Y%m%d%H%M%S', {compiler.process(element.clauses, **kw)})"


@compiles(utc_digits, "postgresql")
def _utc_digits_postgresql(element: utc_digits, compiler: Any, **kw: Any) -> str:
    return (f"to_char(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC', "
            "'YYYYMMDDHH24MISS')")


def revoked_entries(session: Session, issuer: Authority,
                    batch: int = 10_000) -> Iterator[StoredRevocation]:
    """Every revoked certificate of ``issuer`` as (serial_hex, revoked, reason, invalidity)
    tuples in the shape of :class:`StoredRevocation`, streamed in batches (server-side cursor on
    PostgreSQL) as plain strings, so a million-entry CRL never materialises a million ORM
    objects or datetimes."""
    # the driver's own tuples, not ORM objects nor even Core Rows (ca/store/hot.py)
    return stream_rows(session.connection(), select(
        Certificate.serial_hex, utc_digits(Certificate.revoked_at),
        Certificate.revocation_reason, utc_digits(Certificate.invalidity_date))
        .where(Certificate.issuer_id == issuer.id, Certificate.status == REVOKED)
        .order_by(Certificate.serial_hex),  # the covering index's order: no sort
        batch)  # type: ignore[return-value]


def next_crl_number(session: Session, issuer: Authority) -> int:
    last = session.scalar(select(func.max(CrlRecord.number)).where(CrlRecord.issuer_id == issuer.id))
    return (last or 0) + 1


def add_crl(session: Session, *, issuer: Authority, number: int, this_update: datetime,
            next_update: datetime, entries: int, der: bytes,
            delta_base: int | None = None) -> CrlRecord:
    record = CrlRecord(issuer=issuer, number=number, this_update=this_update,
                       next_update=next_update, entries=entries, der=der, delta_base=delta_base)
    session.add(record)
    _flush(session, f"CRL number {number} of CA {issuer.name} already exists")
    return record


def latest_crl(session: Session, ca: str, *, delta: bool = False) -> CrlRecord | None:
    """The newest complete CRL of ``ca`` (or, with ``delta``, its newest delta CRL)."""
    kind = CrlRecord.delta_base.is_not(None) if delta else CrlRecord.delta_base.is_(None)
    return session.scalars(
        select(CrlRecord).join(Authority, CrlRecord.issuer_id == Authority.id)
        .where(Authority.name == ca, kind)
        .order_by(CrlRecord.number.desc()).limit(1)).one_or_none()


REVOCATION_ACTIONS = ("certificate.revoke", "certificate.release")


def status_changed_after_crl(session: Session, ca: str, number: int,
                             this_update: datetime) -> bool:
    """Whether a certificate of ``ca`` was revoked, held or released after its CRL ``number``
    (published at ``this_update``) was signed.

    Times carry whole seconds (as CRLs do), so a change in the second a CRL was published
    could be before or after it; the audit log orders them exactly: each revocation and each
    CRL is an event in the transaction that made it, and ids grow. Both lookups start at
    ``this_update`` on the events' time index, so they read only recent events.
    """
    recent = (AuditEvent.at >= this_update, AuditEvent.authority == ca)
    published = (select(func.max(AuditEvent.id))
                 .where(*recent, AuditEvent.action == "crl.publish",
                        AuditEvent.details.like(f'%"number": {int(number)}}}'))
                 .scalar_subquery())
    return bool(session.scalar(select(exists().where(
        *recent, AuditEvent.action.in_(REVOCATION_ACTIONS), AuditEvent.id > published))))


def changed_entries(session: Session, issuer: Authority,
                    since: datetime) -> Iterator[StoredRevocation]:
    """What a delta CRL lists: every certificate of ``issuer`` revoked, held or released at or
    after ``since`` (its base CRL's thisUpdate). A release is listed as removeFromCRL, dated
    when it happened (RFC 5280 5.2.4, 5.3.1)."""
    result = session.connection().execute(
        select(Certificate.serial_hex, Certificate.status,
               utc_digits(Certificate.revoked_at), Certificate.revocation_reason,
               utc_digits(Certificate.invalidity_date), utc_digits(Certificate.status_changed_at))
        .where(Certificate.issuer_id == issuer.id, Certificate.status_changed_at >= since)
        .order_by(Certificate.serial_hex))
    for serial_hex, status, revoked, reason, invalidity, changed in result:
        if status == REVOKED:
            yield StoredRevocation(serial_hex, revoked, reason, invalidity)
        elif status == ISSUED:
            yield StoredRevocation(serial_hex, changed, "removeFromCRL", None)


# --- pre-produced OCSP responses -------------------------------------------------------------

# Built once: SQLAlchemy then reuses the compiled form, which matters on the OCSP hot path.
PREPRODUCED_QUERY = (
    select(OcspResponse.der, OcspResponse.status_token, OcspResponse.next_update,
           Certificate.status, Certificate.revocation_reason, Certificate.revoked_at)
    .join(Certificate, OcspResponse.certificate_id == Certificate.id)
    .join(Authority, Certificate.issuer_id == Authority.id)
    .where(Authority.name == bindparam("ca"), Certificate.serial_hex == bindparam("serial")))


def preproduced_response(preproduced_query: HotQuery, ca: str, serial_hex: str,
                         now: datetime) -> bytes | None:
    """The stored response for this serial if it is unexpired and still says what the
    certificates table says (one indexed join, the OCSP hot path: ``preproduced_query`` is a
    :class:`HotQuery` of :data:`PREPRODUCED_QUERY`)."""
    row = preproduced_query.first({"ca": ca, "serial": serial_hex})
    if row is None or row[2] <= now or row[1] != status_token(row[3], row[4], row[5]):
        return None
    return row[0]


def responses_due(session: Session, authority: Authority, before: datetime,
                  batch: int = 1000, serial_hex: str | None = None) -> Iterator[tuple[int, str, str, str | None,
                                                       datetime | None]]:
    """(certificate id, serial_hex, status, reason, revoked_at) of every issued or revoked
    certificate of ``authority`` whose stored response is missing, stale (disagrees with the
    table) or expires before ``before``."""
    rows = session.execute(
        select(Certificate.id, Certificate.serial_hex, Certificate.status,
               Certificate.revocation_reason, Certificate.revoked_at, OcspResponse.status_token,
               OcspResponse.next_update)
        .outerjoin(OcspResponse, OcspResponse.certificate_id == Certificate.id)
        .where(Certificate.issuer_id == authority.id,
               Certificate.status.in_((ISSUED, REVOKED)),
               *([Certificate.serial_hex == serial_hex] if serial_hex is not None else []))
        .order_by(Certificate.id)
        .execution_options(yield_per=batch))
    for cid, serial_hex, status, reason, revoked_at, token, next_update in rows:
        if token is None or next_update < before or \
                token != status_token(status, reason, revoked_at):
            yield cid, serial_hex, status, reason, revoked_at


def store_response(session: Session, certificate_id: int, token: str, this_update: datetime,
                   next_update: datetime, der: bytes) -> None:
    row = session.scalars(select(OcspResponse).where(
        OcspResponse.certificate_id == certificate_id)).one_or_none()
    if row is None:
        session.add(OcspResponse(certificate_id=certificate_id, status_token=token,
                                 this_update=this_update, next_update=next_update, der=der))
    else:
        row.status_token, row.this_update, row.next_update, row.der = \
            token, this_update, next_update, der
    session.flush()


# --- time-stamp tokens ----------------------------------------------------------------------

TOKEN_COLUMNS = ("unit", "serial_hex", "gen_time", "imprint_algorithm", "imprint_hex", "policy",
                 "nonce_hex", "requester", "chain_seq", "chain_hash")  # what a HotInsert of
# the token log writes (the chain's columns filled in its transaction: ca.store.chain_store)


def add_timestamp_tokens(token_insert: HotInsert, tokens: Sequence[TimestampRecord],
                         deadline: float | None = None) -> None:
    """Record granted tokens in one transaction (the TSA's reply waits on it: ``token_insert``
    is a :class:`HotInsert` of :data:`TOKEN_COLUMNS` into the token table), waiting for a lock
    held elsewhere until ``deadline`` at most; a duplicate serial is an AlreadyExistsError
    naming it when the batch holds one token."""
    rows = [{"unit": t.unit, "serial_hex": format(t.serial, "x"), "gen_time": t.gen_time,
             "imprint_algorithm": t.imprint_algorithm, "imprint_hex": t.imprint.hex(),
             "policy": t.policy, "nonce_hex": format(t.nonce, "x") if t.nonce is not None else None,
             "requester": t.requester} for t in tokens]
    try:
        token_insert.insert(rows, deadline=deadline)
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        which = (f"serial {rows[0]['serial_hex']} of TSA unit {rows[0]['unit']}"
                 if len(rows) == 1 else "a serial in this batch")
        raise AlreadyExistsError(f"time-stamp token {which} is already recorded") from None


def find_timestamp_tokens(session: Session, *, unit: str | None = None,
                          since: datetime | None = None, serial: str | None = None,
                          limit: int = 100) -> Sequence[TimestampToken]:
    """Newest first."""
    query = select(TimestampToken)
    if unit is not None:
        query = query.where(TimestampToken.unit == unit)
    if since is not None:
        query = query.where(TimestampToken.gen_time >= since)
    if serial is not None:
        query = query.where(TimestampToken.serial_hex == normalize_serial(serial))
    query = query.order_by(TimestampToken.gen_time.desc(), TimestampToken.id.desc())
    return session.scalars(query.limit(limit)).all()


# --- audit ----------------------------------------------------------------------------------

def record_event(session: Session, *, at: datetime, action: str, authority: str | None = None,
                 serial_hex: str | None = None, subject: str | None = None,
                 details: str | None = None) -> None:
    """An audit event, chained and inserted when ``session`` commits (ca.store.chain_store:
    the chain's lock is held only for the commit)."""
    chain_store.defer(session, "audit", [{
        "at": at, "action": action, "authority": authority, "serial_hex": serial_hex,
        "subject": subject, "details": details}])


def events_between(session: Session, actions: Sequence[str], since: datetime,
                   until: datetime) -> Sequence[AuditEvent]:
    """Events of ``actions`` recorded from ``since`` to ``until``, oldest first (a range of the
    events' time index, so a pass reads only the recent ones however long the log is)."""
    return session.scalars(select(AuditEvent).where(
        AuditEvent.at >= since, AuditEvent.at <= until, AuditEvent.action.in_(actions))
        .order_by(AuditEvent.id)).all()


def list_events(session: Session, *, authority: str | None = None, serial_hex: str | None = None,
                limit: int = 100) -> Sequence[AuditEvent]:
    query = select(AuditEvent)
    if authority is not None:
        query = query.where(AuditEvent.authority == authority)
    if serial_hex is not None:
        query = query.where(AuditEvent.serial_hex == normalize_serial(serial_hex))
    return session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()


def _flush(session: Session, duplicate_message: str) -> None:
    """Flush so a unique-constraint violation surfaces here, as an operator-facing error."""
    try:
        session.flush()
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise AlreadyExistsError(duplicate_message) from None
        raise


def is_unique_violation(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a unique constraint's refusal (SQLite or PostgreSQL)."""
    text = str(exc.orig).lower()
    code: Any = getattr(exc.orig, "pgcode", None)
    return code == "23505" or "unique" in text
