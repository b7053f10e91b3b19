"""Hash chains over the append-only logs: the one encoding writers and ``tincay audit verify``
share, and the walk that finds the first record that does not fit.

Each log (the audit events, the TSA's token log, the remote-signing log) is one chain. A
record's hash is SHA-256(previous record's hash || canonical(chain, seq, fields)): editing,
inserting, deleting or reordering a record changes every hash after it, and a checkpoint (the
head signed by the audit key, ca.services.audit_chain) pins the chain up to its seq, so
rewriting the records and the hashes after them together no longer goes unseen either. A
chain's head is its last record (ca.store.chain_store): records after the last checkpoint can
be rewritten or deleted unseen by someone who can write to the database.

The encoding is unambiguous: every value is a type tag and a 4-byte length before its bytes
(UTF-8 text, decimal integers, datetimes as UTC ISO 8601 with microseconds), None has a tag
of its own (so None and "" differ), and the chain's name and the seq come first. Pure: no
database library here; the store (ca.store.chain_store) and the verifier both call it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, MutableMapping, Sequence

from ca.clock import UTC

AUDIT_KEY_LABEL = "tincay-audit"  # the HSM key that signs checkpoints (ca.services.audit_chain)
GENESIS = "0" * 64  # the "previous hash" of a chain's first record
DOMAIN = b"tincay-chain-v1"
CHECKPOINT_DOMAIN = b"tincay-audit-checkpoint-v1"

# The fields each chain's records are hashed over, in this order (every column but the row
# id, which the database assigns, and the chain columns themselves).
FIELDS: dict[str, tuple[str, ...]] = {
    "audit": ("at", "action", "authority", "serial_hex", "subject", "details"),
    "tsa": ("unit", "serial_hex", "gen_time", "imprint_algorithm", "imprint_hex", "policy",
            "nonce_hex", "requester"),
    "signatures": ("at", "credential_id", "user_id", "client", "authority", "serial_hex",
                   "hash_hex", "hash_algorithm_oid", "sign_algorithm_oid", "activation_pk"),
}
CHAINS = tuple(FIELDS)


def _item(tag: bytes, data: bytes) -> bytes:
    return tag + len(data).to_bytes(4, "big") + data


def encode_value(value: Any) -> bytes:
    """One value, tagged and length-prefixed; a type the logs never hold is a TypeError."""
    if value is None:
        return _item(b"N", b"")
    if isinstance(value, bool):
        raise TypeError("booleans are not chained values")
    if isinstance(value, str):
        return _item(b"S", value.encode("utf-8"))
    if isinstance(value, int):
        return _item(b"I", str(value).encode("ascii"))
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        text = aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return _item(b"T", text.encode("ascii"))
    if isinstance(value, (bytes, bytearray)):
        return _item(b"B", bytes(value))
    raise TypeError(f"cannot chain a {type(value).__name__}")


def canonical(chain: str, seq: int, row: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: domain, chain name, seq, then its fields in order."""
    parts = [_item(b"D", DOMAIN), encode_value(chain), encode_value(seq)]
    parts += [encode_value(row[name]) for name in FIELDS[chain]]
    return b"".join(parts)


def record_hash(previous_hex: str, chain: str, seq: int, row: Mapping[str, Any]) -> str:
    """The record's chain hash (hex) after the record whose hash is ``previous_hex``."""
    return hashlib.sha256(bytes.fromhex(previous_hex) + canonical(chain, seq, row)).hexdigest()


def link(chain: str, last_seq: int, head_hex: str,
         rows: Sequence[MutableMapping[str, Any]]) -> str:
    """Give ``rows`` (in append order) their ``chain_seq`` and ``chain_hash`` after a chain
    whose head is ``head_hex`` at ``last_seq``; the new head."""
    for n, row in enumerate(rows, start=last_seq + 1):
        head_hex = record_hash(head_hex, chain, n, row)
        row["chain_seq"], row["chain_hash"] = n, head_hex
    return head_hex


def checkpoint_message(chain: str, seq: int, head_hex: str, at: dt.datetime) -> bytes:
    """What the audit key signs for a checkpoint: domain-separated, so a signature made for
    anything else never passes as one."""
    return b"".join([_item(b"D", CHECKPOINT_DOMAIN), encode_value(chain), encode_value(seq),
                     encode_value(head_hex), encode_value(at)])


# --- verification ---------------------------------------------------------------------------

CHANGED, INSERTED, DELETED, REORDERED, CHECKPOINT = (
    "changed", "inserted", "deleted", "reordered", "checkpoint")


@dataclass(frozen=True)
class Problem:
    """The first record of a chain that does not fit, and why."""

    chain: str
    kind: str  # CHANGED | INSERTED | DELETED | REORDERED | CHECKPOINT
    seq: int | None
    row_id: int | None
    detail: str

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "no seq"
        row = f", row id {self.row_id}" if self.row_id is not None else ""
        return f"{self.chain}: {self.kind} at {where}{row}: {self.detail}"


@dataclass(frozen=True)
class Checkpoint:
    """A stored checkpoint, its signature already checked (``signature_ok``)."""

    id: int
    seq: int
    head_hex: str
    at: dt.datetime
    signature_ok: bool


@dataclass(frozen=True)
class Record:
    """One stored record as the verifier reads it, in chain_seq order."""

    row_id: int
    seq: int | None
    hash_hex: str | None
    fields: Mapping[str, Any]


def walk(chain: str, records: Iterable[Record],
         checkpoints: Sequence[Checkpoint]) -> tuple[int, Problem | None]:
    """Recompute ``chain`` over ``records`` (streamed in chain_seq order, then row id) against
    its checkpoints (in seq order); (records read, the first problem or None). Only the first
    problem is reported: after it every hash differs anyway.

    The chain's head is its last record, so a deleted tail shows only against a checkpoint:
    records after the last checkpoint can be deleted unseen, as they can be rewritten unseen."""
    problem: Problem | None = None
    count, previous, expected, last_id = 0, GENESIS, 1, None
    pins = {c.seq: c for c in checkpoints}
    confirmed = 0  # the highest seq a good checkpoint vouches for so far
    for bad in checkpoints:
        if not bad.signature_ok:
            return 0, Problem(chain, CHECKPOINT, bad.seq, None,
                              f"checkpoint #{bad.id} at {bad.at.isoformat()}: the audit key's "
                              "signature does not verify")
    for record in records:
        count += 1
        if problem is not None:
            continue
        problem = _check(chain, record, expected, previous, last_id)
        if problem is None:
            pin = pins.get(expected)
            if pin is not None and pin.head_hex != record.hash_hex:
                problem = Problem(chain, CHANGED, expected, record.row_id,
                                  f"the chain disagrees with checkpoint #{pin.id} of "
                                  f"{pin.at.isoformat()}: a record after seq {confirmed} up "
                                  f"to seq {expected} was rewritten (hashes recomputed)")
            elif pin is not None:
                confirmed = expected
            previous, expected, last_id = record.hash_hex or "", expected + 1, record.row_id
    if problem is not None:
        return count, problem
    last = expected - 1
    beyond = [c for c in checkpoints if c.seq > last]
    if beyond:
        return count, Problem(chain, DELETED, last + 1, None,
                              f"checkpoint #{beyond[0].id} vouches for seq {beyond[0].seq}, "
                              f"the records end at seq {last}: at least "
                              f"{beyond[-1].seq - last} were deleted")
    return count, None


def _check(chain: str, record: Record, expected: int, previous: str,
           last_id: int | None) -> Problem | None:
    """The problem ``record`` shows where the chain expects seq ``expected`` after hash
    ``previous``, or None."""
    seq, row_id = record.seq, record.row_id
    if seq is None:
        return Problem(chain, INSERTED, None, row_id, "a record without a chain seq")
    if seq < expected:
        return Problem(chain, INSERTED, seq, row_id,
                       f"a second record with seq {seq}" if seq == expected - 1
                       else f"a record out of sequence (seq {seq})")
    if seq > expected:
        return Problem(chain, DELETED, expected, None,
                       f"seq {expected} to {seq - 1} missing (next record: id {row_id})")
    computed = record_hash(previous, chain, seq, record.fields)
    if computed != record.hash_hex:
        return Problem(chain, CHANGED, seq, row_id,
                       "its content does not match its chain hash")
    if last_id is not None and row_id < last_id:
        return Problem(chain, REORDERED, seq, row_id,
                       f"row id {row_id} follows row id {last_id}: rows were reordered")
    return None

