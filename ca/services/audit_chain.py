"""Checkpoints and verification of the logs' hash chains (issue 22).

The audit log, the TSA's token log and the remote-signing log are hash chains (ca.chain; each
writer appends under the chain's lock, ca.store.chain_store). A chain alone shows a record
edited, inserted, deleted or moved, but not a rewrite that recomputes every hash after the
edit and the head with it: a database administrator could do that. So each maintenance pass
signs every chain's head that moved with the audit key, an EC P-256 key on the HSM that never
leaves it (label :data:`AUDIT_KEY_LABEL`), and stores the signed checkpoint. Verification
recomputes each chain, streamed in seq order (a million-row log is never held in memory), and
checks every checkpoint's signature and that the record at its seq carries its hash.

What it cannot catch: records appended after the last checkpoint can be rewritten, or
deleted, by someone who can write to the database (a chain's head is its last record, so a
deleted tail shows only against a checkpoint that vouched for it). Checkpoint often (every ``tincay
maintain`` pass does; ``tincay serve`` runs one every few minutes), and keep the audit key's
public key (``tincay audit key``) outside the database to verify against.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca import chain
from ca.errors import ConfigurationError
from ca.keys.base import KeySpec, SigningKey
from ca.services.context import ServiceContext, as_json
from ca.store import queries
from ca.store.chain_store import TABLES, session_head
from ca.store.models import LogCheckpoint

AUDIT_KEY_LABEL = chain.AUDIT_KEY_LABEL
ALGORITHM = "ecdsa-p256-sha256"
_STREAM_BATCH = 2000


@dataclass
class ChainReport:
    """One chain's verification: how many records and checkpoints, the first problem."""

    chain: str
    records: int
    head_seq: int  # the last record's seq: the chain's head is its last row
    checkpoints: int
    last_checkpoint: dt.datetime | None
    problem: chain.Problem | None = None

    def summary(self) -> str:
        if self.problem is not None:
            return self.problem.describe()
        last = self.last_checkpoint.isoformat() if self.last_checkpoint else "never"
        return (f"{self.chain}: ok, {self.records} records, {self.checkpoints} checkpoints, "
                f"last checkpoint {last}")

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "ok": self.problem is None, "records": self.records,
                "head_seq": self.head_seq, "checkpoints": self.checkpoints,
                "last_checkpoint": self.last_checkpoint,
                "problem": asdict(self.problem) if self.problem else None}


@dataclass
class Verification:
    """Every chain's report; ``ok`` when none found a problem."""

    chains: list[ChainReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(report.problem is None for report in self.chains)


class AuditChain:
    """The audit key, the checkpoints and ``verify``."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    # --- the audit key ---------------------------------------------------------------------

    def ensure_key(self) -> SigningKey:
        """The audit key, generated on the HSM the first time (``tincay init``, or the first
        maintenance pass of an instance made before it existed), with its key.generate event;
        reconciliation counts it as used (ca.store.inventory)."""
        keys = self.context.keys
        if keys.exists(AUDIT_KEY_LABEL):
            return keys.load(AUDIT_KEY_LABEL)
        key = keys.generate(AUDIT_KEY_LABEL, KeySpec("ec", curve="P-256"))
        with self.context.transaction() as session:
            queries.record_event(session, at=self.context.clock.now(), action="key.generate",
                                 details=as_json({"key_uri": key.uri, "spec": "ec-p256",
                                                  "purpose": "audit checkpoints"}))
        return key

    def public_key_pem(self) -> bytes:
        """The audit key's public key (PEM), to keep outside the database for ``verify
        --public-key``."""
        if not self.context.keys.exists(AUDIT_KEY_LABEL):
            raise ConfigurationError(f"no audit key {AUDIT_KEY_LABEL!r} on the token yet: "
                                     "tincay init or tincay maintain creates it")
        public = self.context.keys.load(AUDIT_KEY_LABEL).public_key
        return public.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    # --- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> list[str]:
        """Sign each chain's head that moved since its last checkpoint; the chains signed
        ("audit@1234"). Run by every maintenance pass."""
        key = self.ensure_key()  # first: a key made now is logged, and this covers it
        now = self.context.clock.now()
        with self.context.read() as session:
            heads = {name: session_head(session, name) for name in chain.CHAINS}
            signed = dict(session.execute(select(LogCheckpoint.chain, func.max(LogCheckpoint.seq))
                                          .group_by(LogCheckpoint.chain)).all())
        moved = {name: head for name, head in heads.items() if head[0] > (signed.get(name) or 0)}
        if not moved:
            return []
        rows = []
        for name, (seq, head_hex) in sorted(moved.items()):
            signature = key.private_key.sign(  # type: ignore[call-arg, union-attr]
                chain.checkpoint_message(name, seq, head_hex, now), ec.ECDSA(hashes.SHA256()))
            rows.append(LogCheckpoint(chain=name, seq=seq, head_hex=head_hex, at=now,
                                      key_label=AUDIT_KEY_LABEL, algorithm=ALGORITHM,
                                      signature=signature))
        with self.context.transaction() as session:
            session.add_all(rows)
        return [f"{row.chain}@{row.seq}" for row in rows]

    # --- verification ----------------------------------------------------------------------

    def verify(self, public_key_pem: bytes | None = None) -> Verification:
        """Recompute every chain and check its checkpoints against the audit key (the HSM's,
        or ``public_key_pem`` for an offline check)."""
        public = self._public_key(public_key_pem)
        result = Verification()
        with self.context.read() as session:
            for name in chain.CHAINS:
                result.chains.append(self._verify_chain(session, name, public))
        return result

    def _public_key(self, pem: bytes | None) -> Any:
        if pem is not None:
            try:
                public = serialization.load_pem_public_key(pem)
            except ValueError as exc:
                raise ConfigurationError(f"--public-key: not a PEM public key ({exc})") from None
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise ConfigurationError("--public-key: the audit key is an EC P-256 key")
            return public
        keys = self.context.keys
        return keys.load(AUDIT_KEY_LABEL).public_key if keys.exists(AUDIT_KEY_LABEL) else None

    def _verify_chain(self, session: Session, name: str, public: Any) -> ChainReport:
        head_seq = session_head(session, name)[0]
        checkpoints = [chain.Checkpoint(row.id, row.seq, row.head_hex, row.at,
                                        _signature_ok(public, row))
                       for row in session.scalars(select(LogCheckpoint)
                                                  .where(LogCheckpoint.chain == name)
                                                  .order_by(LogCheckpoint.seq, LogCheckpoint.id))]
        count, problem = chain.walk(name, self._records(session, name), checkpoints)
        last = max((c.at for c in checkpoints), default=None)
        return ChainReport(name, count, head_seq, len(checkpoints), last, problem)

    def _records(self, session: Session, name: str) -> Iterator[chain.Record]:
        """The chain's records in seq order (rows without one first), streamed."""
        table = TABLES[name]
        fields = chain.FIELDS[name]
        statement = (select(table.c.id, table.c.chain_seq, table.c.chain_hash,
                            *(table.c[f] for f in fields))
                     .order_by(table.c.chain_seq.asc().nulls_first(), table.c.id))
        connection = session.connection().execution_options(stream_results=True,
                                                            yield_per=_STREAM_BATCH)
        for row in connection.execute(statement):
            yield chain.Record(row[0], row[1], row[2], dict(zip(fields, row[3:])))


def _signature_ok(public: Any, row: LogCheckpoint) -> bool:
    if public is None or row.algorithm != ALGORITHM:
        return False
    try:
        public.verify(row.signature, chain.checkpoint_message(row.chain, row.seq, row.head_hex,
                                                              row.at),
                      ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
