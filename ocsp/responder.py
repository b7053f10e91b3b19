"""The pure OCSP responder: request DER -> response DER (RFC 6960, RFC 5019 profile, RFC 9919).

No HTTP and no database: status comes from a one-method :class:`StatusSource` (after Boulder's
ocsp/responder), time from an injected clock, signatures from key objects (HSM or memory).
:meth:`Responder.respond` never raises: every failure becomes an OCSP response status —
malformedRequest for anything that does not parse or breaks RFC 8954, unauthorized for an issuer
we do not serve, tryLater when the HSM, its key or the database is unreachable, internalError
for bugs.

Requests are read by ocsp/requests.py, responses framed by ocsp/answers.py (cryptography's
builder holds one SingleResponse only); they carry: responder ID by key hash, producedAt,
thisUpdate and nextUpdate, the CertID exactly as requested (SHA-1 or SHA-256), the nonce
echoed, and the delegated responder's certificate.

Imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol, Sequence

from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import der, metrics, signing
from ca.clock import Clock
from ca.errors import (BackendUnavailableError, DatabaseUnavailableError, KeyBackendError,
                       StoreError)
from ca.keys.base import SigningKey
from ocsp import answers as answers_der
from ocsp.requests import MalformedRequest, OcspQuestion, RequestedCert, read_request

__all__ = ["CertStatus", "MalformedRequest", "Responder", "ResponderKey", "ResponseCache",
           "StatusInfo", "StatusSource"]

log = logging.getLogger("tincay.ocsp")

CERT_ID_HASHES = ("sha1", "sha256")  # RFC 6960 (SHA-1) and RFC 9919 (SHA-256)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CertStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class StatusInfo:
    """One serial's status; ``reason`` is the RFC 5280 name (keyCompromise, ...)."""

    status: CertStatus
    revoked_at: datetime | None = None
    reason: str | None = None


class StatusSource(Protocol):
    def status(self, ca_name: str, serial: int) -> StatusInfo:
        """The status of ``serial`` under the CA named ``ca_name``; may raise
        BackendUnavailableError or StoreError when it cannot tell right now."""


@dataclass(frozen=True)
class ResponderKey:
    """A CA we answer for and who signs for it: its delegated OCSP responder (profile
    ocsp-responder, issued by that CA) or the CA itself."""

    ca_name: str
    issuer_certificate: x509.Certificate
    signer_certificate: x509.Certificate
    key: SigningKey
    validity: timedelta | None = None  # this CA's nextUpdate - thisUpdate; None: the responder's
    _ids: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        issuer = asn1_x509.Certificate.load(
            self.issuer_certificate.public_bytes(serialization.Encoding.DER))
        signer = asn1_x509.Certificate.load(
            self.signer_certificate.public_bytes(serialization.Encoding.DER))
        for name in CERT_ID_HASHES:
            self._ids[name] = (getattr(issuer.subject, name), getattr(issuer.public_key, name))
        self._ids["responder_id"] = answers_der.responder_id(signer.public_key.sha1)
        self._ids["hash"] = signing.default_hash(self.key)
        self._ids["algorithm"] = signing.signature_algorithm(self.key.public_key,
                                                             self._ids["hash"]).dump()
        # encoded once, loaded per response: asn1crypto re-encodes a parsed certificate
        self._ids["certs"] = asn1_ocsp.Certificates([signer]).dump(force=True)
        self._ids["delegated"] = signer.subject != issuer.subject or \
            signer.public_key.dump() != issuer.public_key.dump()

    def matches(self, hash_name: str, name_hash: bytes, key_hash: bytes) -> bool:
        return self._ids.get(hash_name) == (name_hash, key_hash)


_MAX_ROUTES = 65536  # about 10 MB of remembered questions per worker at most


class ResponseCache(Protocol):
    def preproduced(self, ca_name: str, serial: int) -> bytes | None:
        """A response signed ahead of time for this serial (SHA-1 CertID, no nonce) that is
        still valid and still agrees with the certificate's status, or None."""


def _deferred(exc: Exception) -> None:
    """Log why an answer was tryLater: a database outage is not, the store logged it once."""
    if not isinstance(exc, DatabaseUnavailableError):
        log.warning("OCSP answer deferred: %s", exc)


def _status_response(status: str) -> bytes:
    return asn1_ocsp.OCSPResponse({"response_status": status}).dump()


MALFORMED = _status_response("malformed_request")
INTERNAL_ERROR = _status_response("internal_error")
TRY_LATER = _status_response("try_later")
UNAUTHORIZED = _status_response("unauthorized")


class Responder:
    """Answers OCSP requests for the CAs in ``keys`` from ``source``."""

    def __init__(self, keys: Sequence[ResponderKey] | None, source: StatusSource, clock: Clock, *,
                 validity: timedelta = timedelta(hours=12), max_requests: int = 10,
                 extended_revoke: bool = False, cache: ResponseCache | None = None,
                 reload_keys: Callable[[], Sequence[ResponderKey]] | None = None,
                 reload_every: timedelta = timedelta(seconds=30)) -> None:
        if validity <= timedelta(0) or max_requests < 1:
            raise ValueError("validity must be positive and max_requests at least 1")
        self.keys = tuple(keys or ())
        # Keys change under a running server: a CA created, a responder certificate renewed
        # (ca.services.renewal). With ``reload_keys`` the responder reads them again at most
        # every ``reload_every`` (so questions about issuers it does not serve cannot make it
        # reload per request): no restart. ``keys=None``: not known yet (a worker started
        # while the database was away): every question is answered tryLater, not
        # unauthorized, and the keys are read again every second until they are known.
        self.keys_known = keys is not None
        self.reload_keys = reload_keys
        self.reload_every = reload_every.total_seconds()
        self._reloaded_at = -float("inf")
        self.source = source
        self.clock = clock
        self.validity = validity
        self.max_requests = max_requests
        self.extended_revoke = extended_revoke
        self.cache = cache
        # request DER -> (key, serial) for nonce-less single requests in the canonical SHA-1
        # form: parsing is a pure function of the bytes, and validators repeat their questions
        self._routes: dict[bytes, tuple[ResponderKey, int]] = {}

    # --- the one entry point ------------------------------------------------------------------

    def respond(self, request_der: bytes) -> bytes:
        """An OCSPResponse for ``request_der``; never raises.

        A nonce-less question asked before (byte for byte) goes straight to its stored
        answer: no parsing, one indexed query, the whole of the hot path. Only when that
        answer is missing or stale (a revocation since) is the request parsed and signed live.
        Each answer is counted by kind (ca.metrics: pre-produced, signed, or the error sent).
        """
        answer, kind = self._answer(request_der)
        metrics.ocsp_answer(kind)
        return answer

    def _answer(self, request_der: bytes) -> tuple[bytes, str]:
        if self.reload_keys is not None:
            self._reload_if_due()
        route = self._routes.get(request_der) if self.cache is not None else None
        try:
            if route is not None:
                hit = self.cache.preproduced(route[0].ca_name, route[1])  # type: ignore[union-attr]
                if hit is not None:
                    return hit, "preproduced"
        except (BackendUnavailableError, StoreError) as exc:
            _deferred(exc)
            return TRY_LATER, "try_later"
        try:
            parsed = self.parse(request_der)
        except MalformedRequest as exc:
            log.info("malformed OCSP request: %s", exc)
            return MALFORMED, "malformed"
        try:
            key = self.match(parsed.cert_ids)
            if key is None:
                return (UNAUTHORIZED, "unauthorized") if self.keys_known else \
                    (TRY_LATER, "try_later")
            if route is None and self.cache is not None and parsed.nonce is None and \
                    len(parsed.cert_ids) == 1:
                cert_id = parsed.cert_ids[0]
                serial = cert_id.serial
                if cert_id.der == self.cert_id(key, serial).der:
                    if len(self._routes) >= _MAX_ROUTES:
                        self._routes.clear()
                    self._routes[request_der] = (key, serial)
                    hit = self.cache.preproduced(key.ca_name, serial)
                    if hit is not None:
                        return hit, "preproduced"
            answers = [(cert_id, self.source.status(key.ca_name, cert_id.serial))
                       for cert_id in parsed.cert_ids]
            return self.sign(key, answers, parsed.nonce, self.clock.now()), "signed"
        except (KeyBackendError, StoreError) as exc:  # the HSM (its key) or the database
            _deferred(exc)
            return TRY_LATER, "try_later"
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered per RFC
            log.exception("OCSP responder failed")
            return INTERNAL_ERROR, "internal_error"

    def _reload_if_due(self) -> None:
        """Read the served CAs' keys again when the last reload is older than
        ``reload_every``; an unreachable HSM or database keeps the keys we have."""
        now = time.monotonic()
        if now - self._reloaded_at < (self.reload_every if self.keys_known
                                      else min(self.reload_every, 1.0)):
            return
        self._reloaded_at = now
        try:
            self.keys = tuple(self.reload_keys())  # type: ignore[misc]
            self.keys_known = True
        except DatabaseUnavailableError:
            pass  # logged once per outage by the store
        except (KeyBackendError, StoreError) as exc:
            log.warning("OCSP responder keys not reloaded: %s", exc)

    # --- the steps ----------------------------------------------------------------------------

    def parse(self, request_der: bytes) -> OcspQuestion:
        """Decode and check a request; MalformedRequest for anything we will not answer."""
        question = read_request(request_der)
        if len(question.cert_ids) > self.max_requests:
            raise MalformedRequest(f"{len(question.cert_ids)} requests; at most "
                                   f"{self.max_requests}")
        return question

    def match(self, cert_ids: Sequence[RequestedCert]) -> ResponderKey | None:
        """The served CA every CertID names (by issuer name and key hash), or None."""
        found: ResponderKey | None = None
        for cert_id in cert_ids:
            key = next((k for k in self.keys if k.matches(cert_id.hash_name, cert_id.name_hash,
                                                          cert_id.key_hash)), None)
            if key is None or (found is not None and key is not found):
                return None
            found = key
        return found

    def cert_id(self, key: ResponderKey, serial: int, hash_name: str = "sha1"
                ) -> RequestedCert:
        """The CertID OpenSSL and most clients send for ``serial``: what pre-produced
        responses answer, so a cached answer is served only to a byte-identical question."""
        name_hash, key_hash = key._ids[hash_name]
        return RequestedCert(hash_name, name_hash, key_hash, serial, asn1_ocsp.CertId({
            "hash_algorithm": {"algorithm": hash_name, "parameters": asn1_core.Null()},
            "issuer_name_hash": name_hash, "issuer_key_hash": key_hash,
            "serial_number": serial}).dump())

    def validity_for(self, key: ResponderKey) -> timedelta:
        """How long answers for ``key``'s CA are valid: its own setting, else the default."""
        return key.validity or self.validity

    def sign(self, key: ResponderKey, answers: Sequence[tuple[RequestedCert, StatusInfo]],
             nonce: bytes | None, produced_at: datetime) -> bytes:
        """A signed, successful OCSPResponse answering ``answers`` (ocsp/answers.py);
        ``nonce`` is the request's nonce extnValue octets, echoed as received."""
        now = produced_at.replace(microsecond=0)
        this_update = der.generalized_time(now)
        next_update = der.generalized_time(now + self.validity_for(key))
        extended = False
        singles = []
        for cert_id, info in answers:
            status, used_extension = self._cert_status(info)
            extended |= used_extension
            singles.append(answers_der.single_response(cert_id.der, status, this_update,
                                                       next_update))
        extensions = []
        if nonce is not None:  # echoed byte for byte: the octets inside extnValue
            extensions.append(answers_der.nonce_extension(nonce))
        if extended:
            extensions.append(answers_der.EXTENDED_REVOKE)
        tbs = answers_der.response_data(key._ids["responder_id"], this_update, singles,
                                        extensions)
        signature = signing.sign(key.key, tbs, key._ids["hash"])
        return answers_der.ocsp_response(tbs, key._ids["algorithm"], signature,
                                         key._ids["certs"] if key._ids["delegated"] else None)

    def _cert_status(self, info: StatusInfo) -> tuple[bytes, bool]:
        if info.status is CertStatus.GOOD:
            return answers_der.GOOD, False
        if info.status is CertStatus.REVOKED:
            return answers_der.revoked(info.revoked_at, info.reason), False  # type: ignore[arg-type]
        if self.extended_revoke:  # RFC 6960 2.2: "revoked" for a serial never issued
            return answers_der.revoked(EPOCH, "certificateHold"), True
        return answers_der.UNKNOWN, False
