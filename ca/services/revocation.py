"""Revocation, hold and certificate status: the writes that change what OCSP and CRLs say, and
the one indexed read the live OCSP responder makes per question."""
from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any, Mapping

from sqlalchemy.orm import Session

from ca.errors import AlreadyExistsError, IssuanceError
from ca.revocation import parse_reason
from ca.services.context import ServiceContext, as_json
from ca.services.listings import describe_certificate
from ca.services.results import CertificateStatus
from ca.store import queries
from ca.store.hot import HotQuery
from ca.store.models import ISSUED, PENDING, REVOKED, Certificate


class Revocation:
    """Revoke, hold and release certificates; answer what the store knows of a serial."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def revoke(self, ca: str, serial: str, reason: str, *,
               invalidity_date: datetime | None = None,
               by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Revoke a certificate ``ca`` issued (RFC 5280 5.3.1 reasons; certificateHold is
        temporary and can be released). A held certificate may then be revoked for good, keeping
        its original revocation time; a permanently revoked one stays as it is.

        A pending serial (persisted before signing, its issuance interrupted) is revoked as
        never issued: OCSP then answers revoked for it and the CRL lists it, so a certificate
        signed under that serial is refused wherever it shows up (RFC 6960 2.2), and an
        issuance still finishing it is refused too (ca.store.queries.mark_issued). Not on hold:
        a hold is released to good, and a serial never issued has nothing to go back to.
        ``by``: who asked (the registration API's client), added to the audit event."""
        code = parse_reason(reason)
        now = self.context.clock.now().replace(microsecond=0)
        if invalidity_date is not None and invalidity_date > now:
            raise IssuanceError(f"invalidity date {invalidity_date.isoformat()} is in the future")
        with self.context.transaction() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            if row.status == REVOKED and row.revocation_reason != "certificateHold":
                raise AlreadyExistsError(f"certificate {row.serial_hex} of {ca} is already "
                                         f"revoked ({row.revocation_reason})")
            if row.status not in (ISSUED, REVOKED, PENDING):
                raise IssuanceError(f"certificate {row.serial_hex} of {ca} is {row.status}: "
                                    "only issued or pending certificates can be revoked")
            if row.status == REVOKED and code == "certificateHold":
                raise AlreadyExistsError(f"certificate {row.serial_hex} of {ca} is already on hold")
            if row.status == PENDING:
                if code == "certificateHold":
                    raise IssuanceError(f"certificate {row.serial_hex} of {ca} was never issued "
                                        "(pending): revoke it for good, not on hold")
                return self._revoke_never_issued(session, row, code, now, invalidity_date,
                                                 by=by)
            previous = row.revocation_reason
            queries.mark_revoked(session, row, reason=code, at=row.revoked_at or now,
                                 invalidity_date=invalidity_date, changed_at=now)
            queries.record_event(session, at=now, action="certificate.revoke", authority=ca,
                                 serial_hex=row.serial_hex, subject=row.subject,
                                 details=as_json({"reason": code, "previous": previous,
                                                  "invalidity_date": invalidity_date.isoformat()
                                                  if invalidity_date else None, **(by or {})}))
            return describe_certificate(row)

    def revoke_never_issued(self, ca: str, serial: str, reason: str,
                            via: str = "reconcile") -> dict[str, Any] | None:
        """Revoke ``ca``'s serial as never issued if it is still pending, else None (an
        issuance that finished meanwhile keeps its certificate): for ``tincay reconcile``,
        which decided from a listing that may be a moment old."""
        code = parse_reason(reason)
        if code == "certificateHold":
            raise IssuanceError("a serial never issued is revoked for good, not on hold")
        now = self.context.clock.now().replace(microsecond=0)
        with self.context.transaction() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            if row.status != PENDING:
                return None
            return self._revoke_never_issued(session, row, code, now, None, via)

    def _revoke_never_issued(self, session: Session, row: Certificate, code: str,
                             now: datetime, invalidity_date: datetime | None,
                             via: str = "revoke",
                             by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if not queries.revoke_pending(session, row, reason=code, at=now):
            raise IssuanceError(f"certificate {row.serial_hex} of {row.issuer.name} was issued "
                                "meanwhile: run the command again")
        row.invalidity_date = invalidity_date
        session.flush()
        queries.record_event(session, at=now, action="certificate.revoke",
                             authority=row.issuer.name, serial_hex=row.serial_hex,
                             subject=row.subject,
                             details=as_json({"reason": code, "previous": None,
                                              "never_issued": True, "via": via,
                                              "invalidity_date": invalidity_date.isoformat()
                                              if invalidity_date else None, **(by or {})}))
        return describe_certificate(row)

    def release_hold(self, ca: str, serial: str,
                     by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Take a certificate off hold (RFC 5280: certificateHold is the only reversible reason)."""
        now = self.context.clock.now().replace(microsecond=0)
        with self.context.transaction() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            if row.status != REVOKED or row.revocation_reason != "certificateHold":
                raise IssuanceError(f"certificate {row.serial_hex} of {ca} is not on hold "
                                    f"({row.status}"
                                    f"{', ' + row.revocation_reason if row.revocation_reason else ''})")
            queries.mark_released(session, row, at=now)
            queries.record_event(session, at=now, action="certificate.release", authority=ca,
                                 serial_hex=row.serial_hex, subject=row.subject,
                                 details=as_json(dict(by)) if by else None)
            return describe_certificate(row)

    def certificate_status(self, ca: str, serial: int) -> CertificateStatus | None:
        """The revocation state of ``ca``'s certificate ``serial``, or None if it never issued it.

        One indexed query on the hot path of live OCSP answers, on a connection of its own
        (ca.store.hot: no ORM session per question). Pending and failed rows are reported as
        such: the responder must not call them good (never signed, or not known to be), and
        answers unknown.
        """
        row = queries.certificate_status(self._status_query, ca, format(serial, "x"))
        if row is None:
            return None
        status, revoked_at, reason, invalidity_date = row
        return CertificateStatus(status, revoked_at, reason, invalidity_date)

    @cached_property
    def _status_query(self) -> HotQuery:
        return self.context.hot_query(queries.STATUS_QUERY)
