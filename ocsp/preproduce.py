"""Pre-produced OCSP responses: signed ahead of time, stored, served without signing.

RFC 5019's model: most relying parties ask without a nonce, so the answer for a serial can be
signed once and served many times. :class:`PreProducer` signs what is missing, stale (the
certificate was revoked or released since) or due (within ``margin`` of its nextUpdate) and
stores it; :class:`ocsp.sources.StoreSource` serves a stored answer only while it is unexpired
and still agrees with the certificates table, so a revocation is never hidden by the cache: the
very next query is answered live until the refreshed answer is stored.
"""
from __future__ import annotations

from datetime import timedelta

from ca.services import CertificateStatus, OcspAnswers
from ocsp.responder import CertStatus, Responder, StatusInfo


def as_status_info(status: CertificateStatus) -> StatusInfo:
    if status.status == "revoked":
        return StatusInfo(CertStatus.REVOKED, status.revoked_at, status.reason)
    if status.status == "issued":
        return StatusInfo(CertStatus.GOOD)
    return StatusInfo(CertStatus.UNKNOWN)


class PreProducer:
    """Keeps the stored responses of every CA ``responder`` serves fresh."""

    def __init__(self, answers: OcspAnswers, responder: Responder, *,
                 margin: timedelta | None = None, batch: int = 500) -> None:
        self.answers = answers
        self.responder = responder
        self.margin = margin  # None: half of each CA's OCSP validity
        self.batch = batch

    def refresh(self, ca: str | None = None, serial: str | None = None) -> int:
        """Sign and store every response that is missing, stale or due (of one CA, or one
        serial of it: what issuance and revocation call); returns how many."""
        count = 0
        for key in self.responder.keys:
            if ca is not None and key.ca_name != ca:
                continue
            validity = self.responder.validity_for(key)
            margin = self.margin if self.margin is not None else validity / 2
            while True:
                now = self.answers.context.clock.now().replace(microsecond=0)
                due = self.answers.responses_due(key.ca_name, now + margin,
                                                      limit=self.batch, serial=serial)
                if not due:
                    break
                signed = []
                for cid, serial_hex, status in due:
                    cert_id = self.responder.cert_id(key, int(serial_hex, 16))
                    der = self.responder.sign(key, [(cert_id, as_status_info(status))], None, now)
                    signed.append((cid, status, now, now + validity, der))
                self.answers.store(signed)
                count += len(signed)
        return count
