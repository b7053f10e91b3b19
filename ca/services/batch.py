"""Bulk issuance and revocation from a file (``tincay issue --batch``, ``tincay revoke --batch``).

**Resumable.** Every row is claimed in ``idempotency_keys`` (ca.services.registration's claims)
under the client ``operator`` with a key derived from the CA, the row's number and its content,
*in the same transaction* as its pending certificate row. A rerun of the same file (after a
clean end, a refused row or ``kill -9``) looks the claims up first: a row whose certificate was
signed is ``already-issued`` with its serial; a claim whose certificate never got its signature
(the process died between the two transactions) has that pending serial revoked as never issued,
as ``tincay reconcile`` would, and the row is issued again. So every row ends issued exactly
once, and no signed certificate exists that the database does not know. Two runs of one file
at the same time stay consistent but waste work: one may revoke the other's pending rows as
never issued, and the other then reports those rows as errors (its signatures are dropped,
mark_issued refuses them) while the first issues them.

**Persist-before-sign, batched.** The rule of ca.services.issuance holds per certificate: its
TBSCertificate is durable before the HSM signs it. What is batched is the commits: a chunk of
rows is prepared, its pending rows, claims and ``certificate.prepare`` events committed in one
transaction, then signed, then the certificates and their ``certificate.issue`` events recorded
in a second one. The CA's key is found on the token once per batch, not per certificate
(SoftHSM searches its objects linearly by label), and the rows are written with Core
statements, not the ORM's unit of work (which cost the single-issue path most of its 17 ms).

A row with bad input is reported with the field at fault and the batch goes on; a failure of
the HSM or the database ends the batch (its committed rows stay, a rerun resumes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ca.services.batch_files import (Format, ResultWriter, RowResult, detect_format,
                                     read_rows)
from ca.services.batch_issuance import CHUNK, OPERATOR, RowIssuance
from ca.services.batch_revoke import revoke_row
from ca.services.context import ServiceContext
from ca.services.issuance import Issuance
from ca.services.revocation import Revocation
from ca.store import queries

OnResult = Callable[[RowResult], None]


@dataclass
class BatchSummary:
    """How many rows ended in each status, and the results' format."""

    format: Format
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, result: RowResult) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1

    @property
    def failed(self) -> int:
        return self.counts.get("error", 0)


class Batch:
    """Issues and revokes the rows of a batch file, resumably."""

    def __init__(self, context: ServiceContext, issuance: Issuance,
                 revocation: Revocation) -> None:
        self.context, self.revocation = context, revocation
        # the chunk-at-a-time issuance of the rows (ca.services.batch_issuance)
        self.rows = RowIssuance(context, issuance, revocation)

    # --- the files ------------------------------------------------------------------------

    def issue_file(self, ca: str, path: Path, results: Path | None = None, *,
                   chunk: int = CHUNK, on_result: OnResult | None = None) -> BatchSummary:
        """Issue every row of ``path`` under ``ca`` not issued before; results to ``results``."""
        fmt = detect_format(path)
        return self._run(fmt, results, on_result,
                         self.rows.issue_rows(ca, read_rows(path, fmt), path.parent,
                                              chunk=chunk, batch=path.name))

    def revoke_file(self, ca: str, path: Path, results: Path | None = None, *,
                    on_result: OnResult | None = None) -> BatchSummary:
        """Revoke the certificates the rows of ``path`` name; results to ``results``."""
        fmt = detect_format(path)
        with self.context.read() as session:
            queries.get_authority(session, ca)  # an unknown CA fails the batch, not each row
        by = {"client": OPERATOR, "batch": path.name}
        rows = (revoke_row(self.revocation, ca, raw, by) for raw in read_rows(path, fmt))
        return self._run(fmt, results, on_result, ([r] for r in rows))

    @staticmethod
    def _run(fmt: Format, results: Path | None, on_result: OnResult | None,
             chunks: Iterable[list[RowResult]]) -> BatchSummary:
        summary = BatchSummary(fmt)
        writer = ResultWriter(results, fmt)
        try:
            for done in chunks:
                for result in done:
                    writer.write(result)
                    summary.add(result)
                    if on_result is not None:
                        on_result(result)
                writer.flush()
        finally:
            writer.close()
        return summary
