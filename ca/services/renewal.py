"""Renewal of the OCSP responder and TSA units' certificates, so the services outlive them.

A delegated responder's certificate lasts a month or three, a TSA unit's a few years; a
deployment that runs for years must replace both before they end, with no operator. Each
renewal generates a new key on the backend (a certificate never outlives its key pair, and a
renewed unit keeps no key in common with the old one), certifies it from the unit's profile
with the old certificate's subject and length, and repoints the unit, all audited. The old key
stays on the token until every worker has moved to the new one (a worker that has not reloaded
yet still signs with it, and its certificate is still valid: renewal happens at a fraction of
the validity, two thirds by default); a later pass destroys it (:meth:`Renewal.retire_old_keys`).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ca import issuance as core
from ca.errors import NotFoundError
from ca.services.context import Progress, ServiceContext, as_json
from ca.services.issuance import Issuance
from ca.services.listings import describe_service_unit
from ca.store import queries
from ca.store.models import ServiceUnit
from ca.subject import parse_subject

RENEW_AT = 2 / 3  # of a unit certificate's validity (ca.settings.UNIT_RENEWAL, configurable)
RETIRE_AFTER = timedelta(minutes=10)  # workers reload every 30 s: the old key is idle by then
RETIRE_LOOKBACK = timedelta(days=30)  # renewals older than this were retired by earlier passes


class Renewal:
    """Renews every service unit whose certificate has run ``at`` of its validity."""

    def __init__(self, context: ServiceContext, issuance: Issuance) -> None:
        self.context = context
        self.issuance = issuance

    def due(self, at: float = RENEW_AT) -> list[str]:
        """The units whose certificate is past ``at`` of its validity (or has ended)."""
        now = self.context.clock.now()
        with self.context.read() as session:
            return [u.name for u in queries.list_service_units(session)
                    if _renewal_time(u, at) <= now]

    def renew_due(self, at: float = RENEW_AT, progress: Progress | None = None
                  ) -> list[dict[str, Any]]:
        """Renew each unit :meth:`due` names; returns the units as they are now."""
        return [self.renew(name, progress) for name in self.due(at)]

    def retire_old_keys(self, after: timedelta = RETIRE_AFTER) -> list[str]:
        """Destroy the keys units were renewed away from, once ``after`` has passed since:
        every worker has reloaded by then (they do every 30 s), so none signs with the old key
        any more. Returns the URIs destroyed; each is a ``key.retire`` audit event."""
        context = self.context
        now = context.clock.now()
        with context.read() as session:
            events = queries.events_between(session, ("service.renew", "key.retire"),
                                            now - after - RETIRE_LOOKBACK, now)
            current = {u.key_uri for u in queries.list_service_units(session)}
            pending: dict[str, tuple[str, str | None]] = {}
            for event in events:
                details = json.loads(event.details or "{}")
                if event.action == "key.retire":
                    pending.pop(details.get("key_uri"), None)
                elif event.at <= now - after and details.get("previous_key_uri"):
                    pending[details["previous_key_uri"]] = (details["unit"], event.authority)
        retired = []
        for uri, (unit, authority) in pending.items():
            if uri in current:  # never a key a unit still points at
                continue
            context.keys.destroy(uri)
            with context.transaction() as session:
                queries.record_event(session, at=context.clock.now(), action="key.retire",
                                     authority=authority,
                                     details=as_json({"key_uri": uri, "unit": unit}))
            retired.append(uri)
        return retired

    def renew(self, name: str, progress: Progress | None = None) -> dict[str, Any]:
        """A new key and certificate for service unit ``name``, same subject, profile and
        validity length as its current certificate; the unit points at them when it returns."""
        context = self.context
        with context.read() as session:
            unit = next((u for u in queries.list_service_units(session) if u.name == name), None)
            if unit is None:
                raise NotFoundError(f"no service unit named {name!r}")
            old = unit.certificate
            profile = context.profiles.get(old.profile)
            issuer = context.issuer_info(unit.authority)
            current = x509.load_der_x509_certificate(old.der)
            days = (old.not_after - old.not_before + timedelta(seconds=1)).days
            subject = parse_subject(old.subject)
            authority = unit.authority.name
        spec = core.check_key(profile, current.public_key())  # type: ignore[arg-type]
        label = f"{name}.{context.clock.now():%Y%m%dT%H%M%S}"
        key = self.issuance.obtain_key(label, spec, None, progress, authority=authority)
        issued = self.issuance.issue_with_key(issuer, profile, subject, key, days, progress)
        with context.transaction() as session:
            unit = session.merge(unit)
            unit.certificate = queries.get_certificate(
                session, queries.get_authority(session, authority), issued.serial_hex)
            previous = unit.key_uri
            unit.key_uri = key.uri
            queries.record_event(session, at=context.clock.now(), action="service.renew",
                                 authority=authority, serial_hex=issued.serial_hex,
                                 details=as_json({"unit": name, "key_uri": key.uri,
                                                  "previous_key_uri": previous,
                                                  "previous_serial": old.serial_hex}))
            return describe_service_unit(unit)


def _renewal_time(unit: ServiceUnit, at: float) -> datetime:
    certificate = unit.certificate
    return certificate.not_before + (certificate.not_after - certificate.not_before) * at
