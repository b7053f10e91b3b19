"""Authorities and hierarchy set-up: root and subordinate CAs, the OCSP responder and TSA
units they certify, and the certificates and keys the protocol services start from."""
from __future__ import annotations

from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session

from ca.errors import AlreadyExistsError, IssuanceError
from ca.hierarchy import AuthoritySpec, HierarchySpec, ServiceSpec
from ca.issuance import IssuerInfo, PreparedCertificate
from ca.keys.base import SigningKey
from ca.services.context import (Progress, ServiceContext, as_json, authority_certificate,
                                 not_after, say)
from ca.services.issuance import Issuance
from ca.services.listings import describe_authority, describe_service_unit
from ca.services.results import ServiceUnitKey
from ca.store import queries
from ca.store.models import Authority, Certificate
from ca.subject import build_name, format_name


class Authorities:
    """Creates CAs and service units (through :class:`Issuance`, so they are persisted before
    they are signed, like any certificate) and reads back what the services sign with."""

    def __init__(self, context: ServiceContext, issuance: Issuance) -> None:
        self.context = context
        self.issuance = issuance

    def create_authority(self, spec: AuthoritySpec, *, key_uri: str | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
        """Create a root (no parent) or a subordinate CA: key on the backend, certificate, rows.

        ``key_uri`` adopts an existing key (an HSM key made by the HSM's own ceremony) instead
        of generating one labelled with the CA's name.
        """
        context = self.context
        profile = context.profiles.get(spec.profile)
        if profile.self_signed != (spec.parent is None):
            raise IssuanceError(f"CA {spec.name}: profile {profile.name} is "
                                f"{'' if profile.self_signed else 'not '}self-signed, so the CA "
                                f"{'must not' if profile.self_signed else 'must'} have a parent")
        subject = build_name(profile, spec.subject)
        with context.read() as session:
            if spec.name in {a.name for a in queries.list_authorities(session)}:
                raise AlreadyExistsError(f"CA {spec.name!r} already exists")
            issuer_info = (context.issuer_info(queries.get_authority(session, spec.parent))
                           if spec.parent else None)
        now = context.clock.now()
        until = not_after(now, spec.validity_days)
        urls = context.urls(issuer_info) if issuer_info else None
        if key_uri is None:
            self.issuance.dry_run(profile, subject, spec.key, issuer_info, spec.name, urls, now,
                                  until)
        key = self.issuance.obtain_key(spec.name, spec.key, key_uri, progress,
                                       authority=spec.name)
        say(progress, f"certifying CA {spec.name} ({profile.name})")
        if issuer_info is None:
            issuer_info = IssuerInfo(spec.name, None, key)

        def record(session: Session, prepared: PreparedCertificate) -> Certificate:
            authority = queries.add_authority(
                session, name=spec.name, profile=profile.name, key_uri=key.uri,
                subject=format_name(subject),
                parent=queries.get_authority(session, spec.parent) if spec.parent else None,
                created_at=now, publication=spec.publication)
            issuer = authority if spec.parent is None else authority.parent
            return self.issuance.record_pending(session, issuer, prepared, subject, (), None)

        cert, row = self.issuance.certify(profile, subject, key.public_key, issuer_info, urls,
                                          now, until, (), (), record)
        with context.transaction() as session:
            authority = queries.get_authority(session, spec.name)
            queries.set_authority_certificate(session, authority, session.merge(row))
            queries.record_event(session, at=context.clock.now(), action="authority.create",
                                 authority=spec.name, serial_hex=row.serial_hex,
                                 subject=format_name(subject),
                                 details=as_json({"profile": profile.name, "key_uri": key.uri,
                                                  "parent": spec.parent}))
            return describe_authority(authority)

    def create_service_unit(self, spec: ServiceSpec,
                            progress: Progress | None = None) -> dict[str, Any]:
        """An OCSP responder or TSA unit: a key on the backend labelled with the unit's name and
        a certificate from its CA, so the services can find both by name."""
        context = self.context
        profile = context.profiles.get(spec.profile)
        with context.read() as session:
            if spec.name in {u.name for u in queries.list_service_units(session)}:
                raise AlreadyExistsError(f"service unit {spec.name!r} already exists")
            issuer_info = context.issuer_info(queries.get_authority(session, spec.issuer))
        now = context.clock.now()
        self.issuance.dry_run(profile, build_name(profile, spec.subject), spec.key, issuer_info,
                              spec.name, context.urls(issuer_info), now,
                              not_after(now, spec.validity_days))
        key = self.issuance.obtain_key(spec.name, spec.key, None, progress,
                                       authority=spec.issuer)
        issued = self.issuance.issue_with_key(issuer_info, profile, spec.subject, key,
                                              spec.validity_days, progress)
        with context.transaction() as session:
            authority = queries.get_authority(session, spec.issuer)
            cert_row = queries.get_certificate(session, authority, issued.serial_hex)
            unit = queries.add_service_unit(session, name=spec.name, kind=spec.kind,
                                            authority=authority, certificate=cert_row,
                                            key_uri=key.uri, created_at=context.clock.now())
            queries.record_event(session, at=context.clock.now(), action="service.create",
                                 authority=spec.issuer, serial_hex=issued.serial_hex,
                                 details=as_json({"unit": spec.name, "kind": spec.kind,
                                                  "key_uri": key.uri}))
            return describe_service_unit(unit)

    def init_hierarchy(self, spec: HierarchySpec,
                       progress: Progress | None = None) -> list[str]:
        """Create what the spec names and the database lacks; returns the names created.

        Idempotent, so ``make run`` can call it every time: existing CAs and units are kept as
        they are (their keys and certificates are never replaced silently).
        """
        created: list[str] = []
        with self.context.read() as session:
            have = {a.name for a in queries.list_authorities(session)}
            units = {u.name for u in queries.list_service_units(session)}
        for authority in spec.authorities:
            if authority.name not in have:
                self.create_authority(authority, progress=progress)
                created.append(authority.name)
        for unit in spec.services:
            if unit.name not in units:
                self.create_service_unit(unit, progress=progress)
                created.append(unit.name)
        return created

    def authority_certificate(self, name: str) -> x509.Certificate:
        with self.context.read() as session:
            return authority_certificate(queries.get_authority(session, name))

    def chain(self, name: str) -> list[x509.Certificate]:
        """The CA's certificate followed by its parents' up to and including the root."""
        out: list[x509.Certificate] = []
        with self.context.read() as session:
            authority: Authority | None = queries.get_authority(session, name)
            while authority is not None:
                out.append(authority_certificate(authority))
                authority = authority.parent
        return out

    def service_units(self, kind: str) -> list[ServiceUnitKey]:
        """Every OCSP responder or TSA unit with its certificate, its CA's certificate and its
        key's URI, for the HTTP services to build their signers from at start-up."""
        out = []
        with self.context.read() as session:
            units = [u for u in queries.list_service_units(session) if u.kind == kind]
            for unit in units:
                out.append(ServiceUnitKey(
                    unit.name, unit.authority.name, authority_certificate(unit.authority),
                    x509.load_der_x509_certificate(unit.certificate.der),
                    tuple(self.chain(unit.authority.name)), unit.key_uri))
        return out

    def signing_key(self, uri: str, certificate: x509.Certificate | None = None) -> SigningKey:
        """The key at ``uri``; with the ``certificate`` it signs for, also while the HSM is
        unreachable (checked against the certificate once the key is found: ca/keys/base.py),
        so a service worker starts during an outage and answers with refusals."""
        return self.context.keys.load(uri, certificate.public_key()
                                      if certificate is not None else None)
