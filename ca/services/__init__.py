"""The CA's services, one module per concern, over one shared :class:`ServiceContext`:

- ``authorities``   CAs, OCSP/TSA units and hierarchy set-up; the keys services sign with
- ``issuance``      end-entity issuance, persist-before-sign
- ``revocation``    revocation, hold and certificate status (the live OCSP read)
- ``publication``   CRLs and the per-CA publication settings
- ``ocsp_answers``  the pre-produced OCSP answers' storage
- ``token_log``     the time-stamp token log
- ``listings``      read-only views for operators

Each service owns its transactions. :class:`CertificateAuthority` builds them all over one
context for the composition roots (the CLI, the app factory, ca.testing); a consumer keeps
only the services it uses (the OCSP source holds the revocation and answer services, the TSA
endpoint the token log).
"""
from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.keys.base import KeyBackend
from ca.profiles import ProfileSet
from ca.services.authorities import Authorities
from ca.services.context import Progress, ServiceContext
from ca.services.issuance import Issuance
from ca.services.listings import Listings
from ca.services.ocsp_answers import OcspAnswers
from ca.services.publication import Publication
from ca.services.results import (CertificateStatus, CrlInfo, IssuedCertificate, KeySource,
                                 ServiceUnitKey)
from ca.services.revocation import Revocation
from ca.services.token_log import TokenLog

__all__ = ["Authorities", "CertificateAuthority", "CertificateStatus", "CrlInfo", "Issuance",
           "IssuedCertificate", "KeySource", "Listings", "OcspAnswers", "Progress",
           "Publication", "Revocation", "ServiceContext", "ServiceUnitKey", "TokenLog"]


class CertificateAuthority:
    """Every CA service over one context: what a composition root builds once per process."""

    def __init__(self, sessions: sessionmaker[Session], keys: KeyBackend, profiles: ProfileSet,
                 clock: Clock, public_url: str) -> None:
        self.context = context = ServiceContext(sessions, keys, profiles, clock, public_url)
        self.issuance = Issuance(context)
        self.authorities = Authorities(context, self.issuance)
        self.revocation = Revocation(context)
        self.publication = Publication(context)
        self.ocsp_answers = OcspAnswers(context)
        self.token_log = TokenLog(context)
        self.listings = Listings(context)

    @property
    def keys(self) -> KeyBackend:
        return self.context.keys

    @property
    def profiles(self) -> ProfileSet:
        return self.context.profiles

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @property
    def public_url(self) -> str:
        return self.context.public_url

    def close(self) -> None:
        """Hand the hot paths' connections back to the engine's pool (before it is disposed);
        the key backend and the engine belong to the composition root, which closes them."""
        self.context.close()
