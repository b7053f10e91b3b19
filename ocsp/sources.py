"""Where OCSP status comes from: the CA's database, through the revocation and OCSP-answer
services."""
from __future__ import annotations

from datetime import datetime

from asn1crypto import ocsp as asn1_ocsp

from ca.clock import Clock
from ca.errors import DatabaseUnavailableError
from ca.services import CertificateAuthority, OcspAnswers, Revocation
from ocsp.responder import CertStatus, ResponderKey, StatusInfo

UNKNOWN = StatusInfo(CertStatus.UNKNOWN)
GOOD = StatusInfo(CertStatus.GOOD)
_MAX_HELD = 65536  # answers a worker holds for a database outage, like the responder's routes


class StoreSource:
    """Status straight from the certificates table: one indexed query per serial; and the
    pre-produced response cache (ocsp/preproduce.py) from the same database.

    Never good for a serial the CA did not issue (CA/Browser Forum 4.9.10): pending (never
    known to be signed) and failed rows answer unknown, like serials the CA never saw.

    The pre-produced answers it served are held in memory, so while the database cannot be
    reached the same answer is served again until its nextUpdate (RFC 5019: the answer a
    cache would have kept anyway); questions it holds no answer for are answered tryLater.
    """

    def __init__(self, revocation: Revocation, answers: OcspAnswers,
                 clock: Clock | None = None) -> None:
        self.revocation = revocation
        self.answers = answers
        self.clock = clock or answers.context.clock
        self._held: dict[tuple[str, int], bytes] = {}

    def status(self, ca_name: str, serial: int) -> StatusInfo:
        found = self.revocation.certificate_status(ca_name, serial)
        if found is None or found.status not in ("issued", "revoked"):
            return UNKNOWN
        if found.status == "issued":
            return GOOD
        return StatusInfo(CertStatus.REVOKED, found.revoked_at, found.reason)

    def preproduced(self, ca_name: str, serial: int) -> bytes | None:
        try:
            answer = self.answers.preproduced_response(ca_name, serial)
        except DatabaseUnavailableError:
            held = self._held.get((ca_name, serial))
            if held is not None and _next_update(held) > self.clock.now():
                return held
            raise
        if answer is not None:
            if len(self._held) >= _MAX_HELD:
                self._held.clear()
            self._held[ca_name, serial] = answer
        else:  # none stored, or stale (a revocation): never serve the old one later
            self._held.pop((ca_name, serial), None)
        return answer


def _next_update(der: bytes) -> datetime:
    """The nextUpdate of a pre-produced (single-response) answer."""
    basic = asn1_ocsp.OCSPResponse.load(der).basic_ocsp_response
    return basic["tbs_response_data"]["responses"][0]["next_update"].native


def responder_keys(service: CertificateAuthority) -> list[ResponderKey]:
    """Who signs for each active CA: its delegated OCSP responder unit if it has one (the
    responder's own key, RFC 6960 4.2.2.2), else the CA's key itself; with the CA's OCSP
    validity as configured when the keys are loaded (a worker start)."""
    keys: dict[str, ResponderKey] = {}
    for unit in service.authorities.service_units("ocsp"):
        keys.setdefault(unit.authority, ResponderKey(
            unit.authority, unit.authority_certificate, unit.certificate,
            service.authorities.signing_key(unit.key_uri, unit.certificate),
            service.publication.settings(unit.authority).ocsp_validity))
    for authority in service.listings.list_authorities():
        name = authority["name"]
        if name not in keys and authority["status"] == "active":
            certificate = service.authorities.authority_certificate(name)
            keys[name] = ResponderKey(name, certificate, certificate,
                                      service.authorities.signing_key(authority["key_uri"], certificate),
                                      service.publication.settings(name).ocsp_validity)
    return list(keys.values())
