"""The RFC 3161 time-stamp authority core: TimeStampReq DER in, TimeStampResp DER out.

Pure (no flask, sqlalchemy or click): the HTTP endpoint (web/tsa.py) records each granted
token durably before the reply leaves. Every failure a client can cause becomes a PKIStatus
rejection with the failInfo RFC 3161 2.4.2 names for it; :meth:`TimeStampAuthority.respond`
never raises. Tokens follow RFC 3161, RFC 5816 (ESSCertIDv2) and ETSI EN 319 422: TSTInfo v1,
ordering false, no extensions; signed attributes contentType, messageDigest and
signingCertificateV2; the signature goes through the unit's key object (HSM or memory) by
ca/signing.py, so HSM keys need nothing else.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca import signing
from ca.clock import Clock
from ca.errors import KeyBackendError
from ca.keys.base import SigningKey
from ca.timestamps import TimestampRecord
from tsa.clock_sync import ClockCheck, ClockGuard, clock_source
from tsa.gen_time import GenTimes, HostMark
from tsa.requests import DIGEST_SIZES, Rejected, RequestReader, TsaQuestion
from tsa.tokens import TokenEncoder

__all__ = ["FAIL_INFOS", "Rejected", "TimeStampAuthority", "TimeStampResp",
           "TsaPolicy", "TsaResult", "TsaUnit", "rejection"]

log = logging.getLogger("tincay.tsa")

# RFC 3161 failInfo names (as operators read them) -> asn1crypto's PKIFailureInfo names
FAIL_INFOS = {"badAlg": "bad_alg", "badRequest": "bad_request",
              "badDataFormat": "bad_data_format", "timeNotAvailable": "time_not_available",
              "unacceptedPolicy": "unaccepted_policy",
              "unacceptedExtension": "unaccepted_extensions", "systemFailure": "system_failure"}


@dataclass(frozen=True)
class TsaPolicy:
    """How the TSA answers. ``default_policy`` None: the first certificatePolicies OID of the
    TSA certificate (what its CPS describes). Accuracy of 1 s or better; genTime carries
    fractional seconds only as finely as the accuracy warrants. ``include_chain``: tokens
    that ask for certificates carry the TSA certificate and its issuing CAs (not the root, a
    verifier brings its own), as public TSAs do: jarsigner, osslsigncode and signify build the
    path only from what the token carries. ``clock``: how the TSA checks its clock is in sync
    before it issues (tsa/clock_sync.py; off by default)."""

    default_policy: str | None = None
    accepted_policies: tuple[str, ...] = ()
    accuracy: timedelta = timedelta(seconds=1)
    hashes: tuple[str, ...] = ("sha256", "sha384", "sha512")
    include_chain: bool = True
    tsa_name: bool = False
    clock: ClockCheck = ClockCheck()

    def __post_init__(self) -> None:
        if not timedelta(microseconds=1) <= self.accuracy <= timedelta(seconds=1):
            raise ValueError("accuracy must be between 1 microsecond and 1 second")
        if self.clock.mode == "kernel" and self.clock.margin >= self.accuracy:
            raise ValueError(f"the clock margin ({self.clock.margin}) leaves nothing of the "
                             f"accuracy ({self.accuracy})")
        unknown = [h for h in self.hashes if h not in DIGEST_SIZES]
        if unknown or not self.hashes:
            raise ValueError(f"hashes: {unknown or 'none'} (choose from "
                             f"{', '.join(DIGEST_SIZES)})")

    @property
    def fraction_digits(self) -> int:
        """Decimal digits of genTime's fraction: 0 for 1 s, 1 for 100 ms, ..., 6 for 1 us."""
        digits, step = 0, Decimal(self.accuracy.total_seconds())
        while step < 1 and digits < 6:
            step *= 10
            digits += 1
        return digits


@dataclass(frozen=True)
class TsaUnit:
    """A TSA unit: its certificate (profile tsa), its key, and the chain above it."""

    name: str
    certificate: x509.Certificate
    key: SigningKey
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class TsaResult:
    """The DER reply, and either the token granted or the failInfo name of the rejection."""

    response: bytes
    granted: TimestampRecord | None = None
    fail_info: str | None = None


class TimeStampResp(asn1_core.Sequence):
    """RFC 3161 2.4.2 TimeStampResp. asn1crypto's own declares timeStampToken mandatory, so it
    cannot encode a rejection, which carries none."""

    _fields = [("status", asn1_tsp.PKIStatusInfo),
               ("time_stamp_token", asn1_cms.ContentInfo, {"optional": True})]


def time_ordered_serial() -> int:
    """A token serial that sorts by the time it was drawn: microseconds since 1970 above 63
    bits from the OS CSPRNG (about 115 bits in all, RFC 3161 allows 160).

    The token log's unique index on the serial then grows at its right edge, as a log should:
    with random serials every token's index entry lands on a random page, so each commit
    rewrites a page nobody else touched and the WAL and its checkpoints grow with it. Measured
    (SQLite, one token per commit): on a log of 100,000 tokens 129 us (79 us CPU) with random
    serials, 83 us (52 us CPU) with these; on 1,000,000 tokens 150-161 us (76-81 us CPU)
    against 108 us (63 us CPU). Unique across workers and restarts as the random ones were:
    two serials collide only if drawn in the same microsecond with the same 63 random bits
    (and the log's unique index would refuse the second token, which is then never sent).
    """
    return time.time_ns() // 1000 << _SERIAL_RANDOM_BITS | secrets.randbits(_SERIAL_RANDOM_BITS)


_SERIAL_RANDOM_BITS = 63


class TimeStampAuthority:
    """One TSA unit answering RFC 3161 requests; thread-safe.

    ``clock_guard``: whether the clock is in sync (tsa/clock_sync.py); by default the one
    ``policy.clock`` names, None when it is off. While it says out of sync every request is
    answered timeNotAvailable. ``not_before``: the latest genTime already logged for the
    unit, below which no genTime goes; ``host_mark``: the mark shared with the host's other
    workers (tsa/gen_time.py)."""

    def __init__(self, unit: TsaUnit, policy: TsaPolicy, clock: Clock,
                 serials: Callable[[], int] = time_ordered_serial, *,
                 clock_guard: ClockGuard | None = None, not_before: datetime | None = None,
                 host_mark: HostMark | None = None) -> None:
        _check_unit(unit)
        self.unit = unit
        self.policy = policy
        self.serials = serials
        self.default_policy = policy.default_policy or _first_policy(unit.certificate)
        self._reader = RequestReader(policy.hashes,
                                     {self.default_policy, *policy.accepted_policies})
        self.hash = signing.default_hash(unit.key)
        der = unit.certificate.public_bytes(serialization.Encoding.DER)
        self._signer = asn1_x509.Certificate.load(der)
        chain = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
                 for c in (unit.chain if policy.include_chain else ())  # up to, not
                 if c.subject != c.issuer]  # including, the root: a verifier brings its own
        self._encoder = TokenEncoder(
            self._signer, chain, _signing_certificate_v2(self._signer, der), self.hash,
            signing.signature_algorithm(unit.key.public_key, self.hash), policy.accuracy,
            policy.tsa_name)
        self._valid = (unit.certificate.not_valid_before_utc,
                       unit.certificate.not_valid_after_utc)
        if clock_guard is None and (source := clock_source(policy.clock, policy.accuracy)):
            clock_guard = ClockGuard(source, every=policy.clock.every.total_seconds())
        self.clock_guard = clock_guard
        self.gen_times = GenTimes(clock, policy.accuracy, policy.fraction_digits, not_before,
                                  host_mark)
        self._hash_of = getattr(hashlib, self.hash)  # hashlib.sha256: a third faster than new()

    @property
    def clock(self) -> Clock:
        """The clock genTime comes from (the genTime source's)."""
        return self.gen_times.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.gen_times.clock = clock

    def respond(self, request_der: bytes, requester: str | None = None) -> TsaResult:
        """Answer one request; a rejection for anything refused, never an exception.
        ``requester`` (the client's address) goes into the granted token's record."""
        try:
            self._check_clock()
            request = self.parse(request_der)
            gen_time = self.gen_times.next()
            token = TimestampRecord(self.unit.name, self.serials(), gen_time, request.algorithm,
                                    request.digest, request.policy or self.default_policy,
                                    request.nonce, requester)
            if not self._valid[0] <= gen_time <= self._valid[1]:
                raise Rejected("systemFailure", "the TSA certificate is not valid now")
            return TsaResult(self._granted(request, token), granted=token)
        except Rejected as exc:
            log.info("time-stamp request rejected (%s): %s", exc.fail_info, exc)
            return TsaResult(rejection(exc.fail_info, str(exc)), fail_info=exc.fail_info)
        except KeyBackendError as exc:
            log.warning("time-stamp refused, key unavailable: %s", exc)
            return TsaResult(rejection("systemFailure", "the TSA key is unavailable"),
                             fail_info="systemFailure")
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered per RFC
            log.exception("TSA failed")
            return TsaResult(rejection("systemFailure", "internal error"),
                             fail_info="systemFailure")

    # --- the steps ----------------------------------------------------------------------------

    def parse(self, request_der: bytes) -> TsaQuestion:
        """Check a TimeStampReq; :class:`Rejected` with the fitting failInfo otherwise."""
        return self._reader.read(request_der)

    def _check_clock(self) -> None:
        """Rejected timeNotAvailable while the clock guard says out of sync: every request,
        well-formed or not, so a client learns first that no token can be had now. The reason
        goes to the log and the audit event, not to clients (a checker's own words)."""
        if self.clock_guard is not None and not self.clock_guard.reading().synchronised:
            raise Rejected("timeNotAvailable", "the TSA clock is not synchronised within its "
                           "accuracy, try later")

    def _granted(self, request: TsaQuestion, token: TimestampRecord) -> bytes:
        encoder = self._encoder
        tst_info = encoder.tst_info(token.policy, request.imprint, token.serial,
                                    token.gen_time, token.nonce)
        signed = encoder.signed_attributes(self._hash_of(tst_info).digest())
        signature = signing.sign(self.unit.key, signed, self.hash)
        return encoder.response(tst_info, signed, signature, request.cert_req)


def rejection(fail_info: str, text: str) -> bytes:
    """A TimeStampResp with PKIStatus rejection, the failInfo bit and a statusString."""
    return TimeStampResp({"status": {
        "status": "rejection", "status_string": [text[:200]],
        "fail_info": {FAIL_INFOS[fail_info]}}}).dump()


def _signing_certificate_v2(signer: asn1_x509.Certificate, der: bytes) -> asn1_tsp.SigningCertificateV2:
    """RFC 5816: ESSCertIDv2 with SHA-256 (the DEFAULT, so hashAlgorithm is omitted) and the
    issuer and serial, binding the token to exactly this certificate."""
    return asn1_tsp.SigningCertificateV2({"certs": [{
        "cert_hash": hashlib.sha256(der).digest(),
        "issuer_serial": {"issuer": [asn1_x509.GeneralName(name="directory_name",
                                                           value=signer.issuer)],
                          "serial_number": signer.serial_number}}]})


def _first_policy(certificate: x509.Certificate) -> str:
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        raise ValueError("the TSA certificate names no policy: configure default_policy") \
            from None
    return policies.value[0].policy_identifier.dotted_string


def _check_unit(unit: TsaUnit) -> None:
    """RFC 3161 2.3: the TSA certificate has EKU timeStamping only, critical; and the key is
    the certificate's. A misconfigured unit fails at start, not on the first request."""
    try:
        eku = unit.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise ValueError(f"TSA unit {unit.name}: certificate has no extended key usage") \
            from None
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise ValueError(f"TSA unit {unit.name}: the extended key usage must be timeStamping "
                         "only and critical (RFC 3161 2.3)")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if unit.key.public_key.public_bytes(serialization.Encoding.DER, spki) != \
            unit.certificate.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError(f"TSA unit {unit.name}: the key is not the certificate's key")

