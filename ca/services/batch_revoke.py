"""One row of ``tincay revoke --batch``: revoke it, or say why not, naming the field.

Revocation is resumable by nature: a rerun finds the rows revoked before already revoked with
the same reason and reports them ``already-revoked``, not as errors. A certificate revoked
before with *another* reason is an error on ``reason`` (except a hold, which a permanent
reason replaces, as ``tincay revoke`` does).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from ca.errors import AlreadyExistsError, IssuanceError, NotFoundError, TincayError
from ca.revocation import parse_reason
from ca.services.batch_files import RawRow, RevokeRow, RowError, RowResult, validate
from ca.services.revocation import Revocation
from ca.store import queries
from ca.store.models import REVOKED


def revoke_row(revocation: Revocation, ca: str, raw: RawRow,
               by: Mapping[str, Any]) -> RowResult:
    """The result of revoking the certificate ``raw`` names under ``ca``."""
    serial: str | None = None
    try:
        if raw.unreadable is not None:
            raise RowError("row", raw.unreadable)
        row: RevokeRow = validate(RevokeRow, raw.fields)
        try:
            serial = queries.normalize_serial(row.serial)
        except NotFoundError as exc:
            raise RowError("serial", f"serial: {exc}") from None
        try:
            code = parse_reason(row.reason)
        except TincayError as exc:
            raise RowError("reason", f"reason: {exc}") from None
        return _revoke(revocation, ca, serial, code, row.invalidity_date,
                       {**by, "row": raw.number}, raw.number)
    except RowError as exc:
        return RowResult(raw.number, "error", serial, exc.field, exc.message)


def _revoke(revocation: Revocation, ca: str, serial: str, code: str,
            invalidity_date: datetime | None, by: Mapping[str, Any], number: int) -> RowResult:
    now = revocation.context.clock.now()
    if invalidity_date is not None and invalidity_date > now:
        raise RowError("invalidity_date",
                       f"invalidity_date: {invalidity_date.isoformat()} is in the future")
    try:
        revocation.revoke(ca, serial, code, invalidity_date=invalidity_date, by=by)
        return RowResult(number, "revoked", serial)
    except AlreadyExistsError as exc:
        current = _current_reason(revocation, ca, serial)
        if current == code:
            return RowResult(number, "already-revoked", serial)
        raise RowError("reason", f"reason: {exc}") from None
    except NotFoundError as exc:
        raise RowError("serial", f"serial: {exc}") from None
    except IssuanceError as exc:  # the rules: a pending serial put on hold, a failed one
        raise RowError("reason" if code == "certificateHold" else "serial",
                       f"{'reason' if code == 'certificateHold' else 'serial'}: {exc}") from None


def _current_reason(revocation: Revocation, ca: str, serial: str) -> str | None:
    with revocation.context.read() as session:
        row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
        return row.revocation_reason if row.status == REVOKED else None
