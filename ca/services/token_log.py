"""The time-stamp token log: every granted token is committed before its reply leaves, so no
client holds a token the operator cannot account for; and the operator's view of it."""
from __future__ import annotations

from datetime import datetime
from functools import cached_property, partial
from typing import Any

from ca import metrics
from ca.services.context import ServiceContext, as_json
from ca.store import queries
from ca.store.group_commit import GroupCommitter
from ca.store.hot import HotInsert
from ca.store.models import TimestampToken
from ca.timestamps import TimestampRecord


# How long a time-stamp request waits for the log at most (a lock another process holds, a
# commit that does not come): well under a client's timeout, so it gets a systemFailure it can
# act on rather than a dropped connection.
TOKEN_LOG_WAIT = 5.0


class TokenLog:
    """Records tokens durably (concurrent callers share commits) and lists them."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def record(self, token: TimestampRecord) -> None:
        """Record a granted time-stamp token durably; returns once it is committed.

        Concurrent callers share commits (ca.store.group_commit), so durability costs one
        commit per batch rather than per token. Waits at most TOKEN_LOG_WAIT seconds:
        DatabaseBusyError then (a lock held elsewhere), DatabaseUnavailableError at once while
        the database cannot be reached.
        """
        self._committer.submit(token)

    def find(self, *, unit: str | None = None, since: datetime | None = None,
             serial: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Logged tokens, newest first, as plain dicts (``tincay tsa log``)."""
        with self.context.read() as session:
            return [{"unit": t.unit, "serial": t.serial_hex, "gen_time": t.gen_time,
                     "imprint_algorithm": t.imprint_algorithm, "imprint": t.imprint_hex,
                     "policy": t.policy, "nonce": t.nonce_hex, "requester": t.requester}
                    for t in queries.find_timestamp_tokens(session, unit=unit, since=since,
                                                           serial=serial, limit=limit)]

    def latest_gen_time(self, unit: str) -> datetime | None:
        """The latest genTime logged for ``unit`` (any worker, any host), None for none: where
        a starting TSA puts its genTime mark (tsa/gen_time.py)."""
        with self.context.read() as session:
            latest = queries.find_timestamp_tokens(session, unit=unit, limit=1)
            return latest[0].gen_time if latest else None

    def record_event(self, action: str, unit: str, details: dict[str, Any]) -> None:
        """An audit event about TSA unit ``unit`` (``tsa.clock_unsynchronised``,
        ``tsa.clock_synchronised``), committed before this returns."""
        with self.context.transaction() as session:
            queries.record_event(session, at=self.context.clock.now(), action=action,
                                 details=as_json({"unit": unit, **details}))

    @cached_property
    def _committer(self) -> GroupCommitter[TimestampRecord]:
        return GroupCommitter(partial(queries.add_timestamp_tokens, self._insert),
                              timeout=TOKEN_LOG_WAIT, on_commit=metrics.token_log_commit)

    @cached_property
    def _insert(self) -> HotInsert:
        return self.context.hot_insert(TimestampToken.__table__, queries.TOKEN_COLUMNS,
                                       busy_wait=TOKEN_LOG_WAIT, chain="tsa")
