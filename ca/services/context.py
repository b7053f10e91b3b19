"""What every CA service shares: sessions, keys, profiles, clock and the public URL.

One :class:`ServiceContext` per process (per CLI invocation, per server worker) is handed to
each service of this package; the services own their transactions, the context only opens
them. Nothing here reads the environment: the composition root (cli/context.py, the app
factory, ca.testing) builds the context.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from cryptography import x509
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.errors import IssuanceError
from ca.keys.base import KeyBackend
from ca.store.hot import HotInsert, HotQuery
from ca.store.hot_tx import HotTransaction
from ca.store.models import Authority
from ca.store.outage import DatabaseOutage

if TYPE_CHECKING:  # pragma: no cover - typing only: listings need neither at run time
    from ca import issuance
    from ca.issuance import IssuerInfo
    from ca.profiles import ProfileSet

Progress = Callable[[str], None]


class ServiceContext:
    """The collaborators of the CA services, and the few steps they all take with them.

    ``profiles`` may be given as a function that loads them: read (YAML, validated) on first
    use, so a listing that never issues never loads them."""

    def __init__(self, sessions: sessionmaker[Session], keys: KeyBackend,
                 profiles: ProfileSet | Callable[[], ProfileSet], clock: Clock,
                 public_url: str) -> None:
        self.sessions = sessions
        self.keys = keys
        self._profiles = profiles
        self.clock = clock
        self.public_url = public_url
        self._hot: list[HotQuery | HotInsert | HotTransaction] = []

    @cached_property
    def profiles(self) -> ProfileSet:
        return self._profiles() if callable(self._profiles) else self._profiles

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        with self._reaching(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for read-only callers (listings), closed when the block ends."""
        with self._reaching(), self.sessions() as session:
            yield session

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """The database's own failures as the store's errors: DatabaseUnavailableError while
        it cannot be reached (logged once per outage), DatabaseBusyError for a lock held
        elsewhere, so every service fails with a StoreError the protocols answer in-protocol."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise self.outage.error(exc.orig or exc) from None

    @cached_property
    def outage(self) -> DatabaseOutage:
        """Whether this process reaches its database (ca.store.outage), shared with the hot
        paths."""
        return DatabaseOutage(self.engine)

    @cached_property
    def engine(self) -> Any:
        """The engine the hot paths (ca.store.hot) bind their own connections to."""
        return self.sessions.kw["bind"]

    def hot_query(self, statement: Any) -> HotQuery:
        """A hot-path read (ca.store.hot: no ORM session per call), closed with the context."""
        hot = HotQuery(self.engine, statement, outage=self.outage)
        self._hot.append(hot)
        return hot

    def hot_transaction(self, *, busy_wait: float = 5.0) -> HotTransaction:
        """A hot-path transaction (ca.store.hot_tx), closed with the context."""
        hot = HotTransaction(self.engine, busy_wait=busy_wait, outage=self.outage)
        self._hot.append(hot)
        return hot

    def hot_insert(self, table: Any, columns: Sequence[str], *, busy_wait: float = 5.0,
                   chain: str | None = None) -> HotInsert:
        """A hot-path insert (ca.store.hot) that waits at most ``busy_wait`` seconds for a
        lock held elsewhere, closed with the context; ``chain``: the log's hash chain its
        rows are appended to, in the insert's transaction (ca.store.chain_store)."""
        from ca.store.chain_store import ChainAppender

        prepare = ChainAppender(self.engine, chain).append if chain else None
        hot = HotInsert(self.engine, table, columns, busy_wait=busy_wait, outage=self.outage,
                        prepare=prepare)
        self._hot.append(hot)
        return hot

    def close(self) -> None:
        """Hand the hot paths' connections back to the engine's pool (before it is disposed);
        the key backend and the engine belong to the composition root, which closes them."""
        while self._hot:
            self._hot.pop().close()

    def issuer_info(self, authority: Authority) -> IssuerInfo:
        """The active CA ``authority`` as the issuance core signs with it (its key loaded)."""
        from ca.issuance import IssuerInfo

        if authority.status != "active" or authority.certificate is None:
            raise IssuanceError(f"CA {authority.name} is {authority.status}, not active")
        return IssuerInfo(authority.name, authority_certificate(authority),
                          self.keys.load(authority.key_uri),
                          publishes_deltas=authority.delta_crl_validity_seconds is not None)

    def urls(self, issuer: IssuerInfo) -> issuance.Urls:
        """Where certificates of ``issuer`` point relying parties: AIA, CRL DP, Freshest CRL."""
        from ca.issuance import urls_for

        return urls_for(self.public_url, issuer.name, deltas=issuer.publishes_deltas)


def authority_certificate(authority: Authority) -> x509.Certificate:
    """The CA's own certificate; an error while it has none (creation broke off)."""
    if authority.certificate is None or authority.certificate.der is None:
        raise IssuanceError(f"CA {authority.name} has no certificate yet ({authority.status})")
    return x509.load_der_x509_certificate(authority.certificate.der)


def not_after(now: datetime, days: int | None) -> datetime | None:
    """``days`` of validity counted inclusively (RFC 5280): ends one second before now + days."""
    if days is None:
        return None
    if days <= 0:
        raise IssuanceError(f"validity of {days} days: must be at least 1")
    return now.replace(microsecond=0) + timedelta(days=days, seconds=-1)


def as_json(data: dict) -> str:
    """An audit event's details: stable key order, names with diacritics kept readable."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
