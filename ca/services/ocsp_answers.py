"""Storage of pre-produced OCSP answers (RFC 5019): which are due, storing them signed, and
the hot-path read that serves one while it still agrees with the certificate's status."""
from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Sequence

from ca.services.context import ServiceContext
from ca.services.results import CertificateStatus
from ca.store import queries
from ca.store.hot import HotQuery
from ca.store.models import status_token

StoredAnswer = tuple[int, CertificateStatus, datetime, datetime, bytes]


class OcspAnswers:
    """The pre-produced answers' table; ocsp.preproduce signs, this stores and serves."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def preproduced_response(self, ca: str, serial: int) -> bytes | None:
        """A stored OCSP response for ``serial`` that is unexpired and agrees with its status."""
        return queries.preproduced_response(self._preproduced_query, ca, format(serial, "x"),
                                            self.context.clock.now())

    def responses_due(self, ca: str, before: datetime, limit: int = 1000,
                      serial: str | None = None) -> list[tuple[int, str, CertificateStatus]]:
        """Up to ``limit`` certificates of ``ca`` whose pre-produced response is missing,
        stale, or expires before ``before``: (row id, serial hex, status)."""
        with self.context.read() as session:
            authority = queries.get_authority(session, ca)
            due = []
            only = queries.normalize_serial(serial) if serial is not None else None
            for cid, serial_hex, status, reason, revoked_at in queries.responses_due(
                    session, authority, before, serial_hex=only):
                due.append((cid, serial_hex, CertificateStatus(status, revoked_at, reason)))
                if len(due) >= limit:
                    break
            return due

    def store(self, responses: Sequence[StoredAnswer]) -> None:
        """Store pre-produced responses: (row id, the status they encode, thisUpdate,
        nextUpdate, DER), in one transaction."""
        with self.context.transaction() as session:
            for cid, status, this_update, next_update, der in responses:
                queries.store_response(session, cid, status_token(
                    status.status, status.reason, status.revoked_at), this_update, next_update,
                    der)

    @cached_property
    def _preproduced_query(self) -> HotQuery:
        return self.context.hot_query(queries.PREPRODUCED_QUERY)
