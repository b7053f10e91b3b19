"""What the database knows of keys and unfinished issuances: the inventory ``tincay
reconcile`` (ca.services.reconciliation) compares with the token after a crash.

Query functions taking the caller's Session, like ca.store.queries; read-only.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from ca.keys.uri import wrapped_uri
from ca.chain import AUDIT_KEY_LABEL
from ca.store.models import (PENDING, AuditEvent, Authority, Certificate, ServiceUnit,
                             SubscriberKey)


def pending_certificates(session: Session) -> Sequence[Certificate]:
    """Every pending row (persisted before signing, never recorded as signed), oldest first,
    with its issuer loaded."""
    return session.scalars(select(Certificate).options(joinedload(Certificate.issuer))
                           .where(Certificate.status == PENDING)
                           .order_by(Certificate.created_at, Certificate.id)).all()


def key_uses(session: Session) -> list[tuple[str, str]]:
    """(key URI, who uses it) for every key a row names: ``ca:NAME``, ``unit:NAME`` and
    ``certificate:ID`` (a subscriber's key generated on the HSM, a unit's key, any status)."""
    uses = [(uri, f"ca:{name}") for uri, name in
            session.execute(select(Authority.key_uri, Authority.name))]
    uses += [(uri, f"unit:{name}") for uri, name in
             session.execute(select(ServiceUnit.key_uri, ServiceUnit.name))]
    uses += [(uri, f"certificate:{cid}") for uri, cid in session.execute(
        select(Certificate.key_uri, Certificate.id).where(Certificate.key_uri.is_not(None)))]
    uses.append((AUDIT_KEY_LABEL, "audit-checkpoints"))  # never an orphan: it signs the logs
    return uses


def generated_keys(session: Session) -> list[tuple[str, datetime, str | None]]:
    """(key URI, when, authority) of every ``key.generate`` event, oldest first: the keys
    this CA made on its token."""
    rows = session.execute(select(AuditEvent.details, AuditEvent.at, AuditEvent.authority)
                           .where(AuditEvent.action == "key.generate").order_by(AuditEvent.id))
    out = []
    for details, at, authority in rows:
        uri = json.loads(details or "{}").get("key_uri")
        if uri:
            out.append((uri, at, authority))
    return out


def wrapped_key_uris(session: Session) -> list[str]:
    """The URI of every stored wrapped subscriber key (``tincay:subscriber-key:<id>``): the
    keys the database holds instead of the token."""
    return [wrapped_uri(key_id) for key_id in session.scalars(select(SubscriberKey.id).order_by(SubscriberKey.id))]
