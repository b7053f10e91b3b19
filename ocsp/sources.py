"""Where OCSP status comes from: the CA's database, through the revocation and OCSP-answer
services."""
from __future__ import annotations

from ca.services import CertificateAuthority, OcspAnswers, Revocation
from ocsp.responder import CertStatus, ResponderKey, StatusInfo

UNKNOWN = StatusInfo(CertStatus.UNKNOWN)
GOOD = StatusInfo(CertStatus.GOOD)


class StoreSource:
    """Status straight from the certificates table: one indexed query per serial; and the
    pre-produced response cache (ocsp/preproduce.py) from the same database.

    Never good for a serial the CA did not issue (CA/Browser Forum 4.9.10): pending (never
    known to be signed) and failed rows answer unknown, like serials the CA never saw.
    """

    def __init__(self, revocation: Revocation, answers: OcspAnswers) -> None:
        self.revocation = revocation
        self.answers = answers

    def status(self, ca_name: str, serial: int) -> StatusInfo:
        found = self.revocation.certificate_status(ca_name, serial)
        if found is None or found.status not in ("issued", "revoked"):
            return UNKNOWN
        if found.status == "issued":
            return GOOD
        return StatusInfo(CertStatus.REVOKED, found.revoked_at, found.reason)

    def preproduced(self, ca_name: str, serial: int) -> bytes | None:
        return self.answers.preproduced_response(ca_name, serial)


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
