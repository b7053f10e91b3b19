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

import importlib
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.keys.base import KeyBackend
from ca.services.context import Progress, ServiceContext
from ca.services.results import (CertificateStatus, CrlInfo, IssuedCertificate, KeySource,
                                 ServiceUnitKey)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ca.profiles import ProfileSet
    from ca.services.authorities import Authorities
    from ca.services.issuance import Issuance
    from ca.services.listings import Listings
    from ca.services.ocsp_answers import OcspAnswers
    from ca.services.publication import Publication
    from ca.services.revocation import Revocation
    from ca.services.token_log import TokenLog

__all__ = ["Authorities", "CertificateAuthority", "CertificateStatus", "CrlInfo", "Issuance",
           "IssuedCertificate", "KeySource", "Listings", "OcspAnswers", "Progress",
           "Publication", "Revocation", "ServiceContext", "ServiceUnitKey", "TokenLog"]

# Each service's module is imported when first used: `tincay ca list` needs the listings, not
# the issuance core, the CRL encoder or the hierarchy loader (bench/cli_startup.py).
_MODULES = {"Authorities": "authorities", "Issuance": "issuance", "Listings": "listings",
            "OcspAnswers": "ocsp_answers", "Publication": "publication",
            "Revocation": "revocation", "TokenLog": "token_log"}


def __getattr__(name: str) -> Any:
    """``from ca.services import Revocation`` and friends, imported on first use (PEP 562)."""
    if name in _MODULES:
        return getattr(importlib.import_module(f"ca.services.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CertificateAuthority:
    """Every CA service over one context: what a composition root builds once per process.
    Each service is made on first use and then kept, so every consumer shares it."""

    def __init__(self, sessions: sessionmaker[Session], keys: KeyBackend,
                 profiles: ProfileSet | Callable[[], ProfileSet], clock: Clock,
                 public_url: str) -> None:
        self.context = ServiceContext(sessions, keys, profiles, clock, public_url)

    @cached_property
    def issuance(self) -> Issuance:
        from ca.services.issuance import Issuance
        return Issuance(self.context)

    @cached_property
    def authorities(self) -> Authorities:
        from ca.services.authorities import Authorities
        return Authorities(self.context, self.issuance)

    @cached_property
    def revocation(self) -> Revocation:
        from ca.services.revocation import Revocation
        return Revocation(self.context)

    @cached_property
    def publication(self) -> Publication:
        from ca.services.publication import Publication
        return Publication(self.context)

    @cached_property
    def ocsp_answers(self) -> OcspAnswers:
        from ca.services.ocsp_answers import OcspAnswers
        return OcspAnswers(self.context)

    @cached_property
    def token_log(self) -> TokenLog:
        from ca.services.token_log import TokenLog
        return TokenLog(self.context)

    @cached_property
    def listings(self) -> Listings:
        from ca.services.listings import Listings
        return Listings(self.context)

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
