"""The checks :func:`ca.issuance.prepare` runs before it builds anything: issuer, validity,
subjectAltNames.

Each raises IssuanceError for what an operator or requester can fix and ProfileError when the
profile itself is inconsistent; none has a side effect, so a refused request leaves nothing
behind.
"""
from __future__ import annotations

import re
from functools import lru_cache
from datetime import datetime, timedelta

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.clock import ensure_utc, truncate_seconds
from ca.errors import IssuanceError, ProfileError
from ca.issuance.encoding import extension_value, kept_spki, spki
from ca.issuance.request import CertificateRequest, IssuerInfo
from ca.profiles import Profile

_SAN_POLICIES = ("forbidden", "optional", "required")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")


def check_issuer(profile: Profile, issuer: IssuerInfo, request: CertificateRequest) -> bool:
    """Whether this is a self-signed certificate; refuse issuers that may not sign it."""
    new_bc = profile.basic_constraints
    if issuer.certificate is None:
        if not profile.self_signed:
            raise IssuanceError(f"profile {profile.name} is not self-signed: issuer "
                                f"{issuer.name} needs a certificate")
        if spki(request.public_key) != kept_spki(issuer.key.public_key):
            raise IssuanceError(f"self-signed {profile.name}: the certified key is not the "
                                f"signing key {issuer.key.uri}")
        if new_bc is None or not new_bc.ca:
            raise ProfileError(f"profile {profile.name}: a self-signed root must be a CA")
        return True
    if profile.self_signed:
        raise IssuanceError(f"profile {profile.name} is self-signed but issuer {issuer.name} "
                            "has a certificate")
    cert = issuer.certificate
    if kept_spki(cert) != kept_spki(issuer.key.public_key):
        raise IssuanceError(f"issuer {issuer.name}: key {issuer.key.uri} does not match the "
                            "issuer certificate")
    bc = extension_value(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise IssuanceError(f"issuer {issuer.name} is not a CA (basicConstraints cA is false)")
    ku = extension_value(cert, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise IssuanceError(f"issuer {issuer.name} may not sign certificates "
                            "(keyUsage lacks keyCertSign)")
    if new_bc is not None and new_bc.ca and bc.path_length is not None:
        if bc.path_length == 0:
            raise IssuanceError(f"issuer {issuer.name} has pathLenConstraint 0: it may not "
                                f"issue CA certificates ({profile.name})")
        if new_bc.path_length is None or new_bc.path_length > bc.path_length - 1:
            raise IssuanceError(
                f"profile {profile.name} asks pathLenConstraint {new_bc.path_length}, but "
                f"issuer {issuer.name} (pathLenConstraint {bc.path_length}) allows at most "
                f"{bc.path_length - 1}")
    return False


def issuer_name(issuer: IssuerInfo) -> x509.Name:
    """The issuer certificate's subject, refused unless it re-encodes to the very same bytes.

    Path builders match names byte for byte in practice; an imported CA certificate with an
    unusual encoding (unsorted multi-valued RDN, odd string type) must not silently break chains.
    """
    if issuer.certificate is None:
        raise IssuanceError(f"issuer {issuer.name} has no certificate")
    name = issuer.certificate.subject
    if not _reencodes(issuer.certificate.public_bytes(serialization.Encoding.DER)):
        raise IssuanceError(f"issuer {issuer.name}: its subject name does not re-encode "
                            "byte-exactly; certificates would not chain to it")
    return name


@lru_cache(maxsize=64)
def _reencodes(der: bytes) -> bool:
    """Whether the subject of the certificate ``der`` re-encodes byte for byte; kept per
    issuer certificate (a batch asked it once per row, an asn1crypto parse each time)."""
    raw = asn1_x509.Certificate.load(der)["tbs_certificate"]["subject"]
    return x509.load_der_x509_certificate(der).subject.public_bytes() == raw.dump()


def validity(request: CertificateRequest, issuer: IssuerInfo) -> tuple[datetime, datetime]:
    """Whole-second UTC times within the profile's maximum and the issuer's own validity."""
    profile = request.profile
    not_before = truncate_seconds(ensure_utc(request.not_before))
    if request.not_after is None:
        not_after = not_before + timedelta(days=profile.validity.default_days, seconds=-1)
    else:
        not_after = truncate_seconds(ensure_utc(request.not_after))
    if not_after <= not_before:
        raise IssuanceError(f"notAfter {not_after.isoformat()} is not after notBefore "
                            f"{not_before.isoformat()}")
    period = not_after - not_before + timedelta(seconds=1)  # RFC 5280: inclusive
    if period > timedelta(days=profile.validity.max_days):
        raise IssuanceError(
            f"validity {not_before.isoformat()} .. {not_after.isoformat()} exceeds the "
            f"{profile.validity.max_days} days profile {profile.name} allows")
    if issuer.certificate is not None:
        issuer_end = issuer.certificate.not_valid_after_utc
        if not_after > issuer_end:
            raise IssuanceError(
                f"notAfter {not_after.isoformat()} is later than the notAfter "
                f"{issuer_end.isoformat()} of issuer {issuer.name}; shorten the validity or "
                "renew the issuer")
    return not_before, not_after


def _check_presence(profile: Profile, kind: str, policy: str, values: tuple[str, ...]) -> None:
    if policy not in _SAN_POLICIES:
        raise ProfileError(f"profile {profile.name}: {kind}_san {policy!r} is not one of "
                           f"{_SAN_POLICIES}")
    if policy == "forbidden" and values:
        raise IssuanceError(f"profile {profile.name} does not allow {kind} subjectAltNames")
    if policy == "required" and not values:
        raise IssuanceError(f"profile {profile.name} requires at least one {kind} "
                            "subjectAltName")


def check_emails(profile: Profile, emails: tuple[str, ...]) -> tuple[str, ...]:
    """The rfc822Name SANs the profile allows, once each, in the order given."""
    emails = tuple(emails)
    _check_presence(profile, "email", profile.email_san, emails)
    for email in emails:
        if not _EMAIL.match(email) or ".." in email.split("@", 1)[1]:
            raise IssuanceError(f"{email!r} is not an ASCII e-mail address (rfc822Name)")
    return tuple(dict.fromkeys(emails))


def check_dns_names(profile: Profile, names: tuple[str, ...]) -> tuple[str, ...]:
    """The dNSName SANs the profile allows, lower-cased without a trailing dot, once each."""
    names = tuple(names)
    _check_presence(profile, "dns", profile.dns_san, names)
    checked = []
    for name in names:
        lowered = name.lower().rstrip(".")
        labels = lowered.split(".")
        if labels[0] == "*":
            labels = labels[1:]
        if (len(lowered) > 253 or len(labels) < 2
                or not all(_DNS_LABEL.match(label) for label in labels)):
            raise IssuanceError(f"{name!r} is not a DNS name in ASCII (A-label) form")
        checked.append(lowered)
    return tuple(dict.fromkeys(checked))
