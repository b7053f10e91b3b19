"""Read-only views of the CA's records for operators: CAs, service units, certificates and
the audit log, as plain dicts built while the session is open (no ORM row escapes)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca.errors import IssuanceError, NotFoundError
from ca.services.context import ServiceContext
from ca.store import queries
from ca.store.models import Authority, Certificate, CrlRecord, ServiceUnit


class Listings:
    """What ``tincay ca list``, ``tincay cert show``, ``tincay audit`` and friends print."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def list_authorities(self) -> list[dict[str, Any]]:
        with self.context.read() as session:
            return [describe_authority(a) for a in queries.list_authorities(session)]

    def show_authority(self, name: str) -> dict[str, Any]:
        with self.context.read() as session:
            return describe_authority(queries.get_authority(session, name))

    def list_service_units(self) -> list[dict[str, Any]]:
        with self.context.read() as session:
            return [describe_service_unit(u) for u in queries.list_service_units(session)]

    def list_certificates(self, *, ca: str | None = None, profile: str | None = None,
                          status: str | None = None, subject_contains: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        with self.context.read() as session:
            issuer = queries.get_authority(session, ca) if ca else None
            rows = queries.find_certificates(session, issuer=issuer, profile=profile,
                                             status=status, subject_contains=subject_contains,
                                             limit=limit)
            return [describe_certificate(c) for c in rows]

    def show_certificate(self, serial: str, ca: str | None = None) -> dict[str, Any]:
        with self.context.read() as session:
            return describe_certificate(find_certificate(session, serial, ca))

    def certificate_der(self, serial: str, ca: str | None = None) -> bytes:
        """The issued certificate's DER; an error for a pending or failed row (never signed)."""
        with self.context.read() as session:
            row = find_certificate(session, serial, ca)
            if row.der is None:
                raise IssuanceError(f"certificate {row.serial_hex} of {row.issuer.name} is "
                                    f"{row.status}: it was never signed")
            return row.der

    def list_events(self, *, ca: str | None = None, serial: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        """The audit log, newest first."""
        with self.context.read() as session:
            return [{"id": e.id, "at": e.at, "action": e.action, "authority": e.authority,
                     "serial": e.serial_hex, "subject": e.subject,
                     "details": json.loads(e.details) if e.details else None}
                    for e in queries.list_events(session, authority=ca, serial_hex=serial,
                                                 limit=limit)]


    def expiring_authorities(self, within: timedelta) -> list[str]:
        """A warning for each active CA whose certificate ends within ``within`` of now (or has
        ended): what ``tincay ca list`` and every maintenance pass say, so the renewal of a CA
        (a ceremony, not a cron job) is planned in time."""
        now = self.context.clock.now()
        warnings = []
        with self.context.read() as session:
            for authority in queries.list_authorities(session):
                cert = authority.certificate
                if authority.status != "active" or cert is None or cert.not_after is None:
                    continue
                if cert.not_after <= now + within:
                    days = (cert.not_after - now).days
                    when = (f"expired {-days} days ago" if cert.not_after <= now
                            else f"expires in {days} days")
                    warnings.append(f"CA {authority.name} {when} "
                                    f"({cert.not_after:%Y-%m-%d %H:%M:%S} UTC): plan its renewal")
        return warnings

    def certificate_expiries(self) -> list[tuple[str, str, datetime]]:
        """(kind, name, notAfter) of every active CA's and every service unit's current
        certificate, kind "ca" or the unit's ("ocsp", "tsa"): two joins over a handful of
        rows, cheap enough for every metrics scrape (web/metrics.py)."""
        with self.context.read() as session:
            cas = session.execute(
                select(Authority.name, Certificate.not_after)
                .join(Certificate, Authority.certificate_id == Certificate.id)
                .where(Authority.status == "active")).all()
            units = session.execute(
                select(ServiceUnit.kind, ServiceUnit.name, Certificate.not_after)
                .join(Certificate, ServiceUnit.certificate_id == Certificate.id)).all()
        return [("ca", name, not_after) for name, not_after in cas] + \
            [(kind, name, not_after) for kind, name, not_after in units]

    def latest_crl_times(self) -> list[tuple[str, datetime]]:
        """(CA, thisUpdate of its newest complete CRL) for every CA that published one."""
        with self.context.read() as session:
            return [(name, this_update) for name, this_update in session.execute(
                select(Authority.name, func.max(CrlRecord.this_update))
                .join(CrlRecord, CrlRecord.issuer_id == Authority.id)
                .where(CrlRecord.delta_base.is_(None)).group_by(Authority.name)).all()]


def describe_authority(authority: Authority) -> dict[str, Any]:
    cert = authority.certificate
    return {
        "name": authority.name, "status": authority.status, "profile": authority.profile,
        "subject": authority.subject, "parent": authority.parent.name if authority.parent else None,
        "key_uri": authority.key_uri, "serial": cert.serial_hex if cert else None,
        "not_before": cert.not_before if cert else None,
        "not_after": cert.not_after if cert else None,
        "fingerprint_sha256": cert.fingerprint_sha256 if cert else None,
        "created_at": authority.created_at,
        **queries.publication(authority).describe(),
    }


def describe_certificate(cert: Certificate) -> dict[str, Any]:
    return {
        "issuer": cert.issuer.name, "serial": cert.serial_hex, "status": cert.status,
        "profile": cert.profile, "subject": cert.subject, "san": cert.san,
        "not_before": cert.not_before, "not_after": cert.not_after,
        "fingerprint_sha256": cert.fingerprint_sha256, "key_uri": cert.key_uri,
        "created_at": cert.created_at, "issued_at": cert.issued_at,
        "revoked_at": cert.revoked_at, "revocation_reason": cert.revocation_reason,
    }


def describe_service_unit(unit: ServiceUnit) -> dict[str, Any]:
    return {
        "name": unit.name, "kind": unit.kind, "authority": unit.authority.name,
        "serial": unit.certificate.serial_hex, "key_uri": unit.key_uri,
        "not_after": unit.certificate.not_after,
    }


def find_certificate(session: Session, serial: str, ca: str | None) -> Certificate:
    """The certificate ``serial`` of ``ca``; without ``ca``, the one CA that issued it."""
    if ca is not None:
        return queries.get_certificate(session, queries.get_authority(session, ca), serial)
    rows = queries.certificates_by_serial(session, serial)
    if not rows:
        raise NotFoundError(f"no certificate with serial {queries.normalize_serial(serial)}")
    if len(rows) > 1:
        raise NotFoundError(f"serial {rows[0].serial_hex} exists under several CAs "
                            f"({', '.join(r.issuer.name for r in rows)}): name the CA")
    return rows[0]
