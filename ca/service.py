"""Orchestration of the CA: keys, profiles, issuance and the store, with transaction boundaries.

This is the one place that sequences side effects, in Boulder's order: the serial and the exact
TBSCertificate are committed to the database *before* the key signs, and the signed certificate
is recorded in a second transaction. A crash in between leaves a ``pending`` row that names the
serial (so it can still be revoked), never a signed certificate the database does not know.
Every key generation and issuance is an audit event in the same transaction as the change it
describes.

The HTTP apps and the CLI build one :class:`CertificateAuthorityService` at their composition
root; nothing here reads the environment.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

from contextlib import contextmanager
from functools import cached_property, partial

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session, sessionmaker

from ca import crl, issuance, signing
from ca.clock import Clock
from ca.errors import (AlreadyExistsError, IssuanceError, KeyExistsError, NotFoundError,
                       TincayError)
from ca.hierarchy import AuthoritySpec, HierarchySpec, PublicationSettings, ServiceSpec
from ca.issuance import CertificateRequest, IssuerInfo
from ca.keys.base import KeyBackend, KeySpec, PrivateKey, PublicKey, SigningKey
from ca.profiles import Profile, ProfileSet
from ca.revocation import parse_reason
from ca.store import queries
from ca.store.hot import HotInsert, HotQuery
from ca.store.group_commit import GroupCommitter
from ca.store.models import (ISSUED, REVOKED, Authority, Certificate, ServiceUnit,
                             TimestampToken, status_token)
from ca.subject import build_name, format_name
from ca.timestamps import TimestampRecord

Progress = Callable[[str], None]
_SERIAL_ATTEMPTS = 3  # a 159-bit collision is astronomically unlikely; retrying costs nothing


@dataclass(frozen=True)
class IssuedCertificate:
    """What an issuance hands back: the certificate and where its key lives.

    ``private_key`` is the signer object for a key the CA generated (an HSM handle that signs
    through PKCS#11, or an in-memory key for throwaway hierarchies); None for a CSR.
    """

    certificate: x509.Certificate
    serial_hex: str
    issuer: str
    profile: str
    key_uri: str | None = None
    private_key: PrivateKey | None = None

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class KeySource:
    """Where the subject's public key comes from: a verified CSR, or a key the CA generates."""

    csr: x509.CertificateSigningRequest | None = None
    generate: KeySpec | None = None

    def __post_init__(self) -> None:
        if (self.csr is None) == (self.generate is None):
            raise ValueError("give exactly one of csr and generate")


@dataclass(frozen=True)
class CertificateStatus:
    """What the store knows of one serial: status (issued, revoked, pending, failed) and, when
    revoked, when, why (RFC 5280 reason name) and since when the key was invalid."""

    status: str
    revoked_at: datetime | None = None
    reason: str | None = None
    invalidity_date: datetime | None = None


@dataclass(frozen=True)
class ServiceUnitKey:
    """An OCSP responder or TSA unit as the services need it. ``chain``: its CA up to the root."""

    name: str
    authority: str
    authority_certificate: x509.Certificate
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key_uri: str



@dataclass(frozen=True)
class CrlInfo:
    """A published CRL: its number, times, size and DER."""

    ca: str
    number: int
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes
    delta_base: int | None = None  # the complete CRL's number, for a delta CRL


class CertificateAuthorityService:
    """Create authorities and issue certificates; the only writer of the CA tables."""

    def __init__(self, sessions: sessionmaker[Session], keys: KeyBackend, profiles: ProfileSet,
                 clock: Clock, public_url: str) -> None:
        self._sessions = sessions
        self.keys = keys
        self.profiles = profiles
        self.clock = clock
        self.public_url = public_url

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @cached_property
    def _engine(self) -> Any:
        return self._sessions.kw["bind"]

    @cached_property
    def _status_query(self) -> HotQuery:
        return HotQuery(self._engine, queries.STATUS_QUERY)

    @cached_property
    def _preproduced_query(self) -> HotQuery:
        return HotQuery(self._engine, queries.PREPRODUCED_QUERY)

    def read(self) -> Session:
        """A session for read-only callers (listings); the caller closes it."""
        return self._sessions()

    # --- authorities --------------------------------------------------------------------------

    def create_authority(self, spec: AuthoritySpec, *, key_uri: str | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
        """Create a root (no parent) or a subordinate CA: key on the backend, certificate, rows.

        ``key_uri`` adopts an existing key (an HSM key made by the HSM's own ceremony) instead
        of generating one labelled with the CA's name.
        """
        profile = self.profiles.get(spec.profile)
        if profile.self_signed != (spec.parent is None):
            raise IssuanceError(f"CA {spec.name}: profile {profile.name} is "
                                f"{'' if profile.self_signed else 'not '}self-signed, so the CA "
                                f"{'must not' if profile.self_signed else 'must'} have a parent")
        subject = build_name(profile, spec.subject)
        with self.read() as session:
            if spec.name in {a.name for a in queries.list_authorities(session)}:
                raise AlreadyExistsError(f"CA {spec.name!r} already exists")
            issuer_info = (self._issuer_info(queries.get_authority(session, spec.parent))
                           if spec.parent else None)
        now = self.clock.now()
        not_after = _not_after(now, spec.validity_days)
        urls = self._urls(issuer_info) if issuer_info else None
        if key_uri is None:
            self._dry_run(profile, subject, spec.key, issuer_info, spec.name, urls, now, not_after)
        key = self._obtain_key(spec.name, spec.key, key_uri, progress, authority=spec.name)
        _say(progress, f"certifying CA {spec.name} ({profile.name})")
        if issuer_info is None:
            issuer_info = IssuerInfo(spec.name, None, key)

        def record(session: Session, prepared: issuance.PreparedCertificate) -> Certificate:
            authority = queries.add_authority(
                session, name=spec.name, profile=profile.name, key_uri=key.uri,
                subject=format_name(subject),
                parent=queries.get_authority(session, spec.parent) if spec.parent else None,
                created_at=now, publication=spec.publication)
            issuer = authority if spec.parent is None else authority.parent
            return self._record_pending(session, issuer, prepared, subject, (), None)

        cert, row = self._issue(profile, subject, key.public_key, issuer_info, urls, now,
                                not_after, (), (), record)
        with self._transaction() as session:
            authority = queries.get_authority(session, spec.name)
            queries.set_authority_certificate(session, authority, session.merge(row))
            queries.record_event(session, at=self.clock.now(), action="authority.create",
                                 authority=spec.name, serial_hex=row.serial_hex,
                                 subject=format_name(subject),
                                 details=_json({"profile": profile.name, "key_uri": key.uri,
                                                "parent": spec.parent}))
            return describe_authority(authority)

    def authority_certificate(self, name: str) -> x509.Certificate:
        with self.read() as session:
            authority = queries.get_authority(session, name)
            return _authority_cert(authority)

    def chain(self, name: str) -> list[x509.Certificate]:
        """The CA's certificate followed by its parents' up to and including the root."""
        out: list[x509.Certificate] = []
        with self.read() as session:
            authority: Authority | None = queries.get_authority(session, name)
            while authority is not None:
                out.append(_authority_cert(authority))
                authority = authority.parent
        return out

    # --- end entities -------------------------------------------------------------------------

    def issue(self, ca: str, profile_name: str, subject_pairs: Sequence[tuple[str, str]],
              source: KeySource, *, emails: Sequence[str] = (), dns_names: Sequence[str] = (),
              days: int | None = None, progress: Progress | None = None) -> IssuedCertificate:
        """Issue an end-entity certificate under ``ca`` from a profile.

        The subject comes from the operator, checked against the profile; a CSR contributes only
        its (verified) public key, never its subject or extensions.
        """
        profile = self.profiles.get(profile_name)
        if profile.self_signed or (profile.basic_constraints and profile.basic_constraints.ca):
            raise IssuanceError(f"profile {profile.name} is for CAs: use tincay init to create "
                                "certificate authorities")
        subject = build_name(profile, subject_pairs)
        with self.read() as session:
            issuer_info = self._issuer_info(queries.get_authority(session, ca))
        urls = self._urls(issuer_info)
        now = self.clock.now()
        not_after = _not_after(now, days)

        private_key: PrivateKey | None = None
        key_uri: str | None = None
        serial: int | None = None
        if source.csr is not None:
            public_key: PublicKey = source.csr.public_key()  # type: ignore[assignment]
            issuance.check_key(profile, public_key)
        else:
            assert source.generate is not None
            self._dry_run(profile, subject, source.generate, issuer_info, ca, urls, now,
                          not_after, tuple(emails), tuple(dns_names))
            # Name the subscriber's key after the serial it is certified under.
            serial = issuance.new_serial()
            key = self._obtain_key(f"{ca}.{serial:x}", source.generate, None, progress,
                                   authority=ca)
            public_key, private_key, key_uri = key.public_key, key.private_key, key.uri
        _say(progress, f"issuing {profile.name} certificate under {ca}")

        def record(session: Session, prepared: issuance.PreparedCertificate) -> Certificate:
            return self._record_pending(session, queries.get_authority(session, ca), prepared,
                                        subject, tuple(emails) + tuple(dns_names), key_uri)

        cert, row = self._issue(profile, subject, public_key, issuer_info, urls, now, not_after,
                                tuple(emails), tuple(dns_names), record, serial=serial)
        return IssuedCertificate(cert, row.serial_hex, ca, profile.name, key_uri, private_key)

    def create_service_unit(self, spec: ServiceSpec,
                            progress: Progress | None = None) -> dict[str, Any]:
        """An OCSP responder or TSA unit: a key on the backend labelled with the unit's name and
        a certificate from its CA, so the services can find both by name."""
        profile = self.profiles.get(spec.profile)
        with self.read() as session:
            if spec.name in {u.name for u in queries.list_service_units(session)}:
                raise AlreadyExistsError(f"service unit {spec.name!r} already exists")
            issuer_info = self._issuer_info(queries.get_authority(session, spec.issuer))
        now = self.clock.now()
        self._dry_run(profile, build_name(profile, spec.subject), spec.key, issuer_info,
                      spec.name, self._urls(issuer_info), now,
                      _not_after(now, spec.validity_days))
        key = self._obtain_key(spec.name, spec.key, None, progress, authority=spec.issuer)
        issued = self._issue_with_key(issuer_info, profile, spec.subject, key, spec.validity_days,
                                      progress)
        with self._transaction() as session:
            authority = queries.get_authority(session, spec.issuer)
            cert_row = queries.get_certificate(session, authority, issued.serial_hex)
            unit = queries.add_service_unit(session, name=spec.name, kind=spec.kind,
                                            authority=authority, certificate=cert_row,
                                            key_uri=key.uri, created_at=self.clock.now())
            queries.record_event(session, at=self.clock.now(), action="service.create",
                                 authority=spec.issuer, serial_hex=issued.serial_hex,
                                 details=_json({"unit": spec.name, "kind": spec.kind,
                                                "key_uri": key.uri}))
            return describe_service_unit(unit)

    def _issue_with_key(self, issuer_info: IssuerInfo, profile: Profile,
                        subject_pairs: Sequence[tuple[str, str]], key: SigningKey,
                        days: int | None, progress: Progress | None) -> IssuedCertificate:
        subject = build_name(profile, subject_pairs)
        now = self.clock.now()
        _say(progress, f"issuing {profile.name} certificate under {issuer_info.name}")

        def record(session: Session, prepared: issuance.PreparedCertificate) -> Certificate:
            return self._record_pending(session, queries.get_authority(session, issuer_info.name),
                                        prepared, subject, (), key.uri)

        cert, row = self._issue(profile, subject, key.public_key, issuer_info,
                                self._urls(issuer_info), now,
                                _not_after(now, days), (), (), record)
        return IssuedCertificate(cert, row.serial_hex, issuer_info.name, profile.name, key.uri,
                                 key.private_key)

    # --- revocation -----------------------------------------------------------------------------

    def revoke(self, ca: str, serial: str, reason: str, *,
               invalidity_date: datetime | None = None) -> dict[str, Any]:
        """Revoke a certificate ``ca`` issued (RFC 5280 5.3.1 reasons; certificateHold is
        temporary and can be released). A held certificate may then be revoked for good, keeping
        its original revocation time; a permanently revoked one stays as it is."""
        code = parse_reason(reason)
        now = self.clock.now().replace(microsecond=0)
        if invalidity_date is not None and invalidity_date > now:
            raise IssuanceError(f"invalidity date {invalidity_date.isoformat()} is in the future")
        with self._transaction() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            if row.status == REVOKED and row.revocation_reason != "certificateHold":
                raise AlreadyExistsError(f"certificate {row.serial_hex} of {ca} is already "
                                         f"revoked ({row.revocation_reason})")
            if row.status not in (ISSUED, REVOKED):
                raise IssuanceError(f"certificate {row.serial_hex} of {ca} is {row.status}: "
                                    "only issued certificates can be revoked")
            if row.status == REVOKED and code == "certificateHold":
                raise AlreadyExistsError(f"certificate {row.serial_hex} of {ca} is already on hold")
            previous = row.revocation_reason
            queries.mark_revoked(session, row, reason=code, at=row.revoked_at or now,
                                 invalidity_date=invalidity_date, changed_at=now)
            queries.record_event(session, at=now, action="certificate.revoke", authority=ca,
                                 serial_hex=row.serial_hex, subject=row.subject,
                                 details=_json({"reason": code, "previous": previous,
                                                "invalidity_date": invalidity_date.isoformat()
                                                if invalidity_date else None}))
            return describe_certificate(row)

    def release_hold(self, ca: str, serial: str) -> dict[str, Any]:
        """Take a certificate off hold (RFC 5280: certificateHold is the only reversible reason)."""
        now = self.clock.now().replace(microsecond=0)
        with self._transaction() as session:
            row = queries.get_certificate(session, queries.get_authority(session, ca), serial)
            if row.status != REVOKED or row.revocation_reason != "certificateHold":
                raise IssuanceError(f"certificate {row.serial_hex} of {ca} is not on hold "
                                    f"({row.status}"
                                    f"{', ' + row.revocation_reason if row.revocation_reason else ''})")
            queries.mark_released(session, row, at=now)
            queries.record_event(session, at=now, action="certificate.release", authority=ca,
                                 serial_hex=row.serial_hex, subject=row.subject)
            return describe_certificate(row)

    # --- CRLs ---------------------------------------------------------------------------------

    def publish_crl(self, ca: str, *, validity: timedelta | None = None,
                    delta: bool = False) -> CrlInfo:
        """Sign and record a new CRL of ``ca`` with the next cRLNumber: a complete CRL, or with
        ``delta`` a delta CRL over the latest complete one (RFC 5280 5.2.4).

        ``validity`` (nextUpdate - thisUpdate) defaults to the CA's setting. Entries stream
        from the database into the encoder. Complete and delta CRLs share one number sequence
        (RFC 5280 5.2.3) from the crls table under a unique constraint, so two publishers
        racing get distinct numbers or a clear error, never two CRLs with one number. A CA
        that publishes deltas names its delta CRL in its complete CRLs (Freshest CRL).
        """
        now = self.clock.now().replace(microsecond=0)
        with self._transaction() as session:
            authority = queries.get_authority(session, ca)
            settings = queries.publication(authority)
            base = None
            if delta:
                if settings.delta_crl_validity is None:
                    raise IssuanceError(f"CA {ca} does not publish delta CRLs (set one with "
                                        f"tincay ca configure {ca} --delta-crl-validity 1d)")
                base = queries.latest_crl(session, ca)
                if base is None:
                    raise IssuanceError(f"CA {ca} has no complete CRL yet for a delta CRL to "
                                        f"build on: publish one first (tincay crl --ca {ca})")
            if validity is None:
                validity = settings.delta_crl_validity if delta else settings.crl_validity
            if validity is None or validity <= timedelta(0):
                raise IssuanceError("CRL validity must be positive")
            issuer = self._issuer_info(authority)
            number = queries.next_crl_number(session, authority)
            counter = [0]
            stream = (queries.changed_entries(session, authority, base.this_update) if base
                      else queries.revoked_entries(session, authority))

            def entries() -> Iterator[crl.StoredRevocation]:
                for counter[0], entry in enumerate(stream, start=1):
                    yield entry

            freshest = self._urls(issuer).freshest_crl if not delta else None
            der = crl.build_crl(issuer.certificate, issuer.key, entries(),  # type: ignore[arg-type]
                                crl.CrlParams(number, now, now + validity,
                                              delta_base=base.number if base else None,
                                              hash=signing.default_hash(issuer.key),
                                              freshest_crl=freshest))
            queries.add_crl(session, issuer=authority, number=number, this_update=now,
                            next_update=now + validity, entries=counter[0], der=der,
                            delta_base=base.number if base else None)
            queries.record_event(session, at=now, action="crl.publish", authority=ca,
                                 details=_json({"number": number, "entries": counter[0],
                                                "delta_base": base.number if base else None}))
        return CrlInfo(ca, number, now, now + validity, counter[0], der,
                       base.number if base else None)

    def publish_due_crls(self) -> list[CrlInfo]:
        """Publish every CRL that is missing or past half its validity, for every active CA:
        the complete CRL, then (for a CA with deltas) a delta over the latest complete one.

        Half the validity ahead, like the OCSP refresh: a relying party that cached a CRL at
        its thisUpdate always finds a newer one before nextUpdate, even if a run is missed.
        """
        published = []
        now = self.clock.now()
        for authority in self.list_authorities():
            if authority["status"] != "active":
                continue
            name = authority["name"]
            settings = self.publication_settings(name)
            full = self.latest_crl(name)
            if full is None or now >= full.this_update + settings.crl_validity / 2:
                full = self.publish_crl(name)
                published.append(full)
            if settings.delta_crl_validity is None:
                continue
            delta = self.latest_crl(name, delta=True)
            if (delta is None or delta.delta_base != full.number
                    or now >= delta.this_update + settings.delta_crl_validity / 2):
                published.append(self.publish_crl(name, delta=True))
        return published

    def latest_crl(self, ca: str, *, delta: bool = False) -> CrlInfo | None:
        with self.read() as session:
            record = queries.latest_crl(session, ca, delta=delta)
            if record is None:
                return None
            return CrlInfo(ca, record.number, record.this_update, record.next_update,
                           record.entries, record.der, record.delta_base)

    def publication_settings(self, ca: str) -> PublicationSettings:
        with self.read() as session:
            return queries.publication(queries.get_authority(session, ca))

    def configure_authority(self, ca: str, *, crl_validity: timedelta | None = None,
                            delta_crl_validity: timedelta | None | bool = False,
                            ocsp_validity: timedelta | None = None) -> dict[str, Any]:
        """Change how long ``ca``'s CRLs, delta CRLs and OCSP answers are valid.

        Arguments left out keep their value; ``delta_crl_validity=None`` stops delta CRLs
        (``False``, the default, leaves that setting alone). Certificates issued from now on
        carry the Freshest CRL pointer only while deltas are on; published CRLs and stored
        OCSP answers keep the validity they were signed with.
        """
        now = self.clock.now().replace(microsecond=0)
        with self._transaction() as session:
            authority = queries.get_authority(session, ca)
            current = queries.publication(authority)
            try:
                updated = PublicationSettings(
                    crl_validity=crl_validity or current.crl_validity,
                    delta_crl_validity=current.delta_crl_validity
                    if delta_crl_validity is False else delta_crl_validity,  # type: ignore[arg-type]
                    ocsp_validity=ocsp_validity or current.ocsp_validity)
            except ValueError as exc:
                raise IssuanceError(f"CA {ca}: {exc}") from None
            queries.set_publication(authority, updated)
            queries.record_event(session, at=now, action="authority.configure", authority=ca,
                                 details=_json({"before": current.describe(),
                                                "after": updated.describe()}))
            return describe_authority(authority)

    # --- what the OCSP responder and the TSA need -------------------------------------------

    def certificate_status(self, ca: str, serial: int) -> CertificateStatus | None:
        """The revocation state of ``ca``'s certificate ``serial``, or None if it never issued it.

        One indexed query on the hot path of live OCSP answers. Pending and failed rows are
        reported as such: the responder must not call them good (never signed, or not known to
        be), and answers unknown.
        """
        row = queries.certificate_status(self._status_query, ca, format(serial, "x"))
        if row is None:
            return None
        status, revoked_at, reason, invalidity_date = row
        return CertificateStatus(status, revoked_at, reason, invalidity_date)

    def preproduced_response(self, ca: str, serial: int) -> bytes | None:
        """A stored OCSP response for ``serial`` that is unexpired and agrees with its status."""
        return queries.preproduced_response(self._preproduced_query, ca, format(serial, "x"),
                                            self.clock.now())

    def ocsp_responses_due(self, ca: str, before: datetime, limit: int = 1000,
                           serial: str | None = None) -> list[tuple[int, str, CertificateStatus]]:
        """Up to ``limit`` certificates of ``ca`` whose pre-produced response is missing,
        stale, or expires before ``before``: (row id, serial hex, status)."""
        with self.read() as session:
            authority = queries.get_authority(session, ca)
            due = []
            only = queries.normalize_serial(serial) if serial is not None else None
            for cid, serial_hex, status, reason, revoked_at in queries.responses_due(
                    session, authority, before, serial_hex=only):
                due.append((cid, serial_hex, CertificateStatus(status, revoked_at, reason)))
                if len(due) >= limit:
                    break
            return due

    def store_ocsp_responses(self, responses: Sequence[tuple[int, CertificateStatus, datetime,
                                                             datetime, bytes]]) -> None:
        """Store pre-produced responses: (row id, the status they encode, thisUpdate,
        nextUpdate, DER), in one transaction."""
        with self._transaction() as session:
            for cid, status, this_update, next_update, der in responses:
                queries.store_response(session, cid, status_token(
                    status.status, status.reason, status.revoked_at), this_update, next_update,
                    der)

    def service_units(self, kind: str) -> list[ServiceUnitKey]:
        """Every OCSP responder or TSA unit with its certificate, its CA's certificate and its
        signing key, for the HTTP services to build their signers from at start-up."""
        out = []
        with self.read() as session:
            units = [u for u in queries.list_service_units(session) if u.kind == kind]
            for unit in units:
                out.append(ServiceUnitKey(
                    unit.name, unit.authority.name, _authority_cert(unit.authority),
                    x509.load_der_x509_certificate(unit.certificate.der),
                    tuple(self.chain(unit.authority.name)), unit.key_uri))
        return out

    def record_timestamp(self, token: TimestampRecord) -> None:
        """Record a granted time-stamp token durably; returns once it is committed.

        Concurrent callers share commits (ca.store.group_commit), so durability costs one
        commit per batch rather than per token.
        """
        self._timestamp_log.submit(token)

    def timestamp_log(self, *, unit: str | None = None, since: datetime | None = None,
                      serial: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.read() as session:
            return [{"unit": t.unit, "serial": t.serial_hex, "gen_time": t.gen_time,
                     "imprint_algorithm": t.imprint_algorithm, "imprint": t.imprint_hex,
                     "policy": t.policy, "nonce": t.nonce_hex, "requester": t.requester}
                    for t in queries.find_timestamp_tokens(session, unit=unit, since=since,
                                                           serial=serial, limit=limit)]

    @cached_property
    def _timestamp_log(self) -> GroupCommitter[TimestampRecord]:
        return GroupCommitter(partial(queries.add_timestamp_tokens, self._token_insert))

    @cached_property
    def _token_insert(self) -> HotInsert:
        return HotInsert(self._engine, TimestampToken.__table__, queries.TOKEN_COLUMNS)

    def close(self) -> None:
        """Hand the hot-path connections back to the engine's pool (before it is disposed)."""
        for hot in ("_status_query", "_preproduced_query", "_token_insert"):
            if hot in self.__dict__:
                self.__dict__[hot].close()

    def signing_key(self, uri: str, certificate: x509.Certificate | None = None) -> SigningKey:
        """The key at ``uri``; with the ``certificate`` it signs for, also while the HSM is
        unreachable (checked against the certificate once the key is found: ca/keys/base.py),
        so a service worker starts during an outage and answers with refusals."""
        return self.keys.load(uri, certificate.public_key() if certificate is not None else None)

    # --- hierarchies --------------------------------------------------------------------------

    def init_hierarchy(self, spec: HierarchySpec,
                       progress: Progress | None = None) -> list[str]:
        """Create what the spec names and the database lacks; returns the names created.

        Idempotent, so ``make run`` can call it every time: existing CAs and units are kept as
        they are (their keys and certificates are never replaced silently).
        """
        created: list[str] = []
        with self.read() as session:
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

    # --- listings (plain dicts, built while the session is open) ------------------------------

    def list_authorities(self) -> list[dict[str, Any]]:
        with self.read() as session:
            return [describe_authority(a) for a in queries.list_authorities(session)]

    def show_authority(self, name: str) -> dict[str, Any]:
        with self.read() as session:
            return describe_authority(queries.get_authority(session, name))

    def list_service_units(self) -> list[dict[str, Any]]:
        with self.read() as session:
            return [describe_service_unit(u) for u in queries.list_service_units(session)]

    def list_certificates(self, *, ca: str | None = None, profile: str | None = None,
                          status: str | None = None, subject_contains: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        with self.read() as session:
            issuer = queries.get_authority(session, ca) if ca else None
            rows = queries.find_certificates(session, issuer=issuer, profile=profile,
                                             status=status, subject_contains=subject_contains,
                                             limit=limit)
            return [describe_certificate(c) for c in rows]

    def show_certificate(self, serial: str, ca: str | None = None) -> dict[str, Any]:
        with self.read() as session:
            return describe_certificate(_find_certificate(session, serial, ca))

    def certificate_der(self, serial: str, ca: str | None = None) -> bytes:
        """The issued certificate's DER; an error for a pending or failed row (never signed)."""
        with self.read() as session:
            row = _find_certificate(session, serial, ca)
            if row.der is None:
                raise IssuanceError(f"certificate {row.serial_hex} of {row.issuer.name} is "
                                    f"{row.status}: it was never signed")
            return row.der

    def list_events(self, *, ca: str | None = None, serial: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        """The audit log, newest first."""
        with self.read() as session:
            return [{"id": e.id, "at": e.at, "action": e.action, "authority": e.authority,
                     "serial": e.serial_hex, "subject": e.subject,
                     "details": json.loads(e.details) if e.details else None}
                    for e in queries.list_events(session, authority=ca, serial_hex=serial,
                                                 limit=limit)]

    # --- internals ----------------------------------------------------------------------------

    def _issuer_info(self, authority: Authority) -> IssuerInfo:
        if authority.status != "active" or authority.certificate is None:
            raise IssuanceError(f"CA {authority.name} is {authority.status}, not active")
        return IssuerInfo(authority.name, _authority_cert(authority),
                          self.keys.load(authority.key_uri),
                          publishes_deltas=authority.delta_crl_validity_seconds is not None)

    def _urls(self, issuer: IssuerInfo) -> issuance.Urls:
        return issuance.urls_for(self.public_url, issuer.name, deltas=issuer.publishes_deltas)

    def _dry_run(self, profile: Profile, subject: x509.Name, spec: KeySpec,
                 issuer: IssuerInfo | None, name: str, urls: issuance.Urls | None, now: datetime,
                 not_after: datetime | None, emails: tuple[str, ...] = (),
                 dns_names: tuple[str, ...] = ()) -> None:
        """Check a request completely with a placeholder key before generating the real one.

        Key generation on an HSM is a side effect; a request the profile or the issuer refuses
        (validity beyond the issuer, wrong key type, bad e-mail) must fail before it, not leave an
        orphaned key on the token.
        """
        public = issuance.placeholder_public_key(spec)
        if issuer is None:  # a self-signed root signs with the key being made
            issuer = IssuerInfo(name, None, SigningKey("placeholder", spec, None,  # type: ignore[arg-type]
                                                       public))
        issuance.prepare(CertificateRequest(profile, subject, public, serial=issuance.new_serial(),
                                            not_before=now, not_after=not_after, emails=emails,
                                            dns_names=dns_names), issuer, urls)

    def _obtain_key(self, label: str, spec: KeySpec, key_uri: str | None,
                    progress: Progress | None, *, authority: str) -> SigningKey:
        """Adopt ``key_uri`` or generate a key; every generation is an audit event of the CA
        the key belongs to (its own key, or a key it certifies)."""
        if key_uri is not None:
            return self.keys.load(key_uri)
        _say(progress, f"generating {spec} key {label!r}")
        try:
            key = self.keys.generate(label, spec)
        except KeyExistsError as exc:
            raise KeyExistsError(f"{exc}; remove it or adopt it explicitly") from None
        with self._transaction() as session:
            queries.record_event(session, at=self.clock.now(), action="key.generate",
                                 authority=authority, details=_json({"key_uri": key.uri, "spec": str(spec)}))
        return key

    def _record_pending(self, session: Session, issuer: Authority,
                        prepared: issuance.PreparedCertificate, subject: x509.Name,
                        san: tuple[str, ...], key_uri: str | None) -> Certificate:
        row = queries.add_pending_certificate(
            session, issuer=issuer, serial_hex=prepared.serial_hex, profile=prepared.profile_name,
            subject=format_name(subject), san=list(san) or None, not_before=prepared.not_before,
            not_after=prepared.not_after, tbs_der=prepared.tbs_der, key_uri=key_uri,
            created_at=self.clock.now())
        queries.record_event(session, at=self.clock.now(), action="certificate.prepare",
                             authority=issuer.name, serial_hex=prepared.serial_hex,
                             subject=format_name(subject),
                             details=_json({"profile": prepared.profile_name,
                                            "tbs_sha256": hashlib.sha256(
                                                prepared.tbs_der).hexdigest()}))
        return row

    def _issue(self, profile: Profile, subject: x509.Name, public_key: PublicKey,
               issuer: IssuerInfo, urls: issuance.Urls | None, now: datetime,
               not_after: datetime | None, emails: tuple[str, ...], dns_names: tuple[str, ...],
               record: Callable[[Session, issuance.PreparedCertificate], Certificate],
               serial: int | None = None) -> tuple[x509.Certificate, Certificate]:
        """prepare -> commit the pending row -> sign -> commit the certificate (or the failure)."""
        for attempt in range(_SERIAL_ATTEMPTS):
            request = CertificateRequest(profile, subject, public_key,
                                         serial=serial or issuance.new_serial(), not_before=now,
                                         not_after=not_after, emails=emails, dns_names=dns_names)
            prepared = issuance.prepare(request, issuer, urls)
            try:
                with self._transaction() as session:
                    row = record(session, prepared)
                break
            except AlreadyExistsError:
                if attempt == _SERIAL_ATTEMPTS - 1 or serial is not None:
                    raise
        try:
            cert = issuance.sign(prepared, issuer)
        except TincayError as exc:
            self._mark_failed(row, exc)
            raise
        with self._transaction() as session:
            row = session.merge(row)
            queries.mark_issued(session, row, cert.public_bytes(serialization.Encoding.DER),
                                self.clock.now())
            queries.record_event(session, at=self.clock.now(), action="certificate.issue",
                                 authority=issuer.name, serial_hex=row.serial_hex,
                                 subject=row.subject,
                                 details=_json({"profile": profile.name,
                                                "fingerprint_sha256": row.fingerprint_sha256}))
        return cert, row

    def _mark_failed(self, row: Certificate, exc: Exception) -> None:
        with self._transaction() as session:
            row = session.merge(row)
            queries.mark_failed(session, row, str(exc), self.clock.now())
            queries.record_event(session, at=self.clock.now(), action="certificate.fail",
                                 serial_hex=row.serial_hex, subject=row.subject,
                                 details=_json({"error": str(exc)}))


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


def _find_certificate(session: Session, serial: str, ca: str | None) -> Certificate:
    if ca is not None:
        return queries.get_certificate(session, queries.get_authority(session, ca), serial)
    rows = queries.certificates_by_serial(session, serial)
    if not rows:
        raise NotFoundError(f"no certificate with serial {queries.normalize_serial(serial)}")
    if len(rows) > 1:
        raise NotFoundError(f"serial {rows[0].serial_hex} exists under several CAs "
                            f"({', '.join(r.issuer.name for r in rows)}): name the CA")
    return rows[0]


def _authority_cert(authority: Authority) -> x509.Certificate:
    if authority.certificate is None or authority.certificate.der is None:
        raise IssuanceError(f"CA {authority.name} has no certificate yet ({authority.status})")
    return x509.load_der_x509_certificate(authority.certificate.der)


def _not_after(now: datetime, days: int | None) -> datetime | None:
    """``days`` of validity counted inclusively (RFC 5280): ends one second before now + days."""
    if days is None:
        return None
    if days <= 0:
        raise IssuanceError(f"validity of {days} days: must be at least 1")
    return now.replace(microsecond=0) + timedelta(days=days, seconds=-1)


def _json(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
