"""Issuance with persist-before-sign, in Boulder's order.

The serial and the exact TBSCertificate are committed to the database *before* the key signs,
and the signed certificate is recorded in a second transaction. A crash in between leaves a
``pending`` row that names the serial, never a signed certificate the database does not know:
``tincay revoke`` and ``tincay reconcile`` revoke such a serial as never issued (ca.services.
reconciliation), and a signature that arrives after that is refused. Every key generation and
issuance is an audit event in the same transaction as the change it describes.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from ca import issuance as core
from ca.errors import AlreadyExistsError, IssuanceError, KeyExistsError, TincayError
from ca.issuance import CertificateRequest, IssuerInfo, PreparedCertificate
from ca.keys.base import KeySpec, PrivateKey, PublicKey, SigningKey
from ca.profiles import Profile
from ca.services.context import Progress, ServiceContext, as_json, not_after, say
from ca.services.results import IssuedCertificate, KeySource
from ca.services.subscriber_keys import SubscriberKeys
from ca.store import queries
from ca.store.models import Authority, Certificate
from ca.subject import build_name, format_name

Recorder = Callable[[Session, PreparedCertificate], Certificate]
_SERIAL_ATTEMPTS = 3  # a 159-bit collision is astronomically unlikely; retrying costs nothing


class Issuance:
    """Issues end-entity certificates, and certifies the keys of CAs and service units for
    :class:`ca.services.authorities.Authorities`."""

    def __init__(self, context: ServiceContext,
                 subscriber_keys: SubscriberKeys | None = None) -> None:
        self.context = context
        self.subscriber_keys = subscriber_keys or SubscriberKeys(context)

    def issue(self, ca: str, profile_name: str, subject_pairs: Sequence[tuple[str, str]],
              source: KeySource, *, emails: Sequence[str] = (), dns_names: Sequence[str] = (),
              days: int | None = None, progress: Progress | None = None,
              requested_by: Mapping[str, Any] | None = None,
              on_pending: Callable[[Session, Certificate], None] | None = None
              ) -> IssuedCertificate:
        """Issue an end-entity certificate under ``ca`` from a profile.

        The subject comes from the operator, checked against the profile; a CSR contributes only
        its (verified) public key, never its subject or extensions. ``requested_by``: who asked
        (the registration API's client and idempotency key), added to the audit events'
        details. ``on_pending(session, row)`` runs in the transaction that commits the pending
        row (the registration API links its Idempotency-Key claim to it there).
        """
        context = self.context
        profile = context.profiles.get(profile_name)
        if profile.self_signed or (profile.basic_constraints and profile.basic_constraints.ca):
            raise IssuanceError(f"profile {profile.name} is for CAs: use tincay init to create "
                                "certificate authorities")
        subject = build_name(profile, subject_pairs)
        with context.read() as session:
            issuer_info = context.issuer_info(queries.get_authority(session, ca))
        urls = context.urls(issuer_info)
        now = context.clock.now()
        until = not_after(now, days)

        private_key: PrivateKey | None = None
        key_uri: str | None = None
        serial: int | None = None
        if source.csr is not None:
            public_key: PublicKey = source.csr.public_key()  # type: ignore[assignment]
            core.check_key(profile, public_key)
        else:
            assert source.generate is not None
            self.dry_run(profile, subject, source.generate, issuer_info, ca, urls, now, until,
                         tuple(emails), tuple(dns_names))
            if source.token_object:  # a token object of its own, named after its serial
                serial = core.new_serial()
                key = self.obtain_key(f"{ca}.{serial:x}", source.generate, None, progress,
                                      authority=ca)
            else:  # made in the HSM, stored wrapped under its KEK: one token object per
                # subscriber does not scale (ca.services.subscriber_keys)
                say(progress, f"generating {source.generate} key (wrapped under the KEK)")
                key = self.subscriber_keys.generate(source.generate, authority=ca)
            public_key, private_key, key_uri = key.public_key, key.private_key, key.uri
        say(progress, f"issuing {profile.name} certificate under {ca}")

        def record(session: Session, prepared: PreparedCertificate) -> Certificate:
            row = self.record_pending(session, queries.get_authority(session, ca), prepared,
                                      subject, tuple(emails) + tuple(dns_names), key_uri,
                                      requested_by)
            if on_pending is not None:
                on_pending(session, row)
            return row

        cert, row = self.certify(profile, subject, public_key, issuer_info, urls, now, until,
                                 tuple(emails), tuple(dns_names), record, serial=serial,
                                 requested_by=requested_by)
        return IssuedCertificate(cert, row.serial_hex, ca, profile.name, key_uri, private_key)

    def issue_with_key(self, issuer_info: IssuerInfo, profile: Profile,
                       subject_pairs: Sequence[tuple[str, str]], key: SigningKey,
                       days: int | None, progress: Progress | None) -> IssuedCertificate:
        """Certify ``key`` (already on the backend) under ``issuer_info``: a service unit's."""
        subject = build_name(profile, subject_pairs)
        now = self.context.clock.now()
        say(progress, f"issuing {profile.name} certificate under {issuer_info.name}")

        def record(session: Session, prepared: PreparedCertificate) -> Certificate:
            return self.record_pending(session,
                                       queries.get_authority(session, issuer_info.name),
                                       prepared, subject, (), key.uri)

        cert, row = self.certify(profile, subject, key.public_key, issuer_info,
                                 self.context.urls(issuer_info), now, not_after(now, days), (),
                                 (), record)
        return IssuedCertificate(cert, row.serial_hex, issuer_info.name, profile.name, key.uri,
                                 key.private_key)

    def dry_run(self, profile: Profile, subject: x509.Name, spec: KeySpec,
                issuer: IssuerInfo | None, name: str, urls: core.Urls | None, now: datetime,
                until: datetime | None, emails: tuple[str, ...] = (),
                dns_names: tuple[str, ...] = ()) -> None:
        """Check a request completely with a placeholder key before generating the real one.

        Key generation on an HSM is a side effect; a request the profile or the issuer refuses
        (validity beyond the issuer, wrong key type, bad e-mail) must fail before it, not leave an
        orphaned key on the token.
        """
        public = core.placeholder_public_key(spec)
        if issuer is None:  # a self-signed root signs with the key being made
            issuer = IssuerInfo(name, None, SigningKey("placeholder", spec, None,  # type: ignore[arg-type]
                                                       public))
        core.prepare(CertificateRequest(profile, subject, public, serial=core.new_serial(),
                                        not_before=now, not_after=until, emails=emails,
                                        dns_names=dns_names), issuer, urls)

    def obtain_key(self, label: str, spec: KeySpec, key_uri: str | None,
                   progress: Progress | None, *, authority: str) -> SigningKey:
        """Adopt ``key_uri`` or generate a key; every generation is an audit event of the CA
        the key belongs to (its own key, or a key it certifies)."""
        context = self.context
        if key_uri is not None:
            return context.keys.load(key_uri)
        say(progress, f"generating {spec} key {label!r}")
        try:
            key = context.keys.generate(label, spec)
        except KeyExistsError as exc:
            raise KeyExistsError(f"{exc}; remove it or adopt it explicitly") from None
        with context.transaction() as session:
            queries.record_event(session, at=context.clock.now(), action="key.generate",
                                 authority=authority,
                                 details=as_json({"key_uri": key.uri, "spec": str(spec)}))
        return key

    def record_pending(self, session: Session, issuer: Authority, prepared: PreparedCertificate,
                       subject: x509.Name, san: tuple[str, ...],
                       key_uri: str | None,
                       requested_by: Mapping[str, Any] | None = None) -> Certificate:
        """The pending row and its audit event: what the database knows before the signature."""
        now = self.context.clock.now()
        row = queries.add_pending_certificate(
            session, issuer=issuer, serial_hex=prepared.serial_hex, profile=prepared.profile_name,
            subject=format_name(subject), san=list(san) or None, not_before=prepared.not_before,
            not_after=prepared.not_after, tbs_der=prepared.tbs_der, key_uri=key_uri,
            created_at=now)
        queries.record_event(session, at=now, action="certificate.prepare",
                             authority=issuer.name, serial_hex=prepared.serial_hex,
                             subject=format_name(subject),
                             details=as_json({"profile": prepared.profile_name,
                                              "tbs_sha256": hashlib.sha256(
                                                  prepared.tbs_der).hexdigest(),
                                              **(requested_by or {})}))
        return row

    def certify(self, profile: Profile, subject: x509.Name, public_key: PublicKey,
                issuer: IssuerInfo, urls: core.Urls | None, now: datetime,
                until: datetime | None, emails: tuple[str, ...], dns_names: tuple[str, ...],
                record: Recorder, serial: int | None = None,
                requested_by: Mapping[str, Any] | None = None
                ) -> tuple[x509.Certificate, Certificate]:
        """prepare -> commit the pending row (``record``) -> sign -> commit the certificate (or
        the failure)."""
        prepared, row = self.persist(profile, subject, public_key, issuer, urls, now, until,
                                     emails, dns_names, record, serial)
        return self.complete(prepared, issuer, row, requested_by)

    def persist(self, profile: Profile, subject: x509.Name, public_key: PublicKey,
                issuer: IssuerInfo, urls: core.Urls | None, now: datetime,
                until: datetime | None, emails: tuple[str, ...], dns_names: tuple[str, ...],
                record: Recorder, serial: int | None = None
                ) -> tuple[PreparedCertificate, Certificate]:
        """The first half of :meth:`certify`: the TBSCertificate prepared and its pending row
        committed, nothing signed yet. What a crash before the signature leaves behind, and
        what ``tincay reconcile`` resolves."""
        for attempt in range(_SERIAL_ATTEMPTS):
            request = CertificateRequest(profile, subject, public_key,
                                         serial=serial or core.new_serial(), not_before=now,
                                         not_after=until, emails=emails, dns_names=dns_names)
            prepared = core.prepare(request, issuer, urls)
            try:
                with self.context.transaction() as session:
                    row = record(session, prepared)
                break
            except AlreadyExistsError:
                if attempt == _SERIAL_ATTEMPTS - 1 or serial is not None:
                    raise
        return prepared, row

    def complete(self, prepared: PreparedCertificate, issuer: IssuerInfo,
                 row: Certificate, requested_by: Mapping[str, Any] | None = None
                 ) -> tuple[x509.Certificate, Certificate]:
        """The second half of :meth:`certify`: sign exactly what was prepared and record it,
        unless the pending row was revoked as never issued meanwhile (then IssuanceError, and
        the signed certificate is dropped: it never leaves this process)."""
        context = self.context
        try:
            cert = core.sign(prepared, issuer)
        except TincayError as exc:
            self._mark_failed(row, exc)
            raise
        with context.transaction() as session:
            row = queries.mark_issued(session, row.id,
                                      cert.public_bytes(serialization.Encoding.DER),
                                      context.clock.now())
            queries.record_event(session, at=context.clock.now(), action="certificate.issue",
                                 authority=issuer.name, serial_hex=row.serial_hex,
                                 subject=row.subject,
                                 details=as_json({"profile": prepared.profile_name,
                                                  "fingerprint_sha256": row.fingerprint_sha256,
                                                  **(requested_by or {})}))
        return cert, row

    def _mark_failed(self, row: Certificate, exc: Exception) -> None:
        context = self.context
        with context.transaction() as session:
            row = session.merge(row)
            queries.mark_failed(session, row, str(exc), context.clock.now())
            queries.record_event(session, at=context.clock.now(), action="certificate.fail",
                                 serial_hex=row.serial_hex, subject=row.subject,
                                 details=as_json({"error": str(exc)}))
