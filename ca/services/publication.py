"""Publication of CRLs (complete and delta, RFC 5280 5.2.4) and the per-CA settings of how
long CRLs and OCSP answers are valid."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterator

from ca import crl, signing
from ca.errors import IssuanceError
from ca.publication import PublicationSettings
from ca.services.context import ServiceContext, as_json
from ca.services.listings import describe_authority
from ca.services.results import CrlInfo
from ca.store import queries


class Publication:
    """Signs and records CRLs with the next cRLNumber; reads and changes publication settings."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

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
        context = self.context
        now = context.clock.now().replace(microsecond=0)
        with context.transaction() as session:
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
            issuer = context.issuer_info(authority)
            number = queries.next_crl_number(session, authority)
            counter = [0]
            stream = (queries.changed_entries(session, authority, base.this_update) if base
                      else queries.revoked_entries(session, authority))

            def entries() -> Iterator[crl.StoredRevocation]:
                for counter[0], entry in enumerate(stream, start=1):
                    yield entry

            freshest = context.urls(issuer).freshest_crl if not delta else None
            der = crl.build_crl(issuer.certificate, issuer.key, entries(),  # type: ignore[arg-type]
                                crl.CrlParams(number, now, now + validity,
                                              delta_base=base.number if base else None,
                                              hash=signing.default_hash(issuer.key),
                                              freshest_crl=freshest))
            queries.add_crl(session, issuer=authority, number=number, this_update=now,
                            next_update=now + validity, entries=counter[0], der=der,
                            delta_base=base.number if base else None)
            queries.record_event(session, at=now, action="crl.publish", authority=ca,
                                 details=as_json({"number": number, "entries": counter[0],
                                                  "delta_base": base.number if base else None}))
        return CrlInfo(ca, number, now, now + validity, counter[0], der,
                       base.number if base else None)

    def publish_due_crls(self) -> list[CrlInfo]:
        """Publish every CRL that is missing, past half its validity, or behind a revocation,
        hold or release, for every active CA: the complete CRL, then (for a CA with deltas) a
        delta over the latest complete one.

        Half the validity ahead, like the OCSP refresh: a relying party that cached a CRL at
        its thisUpdate always finds a newer one before nextUpdate, even if a run is missed. A
        status change is published at the next pass (minutes, not days): as a delta CRL where
        the CA publishes deltas, else as a new complete CRL, so a keyCompromise reaches
        CRL-only relying parties within one maintenance interval.
        """
        published = []
        now = self.context.clock.now()
        with self.context.read() as session:
            active = [a.name for a in queries.list_authorities(session) if a.status == "active"]
        for name in active:
            settings = self.settings(name)
            full = self.latest_crl(name)
            deltas = settings.delta_crl_validity is not None
            if (full is None or now >= full.this_update + settings.crl_validity / 2
                    or (not deltas and self._changed_after(full))):
                full = self.publish_crl(name)
                published.append(full)
            if not deltas:
                continue
            delta = self.latest_crl(name, delta=True)
            if (delta is None or delta.delta_base != full.number
                    or now >= delta.this_update + settings.delta_crl_validity / 2
                    or self._changed_after(max(full, delta, key=lambda c: c.number))):
                published.append(self.publish_crl(name, delta=True))
        return published

    def _changed_after(self, published: CrlInfo) -> bool:
        """A revocation, hold or release of ``published.ca`` since that CRL was signed."""
        with self.context.read() as session:
            return queries.status_changed_after_crl(session, published.ca, published.number,
                                                    published.this_update)

    def latest_crl(self, ca: str, *, delta: bool = False) -> CrlInfo | None:
        with self.context.read() as session:
            record = queries.latest_crl(session, ca, delta=delta)
            if record is None:
                return None
            return CrlInfo(ca, record.number, record.this_update, record.next_update,
                           record.entries, record.der, record.delta_base)

    def settings(self, ca: str) -> PublicationSettings:
        """How long ``ca``'s CRLs, delta CRLs and OCSP answers are valid."""
        with self.context.read() as session:
            return queries.publication(queries.get_authority(session, ca))

    def configure(self, ca: str, *, crl_validity: timedelta | None = None,
                  delta_crl_validity: timedelta | None | bool = False,
                  ocsp_validity: timedelta | None = None) -> dict[str, Any]:
        """Change how long ``ca``'s CRLs, delta CRLs and OCSP answers are valid.

        Arguments left out keep their value; ``delta_crl_validity=None`` stops delta CRLs
        (``False``, the default, leaves that setting alone). Certificates issued from now on
        carry the Freshest CRL pointer only while deltas are on; published CRLs and stored
        OCSP answers keep the validity they were signed with.
        """
        now = self.context.clock.now().replace(microsecond=0)
        with self.context.transaction() as session:
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
                                 details=as_json({"before": current.describe(),
                                                  "after": updated.describe()}))
            return describe_authority(authority)
