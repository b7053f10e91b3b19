"""The CA's services, one module per concern, over one shared :class:`ServiceContext`:

- ``authorities``   CAs, OCSP/TSA units and hierarchy set-up; the keys services sign with
- ``issuance``      end-entity issuance, persist-before-sign
- ``revocation``    revocation, hold and certificate status (the live OCSP read)
- ``publication``   CRLs and the per-CA publication settings
- ``ocsp_answers``  the pre-produced OCSP answers' storage
- ``token_log``     the time-stamp token log
- ``listings``      read-only views for operators
- ``renewal``       new keys and certificates for OCSP and TSA units before theirs end
- ``reconciliation`` what a crash mid-issuance left (pending rows, orphaned keys), resolved
- ``clients``       the platform's registered clients and their bearer tokens
- ``credentials``   remote-signing credentials: sole control (PIN + TOTP), SADs, signing, the
                    signature log
- ``subscriber_keys`` subscribers' keys wrapped under the HSM's KEK, and signers for them
- ``registration`` the registration API's state: issuance under an Idempotency-Key, cursor
                    pages of certificates and audit events
- ``batch``         bulk issuance and revocation from a file, resumable (``--batch``)

Each service owns its transactions. :class:`CertificateAuthority` builds them all over one
context for the composition roots (the CLI, the app factory, ca.testing); a consumer keeps
only the services it uses (the OCSP source holds the revocation and answer services, the TSA
endpoint the token log).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.keys.base import KeyBackend
from ca.services.context import Progress, ServiceContext
from ca.services.results import (CertificateStatus, CrlInfo, IssuedCertificate, KeySource,
                                 ServiceUnitKey)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ca.profiles import ProfileSet
    from ca.services.audit_chain import AuditChain
    from ca.services.authorities import Authorities
    from ca.services.batch import Batch
    from ca.services.clients import Clients
    from ca.services.credentials import Credentials
    from ca.services.issuance import Issuance
    from ca.services.listings import Listings
    from ca.services.ocsp_answers import OcspAnswers
    from ca.services.publication import Publication
    from ca.services.reconciliation import Reconciliation
    from ca.services.registration import Registration
    from ca.services.renewal import Renewal
    from ca.services.revocation import Revocation
    from ca.services.subscriber_keys import SubscriberKeys
    from ca.services.token_log import TokenLog

__all__ = ["AuditChain", "Authorities", "Batch", "CertificateAuthority", "Clients", "CertificateStatus", "CrlInfo",
           "Credentials", "Issuance",
           "IssuedCertificate", "KeySource", "Listings", "OcspAnswers", "Progress",
           "Publication", "Reconciliation", "Registration", "Renewal", "Revocation",
           "ServiceContext",
           "ServiceUnitKey", "SubscriberKeys",
           "TokenLog"]

# Each service's module is imported when first used: `tincay ca list` needs the listings, not
# the issuance core, the CRL encoder or the hierarchy loader (bench/cli_startup.py).
_MODULES = {"AuditChain": "audit_chain", "Authorities": "authorities", "Batch": "batch", "Clients": "clients", "Credentials": "credentials",
            "Issuance": "issuance", "Listings": "listings",
            "OcspAnswers": "ocsp_answers", "Publication": "publication",
            "Reconciliation": "reconciliation", "Registration": "registration",
            "Renewal": "renewal",
            "Revocation": "revocation", "SubscriberKeys": "subscriber_keys",
            "TokenLog": "token_log"}


def __getattr__(name: str) -> Any:
    """``from ca.services import Revocation`` and friends, imported on first use (PEP 562)."""
    if name in _MODULES:
        return getattr(importlib.import_module(f"ca.services.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Service:
    """A service of :class:`CertificateAuthority`, built over its context when first read and
    then kept on the instance (so every consumer shares it). ``needs``: services its
    constructor takes after the context."""

    def __init__(self, class_name: str, *needs: str) -> None:
        self.class_name = class_name
        self.needs = needs

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        built = __getattr__(self.class_name)(instance.context,
                                             *(getattr(instance, n) for n in self.needs))
        instance.__dict__[self.name] = built  # read from the instance from now on
        return built


class CertificateAuthority:
    """Every CA service over one context: what a composition root builds once per process.
    Each service is made on first use and then kept, so every consumer shares it."""

    subscriber_keys: SubscriberKeys = _Service("SubscriberKeys")  # type: ignore[assignment]
    issuance: Issuance = _Service("Issuance", "subscriber_keys")  # type: ignore[assignment]
    authorities: Authorities = _Service("Authorities", "issuance")  # type: ignore[assignment]
    revocation: Revocation = _Service("Revocation")  # type: ignore[assignment]
    publication: Publication = _Service("Publication")  # type: ignore[assignment]
    ocsp_answers: OcspAnswers = _Service("OcspAnswers")  # type: ignore[assignment]
    token_log: TokenLog = _Service("TokenLog")  # type: ignore[assignment]
    listings: Listings = _Service("Listings")  # type: ignore[assignment]
    renewal: Renewal = _Service("Renewal", "issuance")  # type: ignore[assignment]
    reconciliation: Reconciliation = _Service(  # type: ignore[assignment]
        "Reconciliation", "revocation", "subscriber_keys")
    clients: Clients = _Service("Clients")  # type: ignore[assignment]
    credentials: Credentials = _Service(  # type: ignore[assignment]
        "Credentials", "subscriber_keys")
    registration: Registration = _Service(  # type: ignore[assignment]
        "Registration", "issuance", "revocation", "credentials")
    batch: Batch = _Service("Batch", "issuance", "revocation")  # type: ignore[assignment]
    audit_chain: AuditChain = _Service("AuditChain")  # type: ignore[assignment]

    def __init__(self, sessions: sessionmaker[Session], keys: KeyBackend,
                 profiles: ProfileSet | Callable[[], ProfileSet], clock: Clock,
                 public_url: str) -> None:
        self.context = ServiceContext(sessions, keys, profiles, clock, public_url)

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
        the key backend and the engine belong to the composition root, which closes them.
        The subscriber keys this process unwrapped are destroyed first."""
        subscriber_keys = self.__dict__.get("subscriber_keys")
        if subscriber_keys is not None:
            subscriber_keys.close()
        self.context.close()
